"""Measuring a model, three ways that share one code path (`trainers.measure.measure_model`).

- `measure_in_memory(model, ...)`: a model object already loaded in this process.
- `measure_saved_folder(model_dir, ...)`: load a saved model folder here, then measure it.
- `measure_in_fresh_process(model_dir, ...)`: `measure_saved_folder` in a new Python process
  (`python -m trainers.entry measure`), so that peak memory sees only what deployment would. Trials,
  the teacher baseline and `sweep measure` all use this one.

Quality is measured on the validation split (`val_*`, decides) and the test split (`test_*`, reports).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainers import metrics as M
from trainers.forkserver import ENV as FORKSERVER_ENV, ForkedJob
from trainers.inputs import check_labels, load_and_encode
from trainers.jobs import MeasureJob, MeasureResult
from trainers.measure import MeasureConfig, measure_model
from trainers.precision import autocast, cpu_numerics, for_inference, resolve_device
from trainers.pruning import load_pruned
from trainers.train import batches

COMPRESSION_FILE = "compression.json"  # how a saved student is meant to run (its deployment precision)


def measure_in_memory(model, test_split, measure_cfg: MeasureConfig, *, precision: str, num_labels: int,
                      batch_size: int, val_split=None, model_dir: Path | None = None):
    """Measure a model object of this process at its deployed `precision`."""
    device = resolve_device(measure_cfg.device)
    if precision == "int8":
        device = "cpu"
        measure_cfg = measure_cfg.model_copy(update={"device": "cpu"})
    cpu_numerics()
    deployed = for_inference(model, precision)
    test_batches = list(batches(test_split, batch_size, shuffle=False))
    val_batches = list(batches(val_split, batch_size, shuffle=False)) if _rows(val_split) else None
    return measure_model(deployed, test_batches=test_batches, val_batches=val_batches, num_labels=num_labels,
                         cfg=measure_cfg, autocast=autocast(precision, device), model_dir=model_dir)


def score_in_memory(model, encoded: dict, *, precision: str, num_labels: int, batch_size: int,
                    device: str = "cpu", runtime: str = "torch", threads: int | None = None,
                    onnx_dir: Path | None = None):
    """Quality only (val_* and test_*) and the per-row predictions behind it, in the deployed `runtime` at the
    deployed `precision`: the cheap per-seed measurement (latency, memory and energy are measured once).

    torch: a copy when deploying changes the model (int8 quantises in place). onnxruntime: the model exported to
    ONNX in a scratch folder (and quantised by ONNX Runtime for int8), exactly as a saved student's graph is,
    and scored by an ONNX Runtime session with `threads` intra-op threads; with `onnx_dir` (the graphs exported
    once for this model's training, `trainers.deploy.student.shared_onnx`) those files are scored instead.
    """
    import tempfile

    from trainers.measure.accuracy import evaluate_rows
    from trainers.measure.predictions import rows_of

    out: dict[str, float] = {}
    per_row = {}
    with tempfile.TemporaryDirectory(prefix="score-") as tmp:
        if runtime == "onnxruntime":
            from trainers.deploy.onnx_export import ONNX_FILE, ONNX_INT8_FILE, export_onnx, quantise_onnx_int8
            from trainers.deploy.session import OrtClassifier

            if onnx_dir is not None:
                path = Path(onnx_dir) / (ONNX_INT8_FILE if precision == "int8" else ONNX_FILE)
            else:
                path = export_onnx(copy.deepcopy(model).float().to("cpu").eval(), Path(tmp) / ONNX_FILE)
                if precision == "int8":
                    path = quantise_onnx_int8(path, Path(tmp) / ONNX_INT8_FILE)
            deployed, device, context = OrtClassifier(path, model.config, threads=threads), "cpu", None
        else:
            if precision == "int8":
                device = "cpu"
            deployed = for_inference(copy.deepcopy(model) if precision == "int8" else model, precision).to(device)
            context = autocast(precision, device)
        for split, (acc, f1) in (("validation", (M.VAL_ACCURACY, M.VAL_MACRO_F1)), ("test", (M.TEST_ACCURACY, M.TEST_MACRO_F1))):
            if not _rows(encoded.get(split)):
                continue
            kwargs = {"autocast": context} if context is not None else {}
            scores, (gold, logits) = evaluate_rows(deployed, list(batches(encoded[split], batch_size, shuffle=False)),
                                                   num_labels=num_labels, device=device, **kwargs)
            out[acc], out[f1] = scores["accuracy"], scores["macro_f1"]
            per_row[SPLIT_PREFIX[split]] = rows_of(gold, logits)
    return out, per_row


SPLIT_PREFIX = {"validation": "val", "test": "test"}


def _rows(split) -> int:
    return 0 if split is None else int(len(split["labels"])) if "labels" in split else 0


def label_scores(per_class: dict, label_names: list[str]) -> dict[str, float]:
    return {label_names[int(i)]: float(v) for i, v in per_class.items()}


def measure_saved_folder(model_dir: str | Path, data_cfg, data_base_dir: Path, measure_cfg: MeasureConfig, *,
                         max_seq_len: int, cache_dir: Path, batch_size: int = 64,
                         precision: str | None = None, runtime: str | None = None,
                         predictions_out: Path | None = None) -> MeasureResult:
    """Load a saved model folder (a teacher, a student, an export) in this process and measure it, served by
    `runtime` (default: what its compression.json says, else torch) at `precision` (likewise, else fp32);
    with `predictions_out`, its per-row predictions go there (trainers.measure.predictions)."""
    t0 = time.perf_counter()
    model, tokenizer = load_pruned(model_dir)
    compression = Path(model_dir) / COMPRESSION_FILE
    saved = json.loads(compression.read_text()) if compression.exists() else {}
    precision = precision or saved.get("precision", "fp32")
    runtime = runtime or saved.get("runtime", "torch")
    loaded, encoded = load_and_encode(data_cfg, data_base_dir, tokenizer, max_seq_len=max_seq_len, cache_dir=cache_dir)
    check_labels(model, loaded.label_names, str(model_dir))
    load_s = time.perf_counter() - t0
    if runtime == "torch":
        measured = measure_in_memory(model, encoded["test"], measure_cfg, precision=precision,
                                     num_labels=loaded.num_labels, batch_size=batch_size,
                                     val_split=encoded.get("validation"), model_dir=model_dir)
    else:
        measured = _measure_onnxruntime(model, Path(model_dir), encoded, measure_cfg, precision=precision,
                                        num_labels=loaded.num_labels, batch_size=batch_size)
    measured.tags["runtime"] = runtime
    if predictions_out is not None:
        from trainers.measure.predictions import Predictions, rows_of, save

        save(predictions_out, Predictions({k: rows_of(*v) for k, v in measured.rows.items()}))
    return MeasureResult(precision=precision, metrics=measured.metrics, tags=measured.tags,
                         per_class_f1=label_scores(measured.per_class_f1, loaded.label_names),
                         val_per_class_f1=label_scores(measured.val_per_class_f1, loaded.label_names),
                         timings={"load_s": load_s, **measured.timings})


def _measure_onnxruntime(torch_model, model_dir: Path, encoded: dict, measure_cfg: MeasureConfig, *, precision: str,
                         num_labels: int, batch_size: int):
    """The folder's ONNX graph (model.onnx, or model.int8.onnx quantised by ONNX Runtime) measured by the same
    harness with the same threads. What the harness cannot see inside ONNX Runtime is taken from elsewhere
    and tagged: parameter counts from the torch model, disk size from the .onnx file served, and the
    activation peak from the process RSS increase over the measured forwards (ONNX Runtime allocates
    outside torch's allocator)."""
    from trainers.deploy.inference import load_for_inference, onnx_path
    from trainers.measure.memory import MIB, count_parameters, encoder_linear_params

    cfg = measure_cfg.model_copy(update={"device": "cpu"})
    t0 = time.perf_counter()
    session = load_for_inference(model_dir, precision, "onnxruntime", threads=cfg.resolved_threads())
    session_s = time.perf_counter() - t0  # ONNX Runtime's graph load and optimisation
    cpu_numerics()
    measured = measure_model(session, test_batches=list(batches(encoded["test"], batch_size, shuffle=False)),
                             val_batches=list(batches(encoded["validation"], batch_size, shuffle=False))
                             if _rows(encoded.get("validation")) else None, num_labels=num_labels, cfg=cfg)
    m, served = measured.metrics, onnx_path(model_dir, precision)
    m["params_total"], m["params_encoder"] = float(count_parameters(torch_model)), float(encoder_linear_params(torch_model))
    m[M.MODEL_DISK] = served.stat().st_size / MIB
    m[M.MEMORY_ACTIVATIONS] = m.get("memory_process_rss_increase_mb_infer", 0.0)
    m[M.MEMORY_MODEL] = m[M.MEMORY_WEIGHTS] + m[M.MEMORY_ACTIVATIONS]
    measured.tags.update({
        "model_disk_mb": f"size of {served.name}, the ONNX graph ONNX Runtime serves, MiB",
        "memory_activations_method": "ONNX Runtime: peak RSS increase of the measuring process over the warm-up and "
                                     "timed forwards (its arena is outside torch's allocator)",
        "params_total": "counted on the torch model the ONNX graph was exported from",
    })
    measured.timings["session_s"] = session_s
    return measured


def measure_in_fresh_process(model_dir: Path, data_cfg, data_base_dir: Path, measure_cfg: MeasureConfig, *,
                             max_seq_len: int, cache_dir: Path, batch_size: int, precision: str | None = None,
                             runtime: str | None = None, log_path: Path | None = None,
                             predictions_out: Path | None = None) -> MeasureResult:
    """`measure_saved_folder` in a new process: the trained-in process holds training's memory, so its peak RSS
    would charge a student for its own training; a fresh process sees only what deployment would."""
    job = MeasureJob(model_dir=model_dir, data=data_cfg, data_base_dir=data_base_dir, measure=measure_cfg,
                     max_seq_len=max_seq_len, cache_dir=cache_dir, batch_size=batch_size, precision=precision,
                     runtime=runtime, predictions_out=predictions_out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(job.model_dump_json())
        argv = ["measure", str(job_path), str(result_path)]
        server = os.environ.get(FORKSERVER_ENV)
        forked = bool(server) and Path(server).exists()
        if forked:  # a fork of the warm server: imports done, nothing loaded (trainers/forkserver.py)
            code = ForkedJob(server, argv, log_path or os.devnull).wait()
        else:
            with open(log_path or os.devnull, "ab") as log:
                code = subprocess.call([sys.executable, "-m", "trainers.entry", *argv], stdout=log, stderr=subprocess.STDOUT)
        result = MeasureResult.model_validate_json(result_path.read_text()) if result_path.exists() else None
    if code != 0 or result is None or not result.ok:
        why = result.error if result is not None and result.error else f"exit code {code}"
        raise RuntimeError(f"measuring {model_dir} failed: {why}" + (f" (log: {log_path})" if log_path else ""))
    result.tags["measure_process"] = ("a fresh process that loaded the saved model (as `sweep measure` does)"
                                      + (", forked from the warm server before it loaded anything" if forked else ""))
    # what the phases do not cover: the process's start and imports, and writing its result
    result.timings["process_s"] = time.perf_counter() - started - sum(result.timings.values())
    return result
