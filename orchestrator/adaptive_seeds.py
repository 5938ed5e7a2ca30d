"""Adaptive seeds: an extra seed only for the points whose verdict is still uncertain.

`training.seeds: {min: 1, max: 3, max_trainings: N}`. Every point first trains `min` seeds. Then, round
by round, each completed point is asked how close its verdicts are to flipping, in points of
validation accuracy (validation decides; test is never read here):

- **front membership**: the accuracy gap to the point that decides it. For a point on the front, that
  is the most accurate other point at least as good on every other objective (if it caught up, it
  would dominate). For a point off the front, it is the most accurate of those that dominate it (it
  would have to pass them all);
- **vs the teacher**: the distance from 0 to the nearer end of the paired 95 % interval of
  Δ = student - teacher (the verdict flips between "~teacher" and "worse"/"better" when an end crosses 0);
- **accuracy constraints**: the distance of the constrained quantity (point estimate, or the interval's
  lower end for `confidence:`) from the `max_drop` bound.

The seeds of a point move its mean by about seed_sd / sqrt(seeds), where seed_sd is the standard
deviation of one seed's accuracy, pooled over the points that already have several seeds (at least
one validation row's worth: seeds that happened to agree do not make a verdict certain). A verdict
whose margin is under `Z_UNCERTAIN` such standard errors is uncertain. Before any point has two
seeds, seed_sd is not measured yet: it is assumed to be the binomial standard error of the point's
accuracy on its validation rows, sqrt(acc (1 - acc) / rows) (fine-tuning runs on a small split differ
by about that much), and the log says it was assumed. Each round gives one
more seed to the uncertain points, the least certain first, while the sweep's student trainings stay
within `max_trainings` (a training shared by several variants is counted once). The point is rerun
as a new trial with more seeds (the earlier seeds' trainings are reused from the cache) that replaces
the old one on the front (`supersedes`).

Pure functions over `Point` records; `plan_round` is what the sweep calls between rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

Z_UNCERTAIN = 2.0  # margins under 2 seed standard errors can flip when the point is trained again


@dataclass(frozen=True)
class Point:
    """One completed point as the rounds see it: accuracies are fractions, Δ bounds are points."""

    number: int
    seeds: int
    accuracy: float  # validation accuracy, mean over its seeds
    seed_accuracies: tuple[float, ...]  # one per seed (empty when unknown)
    others: tuple[float, ...]  # the other objectives, signed so that lower is better
    feasible: bool = True
    delta_low: float | None = None  # paired 95 % interval of student - teacher, points
    delta_high: float | None = None
    constraint_values: tuple[float, ...] = ()  # accuracy constraints: the value that must be >= 0 to hold, points
    training: str | None = None  # the shared training key: variants of one training share their seeds
    rows: int = 0  # validation rows (the prior for seed noise before it is measured)


@dataclass(frozen=True)
class TopUp:
    number: int  # the trial it replaces
    seeds: int  # the seeds the new trial runs
    reason: str
    z: float  # margin / seed standard error (inf: not known)


def seed_sd(points: Sequence[Point]) -> tuple[float | None, int]:
    """The pooled standard deviation of one seed's validation accuracy, and how many points it pools."""
    num, dof, used = 0.0, 0, 0
    for p in points:
        values = p.seed_accuracies
        if len(values) >= 2:
            mean = sum(values) / len(values)
            num += sum((v - mean) ** 2 for v in values)
            dof += len(values) - 1
            used += 1
    if dof == 0:
        return None, 0
    return math.sqrt(num / dof), used


def _at_least_as_good(q: Point, p: Point) -> bool:
    return all(a <= b for a, b in zip(q.others, p.others))


def front_margin(p: Point, points: Sequence[Point]) -> tuple[float, int | None, bool]:
    """(accuracy gap in points to the point that decides p's membership, that point, p on the front)."""
    rivals = [q for q in points if q.number != p.number and q.feasible and _at_least_as_good(q, p)]
    if not p.feasible:
        return math.inf, None, False
    if not rivals:
        return math.inf, None, True
    best = max(rivals, key=lambda q: (q.accuracy, -q.number))
    strictly_better_elsewhere = any(a < b for a, b in zip(best.others, p.others))
    on_front = p.accuracy > best.accuracy or (p.accuracy == best.accuracy and not strictly_better_elsewhere)
    return abs(p.accuracy - best.accuracy) * 100.0, best.number, on_front


def margins(p: Point, points: Sequence[Point]) -> list[tuple[float, str]]:
    """Every verdict of p with its margin (points of accuracy) and a phrase for the log."""
    out: list[tuple[float, str]] = []
    gap, rival, on = front_margin(p, points)
    if rival is not None:
        out.append((gap, f"{'on' if on else 'off'} the front by {gap:.2f} points of val accuracy vs trial {rival}"))
    if p.delta_low is not None and p.delta_high is not None:
        verdict = "~teacher" if p.delta_low <= 0 <= p.delta_high else ("worse" if p.delta_high < 0 else "better")
        edge = min(abs(p.delta_low), abs(p.delta_high))
        out.append((edge, f"'{verdict}' by {edge:.2f} points (paired Δ interval [{p.delta_low:+.1f}, {p.delta_high:+.1f}])"))
    for value in p.constraint_values:
        out.append((abs(value), f"an accuracy constraint {'holds' if value >= 0 else 'fails'} by {abs(value):.2f} points"))
    return out


def uncertainties(points: Sequence[Point], max_seeds: int) -> list[TopUp]:
    """Points below `max_seeds` whose nearest verdict is within Z_UNCERTAIN seed standard errors, least
    certain first."""
    sd, pooled = seed_sd(points)
    out: list[TopUp] = []
    for p in points:
        found = margins(p, points)
        if p.seeds >= max_seeds or not found:
            continue
        margin, what = min(found)
        if sd is not None:
            one, source = sd, f"seed SD {100 * sd:.2f} points, pooled over {pooled} point(s)"
        elif p.rows > 0:
            one = math.sqrt(max(p.accuracy * (1 - p.accuracy), 0.25 / p.rows) / p.rows)
            source = f"seed SD not measured yet: assumed {100 * one:.2f} points, the binomial SE on {p.rows} val rows"
        else:
            continue
        if p.rows > 0:  # seeds that agreed on every row measure no spread: one row is the least it can be
            one = max(one, 1.0 / p.rows)
        se = 100.0 * one / math.sqrt(p.seeds)
        z = margin / se if se > 0 else math.inf
        if z >= Z_UNCERTAIN:
            continue
        out.append(TopUp(number=p.number, seeds=p.seeds + 1, z=z,
                         reason=f"{what} = {z:.1f} seed standard errors ({source}, / sqrt({p.seeds}))"))
    return sorted(out, key=lambda t: (t.z, t.number))


def plan_round(points: Sequence[Point], max_seeds: int, trainings_left: float) -> list[TopUp]:
    """This round's top-ups: the least certain first, while the new trainings they cost (one per shared
    training and seed count) fit in `trainings_left`."""
    by_number = {p.number: p for p in points}
    chosen: list[TopUp] = []
    new: set[tuple[str, int]] = set()
    for top in uncertainties(points, max_seeds):
        p = by_number[top.number]
        key = (p.training or f"trial-{p.number}", top.seeds)
        cost = 0 if key in new else 1
        if cost > trainings_left:
            continue
        trainings_left -= cost
        new.add(key)
        chosen.append(top)
    return chosen
