"""The Pareto plot of a sweep: students against the teacher, one figure per pair of objectives.

Input is plain data (`PlotPoint` records, the teacher's metrics, the objectives as (metric,
direction) pairs and the constraints), so the plot knows nothing of Optuna or MLflow. Two outputs:
`pareto.html` (plotly, offline: plotly.js inlined once for all pairs) and a PNG per pair
(matplotlib, for papers and slides; needs no browser).

What the figure shows: the teacher as a black star; the students on this pair's front labelled with
their pruning ratio / distillation T / alpha / precision (and any other searched parameter), the
others by trial number (hover, or the table under each HTML figure, gives every label); precision as colour;
pruning ratio as marker size; infeasible students hollow; the front joined by its staircase; each
constraint on a plotted metric as a dashed line; error bars where seeds give a `<metric>_ci95`;
axes titled with what the metric measures and its unit.
"""

from __future__ import annotations

import html
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

from trainers import metrics as vocab

Direction = Literal["maximize", "minimize"]
Objective = tuple[str, Direction]

TEACHER = "teacher"
# Short names of the searched parameters, in label order; unknown parameters follow as name=value.
SHORT = {"pruning_ratio": "ratio", "distill_temperature": "T", "distill_alpha": "alpha", "precision": "",
         "runtime": "", "vocabulary": "vocab"}
RATIO_PARAM = "pruning_ratio"
PRECISION_PARAM = "precision"
# Colour-blind safe (Okabe-Ito), fixed per precision so every plot of every sweep agrees.
PRECISION_COLOURS = {"fp32": "#0072B2", "fp16": "#009E73", "bf16": "#E69F00", "int8": "#D55E00", "int4": "#CC79A7"}
OTHER_COLOURS = ("#56B4E9", "#F0E442", "#999999", "#000000")
CI_SUFFIX = "_ci95"


@dataclass(frozen=True)
class PlotPoint:
    """One finished student: its trial number, searched parameters, measured metrics, and status."""

    number: int
    params: dict[str, Any]
    metrics: dict[str, float]
    feasible: bool = True
    on_front: bool = False


class Bound(Protocol):
    """A constraint as the sweep file states it (`orchestrator.spec.Constraint` fits)."""

    metric: str
    max_drop: float | None
    max_ratio: float | None
    max: float | None
    min: float | None


@dataclass(frozen=True)
class Threshold:
    metric: str
    value: float
    label: str


@dataclass
class Pair:
    """One figure: x and y objectives, and the points that have both metrics."""

    x: Objective
    y: Objective
    points: list[PlotPoint] = field(default_factory=list)
    left_out: int = 0  # students without a finite value for one of the two metrics

    @property
    def slug(self) -> str:
        return f"{self.y[0]}_vs_{self.x[0]}"


# --- pure helpers --------------------------------------------------------------------------------
def metric_name(name: str) -> str:
    """The logged metric behind a user-facing name (`accuracy` -> `val_accuracy`); unknown names pass."""
    try:
        return vocab.resolve(name)
    except vocab.UnknownMetric:
        return name


def axis_title(metric: str, direction: Direction, newline: str = "\n") -> str:
    """'<metric> [<unit>], <higher|lower> is better' over a second line saying what was measured."""
    info = vocab.METRICS.get(metric)
    better = "higher is better" if direction == "maximize" else "lower is better"
    if info is None:
        return f"{metric}, {better}"
    return f"{metric} [{info.unit}], {better}{newline}{info.meaning}"


def label(point: PlotPoint) -> str:
    """'#3 ratio 0.5 · T 4 · alpha 0.7 · int8' (searched parameters in a fixed order, then the rest)."""
    parts = []
    for key in [*[k for k in SHORT if k in point.params], *sorted(k for k in point.params if k not in SHORT)]:
        value = point.params[key]
        text = f"{value:g}" if isinstance(value, float) else str(value)
        short = SHORT.get(key, key)
        parts.append(f"{short} {text}" if short else text)
    return f"#{point.number} " + " · ".join(parts)


def thresholds(constraints: Sequence[Bound], teacher: dict[str, float]) -> list[Threshold]:
    """Each constraint as the value it draws the line at (relative bounds need the teacher's value)."""
    out = []
    for c in constraints:
        metric = metric_name(c.metric)
        reference = teacher.get(metric)
        if c.max is not None:
            out.append(Threshold(metric, c.max, f"{metric} ≤ {c.max:g}"))
        elif c.min is not None:
            out.append(Threshold(metric, c.min, f"{metric} ≥ {c.min:g}"))
        elif reference is None:
            continue  # relative to a teacher value we do not have: nothing honest to draw
        elif c.max_drop is not None:
            value = reference - c.max_drop
            out.append(Threshold(metric, value, f"{metric} ≥ teacher − {c.max_drop:g} = {value:.4g}"))
        elif c.max_ratio is not None:
            value = reference * c.max_ratio
            out.append(Threshold(metric, value, f"{metric} ≤ teacher × {c.max_ratio:g} = {value:.4g}"))
    return out


def pairs(points: Sequence[PlotPoint], objectives: Sequence[Objective]) -> list[Pair]:
    """Every pair of objectives; a maximised metric (accuracy) goes on y, so 'up' reads 'better'."""
    resolved = [(metric_name(m), d) for m, d in objectives]
    if len(resolved) < 2:
        raise ValueError(f"a Pareto plot needs at least two objectives, got {objectives!r}")
    out = []
    for a, b in itertools.combinations(resolved, 2):
        x, y = (b, a) if a[1] == "maximize" and b[1] == "minimize" else (a, b)
        drawable = [p for p in points if _finite(p.metrics.get(x[0])) and _finite(p.metrics.get(y[0]))]
        out.append(Pair(x, y, drawable, len(points) - len(drawable)))
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _better(a: float, b: float, direction: Direction) -> bool:
    return a > b if direction == "maximize" else a < b


def front_2d(pair: Pair) -> list[PlotPoint]:
    """The front's points that no other front point beats on this pair's two metrics, ordered along x."""
    (xm, xd), (ym, yd) = pair.x, pair.y
    front = [p for p in pair.points if p.on_front]

    def dominates(a: PlotPoint, b: PlotPoint) -> bool:
        ax, ay, bx, by = a.metrics[xm], a.metrics[ym], b.metrics[xm], b.metrics[ym]
        no_worse = not _better(bx, ax, xd) and not _better(by, ay, yd)
        return no_worse and (_better(ax, bx, xd) or _better(ay, by, yd))

    kept = [p for p in front if not any(dominates(q, p) for q in front)]
    return sorted(kept, key=lambda p: (p.metrics[xm], p.metrics[ym]))


def staircase(pair: Pair, front: Sequence[PlotPoint]) -> tuple[list[float], list[float]]:
    """The front's attainment line: between neighbours it turns at (worse x, worse y) of the two."""
    (xm, xd), (ym, yd) = pair.x, pair.y
    xs: list[float] = []
    ys: list[float] = []
    for i, p in enumerate(front):
        px, py = p.metrics[xm], p.metrics[ym]
        if i:
            qx, qy = front[i - 1].metrics[xm], front[i - 1].metrics[ym]
            xs.append(qx if _better(px, qx, xd) else px)
            ys.append(qy if _better(py, qy, yd) else py)
        xs.append(px)
        ys.append(py)
    return xs, ys


def colour(precision: str, seen: list[str]) -> str:
    if precision in PRECISION_COLOURS:
        return PRECISION_COLOURS[precision]
    others = [p for p in seen if p not in PRECISION_COLOURS]
    return OTHER_COLOURS[others.index(precision) % len(OTHER_COLOURS)] if precision in others else OTHER_COLOURS[0]


def marker_size(point: PlotPoint, *, smallest: float, largest: float) -> float:
    """Pruning ratio 0 -> smallest, 0.9 and above -> largest (a missing ratio reads as unpruned)."""
    ratio = point.params.get(RATIO_PARAM, 0.0)
    ratio = float(ratio) if isinstance(ratio, (int, float)) else 0.0
    return smallest + (largest - smallest) * min(max(ratio / 0.9, 0.0), 1.0)


def _precision(point: PlotPoint) -> str:
    return str(point.params.get(PRECISION_PARAM, "precision not searched"))


def _ratios(points: Sequence[PlotPoint]) -> list[float]:
    return sorted({float(p.params[RATIO_PARAM]) for p in points if isinstance(p.params.get(RATIO_PARAM), (int, float))})


def _precisions(points: Sequence[PlotPoint]) -> list[str]:
    return sorted({_precision(p) for p in points},
                  key=lambda s: (list(PRECISION_COLOURS).index(s) if s in PRECISION_COLOURS else 99, s))


def figure_title(title: str, pair: Pair, teacher: dict[str, float]) -> str:
    missing = [m for m, _ in (pair.x, pair.y) if m not in teacher]
    notes = [f"the teacher has no {', '.join(missing)}"] if missing else []
    notes += [f"{pair.left_out} student(s) without both metrics"] if pair.left_out else []
    return f"{title}: {pair.y[0]} vs {pair.x[0]}" + (f" (not drawn: {'; '.join(notes)})" if notes else "")


def _middle(pair: Pair, teacher: dict[str, float]) -> float:
    xm = pair.x[0]
    xs = [p.metrics[xm] for p in pair.points] + ([teacher[xm]] if xm in teacher else [])
    return (min(xs) + max(xs)) / 2 if xs else 0.0


def error_bar(point: PlotPoint | dict, metric: str) -> tuple[float, float] | None:
    """(below, above) the value: the 95 % half-width, cut at the metric's range (an accuracy of 0.98 ± 0.19
    is drawn up to 1.0, not past it: the t-interval of 2 seeds is symmetric, accuracy is not unbounded)."""
    values = point.metrics if isinstance(point, PlotPoint) else point
    low, high = values.get(metric + "_ci_low"), values.get(metric + "_ci_high")
    if _finite(low) and _finite(high) and _finite(values.get(metric)):  # pooled: rows and seeds (orchestrator/stats.py)
        return max(0.0, float(values[metric]) - float(low)), max(0.0, float(high) - float(values[metric]))
    if not _finite(values.get(metric + CI_SUFFIX)):
        return None
    ci, value = float(values[metric + CI_SUFFIX]), float(values[metric])
    info = vocab.METRICS.get(metric)
    if info is not None and info.unit.startswith("fraction 0-1"):
        return max(0.0, min(ci, value)), max(0.0, min(ci, 1.0 - value))
    return ci, ci


def plotly_error(bars: list[tuple[float, float] | None]) -> dict:
    """Plotly's error_x / error_y for one trace: asymmetric bars, hidden when no point has one."""
    return {"type": "data", "symmetric": False, "array": [b[1] if b else 0 for b in bars],
            "arrayminus": [b[0] if b else 0 for b in bars], "visible": any(b is not None for b in bars)}


# --- plotly (HTML) -------------------------------------------------------------------------------
def plotly_figure(pair: Pair, teacher: dict[str, float], lines: Sequence[Threshold], title: str):
    import plotly.graph_objects as go

    (xm, xd), (ym, yd) = pair.x, pair.y
    fig = go.Figure()
    precisions = _precisions(pair.points)
    front = front_2d(pair)
    if front:  # drawn first so the markers sit on top of it
        xs, ys = staircase(pair, front)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="Pareto front", hoverinfo="skip",
                                 line={"color": "#444", "width": 1.5}))
    above = {p.number: i % 2 == 0 for i, p in enumerate(front)}  # alternate so neighbours' labels do not collide
    middle = _middle(pair, teacher)

    def place(p: PlotPoint) -> str:  # labels point inwards, away from the plot's edges
        return ("top " if above.get(p.number, True) else "bottom ") + ("left" if p.metrics[xm] > middle else "right")
    for precision in precisions:
        for feasible in (True, False):
            group = [p for p in pair.points if _precision(p) == precision and p.feasible == feasible]
            if not group:
                continue
            fig.add_trace(go.Scatter(
                x=[p.metrics[xm] for p in group], y=[p.metrics[ym] for p in group],
                mode="markers+text", name=f"{precision}" + ("" if feasible else " (fails a constraint)"),
                legendgroup=precision,
                text=[label(p) if p.number in above else f"#{p.number}" for p in group], textfont={"size": 10},
                textposition=[place(p) for p in group], cliponaxis=False,
                customdata=[label(p) for p in group],
                hovertemplate="%{customdata}<br>" + f"{xm}=%{{x:.4g}}<br>{ym}=%{{y:.4g}}<extra></extra>",
                error_x=plotly_error([error_bar(p, xm) for p in group]),
                error_y=plotly_error([error_bar(p, ym) for p in group]),
                marker={"color": colour(precision, precisions) if feasible else "rgba(0,0,0,0)",
                        "size": [marker_size(p, smallest=9, largest=24) for p in group],
                        "line": {"color": colour(precision, precisions), "width": 2},
                        "symbol": "circle"},
            ))
    for ratio in _ratios(pair.points):  # legend entries for the marker sizes
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"pruning ratio {ratio:g}",
                                 legendgroup="size", legendgrouptitle_text="marker size",
                                 marker={"color": "#bbb", "size": marker_size(PlotPoint(-1, {RATIO_PARAM: ratio}, {}),
                                                                            smallest=9, largest=24)}))
    if xm in teacher and ym in teacher:
        fig.add_trace(go.Scatter(
            x=[teacher[xm]], y=[teacher[ym]], mode="markers+text", name=TEACHER, text=[f"<b>{TEACHER}</b>"],
            textposition="top left" if teacher[xm] > middle else "top right", cliponaxis=False,
            marker={"symbol": "star", "size": 18, "color": "black"},
            error_x=plotly_error([error_bar(teacher, xm)]), error_y=plotly_error([error_bar(teacher, ym)]),
            hovertemplate=f"teacher<br>{xm}=%{{x:.4g}}<br>{ym}=%{{y:.4g}}<extra></extra>",
        ))
    for t in lines:
        if t.metric == ym:
            fig.add_hline(y=t.value, line={"dash": "dash", "color": "#B00020"}, annotation_text=f"constraint: {t.label}",
                          annotation_position="bottom right", annotation_font_color="#B00020")
        elif t.metric == xm:
            fig.add_vline(x=t.value, line={"dash": "dash", "color": "#B00020"}, annotation_text=f"constraint: {t.label}",
                          annotation_position="top left", annotation_font_color="#B00020")
    fig.update_layout(
        title={"text": title}, template="plotly_white", height=560, legend_title_text="precision (colour)",
        xaxis_title=axis_title(xm, xd, "<br>"), yaxis_title=axis_title(ym, yd, "<br>"), margin={"t": 70},
    )
    return fig


def _front_table(pair: Pair) -> str:
    (xm, _), (ym, _) = pair.x, pair.y
    rows = "".join(
        f"<tr><td>{html.escape(label(p))}</td><td>{p.metrics[xm]:.4g}</td><td>{p.metrics[ym]:.4g}</td>"
        f"<td>{'on the front' if p.on_front else ('feasible' if p.feasible else 'fails a constraint')}</td></tr>"
        for p in sorted(pair.points, key=lambda p: p.number)
    )
    return (f"<details open><summary>all {len(pair.points)} students</summary><table><tr><th>student</th>"
            f"<th>{xm}</th><th>{ym}</th><th>status</th></tr>{rows}</table></details>")


def write_html(pairs_: Sequence[Pair], teacher: dict[str, float], lines: Sequence[Threshold], title: str, path: Path) -> Path:
    """All pairs in one page; plotly.js (about 4.7 MB) is inlined once, so the file opens offline."""
    parts = []
    for i, pair in enumerate(pairs_):
        fig = plotly_figure(pair, teacher, lines, figure_title(title, pair, teacher))
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}))
        parts.append(_front_table(pair))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    path.write_text(page, encoding="utf-8")
    return path


def write_pareto_plots(points: Sequence[PlotPoint], teacher: dict[str, float], objectives: Sequence[Objective],
                       constraints: Sequence[Bound], out_dir: Path, *, title: str = "Pareto front") -> list[Path]:
    """pareto.html (every pair) and a PNG per pair of objectives: pareto.png when there are two
    objectives, pareto_<y>_vs_<x>.png for each pair when there are more. Returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_pairs = pairs(points, objectives)
    lines = thresholds(constraints, teacher)
    from orchestrator.pareto_png import write_png

    written = [write_html(all_pairs, teacher, lines, title, out_dir / "pareto.html")]
    for pair in all_pairs:
        name = "pareto.png" if len(all_pairs) == 1 else f"pareto_{pair.slug}.png"
        written.append(write_png(pair, teacher, lines, title, out_dir / name))
    return written
