"""The Pareto plot as a PNG (matplotlib, no browser needed): for papers and slides.

Same content as the HTML figure of `orchestrator.plots`: the teacher as a star, students coloured by
precision and sized by pruning ratio, the front as a staircase, constraints as dashed lines, 95 %
error bars where seeds exist (cut at the metric's range). Only the front's points are marked, by trial
number, with their settings in a legend, so close points do not print over each other; the HTML figure
names every point on hover.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from orchestrator.plots import (RATIO_PARAM, TEACHER, Pair, PlotPoint, Threshold, _middle, _precision, _precisions, _ratios,
                                axis_title, colour, error_bar, figure_title, front_2d, label, marker_size, staircase)


def mpl_error(bar: tuple[float, float] | None):
    """matplotlib's xerr / yerr for one point: [[below], [above]], or None."""
    return None if bar is None else [[bar[0]], [bar[1]]]


def write_png(pair: Pair, teacher: dict[str, float], lines: Sequence[Threshold], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    (xm, xd), (ym, yd) = pair.x, pair.y
    fig = Figure(figsize=(9, 6), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    precisions = _precisions(pair.points)
    for p in pair.points:
        c = colour(_precision(p), precisions)
        size = marker_size(p, smallest=6, largest=16)
        ax.errorbar(p.metrics[xm], p.metrics[ym], xerr=mpl_error(error_bar(p, xm)),
                    yerr=mpl_error(error_bar(p, ym)), fmt="o", ms=size,
                    mfc=c if p.feasible else "none", mec=c, mew=1.5, ecolor=c, elinewidth=1, capsize=3, zorder=3)
    front = front_2d(pair)
    if front:
        ax.plot(*staircase(pair, front), color="#444", lw=1.2, zorder=2)
    middle = _middle(pair, teacher)
    above = {p.number: i % 2 == 0 for i, p in enumerate(front)}
    for p in front:  # only the front is marked, by trial number (its settings are listed in a legend): a printed
        right_half = p.metrics[xm] > middle  # figure cannot hover. Marks point inwards and alternate along the front
        dy = 7 if above[p.number] else -13
        ax.annotate(f"#{p.number}", (p.metrics[xm], p.metrics[ym]), xytext=(-7 if right_half else 7, dy),
                    textcoords="offset points", ha="right" if right_half else "left", fontsize=8, color="#222", zorder=4)
    if xm in teacher and ym in teacher:
        ax.errorbar(teacher[xm], teacher[ym], xerr=mpl_error(error_bar(teacher, xm)),
                    yerr=mpl_error(error_bar(teacher, ym)), fmt="*", ms=16,
                    color="black", zorder=5)
        right_half = teacher[xm] > middle
        ax.annotate(TEACHER, (teacher[xm], teacher[ym]), xytext=(-9 if right_half else 9, -13), textcoords="offset points",
                    ha="right" if right_half else "left", fontsize=9, fontweight="bold")
    for t in lines:
        if t.metric == ym:
            ax.axhline(t.value, color="#B00020", ls="--", lw=1)
            ax.annotate(f"constraint: {t.label}", (1, t.value), xycoords=("axes fraction", "data"), xytext=(-4, -11),
                        textcoords="offset points", ha="right", fontsize=8, color="#B00020")
        elif t.metric == xm:
            ax.axvline(t.value, color="#B00020", ls="--", lw=1)
            ax.annotate(f"constraint: {t.label}", (t.value, 1), xycoords=("data", "axes fraction"), xytext=(4, -12),
                        textcoords="offset points", fontsize=8, color="#B00020")
    handles = [Line2D([], [], ls="", marker="o", ms=8, color=colour(pr, precisions), label=pr) for pr in precisions]
    if xm in teacher and ym in teacher:
        handles.append(Line2D([], [], ls="", marker="*", ms=12, color="black", label=TEACHER))
    if front:
        handles.append(Line2D([], [], color="#444", lw=1.2, label="Pareto front"))
    if not all(p.feasible for p in pair.points):
        handles.append(Line2D([], [], ls="", marker="o", ms=8, mfc="none", mec="#444", label="fails a constraint"))
    handles += [*[Line2D([], [], ls="", marker="o", color="#bbb", label=f"pruning ratio {r:g}",
                         ms=marker_size(PlotPoint(-1, {RATIO_PARAM: r}, {}), smallest=6, largest=16))
                  for r in _ratios(pair.points)]]
    ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.9)
    if front:  # below the axes, where neither the points nor the other legend are
        fig.legend(handles=[Line2D([], [], ls="", label=label(p)) for p in front], title="Pareto front",
                   fontsize=7.5, title_fontsize=8, loc="outside lower center", ncols=min(2, len(front)),
                   handlelength=0, handletextpad=0, frameon=False)
    ax.set_xlabel(axis_title(xm, xd), fontsize=9)
    ax.set_ylabel(axis_title(ym, yd), fontsize=9)
    ax.set_title(figure_title(title, pair, teacher), fontsize=11)
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return path
