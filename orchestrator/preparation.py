"""Preparing a sweep once: data report, tokenisation, teacher and its baseline measurement.

It runs in a child process like any trial (`python -m trainers.entry prepare`), so a crash while
building the teacher is reported, not fatal to the orchestrator. While it runs, the parent tails its
output folder: the data report is shown as soon as the child writes it (before the teacher trains),
and the progress events of the teacher fine-tune, logits and baseline feed a display (`terminal.py`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Protocol

from orchestrator.child_process import Placement, available_cores, run_job, tail
from orchestrator.context import Log, work_dir
from orchestrator.spec import SpecError, SweepSpec
from trainers.jobs import PrepareJob, PrepareResult
from trainers.progress import DATA_REPORT_FILE, PROGRESS_FILE, ProgressEvent, read_events


class PreparationDisplay(Protocol):
    def report(self, text: str) -> None: ...  # the data report, once

    def event(self, event: ProgressEvent) -> None: ...  # a progress event of a preparation phase


def _tail(out: Path, show: PreparationDisplay) -> Callable[[], None]:
    """A poll that shows the data report once it exists and forwards new progress events."""
    state = {"offset": 0, "report_shown": False}

    def poll() -> None:
        report = out / DATA_REPORT_FILE
        if not state["report_shown"] and report.exists():
            state["report_shown"] = True
            show.report(report.read_text(encoding="utf-8"))
        events, state["offset"] = read_events(out / PROGRESS_FILE, state["offset"])
        for event in events:
            show.event(event)

    return poll


def run_preparation(spec: SweepSpec, root: Path, *, measure_baseline: bool, log: Log,
                    stop: threading.Event | None = None, show: PreparationDisplay | None = None,
                    published_teacher: dict[str, str] | None = None) -> PrepareResult:
    """Data report, tokenisation, teacher and baseline, in a child process like any trial (shown on `show`).
    `published_teacher` ({key, data_fingerprint}): the teacher another machine published, already downloaded
    into this root's cache (`teacher_share.py`); the child uses it and never fine-tunes."""
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
        training=spec.training.for_trial(),
        measure=spec.measure,
        cache_dir=(root / "cache").resolve(),
        measure_baseline=measure_baseline,
        output_dir=out.resolve(),
        vocabulary=spec.vocabulary,  # a relative corpus resolves against data_base_dir, the sweep file's folder
        published_teacher=published_teacher,
    )
    job_path, result_path, log_path = out / "job.json", out / "result.json", out / "worker.log"
    job_path.write_text(job.model_dump_json(indent=2))
    result_path.unlink(missing_ok=True)
    log_path.write_text("")
    for stale in (DATA_REPORT_FILE, PROGRESS_FILE):  # what an earlier launch left would be shown as this one's
        (out / stale).unlink(missing_ok=True)
    poll = _tail(out, show) if show is not None else None
    log("preparing: data report, tokenisation, teacher" + (" and baseline measurement" if measure_baseline else ""))
    outcome = run_job("prepare", job_path, result_path, log_path, Placement(cores=available_cores()),
                      stop=stop or threading.Event(), on_poll=poll)
    if poll is not None:
        poll()  # what the child wrote after the last poll
    if result_path.exists():
        result = PrepareResult.model_validate_json(result_path.read_text())
        if not result.ok:
            raise SpecError(result.error or "preparation failed")
        if outcome.returncode == 0:
            return result
    raise RuntimeError(f"preparation failed: {outcome.reason(tail(log_path))} (log: {log_path})")
