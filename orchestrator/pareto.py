"""The Pareto front and the pick of one trial: pure functions over finished trials.

The front itself is Optuna's (`study.best_trials`, which also honours constraints set with
`trial.set_constraint`); this module adds the comparison with the teacher and the pick rules.
Everything here that chooses reads validation metrics (`val_*`); test metrics are only carried
along to be reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

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
    if c.max_drop is not None and c.confidence is not None:  # the paired interval's lower end, not the point
        low = metrics.get(M.DELTA_VAL_ACCURACY_CI_LOW)
        return 1.0 if low is None else -low / 100.0 - c.max_drop  # no paired interval: not shown to hold
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


Paired = Callable[[FrozenTrial, FrozenTrial], "tuple[float, float] | None"]


def pick(front: Sequence[FrozenTrial], rule: str, objectives: Sequence[Objective] = (), *, rel_tol: float = 0.02,
         paired: Paired | None = None) -> FrozenTrial:
    """One trial of the front by a named rule (`fastest`...) or `trial:N` (see `pick_with_reason`)."""
    return pick_with_reason(front, rule, rel_tol=rel_tol, paired=paired)[0]


def pick_with_reason(front: Sequence[FrozenTrial], rule: str, *, rel_tol: float = 0.02,
                     paired: Paired | None = None) -> tuple[FrozenTrial, str]:
    """One trial by a named rule, respecting the noise it measured, and why.

    Candidates within the measured noise of the best on the rule's metric are tied (latency within
    its p90-p50 spread or `rel_tol`; accuracy within the paired interval of the difference, from
    `paired(a, b)` -> (low, high), else within each other's interval; parameter counts exactly);
    of the tied, the most accurate wins, then fewer parameters, then the better on the rule's own
    metric (`most_accurate`: fewer parameters, then the more accurate). Only trials that meet every
    constraint qualify.
    """
    if rule.startswith("trial:") and rule.split(":", 1)[1].isdigit():
        number = int(rule.split(":", 1)[1])
        for t in front:
            if t.number == number:
                return t, f"trial {number}, as asked"
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
    m = {t.number: trial_record(t).metrics for t in candidates}
    acc = lambda t: m[t.number].get(M.VAL_ACCURACY, 0.0)  # noqa: E731
    params = lambda t: m[t.number].get(M.PARAMS_TOTAL, math.inf)  # noqa: E731
    own = lambda t: sign * m[t.number].get(metric, math.inf * sign)  # noqa: E731 - the rule's own metric
    best = min(candidates, key=lambda t: (own(t), -acc(t), t.number))
    tied = [t for t in candidates if t is best or _tied(t, best, m, metric, rel_tol, paired)]
    if metric == M.VAL_ACCURACY:
        chosen = min(tied, key=lambda t: (params(t), -acc(t), t.number))
        then = "fewer parameters, then the more accurate"
    else:
        chosen = min(tied, key=lambda t: (-acc(t), params(t), own(t), t.number))
        then = f"the most accurate, then fewer parameters, then the better {metric}"
    others = sorted(t.number for t in tied if t is not best)
    if not others:
        return chosen, f"{rule}: trial {best.number} has the best {metric}; no other trial within its noise"
    return chosen, (f"{rule}: trial {best.number} has the best {metric}; trial(s) {others} are within its measured "
                    f"noise ({NOISE_RULE}); of them {then} wins: trial {chosen.number}")


NOISE_RULE = ("latency within its p90-p50 spread or measure.rel_tol, accuracy within the paired 95 % interval, "
              "other metrics within measure.rel_tol, parameter counts exactly")


def _tied(t: FrozenTrial, best: FrozenTrial, m: dict[int, dict[str, float]], metric: str, rel_tol: float,
          paired: Paired | None) -> bool:
    a, b = m[t.number], m[best.number]
    if metric not in a or metric not in b:
        return False
    if metric == M.PARAMS_TOTAL:
        return a[metric] == b[metric]
    if metric == M.VAL_ACCURACY and paired is not None:
        interval_ = paired(t, best)
        if interval_ is not None:
            return interval_[0] <= 0.0 <= interval_[1]
    if metric == M.VAL_ACCURACY:
        ia, ib = interval(a, metric), interval(b, metric)
        if ia is not None and ib is not None:
            return ia[0] <= ib[1] and ib[0] <= ia[1]
    return indistinguishable(a, b, metric, rel_tol)


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
    """(low, high, how) of a quality metric: the pooled interval from the per-row predictions (rows and seeds)
    when it was computed, else the 95 % t-interval over seeds, else the Wilson interval on its n rows, else None."""
    if name not in metrics:
        return None
    low, high = metrics.get(name + "_ci_low"), metrics.get(name + "_ci_high")
    if low is not None and high is not None:  # from the per-row predictions: rows and seeds (orchestrator/stats.py)
        return low, high, "bootstrap over its rows (and seeds, when several)"
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


def versus_teacher(student: dict[str, float], teacher: dict[str, float], split: str = "val") -> str:
    """'~teacher' when the paired 95 % interval of (student - teacher) contains 0, else 'worse' or 'better';
    without a paired interval, the unpaired overlap of the two intervals (labelled so), or '?'."""
    low, high = student.get(f"delta_{split}_accuracy_points_ci_low"), student.get(f"delta_{split}_accuracy_points_ci_high")
    if low is not None and high is not None:
        return "~teacher" if low <= 0.0 <= high else ("worse" if high < 0 else "better")
    return {True: "~teacher (unpaired)", False: "", None: "?"}[within_noise(student, teacher, f"{split}_accuracy")]


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


def break_ties(front: Sequence[Row], objective_keys: Sequence[str], rel_tol: float,
               paired: Callable[[int, int], tuple[float, float] | None] | None = None) -> tuple[list[Row], list[str]]:
    """Front points that no measurement tells apart on every objective are one point: keep the one with
    fewer parameters, then the lower trial number, and say so ("trial 7 ~ trial 4: tie within noise, kept 4").

    Validation accuracy is told apart the way picks do it: by the paired 95 % interval of the difference
    on the shared rows (`paired(number_a, number_b)` -> (low, high)), when both have prediction files;
    else by each value lying within the other's interval."""
    order = sorted(front, key=lambda r: (r.metrics.get(M.PARAMS_TOTAL, math.inf), r.number))
    kept: list[Row] = []
    notes: list[str] = []

    def same(a: Row, b: Row, key: str) -> bool:
        if key == M.VAL_ACCURACY and paired is not None and key in a.metrics and key in b.metrics:
            iv = paired(a.number, b.number)
            if iv is not None:
                return iv[0] <= 0.0 <= iv[1]
        return indistinguishable(a.metrics, b.metrics, key, rel_tol)

    for row in order:
        twin = next((k for k in kept if all(same(row, k, key) for key in objective_keys)), None)
        if twin is None:
            kept.append(row)
        else:
            notes.append(f"trial {row.number} ~ trial {twin.number}: tie within noise, kept {twin.number}")
    return sorted(kept, key=lambda r: r.number), notes
