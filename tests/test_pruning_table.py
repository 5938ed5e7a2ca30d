"""The pruning benchmark's statistics and verdict (benchmarks/pruning_table.py): pure functions of its rows."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from benchmarks.pruning_table import Cells, paired, t_half, verdict

GOLD = [1] * 100
NAMES = {"block": "block movement", "head": "head movement", "taylor": "one-shot Taylor", "magnitude": "magnitude"}
ARGS = SimpleNamespace(kd_alpha=0.7, kd_temperature=2.0, hidden_weight=0.0, parts=["main"])


def _row(method: str, ratio: float, seed: int, correct: int, alpha: float = 0.7) -> dict:
    pred = [1] * correct + [0] * (100 - correct)
    return {"method": method, "ratio": ratio, "alpha": alpha, "T": 2.0 if alpha else None, "hidden": 0.0, "seed": seed,
            "val_pred": pred, "test_pred": pred}


def test_t_half_is_the_95_percent_t_interval_of_the_mean():
    xs = [0.80, 0.82, 0.84]  # sd 0.02, n 3, t(0.975, 2) = 4.3027
    assert t_half(xs) == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)
    assert math.isnan(t_half([0.8]))


def test_paired_difference_is_taken_seed_by_seed():
    labels = {"validation": GOLD, "test": GOLD}
    c = Cells([_row("block", 0.5, s, 80 + s) for s in range(3)] + [_row("taylor", 0.5, s, 70 + 2 * s) for s in range(3)],
              labels)
    # per-seed differences 10, 9, 8 points: mean 9, sd 1
    assert paired(c.get("block", 0.5, 0.7, 2.0), c.get("taylor", 0.5, 0.7, 2.0)) == \
        f"+9.0 ± {100 * t_half([0.10, 0.09, 0.08]):.1f}"


def test_verdict_says_by_how_much_each_target_is_missed():
    labels = {"validation": GOLD, "test": GOLD}
    rows = [_row("block", 0.25, s, 88) for s in range(3)]  # 2 points below a 90 % teacher: target 0.5 missed by 1.5
    rows += [_row("block", 0.5, s, 89) for s in range(3)]  # 1 point below: target 1.5 met
    rows += [_row("block", 0.75, s, c) for s, c in enumerate((70, 72, 74))]  # mean 72, sd 2
    rows += [_row("taylor", 0.75, s, c) for s, c in enumerate((70, 71, 72))]  # mean 71: +1 < sd 2, missed by 1.0
    lines = verdict(Cells(rows, labels), ARGS, {"val": 0.90, "test": 0.90}, NAMES)
    text = "\n".join(lines)
    assert "at 25% (3 seed(s)): **missed by 1.5 points**" in text
    assert "at 50% (3 seed(s)): **met**" in text
    assert "at 75%: **missed by 1.0 points** (+1.0 points vs std 2.0" in text
    assert "one-shot Taylor + KD at 50%: not run." in text
