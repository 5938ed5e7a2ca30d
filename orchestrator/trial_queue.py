"""The queue of trials to run: grid points, retries, and the next trial an executor asks for.

Grid points are enqueued as WAITING trials and popped atomically by `study.ask()`, so with any
number of workers every grid point is handed out once; relaunching enqueues only the points that
have neither completed (or been pruned) nor are running. Everything that enqueues runs under the storage lock
(`study.storage_lock`), which spans processes and machines, so two workers never queue the same
point twice; should a storage without a shared lock let it happen, `next_trial` skips the copy.
"""

from __future__ import annotations

import enum
import json
import os
import random
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from orchestrator.child_process import HOST, HOST_ID, PROCESS_STARTED
from orchestrator.context import Context
from orchestrator.cost import fold_points
from orchestrator.record import enqueue, frozen, set_trial, tell, trial_id, trial_point, trial_record
from orchestrator.spec import DIMENSIONS, SweepSpec

# A point is done or taken when a trial of it completed, was pruned (early stopping judged it: running it
# again would be stopped again), runs or waits.
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
ACTIVE = (*DONE, TrialState.RUNNING, TrialState.WAITING)


def point_key(params: dict) -> str:
    return json.dumps({k: params[k] for k in DIMENSIONS if k in params}, sort_keys=True)


def counts_as_failure(t: FrozenTrial) -> bool:
    """A failure that uses up a retry: not an interruption (Ctrl-C) and not a skipped duplicate."""
    record = trial_record(t)
    return t.state == TrialState.FAIL and not record.interrupted and record.duplicate_of is None


def active_points(trials: list[FrozenTrial]) -> set[str]:
    return {point_key(trial_point(t)) for t in trials if t.state in ACTIVE}


def requeue(study: optuna.Study, params: dict, **record) -> bool:
    """Queue `params` again unless a trial of that point completed, was pruned, runs or waits (call under the storage lock)."""
    if not params or point_key(params) in active_points(study.get_trials(deepcopy=False)):
        return False
    enqueue(study, params, **record)
    return True


def grid_points(spec: SweepSpec) -> list[dict]:
    """The grid points a sweep runs (temperature folded away at alpha 0): all of them, or a seeded random
    subset when n_trials is smaller.

    A subset drawn without repetition spans every dimension's values far better than the first
    n_trials of the product order would (Optuna's GridSampler also visits points in random order).
    """
    grid, _ = fold_points(spec.search_space.grid())  # T at alpha 0 trains the same student: one point
    if spec.n_trials >= len(grid):
        return grid
    rng = random.Random(spec.sampler.seed)
    keep = sorted(rng.sample(range(len(grid)), spec.n_trials))
    return [grid[i] for i in keep]


def enqueue_grid(study: optuna.Study, spec: SweepSpec, *, retry_failed: bool = False) -> int:
    """Queue the grid points that still need running; returns how many were queued.

    A point needs running when no trial of it completed, was pruned, runs or waits, and it has failed at most
    `budget.max_retries` times (or always, with retry_failed).
    """
    trials = study.get_trials(deepcopy=False)
    active = active_points(trials)
    failures: dict[str, int] = {}
    for t in trials:
        if counts_as_failure(t):
            key = point_key(trial_point(t))
            failures[key] = failures.get(key, 0) + 1
    queued = 0
    for point in grid_points(spec):
        key = point_key(point)
        if key in active:
            continue
        if not retry_failed and failures.get(key, 0) > spec.budget.max_retries:
            continue
        enqueue(study, point, attempt=failures.get(key, 0) + 1)
        active.add(key)
        queued += 1
    return queued


def retry_failed(study: optuna.Study) -> int:
    """Queue again every failed point that has not completed since (any sampler)."""
    trials = study.get_trials(deepcopy=False)
    active = active_points(trials)
    queued = 0
    for t in trials:
        if t.state != TrialState.FAIL or trial_record(t).duplicate_of is not None or not trial_point(t):
            continue
        key = point_key(trial_point(t))
        if key in active:
            continue
        enqueue(study, trial_point(t), retry_of=t.number)
        active.add(key)
        queued += 1
    return queued


class Next(enum.Enum):
    WAIT = "others still run trials that may need retrying: wait and look again"
    AGAIN = "the popped trial was a duplicate and was skipped: ask again"


def next_trial(ctx: Context, deadline: float | None) -> optuna.Trial | Next | None:
    """The next trial to run, Next.* when there is none yet, or None when the sweep is done.

    An executor with nothing to do waits while other trials still run: if one's worker dies, its
    retry must find an executor to run it.
    """
    spec, study = ctx.spec, ctx.study
    if deadline is not None and time.time() > deadline:
        return None
    with ctx.locked():
        trials = study.get_trials(deepcopy=False)
        if not any(t.state == TrialState.WAITING for t in trials):
            # Retries and re-queued interruptions do not use up the budget: the point was counted once.
            started = sum(t.state != TrialState.WAITING and trial_record(t).retry_of is None for t in trials)
            if spec.sampler.type == "grid" or started >= spec.n_trials:
                return Next.WAIT if any(t.state == TrialState.RUNNING for t in trials) else None
        trial = study.ask()
        # Mark the trial as this process's, so that a crash from here on is seen and reaped.
        set_trial(study, trial, host=HOST, host_id=HOST_ID, pid=os.getpid(), pid_start=PROCESS_STARTED, heartbeat=time.time())
    now = frozen(study, trial)
    fixed = now.system_attrs.get("fixed_params")
    if spec.sampler.type == "grid" and not fixed:
        # Only without a shared lock (an RDB other than PostgreSQL/SQLite): another worker popped the last point.
        _skip(study, trial, "queue empty", "no grid point left to run (raced with another worker); skipped")
        return Next.AGAIN
    if fixed:
        dup = _duplicate_of(study, now, fixed)
        if dup is not None:
            _skip(study, trial, dup, f"grid point already completed or taken by trial {dup}; skipped")
            return Next.AGAIN
    return trial


def _skip(study: optuna.Study, trial: optuna.Trial, dup, reason: str) -> None:
    set_trial(study, trial, duplicate_of=dup, fail_reason=reason)
    tell(study, trial, state=TrialState.FAIL)


def _duplicate_of(study: optuna.Study, mine: FrozenTrial, params: dict) -> int | None:
    """Another trial of the same point that completed, or runs/waits with a lower number.

    The last guard against a point completing twice (e.g. queued twice by a race with a storage
    that has no shared lock): of two live copies the lower-numbered one runs, the other is skipped.
    """
    key = (point_key(params), trial_record(mine).seeds)  # an adaptive-seeds top-up is its own point
    for t in study.get_trials(deepcopy=False):
        if trial_id(t) == trial_id(mine) or (point_key(trial_point(t)), trial_record(t).seeds) != key:
            continue
        if t.state in DONE or (t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number < mine.number):
            return t.number
    return None


def queue_grid(ctx: Context, *, log) -> int:
    """Queue the grid points still to run, under the storage lock, and say how many and how many were folded."""
    from orchestrator.cost import fold_points
    from orchestrator.study import storage_lock

    with storage_lock(ctx.storage_url, ctx.root):
        queued = enqueue_grid(ctx.study, ctx.spec)
    log(f"grid: {queued} point(s) queued, {len(grid_points(ctx.spec)) - queued} already done or running, "
        f"{fold_points(ctx.spec.search_space.grid())[1]} folded (temperature has no effect at distill_alpha 0)")
    return queued
