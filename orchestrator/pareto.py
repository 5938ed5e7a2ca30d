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


def baseline_for(baselines: dict[int, dict[str, float]], threads: int | None,
                 default: dict[str, float]) -> tuple[int | None, dict[str, float]]:
    """The teacher measured on the same thread count as the trial, else the default baseline (threads None)."""
    if threads is not None and threads in baselines:
        return threads, baselines[threads]
    return None, default


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


def rows(trials: Sequence[FrozenTrial], baseline: dict[str, float],
         baselines: dict[int, dict[str, float]] | None = None,
         by_context: dict[str, dict[str, float]] | None = None) -> list[Row]:
    """Each trial with its deltas against the teacher measured in its own measurement context (device, threads,
    hardware), else on its own thread count (studies from before contexts)."""
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        record = trial_record(t)
        if record.baseline_context is not None and record.baseline_context in (by_context or {}):
            reference = by_context[record.baseline_context]
        else:
            _, reference = baseline_for(baselines or {}, record.baseline_threads, baseline)
        out.append(Row(t.number, dict(t.params), record.metrics, deltas(record.metrics, reference), feasible(t),
                       record.mlflow_run_id))
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
    runtimes = {t.params.get("runtime", "torch") for t in candidates}
    if metric in (M.MEMORY_MODEL, M.MEMORY_ACTIVATIONS) and len(runtimes) > 1:
        raise ValueError(f"--pick {rule}: {metric} is measured two ways across runtimes {sorted(runtimes)} (torch: "
                         f"allocator peak; onnxruntime: RSS increase); pick by trial:N or smallest, or compare "
                         f"{M.MEMORY_WEIGHTS}, which is measured the same way for both")
    sign = 1.0 if direction == "minimize" else -1.0

    def key(t: FrozenTrial):
        measured = trial_record(t).metrics
        value = measured.get(metric, math.inf * sign)
        accuracy = measured.get(M.VAL_ACCURACY, 0.0)
        return (sign * value, -accuracy, t.number)

    return min(candidates, key=key)


# --- noise: intervals, "within noise" and ties -------------------------------------------------------
Z95 = 1.959964  # two-sided 95 % normal quantile (Wilson score interval)
EXAMPLES = {M.VAL_ACCURACY: M.VAL_EXAMPLES, M.TEST_ACCURACY: M.TEST_EXAMPLES}


def wilson_ci95(p: float, n: int) -> tuple[float, float]:
    """The Wilson score 95 % interval of a proportion `p` observed on `n` rows."""
    if n <= 0:
        raise ValueError(f"a proportion needs n > 0 rows, got {n}")
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return centre - half, centre + half


def interval(metrics: dict[str, float], name: str) -> tuple[float, float, str] | None:
    """(low, high, how) of a quality metric: the 95 % t-interval over seeds when several were trained,
    else the Wilson interval of the one model's accuracy on its n rows, else None."""
    if name not in metrics:
        return None
    value, ci = metrics[name], metrics.get(M.ci95_name(name))
    if ci is not None and M.seed_name(name, 1) in metrics:
        return value - ci, value + ci, "t95 over seeds"
    rows = metrics.get(EXAMPLES.get(name, ""))
    if rows:
        low, high = wilson_ci95(value, int(rows))
        return low, high, f"Wilson 95 % on {int(rows)} rows"
    return None


def within_noise(student: dict[str, float], teacher: dict[str, float], name: str = M.VAL_ACCURACY) -> bool | None:
    """True when the student's interval of `name` overlaps the teacher's (None: an interval is missing)."""
    a, b = interval(student, name), interval(teacher, name)
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def latency_noise(metrics: dict[str, float], key: str, rel_tol: float) -> float:
    """What a latency measurement cannot tell apart: its p90-p50 spread, at least rel_tol of its median."""
    value = metrics.get(key, 0.0)
    spread = metrics.get(key.replace("_p50_", "_p90_"), value) - value if "_p50_" in key else 0.0
    return max(spread, rel_tol * value)


def indistinguishable(a: dict[str, float], b: dict[str, float], key: str, rel_tol: float) -> bool:
    """Whether two trials' values of one objective metric differ by less than its measurement noise."""
    if key not in a or key not in b:
        return False
    va, vb = a[key], b[key]
    if key.startswith("latency_ms_"):
        return abs(va - vb) <= max(latency_noise(a, key, rel_tol), latency_noise(b, key, rel_tol))
    ia, ib = interval(a, key), interval(b, key)
    if ia is not None and ib is not None:
        return ia[0] <= vb <= ia[1] and ib[0] <= va <= ib[1]  # each within the other's interval
    return abs(va - vb) <= rel_tol * max(abs(va), abs(vb))


def break_ties(front: Sequence[Row], objective_keys: Sequence[str], rel_tol: float) -> tuple[list[Row], list[str]]:
    """Front points that no measurement tells apart on every objective are one point: keep the one with
    fewer parameters, then the lower trial number, and say so ("trial 7 ~ trial 4: tie within noise, kept 4")."""
    order = sorted(front, key=lambda r: (r.metrics.get(M.PARAMS_TOTAL, math.inf), r.number))
    kept: list[Row] = []
    notes: list[str] = []
    for row in order:
        twin = next((k for k in kept if all(indistinguishable(row.metrics, k.metrics, key, rel_tol)
                                            for key in objective_keys)), None)
        if twin is None:
            kept.append(row)
        else:
            notes.append(f"trial {row.number} ~ trial {twin.number}: tie within noise, kept {twin.number}")
    return sorted(kept, key=lambda r: r.number), notes
