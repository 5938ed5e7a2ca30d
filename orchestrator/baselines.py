"""The teacher baseline on the same hardware as each trial: one measurement per thread count.

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
    return {int(k): v for k, v in study_record(ctx.study).baselines_by_threads.items()}


def remember_baseline(ctx: Context, threads: int, metrics: dict[str, float], run_id: str) -> None:
    """Add one thread count's teacher measurement to the study record (read-merge-write under the locks)."""
    with ctx.locked():
        record = study_record(ctx.study)
        set_study(ctx.study, baselines_by_threads={**record.baselines_by_threads, str(threads): dict(metrics)},
                  baseline_run_ids_by_threads={**record.baseline_run_ids_by_threads, str(threads): run_id})
    ctx.baselines[threads] = dict(metrics)


def ensure_baselines(ctx: Context, placements: Sequence[Placement], log: Log) -> dict[int, dict[str, float]]:
    """The teacher measured at every thread count these placements measure with (measured now when missing)."""
    ctx.baselines.update(load_baselines(ctx))
    wanted: dict[int, Placement] = {}
    for p in placements:
        wanted.setdefault(placement_threads(p, ctx.spec.measure.threads), p)
    for threads, placement in sorted(wanted.items()):
        if threads in ctx.baselines or not ctx.prepared.teacher_dir:
            continue
        log(f"baseline: measuring the teacher on {threads} thread(s), as the trials of cores {placement.cores} are measured")
        measured = _measure_teacher(ctx, placement, threads)
        run_id = ctx.tracker.child_run(ctx.experiment_id, ctx.parent_run_id, ctx.spec.name,
                                       name=f"baseline-teacher-threads{threads}", role="baseline",
                                       tags={"sweep.teacher_key": ctx.prepared.teacher_key, "sweep.baseline_threads": threads})
        ctx.tracker.log(run_id, params={"teacher.model": ctx.spec.teacher.model, "precision": "fp32", "threads": threads},
                        metrics=measured.metrics, tags={**measured.tags, "precision_measured": "fp32"})
        ctx.tracker.log_artifacts(run_id, work_dir(ctx.root, ctx.spec.name) / f"baseline-threads{threads}" / PREDICTIONS_FILE)
        ctx.tracker.end(run_id, FINISHED)
        remember_baseline(ctx, threads, measured.metrics, run_id)
        log(f"baseline at {threads} thread(s): latency {measured.metrics.get(M.LATENCY_P50_BS1, math.nan):.2f} ms (batch 1)")
    return ctx.baselines


def _measure_teacher(ctx: Context, placement: Placement, threads: int) -> MeasureResult:
    spec, prep = ctx.spec, ctx.prepared
    out = work_dir(ctx.root, spec.name) / f"baseline-threads{threads}"
    out.mkdir(parents=True, exist_ok=True)
    job = MeasureJob(model_dir=prep.teacher_dir, data=spec.data, data_base_dir=spec.base_dir, measure=spec.measure,
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
