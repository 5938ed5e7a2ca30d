"""What a sweep will cost before it runs: folded grid points, distinct trainings, a wall-time estimate.

Pure functions of grid points and measured seconds per step; `sweep check` and `sweep launch` print
them. Two points train the same student when they differ only in how the result is run (int8 is
dynamic quantisation of the fp32-trained student) or in the temperature at alpha 0 (no soft targets,
T unused); the second kind is not even a distinct trial and is folded out of the grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from trainers.precision import train_precision


def _fold_key(point: dict) -> tuple:
    """The point with T dropped at alpha 0; every other dimension (spec.DIMENSIONS) kept as it is."""
    alpha = float(point["distill_alpha"])
    rest = tuple(sorted((k, v) for k, v in point.items()
                        if k not in ("pruning_ratio", "distill_alpha", "distill_temperature", "precision")))
    return (float(point["pruning_ratio"]), alpha, None if alpha == 0 else float(point["distill_temperature"]),
            point["precision"], rest)


def training_identity(point: dict) -> tuple:
    """The part of a point that decides the trained weights (the precision it trains in, not the deployed one)."""
    ratio, alpha, temperature, precision, _ = _fold_key(point)
    # the runtime only serves the trained student; the vocabulary picks the teacher it starts from
    return ratio, alpha, temperature, train_precision(precision), point.get("vocabulary", "full")


def fold_points(points: list[dict]) -> tuple[list[dict], int]:
    """Points with the temperature folded away at alpha 0 (the first of each group is kept, in order);
    returns (kept points, how many were folded)."""
    seen: set[tuple] = set()
    kept = []
    for point in points:
        key = _fold_key(point)
        if key not in seen:
            seen.add(key)
            kept.append(point)
    return kept, len(points) - len(kept)


def distinct_trainings(points: list[dict]) -> int:
    return len({training_identity(p) for p in points})


def seconds_per_step_at(ratio: float, calibrated: dict[float, float]) -> float:
    """Linear interpolation between calibrated ratios (clamped at the ends)."""
    if not calibrated:
        raise ValueError("no calibrated step times")
    xs = sorted(calibrated)
    if ratio <= xs[0]:
        return calibrated[xs[0]]
    if ratio >= xs[-1]:
        return calibrated[xs[-1]]
    for lo, hi in zip(xs, xs[1:]):
        if lo <= ratio <= hi:
            w = (ratio - lo) / (hi - lo)
            return calibrated[lo] * (1 - w) + calibrated[hi] * w
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Estimate:
    trainings: int
    training_s: float
    measuring_s: float
    teacher_s: float
    workers: int

    @property
    def wall_s(self) -> float:
        """One-off teacher work, then trainings and measurements spread over the workers (measuring takes turns)."""
        return self.teacher_s + self.training_s / self.workers + self.measuring_s


def estimate(points: list[dict], *, steps_per_trial: int, step_seconds: dict[str, dict[float, float]],
             measure_s_per_trial: float, teacher_s: float = 0.0, workers: int = 1,
             refill_steps_per_trial: Callable[[float], int] = lambda ratio: 0) -> Estimate:
    """Wall time = distinct trainings x steps per trial x seconds per step (at the ratio and training
    precision) + a measurement per point (+ the teacher when it is not cached yet).

    `step_seconds[train_precision][ratio]` are the calibrated seconds per step; `refill_steps_per_trial(ratio)`
    the steps of the hybrid-filled retraining a student pruned at that ratio runs after its training (all seeds)."""
    identities = {training_identity(p) for p in points}
    training = 0.0
    for ratio, _, _, precision, _vocabulary in identities:
        table = step_seconds.get(precision) or step_seconds["fp32"]
        training += (steps_per_trial + refill_steps_per_trial(ratio)) * seconds_per_step_at(ratio, table)
    return Estimate(trainings=len(identities), training_s=training, measuring_s=len(points) * measure_s_per_trial,
                    teacher_s=teacher_s, workers=max(1, workers))


def human_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 90:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"
