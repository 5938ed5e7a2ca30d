"""The rounds of adaptive seeds: read the study, plan the top-ups, queue them, say why.

The choosing is `orchestrator.adaptive_seeds` (pure); this module is its rim: completed trials become
`Point`s, top-ups become queued trials of the same point with more seeds, and the log and the parent
run say how many seeds each point got and why.
"""

from __future__ import annotations

from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from orchestrator import adaptive_seeds as A
from orchestrator.context import Context, Log
from orchestrator.record import enqueue, superseded, trial_point, trial_record
from orchestrator.spec import SweepSpec
from orchestrator.trial_queue import DONE, point_key
from trainers import metrics as M


def seeds_of(t: FrozenTrial, spec: SweepSpec) -> int:
    return trial_record(t).seeds or spec.training.seed_policy.min


def current(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Completed trials that no completed top-up replaced: one per point, the one with the most seeds."""
    gone = superseded(trials)
    return [t for t in trials if t.state == TrialState.COMPLETE and t.number not in gone]


def trainings_spent(trials: list[FrozenTrial]) -> float:
    """Student trainings the sweep ran itself (one per seed; reused ones from the shared cache are free)."""
    return sum(trial_record(t).metrics.get(M.TRAININGS_RUN, 0.0) for t in trials if t.state in DONE)


def point_of(t: FrozenTrial, spec: SweepSpec) -> A.Point | None:
    m = trial_record(t).metrics
    if M.VAL_ACCURACY not in m:
        return None
    others = []
    for o in spec.objectives:
        if o.key == M.VAL_ACCURACY:
            continue
        if o.key not in m:
            return None
        others.append(m[o.key] if o.direction == "minimize" else -m[o.key])
    from orchestrator.report import seed_values

    seeds = seeds_of(t, spec)
    per_seed = tuple(seed_values(m))
    constraints = tuple(-100.0 * t.constraints[c.label] for c in spec.constraints
                        if c.metric == "accuracy" and c.max_drop is not None and c.label in t.constraints)
    return A.Point(number=t.number, seeds=seeds, accuracy=m[M.VAL_ACCURACY], seed_accuracies=per_seed,
                   others=tuple(others), feasible=all(v <= 0 for v in t.constraints.values()),
                   delta_low=m.get(M.DELTA_VAL_ACCURACY_CI_LOW), delta_high=m.get(M.DELTA_VAL_ACCURACY_CI_HIGH),
                   constraint_values=constraints, training=trial_record(t).training_key,
                   rows=int(m.get(M.VAL_EXAMPLES, 0)))


def queue_round(ctx: Context, log: Log, round_number: int) -> int:
    """Plan one round and queue its top-ups (under the storage lock); how many were queued."""
    from orchestrator.contexts import context_groups, main_context
    from orchestrator.study import storage_lock

    policy = ctx.spec.training.seed_policy
    with storage_lock(ctx.storage_url, ctx.root):
        trials = ctx.study.get_trials(deepcopy=False)
        groups = context_groups(current(trials))
        mine = groups.get(main_context(groups), [])
        points = [p for t in mine if (p := point_of(t, ctx.spec)) is not None]
        spent = trainings_spent(trials)
        left = float("inf") if policy.max_trainings is None else policy.max_trainings - spent
        # a top-up that runs, waits, finished or failed (not by Ctrl-C) is not planned again
        taken = {(point_key(trial_point(t)), trial_record(t).seeds) for t in trials
                 if t.state in (TrialState.RUNNING, TrialState.WAITING, *DONE)
                 or (t.state == TrialState.FAIL and not trial_record(t).interrupted)}
        by_number = {t.number: t for t in mine}
        plan = [top for top in A.plan_round(points, policy.max, left)
                if (point_key(trial_point(by_number[top.number])), top.seeds) not in taken]
        for top in plan:
            enqueue(ctx.study, trial_point(by_number[top.number]), seeds=top.seeds, supersedes=top.number,
                    seeds_reason=top.reason)
    cap = "no cap" if policy.max_trainings is None else f"{spent:g} of {policy.max_trainings} trainings spent"
    if not plan:
        log(f"adaptive seeds: round {round_number}: no point left to top up ({cap}; every other verdict settled, "
            f"at {policy.max} seeds, or over the budget)")
    for top in plan:
        log(f"adaptive seeds: round {round_number}: trial {top.number} gets seed {top.seeds} of at most {policy.max}: "
            f"{top.reason}")
    return len(plan)


def run_rounds(ctx: Context, run: Callable[[], None], stop, log: Log) -> None:
    """After the main pass: top-up rounds until none is planned (or the sweep is stopped), then the summary."""
    if not ctx.spec.training.seed_policy.adaptive:
        return
    n = 1
    while not stop.is_set() and queue_round(ctx, log, n):
        run()
        n += 1
    record_summary(ctx, log)


def summary(study: optuna.Study, spec: SweepSpec) -> list[str]:
    """One line per current point that got more than the min seeds, and the sweep's trainings."""
    trials = study.get_trials(deepcopy=False)
    policy = spec.training.seed_policy
    lines = []
    for t in sorted(current(trials), key=lambda t: t.number):
        r = trial_record(t)
        if r.supersedes is not None:
            lines.append(f"trial {t.number}: {seeds_of(t, spec)} seeds (replaces trial {r.supersedes}): {r.seeds_reason}")
    counts: dict[int, int] = {}
    for t in current(trials):
        counts[seeds_of(t, spec)] = counts.get(seeds_of(t, spec), 0) + 1
    head = (f"seeds {policy.min}-{policy.max}: " + ", ".join(f"{v} point(s) with {k}" for k, v in sorted(counts.items()))
            + f"; {trainings_spent(trials):g} student trainings run")
    return [head, *lines]


def record_summary(ctx: Context, log: Log) -> None:
    lines = summary(ctx.study, ctx.spec)
    log("adaptive seeds: " + lines[0])
    ctx.tracker.log(ctx.parent_run_id, tags={"sweep.adaptive_seeds": "\n".join(lines)[:5000]},
                    metrics={"student_trainings_run": trainings_spent(ctx.study.get_trials(deepcopy=False))})
