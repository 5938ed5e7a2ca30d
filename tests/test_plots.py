"""The Pareto plot: HTML and PNG written from plain point records, with the teacher and every label."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.plots import (PlotPoint, Pair, figure_title, front_2d, label, pairs, staircase, thresholds,
                               write_pareto_plots)
from trainers import metrics as vocab

OBJECTIVES = [("accuracy", "maximize"), ("latency", "minimize")]
TEACHER = {vocab.VAL_ACCURACY: 0.905, vocab.LATENCY_P50_BS1: 12.3, vocab.MEMORY_MODEL: 91.0}
SLOWDOWN = {"fp32": 1.0, "bf16": 0.8, "int8": 0.55}


@dataclass
class Bound:  # the shape of a sweep file's constraint
    metric: str
    max_drop: float | None = None
    max_ratio: float | None = None
    max: float | None = None
    min: float | None = None


def students(n: int = 8, seeds: bool = False) -> list[PlotPoint]:
    """Synthetic students whose accuracy falls and speed rises with pruning and lower precision."""
    rng = random.Random(0)
    grid = [(r, t, a, p) for r in (0.0, 0.25, 0.5) for t in (2.0, 4.0) for a in (0.0, 0.7) for p in SLOWDOWN]
    rng.shuffle(grid)
    raw = []
    for i, (ratio, temp, alpha, precision) in enumerate(grid[:n]):
        m = {vocab.VAL_ACCURACY: 0.9 - 0.08 * ratio - 0.02 * (precision == "int8") + rng.uniform(-0.01, 0.01),
             vocab.LATENCY_P50_BS1: 12 * (1 - 0.8 * ratio) * SLOWDOWN[precision] + rng.uniform(-0.5, 0.5),
             vocab.MEMORY_MODEL: 90 * (1 - 0.7 * ratio) * SLOWDOWN[precision]}
        if seeds:
            m[vocab.VAL_ACCURACY + "_ci95"] = 0.006
        params = {"pruning_ratio": ratio, "distill_temperature": temp, "distill_alpha": alpha, "precision": precision}
        raw.append((i, params, m, m[vocab.VAL_ACCURACY] >= TEACHER[vocab.VAL_ACCURACY] - 0.05))
    acc, lat = vocab.VAL_ACCURACY, vocab.LATENCY_P50_BS1

    def dominated(m):
        return any(ok and o[acc] >= m[acc] and o[lat] <= m[lat] and o is not m for _, _, o, ok in raw)

    return [PlotPoint(i, p, m, ok, ok and not dominated(m)) for i, p, m, ok in raw]


def test_html_and_png_hold_every_student_and_the_teacher(tmp_path: Path):
    points = students(8)
    written = write_pareto_plots(points, TEACHER, OBJECTIVES, [Bound("accuracy", max_drop=0.05)], tmp_path, title="demo")
    assert [p.name for p in written] == ["pareto.html", "pareto.png"]
    page = (tmp_path / "pareto.html").read_text()
    for point in points:
        assert label(point) in page  # hover text and the table under the figure
    assert '"name":"teacher"' in page
    assert json.dumps("val_accuracy ≥ teacher − 0.05 = 0.855")[1:-1] in page  # the constraint, at the teacher's value
    assert "median wall time of one forward pass at batch 1" in page and "[ms]" in page  # axis with its unit
    assert "* plotly.js v" in page and "<script src=" not in page  # plotly.js inlined: opens offline

    png = (tmp_path / "pareto.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 30_000
    from matplotlib.image import imread

    image = imread(tmp_path / "pareto.png")
    assert image.shape[0] >= 800 and image.shape[1] >= 1200
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_three_objectives_give_one_png_per_pair_and_one_page(tmp_path: Path):
    objectives = [*OBJECTIVES, ("memory", "minimize")]
    written = write_pareto_plots(students(10, seeds=True), TEACHER, objectives, [], tmp_path)
    assert sorted(p.name for p in written) == [
        "pareto.html",
        "pareto_memory_model_mb_vs_latency_ms_p50_bs1.png",
        "pareto_val_accuracy_vs_latency_ms_p50_bs1.png",
        "pareto_val_accuracy_vs_memory_model_mb.png",
    ]
    page = (tmp_path / "pareto.html").read_text()
    assert page.count("Plotly.newPlot") == 3
    assert page.count("* plotly.js v") == 1  # plotly.js inlined once, not once per pair


def test_accuracy_is_on_y_and_the_staircase_turns_at_the_worse_corner():
    a = PlotPoint(0, {}, {vocab.VAL_ACCURACY: 0.80, vocab.LATENCY_P50_BS1: 2.0}, True, True)
    b = PlotPoint(1, {}, {vocab.VAL_ACCURACY: 0.90, vocab.LATENCY_P50_BS1: 5.0}, True, True)
    c = PlotPoint(2, {}, {vocab.VAL_ACCURACY: 0.85, vocab.LATENCY_P50_BS1: 6.0}, True, False)  # dominated by b
    (pair,) = pairs([b, c, a], [("latency", "minimize"), ("accuracy", "maximize")])
    assert pair.x[0] == vocab.LATENCY_P50_BS1 and pair.y[0] == vocab.VAL_ACCURACY
    front = front_2d(pair)
    assert [p.number for p in front] == [0, 1]
    # from the fast, less accurate student to the slow, accurate one: across at 0.80, then up at 5 ms
    assert staircase(pair, front) == ([2.0, 5.0, 5.0], [0.80, 0.80, 0.90])


def test_staircase_when_both_metrics_are_maximised():
    pair = Pair(("throughput", "maximize"), ("val_accuracy", "maximize"))
    fast = PlotPoint(0, {}, {"throughput": 200.0, "val_accuracy": 0.8}, True, True)
    slow = PlotPoint(1, {}, {"throughput": 100.0, "val_accuracy": 0.9}, True, True)
    pair.points = [fast, slow]
    front = front_2d(pair)
    assert staircase(pair, front) == ([100.0, 100.0, 200.0], [0.9, 0.8, 0.8])


def test_constraint_lines_are_placed_from_the_teacher():
    lines = thresholds([Bound("accuracy", max_drop=0.05), Bound("latency", max_ratio=0.5), Bound("memory", max=40.0)],
                       TEACHER)
    assert [(t.metric, round(t.value, 4)) for t in lines] == [
        (vocab.VAL_ACCURACY, 0.855), (vocab.LATENCY_P50_BS1, 6.15), (vocab.MEMORY_MODEL, 40.0)]
    assert thresholds([Bound("accuracy", max_drop=0.05)], {}) == []  # no teacher value: no line invented


def test_a_single_objective_is_refused():
    with pytest.raises(ValueError, match="at least two objectives"):
        pairs(students(2), [("accuracy", "maximize")])


def test_what_cannot_be_drawn_is_said_in_the_title():
    unmeasured = PlotPoint(9, {}, {vocab.VAL_ACCURACY: 0.7, vocab.LATENCY_P50_BS1: float("nan")})
    (pair,) = pairs([*students(3), unmeasured], OBJECTIVES)
    assert [p.number for p in pair.points] == [0, 1, 2]
    title = figure_title("demo", pair, {vocab.VAL_ACCURACY: 0.9})
    assert title == ("demo: val_accuracy vs latency_ms_p50_bs1 (not drawn: the teacher has no latency_ms_p50_bs1; "
                     "1 student(s) without both metrics)")


def test_error_bars_stop_at_the_range_of_the_metric():
    from orchestrator.plots import error_bar, plotly_error

    near_one = PlotPoint(0, {}, {vocab.VAL_ACCURACY: 0.98, vocab.VAL_ACCURACY + "_ci95": 0.19,
                                 vocab.LATENCY_P50_BS1: 3.0, vocab.LATENCY_P50_BS1 + "_ci95": 5.0})
    below, above = error_bar(near_one, vocab.VAL_ACCURACY)
    assert below == pytest.approx(0.19) and above == pytest.approx(0.02)  # 2 seeds: t-interval past 1.0 is cut at 1.0
    assert error_bar(near_one, vocab.LATENCY_P50_BS1) == (5.0, 5.0)  # an unbounded metric keeps its interval
    assert error_bar(PlotPoint(1, {}, {vocab.VAL_ACCURACY: 0.5}), vocab.VAL_ACCURACY) is None  # one seed: no bar
    drawn = plotly_error([error_bar(near_one, vocab.VAL_ACCURACY), None])
    assert drawn["array"] == pytest.approx([0.02, 0]) and drawn["arrayminus"] == pytest.approx([0.19, 0])
    # the pooled interval (rows and seeds, from the per-row predictions) is drawn when the point has one
    pooled = PlotPoint(2, {}, {vocab.VAL_ACCURACY: 0.9, vocab.VAL_ACCURACY_CI_LOW: 0.85, vocab.VAL_ACCURACY_CI_HIGH: 0.93,
                               vocab.VAL_ACCURACY + "_ci95": 0.4})
    assert error_bar(pooled, vocab.VAL_ACCURACY) == pytest.approx((0.05, 0.03))
    assert drawn["visible"] and not drawn["symmetric"]
