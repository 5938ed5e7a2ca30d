"""Deterministic stratified splitting and capping (no sklearn: it refuses classes with one row)."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence


def allocate(sizes: dict[Hashable, int], total: int, caps: dict[Hashable, int]) -> dict[Hashable, int]:
    """Split `total` over classes in proportion to `sizes` (largest remainder), never above `caps`."""
    n = sum(sizes.values())
    if n == 0 or total <= 0:
        return {k: 0 for k in sizes}
    quota = {k: sizes[k] * total / n for k in sizes}
    counts = {k: min(caps[k], math.floor(quota[k])) for k in sizes}
    order = sorted(sizes, key=lambda k: (-(quota[k] - math.floor(quota[k])), str(k)))
    left = total - sum(counts.values())
    while left > 0 and any(counts[k] < caps[k] for k in order):
        for k in order:
            if left and counts[k] < caps[k]:
                counts[k] += 1
                left -= 1
    return counts


def _by_class(labels: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def stratified_split(
    labels: Sequence[Hashable], fractions: dict[str, float], seed: int
) -> tuple[list[int], dict[str, list[int]]]:
    """Indices kept in the pool and cut for each named split (e.g. {"test": .2, "validation": .1}).

    Every class keeps at least one row in the pool, so a split never holds a label that train lacks.
    Indices come back in their original order; the same labels and seed always give the same split.
    """
    groups = _by_class(labels)
    sizes = {k: len(v) for k, v in groups.items()}
    room = {k: max(0, s - 1) for k, s in sizes.items()}
    cut: dict[str, dict[Hashable, int]] = {}
    for name, frac in fractions.items():
        cut[name] = allocate(sizes, math.floor(len(labels) * frac + 0.5), room)
        room = {k: room[k] - cut[name][k] for k in room}
    rng = random.Random(f"stratified/{seed}")
    pool: list[int] = []
    out: dict[str, list[int]] = {name: [] for name in fractions}
    for k, idx in groups.items():
        idx = idx[:]
        rng.shuffle(idx)
        for name in fractions:
            out[name] += idx[: cut[name][k]]
            idx = idx[cut[name][k]:]
        pool += idx
    return sorted(pool), {name: sorted(v) for name, v in out.items()}


def stratified_cap(labels: Sequence[Hashable], max_rows: int, seed: int | str) -> list[int]:
    """At most `max_rows` indices with the label proportions of the whole, in original order."""
    if len(labels) <= max_rows:
        return list(range(len(labels)))
    groups = _by_class(labels)
    sizes = {k: len(v) for k, v in groups.items()}
    keep = allocate(sizes, max_rows, sizes)
    rng = random.Random(f"cap/{seed}")
    picked: list[int] = []
    for k, idx in groups.items():
        idx = idx[:]
        rng.shuffle(idx)
        picked += idx[: keep[k]]
    return sorted(picked)
