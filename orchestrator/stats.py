"""Intervals that count every source of noise, and paired comparisons on shared rows (pure numpy).

- `accuracy_interval`: a two-level bootstrap of a point's accuracy: each replicate resamples the rows
  (with replacement) and, independently, the seeds; the 2.5/97.5 % quantiles of the replicates'
  accuracies, widened to at least the Wilson 95 % interval of the mean accuracy on the n rows (so an
  interval is never zero-width because the seeds happened to agree, nor at 0 or 100 %).
- `paired_delta`: accuracy of A minus accuracy of B on the rows both predicted, with a paired
  bootstrap: one row resample shared by both sides (the pairing), each side's seeds resampled on
  their own; at least as wide as the Agresti-Min interval of the kept models' 2x2 table (half a row
  added to each cell), so two models that agree on every row of a small split get an interval that says
  how few rows that was, not a zero-width one.
- `mcnemar`: the exact McNemar test of two single models on the discordant rows (scipy binomtest).

Deterministic: every bootstrap uses its own generator seeded with `BOOTSTRAP_SEED`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainers.measure.predictions import Predictions, SplitRows

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 20261201
CONFIDENCE = 0.95
_CHUNK = 250
METHOD = (f"two-level bootstrap ({BOOTSTRAP_REPLICATES} replicates: rows resampled, then seeds), 95 % percentile "
          "interval, at least the Wilson 95 % interval on the validation rows")
PAIRED_METHOD = (f"paired bootstrap on the shared rows ({BOOTSTRAP_REPLICATES} replicates: one row resample for both "
                 "models, each one's seeds resampled), 95 % percentile interval, at least the Agresti-Min interval "
                 "of the kept models' discordant rows")


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def wilson(p: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion `p` observed on `n` rows."""
    if n <= 0:
        raise ValueError(f"a proportion needs n > 0 rows, got {n}")
    z = _z(confidence)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _weights(rng: np.random.Generator, k: int, b: int) -> np.ndarray:
    """(b, k) bootstrap weights summing to 1 per replicate: multinomial counts of k draws from k items / k."""
    if k == 1:
        return np.ones((b, 1))
    return rng.multinomial(k, np.full(k, 1.0 / k), size=b) / k


def _replicates(sides: list[np.ndarray], signs: list[float], replicates: int, seed: int) -> np.ndarray:
    """sum_i sign_i * accuracy_i for each replicate: rows resampled once for all sides, seeds per side."""
    rng = np.random.default_rng(seed)
    n = sides[0].shape[1]
    out = []
    for start in range(0, replicates, _CHUNK):
        b = min(_CHUNK, replicates - start)
        rows = _weights(rng, n, b)  # (b, n)
        per_row = sum(sign * (_weights(rng, c.shape[0], b) @ c) for sign, c in zip(signs, sides))  # (b, n)
        out.append((rows * per_row).sum(axis=1))
    return np.concatenate(out)


def _quantiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def accuracy_interval(correct: np.ndarray, confidence: float = CONFIDENCE, replicates: int = BOOTSTRAP_REPLICATES,
                      seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(mean accuracy, low, high) of S seeds' models on n rows; `correct` is (S, n) (or (n,) for one model)."""
    correct = np.atleast_2d(np.asarray(correct, dtype=float))
    if correct.size == 0:
        raise ValueError("no rows to compute an accuracy on")
    mean = float(correct.mean())
    low, high = _quantiles(_replicates([correct], [1.0], replicates, seed), confidence)
    w_low, w_high = wilson(mean, correct.shape[1], confidence)
    return mean, min(low, w_low), max(high, w_high)


@dataclass(frozen=True)
class Paired:
    """A minus B on the rows both predicted: accuracies, their difference and its paired interval (fractions)."""

    rows: int
    a: float
    b: float
    delta: float
    low: float
    high: float
    a_only: int  # rows the kept model of A got right and B's did not (McNemar's discordant counts)
    b_only: int

    @property
    def verdict(self) -> str:
        """'~' when the interval contains 0, else 'better' or 'worse' (A relative to B)."""
        return "~" if self.low <= 0.0 <= self.high else ("better" if self.low > 0 else "worse")


def shared(a: SplitRows, b: SplitRows) -> tuple[np.ndarray, np.ndarray]:
    """(S_a, m) and (S_b, m) correctness on the m rows both predicted, aligned by row id; the gold labels must agree."""
    common, ia, ib = np.intersect1d(a.row_id, b.row_id, assume_unique=True, return_indices=True)
    if common.size == 0:
        raise ValueError("the two models share no rows: they were measured on different splits")
    if not np.array_equal(a.gold[ia], b.gold[ib]):
        bad = int(common[np.argmax(a.gold[ia] != b.gold[ib])])
        raise ValueError(f"row {bad} has different gold labels in the two prediction files: not the same data")
    return a.correct[:, ia], b.correct[:, ib]


def paired_delta(a: SplitRows, b: SplitRows, *, kept_a: int = 0, kept_b: int = 0, confidence: float = CONFIDENCE,
                 replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> Paired:
    ca, cb = shared(a, b)
    reps = _replicates([ca.astype(float), cb.astype(float)], [1.0, -1.0], replicates, seed)
    low, high = _quantiles(reps, confidence)
    acc_a, acc_b = float(ca.mean()), float(cb.mean())
    ka, kb = ca[min(kept_a, len(ca) - 1)], cb[min(kept_b, len(cb) - 1)]
    a_only, b_only, n = int((ka & ~kb).sum()), int((kb & ~ka).sum()), int(ca.shape[1])
    floor = discordance_floor(a_only, b_only, n, confidence)
    delta = acc_a - acc_b
    return Paired(rows=n, a=acc_a, b=acc_b, delta=delta, low=min(low, delta - floor), high=max(high, delta + floor),
                  a_only=a_only, b_only=b_only)


def discordance_floor(a_only: int, b_only: int, n: int, confidence: float = CONFIDENCE) -> float:
    """The least half-width of a paired interval on n rows, `a_only` and `b_only` of them discordant: the
    Agresti-Min (2005) interval's (half a row added to each cell of the 2x2 table, then Wald), which is about
    the bootstrap's where rows disagree and 1.96 / (n + 2) x 1 row's worth (not 0) where none do."""
    b, c, m = a_only + 0.5, b_only + 0.5, n + 2.0
    return _z(confidence) * math.sqrt(max(0.0, (b + c) - (b - c) ** 2 / m)) / m


def mcnemar(paired: Paired) -> float:
    """Exact two-sided McNemar p-value on the kept models' discordant rows (1.0 when there are none)."""
    from scipy.stats import binomtest

    n = paired.a_only + paired.b_only
    return 1.0 if n == 0 else float(binomtest(paired.a_only, n, 0.5).pvalue)


def interval_names(prefix: str) -> tuple[str, str]:
    return f"{prefix}_accuracy_ci_low", f"{prefix}_accuracy_ci_high"


def delta_names(prefix: str) -> tuple[str, str]:
    return f"delta_{prefix}_accuracy_points_ci_low", f"delta_{prefix}_accuracy_points_ci_high"


def decision_metrics(student: Predictions, teacher: Predictions | None = None) -> dict[str, float]:
    """The intervals the table and the constraints read, from prediction files: per split the pooled
    accuracy interval (`<p>_accuracy_ci_low/high`, fractions) and, against the teacher, the paired interval
    of the difference (`delta_<p>_accuracy_points_ci_low/high`, points) and its shared rows."""
    out: dict[str, float] = {}
    for prefix, rows in student.splits.items():
        _, low, high = accuracy_interval(rows.correct)
        out.update(zip(interval_names(prefix), (low, high)))
        if teacher is not None and prefix in teacher.splits:
            p = paired_delta(rows, teacher.splits[prefix], kept_a=student.kept, kept_b=teacher.kept)
            out.update(zip(delta_names(prefix), (100.0 * p.low, 100.0 * p.high)))
            out[f"{prefix}_paired_rows"] = float(p.rows)
    return out
