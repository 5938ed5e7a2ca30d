"""Failures and their repair: recording a failed trial, retrying it, reaping trials whose worker died.

Optuna is the source of truth for what ran; MLflow mirrors it. A failure is always recorded in
that order: the reason and FAIL in Optuna, then the MLflow run tagged and ended, then a retry
queued when one is due. `reap_stale` repairs anything a dead worker left half-done (RUNNING trials
whose process is gone or whose heartbeat stopped, MLflow runs still RUNNING), so a crash or a
SIGKILL never leaves the study or the tracking store inconsistent for long.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from orchestrator.child_process import HOST, HOST_ID, PROCESS_STARTED, process_alive
from orchestrator.context import Context, Log
from orchestrator.trial_queue import requeue
from orchestrator.record import AnyTrial, frozen, mark_failed, trial_id, trial_point, trial_record
from orchestrator.tracking import FAILED, FINISHED, KILLED

LOST = "another worker marked this trial failed while it ran (late heartbeats) and queued it again"


def close_run(ctx: Context, run_id: str | None, reason: str, status: str, log_path: Path | None = None) -> None:
    """Tag an MLflow trial run with why it failed and end it."""
    if not run_id:
        return
    ctx.tracker.log(run_id, tags={"sweep.fail_reason": reason})
    if log_path is not None:
        ctx.tracker.log_artifacts(run_id, log_path)
    ctx.tracker.end(run_id, status)


def close_lost_run(ctx: Context, run_id: str, number: int, log: Log) -> TrialState:
    """Our run of a trial another worker already failed (and queued again): that rerun counts."""
    close_run(ctx, run_id, LOST, FAILED)
    log(f"trial {number}: {LOST}")
    return TrialState.FAIL


def record_failure(ctx: Context, trial: AnyTrial, reason: str, *, log: Log, run_id: str | None = None,
                   interrupted: bool = False, retry: bool = True, log_path: Path | None = None) -> bool:
    """FAIL in Optuna (with the reason) and, when that is due, the point queued again, as one step
    under the storage lock; then the MLflow run.

    An interrupted trial is queued again at once without using up an attempt (it was not its
    fault), so another worker, or the relaunch, picks it up; with `retry` (a dead worker or a
    process killed by a signal) it is retried up to budget.max_retries; an error the trial
    reported itself would only repeat, and is left to `sweep retry`. False when another worker
    had already finished the trial (nothing recorded).

    FAIL and the retry are one step because an executor that asks for work between them would
    see neither a running nor a waiting trial and end the sweep with the retry never run. A crash
    between that step and the MLflow run leaves the run RUNNING, which `close_orphan_runs` ends.
    """
    with ctx.locked():
        if not mark_failed(ctx.study, trial, reason, interrupted=interrupted):
            return False
        now = frozen(ctx.study, trial)
        record = trial_record(now)
        attempt = record.attempt if interrupted else record.attempt + 1
        due = (interrupted or retry) and attempt <= ctx.spec.budget.max_retries + 1
        queued = due and requeue(ctx.study, trial_point(now), attempt=attempt, retry_of=now.number)
    close_run(ctx, run_id or record.mlflow_run_id, reason, KILLED if interrupted else FAILED, log_path)
    log(f"trial {trial.number}: {'interrupted' if interrupted else 'FAILED'}: {reason.splitlines()[0][:300]}")
    if queued:
        log(f"trial {trial.number}: queued again (attempt {attempt})")
    elif (interrupted or retry) and not due:
        log(f"trial {trial.number}: not retried (budget.max_retries = {ctx.spec.budget.max_retries} used up; "
            "`sweep retry` reruns it)")
    return True


def record_orchestrator_error(ctx: Context, trial: optuna.Trial, exc: Exception, log: Log) -> None:
    """An error of the orchestrator itself (storage, tracking) must not leave the trial RUNNING."""
    reason = f"orchestrator error: {type(exc).__name__}: {exc}"
    log(f"trial {trial.number}: {reason}")
    try:
        if not record_failure(ctx, trial, reason, log=log):
            run_id = trial_record(frozen(ctx.study, trial)).mlflow_run_id
            if run_id and ctx.tracker.status(run_id) == "RUNNING":
                close_run(ctx, run_id, reason, FAILED)
    except Exception as again:  # storage or tracking still down: the reaper repairs it later
        log(f"trial {trial.number}: could not record the failure ({type(again).__name__}: {again}); "
            "a later worker or relaunch will")


def _stale(ctx: Context, t: FrozenTrial, now: float) -> str | None:
    """Why `t`'s worker counts as dead, or None while it may be alive."""
    record = trial_record(t)
    pid, pid_start = record.pid, record.pid_start
    if record.host_id == HOST_ID and isinstance(pid, int):
        if pid == os.getpid() and (pid_start is None or abs(pid_start - PROCESS_STARTED) < 1.0):
            return None  # one of this process's own threads runs it
        if not process_alive(pid, pid_start):
            return "worker process is gone"
    beat = record.heartbeat
    seen = ctx.seen.get(trial_id(t))
    if seen is None or seen[0] != beat:
        ctx.seen[trial_id(t)] = (beat, now)
        return None
    if now - seen[1] > ctx.grace_s:
        return f"no heartbeat for {now - seen[1]:.0f} s"
    return None


def reap_stale(ctx: Context, log: Log) -> int:
    """Fail RUNNING trials whose worker is gone, close their MLflow runs, and queue retries."""
    study, now, reaped = ctx.study, time.monotonic(), 0
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        why = _stale(ctx, t, now)
        if why is None:
            continue
        record = trial_record(t)
        reason = f"worker {record.host}:{record.pid} died ({why}); marked failed by {HOST}:{os.getpid()}"
        if not record_failure(ctx, t, reason, log=log):
            continue  # it finished, or another worker reaped it first
        reaped += 1
        ctx.seen.pop(trial_id(t), None)
    alive = {trial_id(t) for t in running}
    for key in [k for k in ctx.seen if k not in alive]:
        ctx.seen.pop(key, None)
    if reaped:
        close_orphan_runs(ctx)
    return reaped


def close_orphan_runs(ctx: Context) -> int:
    """End MLflow trial runs left RUNNING whose Optuna trial is over (a worker died between the two)."""
    trials = {t.number: t for t in ctx.study.get_trials(deepcopy=False)}
    closed = 0
    for run in ctx.tracker.find_runs(ctx.experiment_id, ctx.spec.name, "trial"):
        if run.info.status != "RUNNING":
            continue
        try:
            t = trials.get(int(run.data.tags.get("optuna.trial_number", "")))
        except ValueError:
            continue
        if t is None or not t.state.is_finished():
            continue
        record = trial_record(t)
        if t.state == TrialState.COMPLETE and record.mlflow_run_id == run.info.run_id:
            status = FINISHED
        else:
            status = KILLED if record.interrupted or t.state == TrialState.PRUNED else FAILED
        ctx.tracker.end(run.info.run_id, status)
        closed += 1
    return closed
