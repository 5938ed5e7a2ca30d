"""One trial as a plain function of its config: prune and distil a student, then measure it.

No Optuna, no MLflow: `run_trial(config)` returns numbers and writes a model folder, so a trial
can be run, tested and debugged on its own (`sweep trial config.yaml`). Measuring lives in
`trainers.measuring` (the saved student is measured in a fresh process).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Callable

import torch
from filelock import FileLock

from trainers.config import TrialConfig
from trainers.deploy.student import link_onnx, save_student, shared_onnx
from trainers.inputs import check_labels, load_and_encode
from trainers.jobs import MeasureResult, TrialResult
from trainers import metrics as M
from trainers.measure import predictions as P
from trainers.measuring import COMPRESSION_FILE, label_scores, measure_in_fresh_process, measure_in_memory, score_in_memory
from trainers.precision import cpu_numerics, resolve_device, train_precision, unsupported_reason
from trainers.pruning import load_pruned
from trainers.seeds import median_index, seed_metrics
from trainers.student_training import train_student

Log = Callable[[str], None]


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
    check_labels(student, loaded.label_names, cfg.teacher_dir)
    timings["load_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    seeds = [cfg.training.seed + i for i in range(cfg.training.seeds)]
    trainings, per_seed, per_seed_rows = [], [], []
    exported_keys: set[str] = set()  # the shared trainings whose ONNX graphs this trial exported
    for i, seed in enumerate(seeds):
        seed_cfg = cfg if i == 0 else cfg.model_copy(update={"training": cfg.training.model_copy(update={"seed": seed})})
        if i > 0:
            torch.manual_seed(seed)
            student, _ = load_pruned(cfg.teacher_dir)
            log(f"seed {seed} ({i + 1} of {len(seeds)})")
        trained = train_student(seed_cfg, student, tokenizer, loaded, encoded, device=device, log=log)
        trainings.append(trained)
        if trained.stopped_early:
            break
        onnx_dir = _shared_graphs(cfg, trained, encoded, timings, exported_keys)
        if len(seeds) > 1:  # quality of every seed's model, in its deployed runtime; the rest is measured once, on the kept one
            scores, rows = score_in_memory(trained.student, encoded, precision=cfg.precision, num_labels=loaded.num_labels,
                                           batch_size=cfg.training.eval_batch_size, device=device, runtime=cfg.runtime,
                                           threads=cfg.measure.resolved_threads(),
                                           onnx_dir=onnx_dir if cfg.runtime == "onnxruntime" else None)
            per_seed.append(scores)
            per_seed_rows.append(rows)
    timings["train_s"] = time.perf_counter() - t1 - timings.get("onnx_export_s", 0.0)  # the seeds' exports apart
    kept = _kept_seed(per_seed) if len(per_seed) == len(seeds) > 1 else 0
    trained = trainings[kept] if not trainings[-1].stopped_early else trainings[-1]
    stats = trained.stats
    training_metrics = {**_training_cost([t.metrics for t in trainings]),
                        # all seeds, each with its hybrid-filled retraining (a training cached before it was counted: 0)
                        "train_seconds": sum(t.stats["seconds"] + t.stats.get("refill_seconds", 0.0) for t in trainings),
                        M.TRAIN_STEPS: float(sum(t.stats["steps"] + t.stats.get("refill_steps", 0) for t in trainings)),
                        M.TRAININGS_RUN: float(sum(t.reused_from is None for t in trainings)),
                        M.TRAIN_STEPS_PLANNED: float((stats["total_steps"] + stats.get("refill_steps_planned", 0)) * len(seeds)),
                        "train_loss_final": stats["final_loss"]}
    if stats["val_accuracy"]:  # during training, at the training precision; val_accuracy is the deployed model's
        training_metrics["train_val_accuracy_last_epoch"] = stats["val_accuracy"][-1]
    precision = train_precision(cfg.precision)
    seed_tags = _seed_tags(seeds, kept, per_seed)
    shared = {"training_key": trained.key, "reused_training_of": trained.reused_from}
    if trained.stopped_early:  # pruned on request: what it spent so far, nothing measured
        result = TrialResult(metrics=training_metrics, tags={**trained.tags, **seed_tags, "precision_train": precision, **numerics},
                             params=_params(cfg), pruned=True, timings=timings, **shared)
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
        (cfg.output_dir / "result.json").write_text(result.model_dump_json(indent=2))
        log(f"stopped early at step {stats['stopped_at_step']} of {stats['total_steps']} (pruned)")
        return result
    student, plan = trained.student, trained.plan

    model_dir, onnx_tags, linked = None, {}, False
    if cfg.save_model:
        model_dir = cfg.output_dir / "model"
        t_save, exports_before = time.perf_counter(), timings.get("onnx_export_s", 0.0)
        linked = cfg.export_onnx and cfg.trainings_dir is not None and trained.key is not None
        save_student(student, tokenizer, plan, model_dir, precision=cfg.precision, validation=encoded["validation"],
                     batch_size=cfg.training.eval_batch_size, threads=cfg.measure.resolved_threads(),
                     onnx=cfg.export_onnx and not linked)
        if linked:  # exported once per training, beside it (above, here, or by an earlier trial); every variant links them
            link_onnx(_shared_graphs(cfg, trained, encoded, timings, exported_keys, needed=True), model_dir)
        (model_dir / COMPRESSION_FILE).write_text(json.dumps(_compression(cfg), indent=2))
        phase = "onnx_export_s" if cfg.export_onnx and not linked else "save_s"
        spent = time.perf_counter() - t_save - (timings.get("onnx_export_s", 0.0) - exports_before)
        timings[phase] = timings.get(phase, 0.0) + spent
    if trained.key in exported_keys:
        onnx_tags["onnx_export"] = f"exported by this trial for training {trained.key}" + (
            "" if cfg.runtime == "onnxruntime" else ", for the sweep's ONNX Runtime variants of it")
    elif linked:
        onnx_tags["onnx_export"] = f"reused: exported once for training {trained.key} by an earlier trial"

    t2 = time.perf_counter()
    kept_file = cfg.output_dir / ("kept-" + P.PREDICTIONS_FILE)
    # Parallel trials on one machine would slow each other's timings; measuring takes turns.
    with FileLock(str(cfg.measure_lock)) if cfg.measure_lock else contextlib.nullcontext():
        timings["measure_wait_s"] = time.perf_counter() - t2
        if model_dir is not None:
            measured = measure_in_fresh_process(model_dir, cfg.data, cfg.data_base_dir, cfg.measure,
                                     max_seq_len=cfg.training.max_seq_len, cache_dir=cfg.cache_dir,
                                     batch_size=cfg.training.eval_batch_size, log_path=cfg.output_dir / "measure.log",
                                     predictions_out=kept_file)
            kept_rows = P.load(kept_file).splits
            kept_file.unlink(missing_ok=True)
        else:  # nothing saved to load: measured in this (trained-in) process, and tagged so
            in_process = measure_in_memory(student, encoded["test"], cfg.measure, precision=cfg.precision,
                                           num_labels=loaded.num_labels, batch_size=cfg.training.eval_batch_size,
                                           val_split=encoded["validation"])
            measured = MeasureResult(precision=cfg.precision, metrics=in_process.metrics, timings=in_process.timings,
                                     tags={**in_process.tags, "measure_process": "the training process"},
                                     per_class_f1=label_scores(in_process.per_class_f1, loaded.label_names),
                                     val_per_class_f1=label_scores(in_process.val_per_class_f1, loaded.label_names))
            kept_rows = {k: P.rows_of(*v) for k, v in in_process.rows.items()}
    timings["measure_s"] = time.perf_counter() - t2 - timings["measure_wait_s"]
    timings.update({f"measure_{phase}": s for phase, s in measured.timings.items()})  # where measuring's time went

    # The kept seed's quality and rows are the saved model's own, as the measuring run scored it (in its runtime).
    if per_seed:
        per_seed[kept] = {k: measured.metrics[k] for k in M.SEEDED if k in measured.metrics}
        per_seed_rows[kept] = kept_rows
    predictions = P.save(cfg.output_dir / P.PREDICTIONS_FILE,
                         P.stack(per_seed_rows or [kept_rows], seeds[:max(1, len(per_seed_rows))], kept))
    # Quality: the mean over the seeds under the plain names (+ _std, _ci95, _seed<i>); the rest: the kept seed's model.
    metrics = {**measured.metrics, **training_metrics, **seed_metrics(per_seed)}
    summary = trained.summary
    for key in ("target_ratio", "achieved_ratio", "params_total_before", "params_total_after",
                "params_encoder_before", "params_encoder_after"):
        metrics[f"pruning_{key}"] = float(summary[key])
    for i, (heads, ffn) in enumerate(zip(summary["heads_per_layer"], summary["ffn_per_layer"])):
        metrics[f"pruning_heads_layer{i}"] = float(heads)
        metrics[f"pruning_ffn_width_layer{i}"] = float(ffn)

    tags = {**measured.tags, **trained.tags, **seed_tags, **onnx_tags,
            "precision_train": precision, "precision_measured": cfg.precision,
            "pruning_method": cfg.pruning.method, **numerics}
    result = TrialResult(
        metrics=metrics, tags=tags,
        params=_params(cfg), per_class_f1=measured.per_class_f1, val_per_class_f1=measured.val_per_class_f1,
        pruning=summary, model_dir=str(model_dir) if model_dir else None, predictions=str(predictions), timings=timings,
        **shared,
    )
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    (cfg.output_dir / "result.json").write_text(result.model_dump_json(indent=2))
    return result


def _shared_graphs(cfg: TrialConfig, trained, encoded: dict, timings: dict[str, float], exported_keys: set[str], *,
                   needed: bool = False):
    """The ONNX graphs of this seed's shared training (`shared_onnx`: exported once, by whoever comes first), or
    None when nothing here needs them (`needed`: the saved folder links them). An ONNX Runtime variant needs
    them; with `onnx_variants` the trial that trains exports them at once, so the variants that follow only link
    them. The seconds exporting go to `onnx_export_s`; the trainings exported here to `exported_keys`."""
    if cfg.trainings_dir is None or not trained.key:
        return None
    ort_variant = cfg.runtime == "onnxruntime" and cfg.export_onnx
    if not (needed or ort_variant or (cfg.onnx_variants and trained.reused_from is None)):
        return None
    t0 = time.perf_counter()
    onnx_dir, exported_now = shared_onnx(cfg.trainings_dir, trained.key, trained.student, validation=encoded["validation"],
                                         batch_size=cfg.training.eval_batch_size, threads=cfg.measure.resolved_threads())
    if exported_now:
        timings["onnx_export_s"] = timings.get("onnx_export_s", 0.0) + time.perf_counter() - t0
        exported_keys.add(trained.key)
    return onnx_dir


def _kept_seed(per_seed: list[dict[str, float]]) -> int:
    """The seed whose model is measured and saved: the median validation accuracy (representative, not cherry-picked)."""
    if not all(M.VAL_ACCURACY in s for s in per_seed):
        return 0
    return median_index([s[M.VAL_ACCURACY] for s in per_seed])


def _seed_tags(seeds: list[int], kept: int, per_seed: list[dict[str, float]]) -> dict[str, str]:
    if len(seeds) == 1:
        return {"seeds": str(seeds[0]), "seed_kept": str(seeds[0]), "seed_kept_reason": "one seed"}
    why = (f"median validation accuracy of {len(seeds)} seeds (the lower median for an even count): representative, "
           "not the best" if per_seed and all(M.VAL_ACCURACY in s for s in per_seed) else "no validation split: the first seed")
    return {"seeds": ",".join(map(str, seeds)), "seed_kept": str(seeds[kept]), "seed_kept_index": str(kept),
            "seed_kept_reason": why,
            "seeds_scope": (f"val_*/test_* accuracy and macro F1: mean over {len(seeds)} seeds (+ _std, _ci95 = 95 % t-interval "
                            "half-width, _seed<i>), each seed's model scored in its deployed runtime at the deployed "
                            "precision (the kept seed's: the saved folder, by the measuring process); latency, "
                            "memory, energy, size: the kept seed's model only; training energy and seconds: all seeds summed")}


def _training_cost(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """The training cost of a point: energy and emissions summed over its seed trainings, memory the largest."""
    out: dict[str, float] = {}
    for metrics in per_seed:
        for name, value in metrics.items():
            additive = name.startswith(("energy_", "emissions_"))
            out[name] = out.get(name, 0.0) + value if additive else max(out.get(name, value), value)
    return out


def _params(cfg: TrialConfig) -> dict:
    return {"pruning_ratio": cfg.pruning_ratio, "distill_temperature": cfg.distill_temperature,
            "distill_alpha": cfg.distill_alpha, "precision": cfg.precision, "runtime": cfg.runtime}


def _compression(cfg: TrialConfig) -> dict:
    return {"precision": cfg.precision, "runtime": cfg.runtime, "pruning_ratio": cfg.pruning_ratio, "pruning_method": cfg.pruning.method,
            "distill_alpha": cfg.distill_alpha, "distill_temperature": cfg.distill_temperature}
