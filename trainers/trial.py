"""One trial as a plain function of its config: prune and distil a student, then measure it.

No Optuna, no MLflow: `run_trial(config)` returns numbers and writes a model folder, so a trial
can be run, tested and debugged on its own (`sweep trial config.yaml`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock

from trainers.config import TrialConfig
from trainers.data import encode_cached, load_data
from trainers.jobs import MeasureJob, MeasureResult, TrialResult
from trainers.measure import MeasureConfig, measure_model, track_emissions, track_memory
from trainers.precision import autocast, cpu_numerics, for_inference, resolve_device, train_precision, unsupported_reason
from trainers.deploy.student import save_student
from trainers.pruning import load_pruned, make_pruner, pruning_summary
from trainers.teacher import load_teacher_logits
from trainers.train import batches, train

COMPRESSION_FILE = "compression.json"  # how a saved student is meant to run (its deployment precision)
Log = Callable[[str], None]


def load_and_encode(data_cfg, base_dir: Path, tokenizer, *, max_seq_len: int, cache_dir: Path, report_truncation: bool = False):
    """Cleaned splits and their (cached) token ids; truncation counts only when asked (they tokenise everything)."""
    loaded = load_data(data_cfg, base_dir, max_seq_len=max_seq_len, tokenizer=tokenizer if report_truncation else None)
    encoded = encode_cached(loaded, tokenizer, max_seq_len=max_seq_len, cache_dir=cache_dir)
    return loaded, encoded


def _check_labels(model, label_names: list[str], source: str) -> None:
    id2label = {int(k): v for k, v in (model.config.id2label or {}).items()}
    model_labels = [id2label.get(i) for i in range(len(id2label))]
    if model_labels != list(label_names):
        raise ValueError(f"{source}: the model's labels {model_labels} differ from the data's {label_names}")


def run_trial(cfg: TrialConfig, log: Log = print) -> TrialResult:
    """Prune `teacher_dir` to `pruning_ratio`, train with distillation at `precision`, measure, save."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    numerics = cpu_numerics()
    device = resolve_device(cfg.training.device)
    if reason := unsupported_reason(cfg.precision, device):
        raise ValueError(f"precision {cfg.precision} on {device}: {reason}")
    torch.manual_seed(cfg.training.seed)
    student, tokenizer = load_pruned(cfg.teacher_dir)
    loaded, encoded = load_and_encode(cfg.data, cfg.data_base_dir, tokenizer,
                                      max_seq_len=cfg.training.max_seq_len, cache_dir=cfg.cache_dir)
    _check_labels(student, loaded.label_names, cfg.teacher_dir)
    timings["load_s"] = time.perf_counter() - t0

    teacher_logits, live_teacher = None, None
    if cfg.distill_alpha > 0:
        if cfg.teacher_logits is not None:
            teacher_logits = load_teacher_logits(cfg.teacher_logits, len(loaded.splits["train"]))
        else:
            live_teacher, _ = load_pruned(cfg.teacher_dir)
            log("distillation: no cached teacher logits given; running the teacher forward on every batch")

    pruner = make_pruner(student, cfg.pruning_ratio, cfg.pruning)
    calib = list(itertools.islice(batches(encoded["train"], cfg.training.batch_size, shuffle=True, seed=cfg.training.seed), 8))
    pruner.prepare(student, calib)
    precision = train_precision(cfg.precision)
    t1 = time.perf_counter()
    with track_memory("train", device, sample_interval_s=0.05) as mem_train, \
            track_emissions("train", cfg.measure) as em_train:
        stats = train(
            student, encoded["train"], cfg.training, device=device, precision=precision,
            alpha=cfg.distill_alpha, temperature=cfg.distill_temperature,
            teacher_logits=teacher_logits, teacher=live_teacher, pruner=pruner,
            score_lr=cfg.pruning.scores_lr, val_split=encoded["validation"] if len(loaded.splits["validation"]) else None,
            log=log,
        )
        plan = pruner.finalize(student)
        if plan.refilled:
            # Hybrid filled: the restored blocks change the function, so the kept heads retrain briefly.
            log("hybrid filled: retraining 1 epoch after restoring partially pruned heads")
            train(student, encoded["train"], cfg.training.model_copy(update={"epochs": 1}), device=device,
                  precision=precision, alpha=cfg.distill_alpha, temperature=cfg.distill_temperature,
                  teacher_logits=teacher_logits, teacher=live_teacher, log=log)
    timings["train_s"] = time.perf_counter() - t1
    student.to("cpu").eval()
    del live_teacher

    model_dir = None
    if cfg.save_model:
        model_dir = cfg.output_dir / "model"
        save_student(student, tokenizer, plan, model_dir, precision=cfg.precision, validation=encoded["validation"],
                     batch_size=cfg.training.eval_batch_size, threads=cfg.measure.resolved_threads(), onnx=cfg.export_onnx)
        (model_dir / COMPRESSION_FILE).write_text(json.dumps(_compression(cfg), indent=2))

    t2 = time.perf_counter()
    # Parallel trials on one machine would slow each other's timings; measuring takes turns.
    with FileLock(str(cfg.measure_lock)) if cfg.measure_lock else contextlib.nullcontext():
        timings["measure_wait_s"] = time.perf_counter() - t2
        if model_dir is not None:
            measured = measure_fresh(model_dir, cfg.data, cfg.data_base_dir, cfg.measure,
                                     max_seq_len=cfg.training.max_seq_len, cache_dir=cfg.cache_dir,
                                     batch_size=cfg.training.eval_batch_size, log_path=cfg.output_dir / "measure.log")
        else:  # nothing saved to load: measured in this (trained-in) process, and tagged so
            in_process = measure_student(student, encoded["test"], cfg.measure, precision=cfg.precision,
                                         num_labels=loaded.num_labels, batch_size=cfg.training.eval_batch_size)
            measured = MeasureResult(precision=cfg.precision, metrics=in_process.metrics,
                                     tags={**in_process.tags, "measure_process": "the training process"},
                                     per_class_f1={loaded.label_names[int(i)]: float(v) for i, v in in_process.per_class_f1.items()})
    timings["measure_s"] = time.perf_counter() - t2 - timings["measure_wait_s"]

    metrics = dict(measured.metrics)
    metrics.update(mem_train.metrics())
    metrics.update(em_train.metrics())
    metrics["train_seconds"] = stats.seconds
    metrics["train_steps"] = float(stats.steps)
    metrics["train_loss_final"] = stats.final_loss
    if stats.val_accuracy:
        metrics["val_accuracy"] = stats.val_accuracy[-1]
    summary = pruning_summary(student, plan)
    for key in ("target_ratio", "achieved_ratio", "params_total_before", "params_total_after",
                "params_encoder_before", "params_encoder_after"):
        metrics[f"pruning_{key}"] = float(summary[key])
    for i, (heads, ffn) in enumerate(zip(summary["heads_per_layer"], summary["ffn_per_layer"])):
        metrics[f"pruning_heads_layer{i}"] = float(heads)
        metrics[f"pruning_ffn_width_layer{i}"] = float(ffn)
    for phase in ("train", "infer"):
        if f"energy_kwh_{phase}" not in metrics:
            break
    else:
        metrics["energy_kwh"] = metrics["energy_kwh_train"] + metrics["energy_kwh_infer"]
        metrics["emissions_kg_co2e"] = metrics["emissions_kg_co2e_train"] + metrics["emissions_kg_co2e_infer"]

    tags = {**measured.tags, **mem_train.tags(), **em_train.tags(),
            "precision_train": precision, "precision_measured": cfg.precision,
            "pruning_method": cfg.pruning.method, **numerics, "emissions_scope_total": "emissions_kg_co2e = train + infer phases"}
    result = TrialResult(
        metrics=metrics, tags=tags,
        params={"pruning_ratio": cfg.pruning_ratio, "distill_temperature": cfg.distill_temperature,
                "distill_alpha": cfg.distill_alpha, "precision": cfg.precision},
        per_class_f1=measured.per_class_f1,
        pruning=summary, model_dir=str(model_dir) if model_dir else None, timings=timings,
    )
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "result.json").write_text(result.model_dump_json(indent=2))
    return result


def _compression(cfg: TrialConfig) -> dict:
    return {"precision": cfg.precision, "runtime": cfg.runtime, "pruning_ratio": cfg.pruning_ratio, "pruning_method": cfg.pruning.method,
            "distill_alpha": cfg.distill_alpha, "distill_temperature": cfg.distill_temperature}


def measure_student(model, test_split, measure_cfg: MeasureConfig, *, precision: str, num_labels: int,
                    batch_size: int, model_dir: Path | None = None):
    """The one measuring path for trials, the baseline and `sweep measure`."""
    device = resolve_device(measure_cfg.device)
    if precision == "int8":
        device = "cpu"
        measure_cfg = measure_cfg.model_copy(update={"device": "cpu"})
    cpu_numerics()
    deployed = for_inference(model, precision)
    test_batches = list(batches(test_split, batch_size, shuffle=False))
    return measure_model(deployed, test_batches=test_batches, num_labels=num_labels, cfg=measure_cfg,
                         autocast=autocast(precision, device), model_dir=model_dir)


def measure_saved(model_dir: str | Path, data_cfg, data_base_dir: Path, measure_cfg: MeasureConfig, *,
                  max_seq_len: int, cache_dir: Path, batch_size: int = 64, precision: str | None = None):
    """Measure any saved model folder (a teacher, an exported student) exactly like a trial does."""
    model, tokenizer = load_pruned(model_dir)
    compression = Path(model_dir) / COMPRESSION_FILE
    if precision is None:
        precision = json.loads(compression.read_text())["precision"] if compression.exists() else "fp32"
    loaded, encoded = load_and_encode(data_cfg, data_base_dir, tokenizer, max_seq_len=max_seq_len, cache_dir=cache_dir)
    _check_labels(model, loaded.label_names, str(model_dir))
    measured = measure_student(model, encoded["test"], measure_cfg, precision=precision,
                               num_labels=loaded.num_labels, batch_size=batch_size, model_dir=model_dir)
    per_class = {loaded.label_names[int(i)]: float(v) for i, v in measured.per_class_f1.items()}
    return measured, per_class, precision


def measure_fresh(model_dir: Path, data_cfg, data_base_dir: Path, measure_cfg: MeasureConfig, *, max_seq_len: int,
                  cache_dir: Path, batch_size: int, precision: str | None = None, log_path: Path | None = None) -> MeasureResult:
    """`measure_saved` in a new process: the trained-in process holds training's memory, so its peak RSS
    would charge a student for its own training; a fresh process sees only what deployment would."""
    job = MeasureJob(model_dir=model_dir, data=data_cfg, data_base_dir=data_base_dir, measure=measure_cfg,
                     max_seq_len=max_seq_len, cache_dir=cache_dir, batch_size=batch_size, precision=precision)
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(job.model_dump_json())
        with open(log_path or os.devnull, "ab") as log:
            code = subprocess.call([sys.executable, "-m", "trainers.worker", "measure", str(job_path), str(result_path)],
                                   stdout=log, stderr=subprocess.STDOUT)
        result = MeasureResult.model_validate_json(result_path.read_text()) if result_path.exists() else None
    if code != 0 or result is None or not result.ok:
        why = result.error if result is not None and result.error else f"exit code {code}"
        raise RuntimeError(f"measuring {model_dir} failed: {why}" + (f" (log: {log_path})" if log_path else ""))
    result.tags["measure_process"] = "a fresh process that loaded the saved model (as `sweep measure` does)"
    return result
