"""The Pareto front and the pick of one trial: pure functions over finished trials.

The front itself is Optuna's (`study.best_trials`, which also honours constraints set with
`trial.set_constraint`); this module adds the comparison with the teacher and the pick rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from optuna.trial import FrozenTrial

from orchestrator.spec import Constraint, Objective

PICK_RULES = {
    "fastest": ("latency_ms", "minimize"),
    "most_accurate": ("accuracy", "maximize"),
    "smallest": ("params_total", "minimize"),
    "lightest": ("memory_mb", "minimize"),
    "greenest": ("emissions_kg_co2e", "minimize"),
}


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
    if "accuracy" in metrics and "accuracy" in baseline:
        out["delta_accuracy_points"] = 100.0 * (metrics["accuracy"] - baseline["accuracy"])
    if "macro_f1" in metrics and "macro_f1" in baseline:
        out["delta_macro_f1_points"] = 100.0 * (metrics["macro_f1"] - baseline["macro_f1"])
    for key in [k for k in metrics if k.startswith("latency_ms")]:
        if baseline.get(key) and metrics[key] > 0:
            out["speedup" + key.removeprefix("latency_ms")] = baseline[key] / metrics[key]
    for key in ("memory_mb", "params_total", "model_size_mb", "emissions_kg_co2e", "energy_kwh"):
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
        metrics = t.user_attrs.get("metrics", {})
        out.append(Row(t.number, dict(t.params), metrics, deltas(metrics, baseline), feasible(t), t.user_attrs.get("mlflow_run_id")))
    return out


def pick(front: Sequence[FrozenTrial], rule: str, objectives: Sequence[Objective]) -> FrozenTrial:
    """One trial of the front by a named rule (`fastest`...) or `trial:N`.

    Only trials that meet every constraint qualify; a named metric the sweep did not optimise is
    still usable because every trial carries the full metric set.
    """
    if rule.startswith("trial:"):
        number = int(rule.split(":", 1)[1])
        for t in front:
            if t.number == number:
                return t
        raise ValueError(f"--pick {rule}: trial {number} is not a completed trial of this study")
    if rule not in PICK_RULES:
        raise ValueError(f"--pick {rule!r}: expected one of {sorted(PICK_RULES)} or trial:N")
    candidates = [t for t in front if feasible(t)]
    if not candidates:
        raise ValueError("no completed trial meets the sweep's constraints; loosen them or pick with trial:N")
    metric, direction = PICK_RULES[rule]
    sign = 1.0 if direction == "minimize" else -1.0

    def key(t: FrozenTrial):
        value = t.user_attrs.get("metrics", {}).get(metric, math.inf * sign)
        accuracy = t.user_attrs.get("metrics", {}).get("accuracy", 0.0)
        return (sign * value, -accuracy, t.number)

    return min(candidates, key=key)
