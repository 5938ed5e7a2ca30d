"""Statistics over a point trained with several seeds: mean, standard deviation, 95 % t-interval.

Pure functions; names come from `trainers.metrics` (`<name>`, `<name>_std`, `<name>_ci95`,
`<name>_seed<i>`). The interval is the half-width of the two-sided 95 % Student-t interval of the
mean, t(0.975, n-1) * s / sqrt(n), with s the sample standard deviation (n - 1 in the denominator).
"""

from __future__ import annotations

import math
from typing import Sequence

from trainers import metrics as M

# Two-sided 95 % quantiles of Student's t, t(0.975, df). Between table rows the next LOWER df is used
# (a wider, conservative interval); beyond the table the normal 1.96.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"a t-interval needs at least 2 values (df >= 1), got df={df}")
    return T975[max(k for k in T975 if k <= df)] if df <= 120 else 1.960


def mean_std_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and the 95 % t half-width; std and half-width are 0 for one value."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0, 0.0
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std, t975(n - 1) * std / math.sqrt(n)


def seed_metrics(per_seed: Sequence[dict[str, float]], names: Sequence[str] = M.SEEDED) -> dict[str, float]:
    """For each name every seed measured: the mean under the plain name, `_std`, `_ci95` and `_seed<i>`."""
    out: dict[str, float] = {}
    for name in names:
        if not per_seed or not all(name in m for m in per_seed):
            continue
        values = [float(m[name]) for m in per_seed]
        mean, std, ci = mean_std_ci95(values)
        out[name], out[M.std_name(name)], out[M.ci95_name(name)] = mean, std, ci
        out.update({M.seed_name(name, i): v for i, v in enumerate(values)})
    return out


def median_index(values: Sequence[float]) -> int:
    """The index of the median value (the lower median for an even count; ties go to the earlier index):
    the representative seed, neither the best nor the worst."""
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    return order[(len(values) - 1) // 2]
