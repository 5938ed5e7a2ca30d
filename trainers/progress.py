"""Progress and stop requests across the process boundary, as plain files in a job's output folder.

The worker appends one JSON line per event to `progress.jsonl` (phase, step, total_steps, epoch,
validation accuracy, elapsed seconds); the orchestrator tails it to draw progress bars with an ETA
and to feed early-stopping decisions. To stop a trial, the orchestrator writes `STOP` into the same
folder; the worker sees it at its next step and ends the training cleanly (the trial is then
reported as pruned, with what it had spent so far).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

PROGRESS_FILE = "progress.jsonl"
STOP_FILE = "STOP"
VERDICT_FILE = "VERDICT"  # the orchestrator's "go on": the last evaluated step its pruner has judged
DATA_REPORT_FILE = "data_report.txt"  # written by `prepare` as soon as the data is read, before the teacher trains

# The phases a worker reports; one word per phase, the same in the worker and the orchestrator.
TEACHER_FINE_TUNE = "teacher_fine_tune"
TEACHER_LOGITS = "teacher_logits"
STUDENT_TRAINING = "training"
BASELINE = "baseline"


class ProgressEvent(BaseModel):
    kind: Literal["step", "eval", "end"]
    phase: str
    step: int
    total_steps: int
    epoch: float | None = None
    val_accuracy: float | None = None
    elapsed_s: float
    time: float  # unix seconds, so a reader can tell a stale event from a live one

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first step)."""
        if self.step <= 0 or self.total_steps <= 0:
            return None
        return self.elapsed_s / self.step * max(0, self.total_steps - self.step)


class ProgressReporter:
    """The worker side: `on_step` and `on_eval` plug straight into `trainers.train.train`.

    Step events are written at most every `min_interval_s` (plus the first and the last step);
    eval events always. Both callbacks return True once a stop was requested, if `stoppable`.
    """

    def __init__(self, folder: str | Path, phase: str, *, stoppable: bool = False, min_interval_s: float = 1.0,
                 await_verdict_s: float = 0.0):
        """`await_verdict_s` > 0 (early stopping on): after each evaluation, wait up to that long for the
        orchestrator's verdict on it (STOP, or VERDICT naming this step), so whether a trial is pruned never
        depends on how fast the orchestrator happened to poll."""
        self.folder, self.phase, self.stoppable, self.min_interval_s = Path(folder), phase, stoppable, min_interval_s
        self.await_verdict_s = await_verdict_s
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / PROGRESS_FILE
        self._t0 = time.perf_counter()
        self._last_write = -float("inf")
        self._total = 0  # remembered from on_step: on_eval's signature has no total

    def _write(self, kind: str, step: int, total_steps: int, epoch: float | None, val_accuracy: float | None) -> None:
        event = ProgressEvent(kind=kind, phase=self.phase, step=step, total_steps=total_steps, epoch=epoch,
                              val_accuracy=val_accuracy, elapsed_s=time.perf_counter() - self._t0, time=time.time())
        # One write() of one line in append mode: readers never see half of another writer's line.
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(event.model_dump_json() + "\n")
        self._last_write = time.perf_counter()

    def on_step(self, step: int, total_steps: int, epoch: float) -> bool:
        self._total = total_steps
        if step in (1, total_steps) or time.perf_counter() - self._last_write >= self.min_interval_s:
            self._write("step", step, total_steps, epoch, None)
        return self.stop_requested()

    def on_eval(self, step: int, epoch: float, val_accuracy: float) -> bool:
        self._write("eval", step, self._total, epoch, val_accuracy)
        if self.stoppable and self.await_verdict_s > 0:
            deadline = time.perf_counter() + self.await_verdict_s
            while not self.stop_requested() and judged_step(self.folder) < step and time.perf_counter() < deadline:
                time.sleep(0.05)
        return self.stop_requested()

    def end(self, step: int, total_steps: int) -> None:
        self._write("end", step, total_steps, None, None)

    def stop_requested(self) -> bool:
        return self.stoppable and stop_requested(self.folder)

    def hooks(self) -> dict:
        """Keyword arguments for `train(...)`."""
        return {"on_step": self.on_step, "on_eval": self.on_eval}


def progress_hooks(folder: str | Path | None, phase: str) -> dict:
    """`train(..., **progress_hooks(folder, phase))`: progress events when there is a folder, nothing otherwise."""
    return ProgressReporter(folder, phase).hooks() if folder is not None else {}


def stop_requested(folder: str | Path) -> bool:
    return (Path(folder) / STOP_FILE).exists()


def judged_step(folder: str | Path) -> int:
    """The last evaluated step the orchestrator has judged (-1 before any)."""
    try:
        return int((Path(folder) / VERDICT_FILE).read_text())
    except (OSError, ValueError):
        return -1


def record_verdict(folder: str | Path, step: int) -> None:
    """Tell the trial its evaluation at `step` was judged and it may go on (atomic: never half a number)."""
    folder = Path(folder)
    tmp = folder / f"{VERDICT_FILE}.tmp-{os.getpid()}"
    tmp.write_text(str(step))
    tmp.replace(folder / VERDICT_FILE)


def request_stop(folder: str | Path, reason: str) -> None:
    """The orchestrator side: ask the worker writing to `folder` to stop (atomic: a reader sees all or nothing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{STOP_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"reason": reason, "time": time.time()}))
    tmp.replace(folder / STOP_FILE)


def read_events(path: str | Path, offset: int = 0) -> tuple[list[ProgressEvent], int]:
    """Complete events after byte `offset`, and the offset to read from next time (a half-written last
    line is left for the next call)."""
    path = Path(path)
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    events = [ProgressEvent.model_validate_json(line) for line in data[:end].splitlines() if line.strip()]
    return events, offset + end
