"""One front per measurement context: trials measured on different devices or hosts are never compared.

A measurement context (`trainers.measure.context`) is where a trial's latency, memory and energy were
measured: host CPU (and GPU) model, device, threads. A latency measured on a GPU and one measured on
a CPU, or on two different hosts, cannot dominate each other, so the completed trials are split by
context and each group gets its own Pareto front (Optuna's, constraints honoured). The table shows the
main context's front (the one with the most completed trials) and names the others; the export picks
within the main context only.
"""

from __future__ import annotations

from typing import Sequence

import optuna
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.trial import FrozenTrial, TrialState

from orchestrator.record import superseded, trial_record


def context_groups(trials: Sequence[FrozenTrial]) -> dict[str | None, list[FrozenTrial]]:
    """Completed trials by measurement context (None: recorded before contexts), in trial order; a trial that
    an adaptive-seeds top-up replaced (the same point, more seeds) is left out."""
    groups: dict[str | None, list[FrozenTrial]] = {}
    gone = superseded(trials)
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and t.number not in gone:
            groups.setdefault(trial_record(t).measurement_context, []).append(t)
    return groups


def main_context(groups: dict[str | None, list[FrozenTrial]]) -> str | None:
    """The context with the most completed trials (ties: the one whose first trial came first)."""
    if not groups:
        return None
    return max(groups, key=lambda c: (len(groups[c]), -groups[c][0].number))


def fronts_by_context(study: optuna.Study) -> dict[str | None, list[FrozenTrial]]:
    """The Pareto front of each measurement context's completed trials (feasible ones, as study.best_trials)."""
    groups = context_groups(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return {c: _get_pareto_front_trials_by_trials(g, study.directions, consider_constraint=True)
            for c, g in groups.items()}


def main_front(study: optuna.Study) -> tuple[str | None, list[FrozenTrial], dict[str | None, list[FrozenTrial]]]:
    """(main context, its front, the other contexts' fronts); with one context, the front is study.best_trials."""
    groups = context_groups(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if len(groups) <= 1 and not superseded(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        return next(iter(groups), None), list(study.best_trials), {}
    if not groups:
        return None, [], {}
    fronts = {c: _get_pareto_front_trials_by_trials(g, study.directions, consider_constraint=True)
              for c, g in groups.items()}
    main = main_context(groups)
    return main, fronts.pop(main), fronts


def pick_candidates(study: optuna.Study) -> list[FrozenTrial]:
    """The completed trials a pick chooses among: those of the main measurement context."""
    groups = context_groups(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return groups.get(main_context(groups), [])
