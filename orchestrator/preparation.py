"""Preparing a sweep once: data report, tokenisation, teacher and its baseline measurement.

It runs in a child process like any trial (`python -m trainers.entry prepare`), so a crash while
building the teacher is reported, not fatal to the orchestrator.
"""

from __future__ import annotations

import threading
from pathlib import Path

from orchestrator.child_process import Placement, available_cores, run_job, tail
from orchestrator.context import Log, work_dir
from orchestrator.spec import SpecError, SweepSpec
from trainers.jobs import PrepareJob, PrepareResult


def run_preparation(spec: SweepSpec, root: Path, *, measure_baseline: bool, log: Log,
                    stop: threading.Event | None = None) -> PrepareResult:
    """Data report, tokenisation, teacher and baseline, in a child process like any trial."""
    from trainers.models import resolve_model_ref

    try:
        teacher_ref = resolve_model_ref(spec.teacher.model, spec.base_dir)
    except ValueError as exc:
        raise SpecError(f"{spec.source}: field teacher.model: {exc}") from None
    out = work_dir(root, spec.name) / "prepare"
    out.mkdir(parents=True, exist_ok=True)
    job = PrepareJob(
        teacher=spec.teacher,
        teacher_ref=teacher_ref,
        data=spec.data,
        data_base_dir=spec.base_dir,
        training=spec.training,
        measure=spec.measure,
        cache_dir=(root / "cache").resolve(),
        measure_baseline=measure_baseline,
        output_dir=out.resolve(),
        vocabulary=spec.vocabulary,  # a relative corpus resolves against data_base_dir, the sweep file's folder
    )
    job_path, result_path, log_path = out / "job.json", out / "result.json", out / "worker.log"
    job_path.write_text(job.model_dump_json(indent=2))
    result_path.unlink(missing_ok=True)
    log_path.write_text("")
    log("preparing: data report, tokenisation, teacher" + (" and baseline measurement" if measure_baseline else ""))
    outcome = run_job("prepare", job_path, result_path, log_path, Placement(cores=available_cores()), stop=stop or threading.Event())
    if result_path.exists():
        result = PrepareResult.model_validate_json(result_path.read_text())
        if not result.ok:
            raise SpecError(result.error or "preparation failed")
        if outcome.returncode == 0:
            return result
    raise RuntimeError(f"preparation failed: {outcome.reason(tail(log_path))} (log: {log_path})")
