"""What every part of a running sweep shares: the spec, the study, the tracker, the lock order.

Built by `sweep.open_sweep` (for `sweep launch`, `sweep worker` and `sweep retry`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna

from orchestrator.early_stopping import EarlyStopping
from orchestrator.spec import SpecError, SweepSpec
from orchestrator.study import storage_lock, work_dir  # noqa: F401 (work_dir: re-exported)
from orchestrator.tracking import Tracker
from trainers.jobs import PrepareResult

Log = Callable[[str], None]
HEARTBEAT_ENV = "SWEEP_HEARTBEAT_SECONDS"


@dataclass
class Context:
    """Everything an executor needs to run trials of one study."""

    spec: SweepSpec
    study: optuna.Study
    storage_url: str | None
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    root: Path
    prepared: PrepareResult
    baseline: dict[str, float] = field(default_factory=dict)
    baselines: dict[int, dict[str, float]] = field(default_factory=dict)  # the teacher per measuring thread count
    # the teacher per measurement context (trainers.measure.context), what a trial is compared with first
    baselines_by_context: dict[str, dict[str, float]] = field(default_factory=dict)
    heartbeat_s: float = 10.0
    early_stopping: EarlyStopping | None = None  # the pruner's companion study, when `pruner:` is on
    lock: threading.Lock = field(default_factory=threading.Lock)
    # trial id -> (last heartbeat value seen, local monotonic time it was first seen): staleness is
    # judged by this process's own clock, so clock skew between machines cannot reap a live trial.
    seen: dict[int, tuple[object, float]] = field(default_factory=dict)
    cache: dict[str, object] = field(default_factory=dict)  # read-once data (the teacher's per-row predictions)

    @property
    def grace_s(self) -> float:
        """Silence after which a trial's worker counts as dead: three missed heartbeats, at least 5 s more than one."""
        return max(3 * self.heartbeat_s, self.heartbeat_s + 5.0)

    def locked(self):
        """This process's threads, then every process on the storage: always taken in this order."""
        return _Both(self.lock, storage_lock(self.storage_url, self.root))


class _Both:
    def __init__(self, first, second):
        self.first, self.second = first, second

    def __enter__(self):
        self.first.__enter__()
        try:
            self.second.__enter__()
        except BaseException:
            self.first.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        try:
            self.second.__exit__(*exc)
        finally:
            self.first.__exit__(*exc)


def heartbeat_seconds(ctx: Context) -> float:
    """$SWEEP_HEARTBEAT_SECONDS, else the sweep's budget.heartbeat_seconds (when the spec has it), else the context's."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise SpecError(f"{HEARTBEAT_ENV}={raw!r}: expected a number of seconds > 0")
        return value
    return float(getattr(ctx.spec.budget, "heartbeat_seconds", None) or ctx.heartbeat_s)


