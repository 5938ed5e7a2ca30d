"""The teacher baseline on the same hardware as each trial: one measurement per measurement context.

A measurement context (`trainers.measure.context.measurement_context`) is the host's CPU model (and GPU
model for GPU measurements), the device and the thread count. On a CUDA host, int8 and ONNX Runtime
trials are measured on the CPU and the others on the GPU; on a cluster, each host has its own CPU/GPU.
`ensure_baselines` measures the teacher in every context this worker's trials will be measured in, and a
trial is divided by the teacher of its own context (`compared_baseline`); the older per-thread-count
baselines below remain the fallback for studies recorded before contexts.

With `--workers N` on CPU, each executor's trials run on a share of the cores; the teacher measured
on every core would make every speedup compare different hardware. `ensure_baselines` measures the
teacher once per distinct thread count of this worker's placements (in a child process on that
placement, exactly as a trial's model is measured) and caches it on the study record, so every
worker and every later `sweep pareto` compares a trial with the teacher of its own thread count
(`pareto.baseline_for`).
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

from orchestrator.child_process import Placement, run_job, tail
from orchestrator.context import Context, Log, work_dir
from orchestrator.record import set_study, study_record
from orchestrator.tracking import FINISHED
from trainers import metrics as M
from trainers.jobs import MeasureJob, MeasureResult
from trainers.measure.predictions import PREDICTIONS_FILE
from trainers.measure.context import context_of, measured_device, measurement_context

THREADS_TAG = "measure_threads"  # written by trainers.measure.measure_model: the torch threads it measured with


def measured_threads(tags: dict[str, str]) -> int | None:
    try:
        return int(tags[THREADS_TAG])
    except (KeyError, ValueError):
        return None


def placement_threads(placement: Placement, configured: int | None) -> int:
    """The threads a trial on `placement` measures with: the sweep's `measure.threads`, else its cores."""
    return configured if configured is not None else len(placement.cores)


def baseline_tags(baseline_threads: int | None, trial_threads: int) -> dict[str, str]:
    """What a trial's run records about the teacher it was compared with."""
    if baseline_threads is not None:
        return {"sweep.baseline_threads": str(baseline_threads),
                "sweep.baseline": f"the teacher measured on {baseline_threads} thread(s), as this trial was"}
    return {"sweep.baseline_threads": "all cores (default)",
            "sweep.baseline": f"no teacher measured on {trial_threads} thread(s): compared with the default baseline"}


def load_baselines(ctx: Context) -> dict[int, dict[str, float]]:
    record = study_record(ctx.study)
    ctx.baselines_by_context.update(record.baselines_by_context)
    return {int(k): v for k, v in record.baselines_by_threads.items()}


def remember_baseline(ctx: Context, threads: int | None, metrics: dict[str, float], run_id: str,
                      context: str | None = None) -> None:
    """Add one teacher measurement to the study record, under its thread count (when it was measured on the
    sweep's default device) and its measurement context (read-merge-write under the locks)."""
    with ctx.locked():
        record = study_record(ctx.study)
        update: dict = {}
        if threads is not None:
            update.update(baselines_by_threads={**record.baselines_by_threads, str(threads): dict(metrics)},
                          baseline_run_ids_by_threads={**record.baseline_run_ids_by_threads, str(threads): run_id})
        if context is not None:
            update.update(baselines_by_context={**record.baselines_by_context, context: dict(metrics)},
                          baseline_run_ids_by_context={**record.baseline_run_ids_by_context, context: run_id})
        set_study(ctx.study, **update)
    if threads is not None:
        ctx.baselines[threads] = dict(metrics)
    if context is not None:
        ctx.baselines_by_context[context] = dict(metrics)


def compared_baseline(by_context: dict[str, dict[str, float]], context: str | None, by_threads: dict[int, dict[str, float]],
                      threads: int | None, default: dict[str, float]) -> tuple[str | None, int | None, dict[str, float]]:
    """(baseline context, baseline threads, baseline metrics) a trial measured in `context` is divided by: the
    teacher of the same context; else (a study from before contexts) the one of the same thread count."""
    if context is not None and context in by_context:
        return context, threads, by_context[context]
    from orchestrator.pareto import baseline_for

    compared_threads, baseline = baseline_for(by_threads, threads, default)
    return None, compared_threads, baseline


def context_tags(trial_context: str | None, baseline_context: str | None) -> dict[str, str]:
    """Where the trial was measured and which teacher it was divided by (a cluster's per-host key)."""
    tags = {"sweep.measurement_context": trial_context or "unknown"}
    if baseline_context is not None:
        tags["sweep.baseline_context"] = baseline_context
        tags["sweep.baseline"] = f"the teacher measured in the same context ({baseline_context})"
    else:
        tags["sweep.baseline_context"] = "none"
    return tags


def placement_contexts(placement: Placement, threads: int, devices: set[str], *, cpu_model: str,
                       gpu_model: str | None) -> dict[str, str]:
    """{context: device} a trial on `placement` can be measured in (one per device its points measure on)."""
    out = {}
    for device in sorted(devices):
        kind = "cuda" if device.startswith("cuda") else "cpu"
        out[measurement_context(device=kind, threads=threads, cpu_model=cpu_model,
                                gpu_model=gpu_model if kind == "cuda" else None)] = kind
    return out


def sweep_devices(ctx: Context) -> set[str]:
    """The devices the points of this sweep are measured on (`measured_device` of each precision/runtime)."""
    from trainers.precision import resolve_device

    space = ctx.spec.search_space
    measure_device = resolve_device(ctx.spec.measure.device)
    return {measured_device(p, r, measure_device) for p in space.precision for r in space.runtime}


def _local_hardware(placement: Placement) -> tuple[str, str | None]:
    from trainers.measure.hardware import _cpu_model

    gpu = None
    if placement.gpu is not None:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(int(str(placement.gpu).split(",")[0]))
    return _cpu_model(), gpu


def ensure_baselines(ctx: Context, placements: Sequence[Placement], log: Log,
                     hardware=_local_hardware) -> dict[int, dict[str, float]]:
    """The teacher measured in every measurement context these placements' trials are measured in (measured now
    when missing); `hardware(placement) -> (cpu model, gpu model)` says what a placement runs on."""
    ctx.baselines.update(load_baselines(ctx))
    devices = sweep_devices(ctx)
    default_device = "cuda" if any(d.startswith("cuda") for d in devices) else "cpu"
    wanted: dict[str, tuple[Placement, int, str]] = {}
    for p in placements:
        threads = placement_threads(p, ctx.spec.measure.threads)
        cpu_model, gpu_model = hardware(p)
        for context, device in placement_contexts(p, threads, devices, cpu_model=cpu_model, gpu_model=gpu_model).items():
            wanted.setdefault(context, (p, threads, device))
    for context, (placement, threads, device) in sorted(wanted.items()):
        if context in ctx.baselines_by_context or not ctx.prepared.teacher_dir:
            continue
        log(f"baseline: measuring the teacher on {device}, {threads} thread(s), as the trials of cores "
            f"{placement.cores} measured there are ({context})")
        measured = _measure_teacher(ctx, placement, threads, device)
        got = context_of(measured.tags) or context
        run_id = ctx.tracker.child_run(ctx.experiment_id, ctx.parent_run_id, ctx.spec.name,
                                       name=f"baseline-teacher-{device}-threads{threads}", role="baseline",
                                       tags={"sweep.teacher_key": ctx.prepared.teacher_key, "sweep.baseline_threads": threads,
                                             "sweep.measurement_context": got})
        ctx.tracker.log(run_id, params={"teacher.model": ctx.spec.teacher.model, "precision": "fp32", "threads": threads,
                                        "device": device},
                        metrics=measured.metrics, tags={**measured.tags, "precision_measured": "fp32"})
        ctx.tracker.log_artifacts(run_id, work_dir(ctx.root, ctx.spec.name) / f"baseline-{device}-threads{threads}"
                                / PREDICTIONS_FILE)
        ctx.tracker.end(run_id, FINISHED)
        remember_baseline(ctx, threads if device == default_device and threads not in ctx.baselines else None,
                          measured.metrics, run_id, context=got)
        log(f"baseline on {device} at {threads} thread(s): latency "
            f"{measured.metrics.get(M.LATENCY_P50_BS1, math.nan):.2f} ms (batch 1)")
    return ctx.baselines


def _measure_teacher(ctx: Context, placement: Placement, threads: int, device: str) -> MeasureResult:
    spec, prep = ctx.spec, ctx.prepared
    out = work_dir(ctx.root, spec.name) / f"baseline-{device}-threads{threads}"
    out.mkdir(parents=True, exist_ok=True)
    job = MeasureJob(model_dir=prep.teacher_dir, data=spec.data, data_base_dir=spec.base_dir,
                     measure=spec.measure.model_copy(update={"device": device}),
                     max_seq_len=spec.training.max_seq_len, cache_dir=(ctx.root / "cache" / "data").resolve(),
                     batch_size=spec.training.eval_batch_size, precision="fp32",
                     predictions_out=(out / PREDICTIONS_FILE).resolve())
    job_path, result_path, log_path = out / "job.json", out / "result.json", out / "worker.log"
    job_path.write_text(job.model_dump_json(indent=2))
    result_path.unlink(missing_ok=True)
    outcome = run_job("measure", job_path, result_path, log_path, placement, stop=threading.Event())
    result = MeasureResult.model_validate_json(result_path.read_text()) if result_path.exists() else None
    if outcome.returncode != 0 or result is None or not result.ok:
        why = (result.error if result is not None else None) or outcome.reason(tail(log_path))
        raise RuntimeError(f"measuring the teacher baseline on {threads} thread(s) failed: {why} (log: {log_path})")
    return result


LOAD_TOLERANCE = 0.5  # load average per core: a larger gap between the two sides of a speed-up is flagged


def speedup_tags(trial: dict[str, float], baseline: dict[str, float], baseline_context: str | None) -> dict[str, str]:
    """How the trial's speed-ups were obtained, and a flag when its two sides were timed under different load."""
    where = f"in the same measurement context ({baseline_context})" if baseline_context else "in another context"
    tags = {"sweep.speedup_method": "teacher latency / trial latency, each the p50 of its own timed run: the teacher "
                                    f"timed once per context before the trials, {where}; not interleaved"}
    a, b = trial.get(M.MEASURE_LOAD), baseline.get(M.MEASURE_LOAD)
    if a is None or b is None:
        tags["sweep.speedup_load"] = "unknown (a side without its load average)"
        return tags
    tags["sweep.speedup_load"] = f"load/core: trial {a:.2f}, teacher {b:.2f}"
    if abs(a - b) > LOAD_TOLERANCE:
        tags["sweep.speedup_flag"] = (f"timed under different load (load/core {a:.2f} vs the teacher's {b:.2f}, more "
                                      f"than {LOAD_TOLERANCE} apart): the speed-up is not like for like; "
                                      "re-measure both with `sweep measure` on a quiet machine")
    return tags
