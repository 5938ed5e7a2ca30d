"""Watching one running trial: its progress events, fed to early stopping, and the stop request.

The trial's child process appends progress events to `progress.jsonl` in its output folder
(`trainers.progress`); `TrialWatch.poll` (called about once a second by `child_process.run_job`)
reads the new ones, reports each validation accuracy to the trial's twin in the early-stopping
companion study (`early_stopping.Twin`) and, when Optuna's pruner says so, writes the `STOP` file
that ends the training cleanly. The trial then comes back `pruned`.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.early_stopping import JUDGED_SEEDS, EarlyStopping, Twin
from trainers.progress import PROGRESS_FILE, STOP_FILE, VERDICT_FILE, ProgressEvent, read_events, record_verdict, request_stop


class TrialWatch:
    def __init__(self, output_dir: Path, early_stopping: EarlyStopping | None, number: int):
        self.output_dir = Path(output_dir)
        for stale in (PROGRESS_FILE, STOP_FILE, VERDICT_FILE):  # a folder reused by a retry starts clean
            (self.output_dir / stale).unlink(missing_ok=True)
        self.twin: Twin | None = early_stopping.twin(number) if early_stopping is not None else None
        self.offset = 0
        self.last: ProgressEvent | None = None
        self.stop_reason: str | None = None

    def poll(self, *, may_stop: bool = True) -> None:
        """Read new events; report evaluations to the twin; request a stop when the pruner says so."""
        events, self.offset = read_events(self.output_dir / PROGRESS_FILE, self.offset)
        judged = None
        for event in events:
            self.last = event
            if event.kind != "eval" or event.val_accuracy is None or self.twin is None:
                continue
            if self.twin.report(event.step, event.val_accuracy, event.total_steps) and may_stop and self.stop_reason is None:
                self.stop_reason = (f"early stopping ({self.twin.study.pruner.__class__.__name__}): validation accuracy "
                                    f"{event.val_accuracy:.4f} at step {event.step} of {event.total_steps} "
                                    f"(judged: {JUDGED_SEEDS}, from step "
                                    f"{self.twin.early_stopping.judged_from(event.total_steps) if self.twin.early_stopping else 0})")
                request_stop(self.output_dir, self.stop_reason)
            judged = event.step
        if judged is not None and self.stop_reason is None:
            record_verdict(self.output_dir, judged)  # the trial waits for this before it trains on

    def finished(self) -> None:
        """The child exited: take in the evaluations it wrote last (the curve other trials are judged by)."""
        self.poll(may_stop=False)

    def complete(self, val_accuracy: float | None, reused_training_of: str | None = None) -> None:
        if self.twin is not None and reused_training_of is not None and self.twin.last_step is None:
            self.twin.reused(reused_training_of)
        elif self.twin is not None:
            self.twin.complete(val_accuracy)

    def pruned(self) -> None:
        if self.twin is not None:
            self.twin.pruned()

    def failed(self) -> None:
        if self.twin is not None:
            self.twin.failed()
