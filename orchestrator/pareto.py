"""The Pareto front and the pick of one trial: pure functions over finished trials.

The front itself is Optuna's (`study.best_trials`, which also honours constraints set with
`trial.set_constraint`); this module adds the comparison with the teacher and the pick rules.
Everything here that chooses reads validation metrics (`val_*`); test metrics are only carried
along to be reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from optuna.trial import FrozenTrial

from orchestrator.record import trial_record
from orchestrator.spec import PICK_RULES, Constraint, Objective, check_pick
from trainers import metrics as M

def constraint_value(c: Constraint, metrics: dict[str, float], baseline: dict[str, float]) -> float:
    """<= 0 when the trial meets the constraint (Optuna's convention), else by how much it misses."""
    value = metrics[c.key]
    if c.max is not None:
        return value - c.max
    if c.min is not None:
        return c.min - value
    reference = baseline.get(c.key)
    if reference is None:
        raise KeyError(f"constraint on {c.metric}: the baseline has no {c.key} to compare with")
    if c.max_drop is not None:
        return (reference - value) - c.max_drop
    return value / reference - c.max_ratio


def deltas(metrics: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """How a trial compares with the teacher, in the units people quote."""
    out: dict[str, float] = {}
    for key in (M.VAL_ACCURACY, M.VAL_MACRO_F1, M.TEST_ACCURACY, M.TEST_MACRO_F1):
        if key in metrics and key in baseline:
            out[f"delta_{key}_points"] = 100.0 * (metrics[key] - baseline[key])
    for key in [k for k in metrics if k.startswith("latency_ms_")]:
        if baseline.get(key) and metrics[key] > 0:
            out["speedup" + key.removeprefix("latency_ms")] = baseline[key] / metrics[key]
    for key in (M.MEMORY_MODEL, M.PARAMS_TOTAL, M.MODEL_DISK, M.EMISSIONS_PER_1K, M.ENERGY_PER_1K):
        if baseline.get(key) and key in metrics:
            out[f"ratio_{key}"] = metrics[key] / baseline[key]
    return out


def feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0.0 for v in trial.constraints.values())


@dataclass
class Row:
    number: int
    params: dict
    metrics: dict[str, float]
    deltas: dict[str, float]
    feasible: bool
    run_id: str | None


def rows(trials: Sequence[FrozenTrial], baseline: dict[str, float]) -> list[Row]:
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        record = trial_record(t)
        out.append(Row(t.number, dict(t.params), record.metrics, deltas(record.metrics, baseline), feasible(t), record.mlflow_run_id))
    return out


def pick(front: Sequence[FrozenTrial], rule: str, objectives: Sequence[Objective]) -> FrozenTrial:
    """One trial of the front by a named rule (`fastest`...) or `trial:N`.

    Only trials that meet every constraint qualify; a named metric the sweep did not optimise is
    still usable because every trial carries the full metric set.
    """
    if rule.startswith("trial:") and rule.split(":", 1)[1].isdigit():
        number = int(rule.split(":", 1)[1])
        for t in front:
            if t.number == number:
                return t
        raise ValueError(f"--pick {rule}: trial {number} is not a completed trial of this study")
    check_pick(rule)
    candidates = [t for t in front if feasible(t)]
    if not candidates:
        raise ValueError("no completed trial meets the sweep's constraints; loosen them or pick with trial:N")
    metric, direction = PICK_RULES[rule]
    sign = 1.0 if direction == "minimize" else -1.0

    def key(t: FrozenTrial):
        measured = trial_record(t).metrics
        value = measured.get(metric, math.inf * sign)
        accuracy = measured.get(M.VAL_ACCURACY, 0.0)
        return (sign * value, -accuracy, t.number)

    return min(candidates, key=key)
