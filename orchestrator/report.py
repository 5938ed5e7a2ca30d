"""Terminal tables and the offline Pareto plot (side effects kept here, at the rim)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.table import Table

from orchestrator import pareto
from orchestrator.spec import Objective


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def pareto_table(front: Sequence[FrozenTrial], baseline: dict[str, float], title: str) -> Table:
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="Δacc in points vs. the teacher; latency p50 at batch 1; memory: peak RSS (CPU) or CUDA "
                          "allocated (GPU); CO2e of the trial (train + measure); ok = meets the constraints")
    for col in ("trial", "prune", "T", "alpha", "prec", "acc", "Δacc", "ms", "speedup", "MiB", "Mparams", "mg CO2e", "ok"):
        table.add_column(col, justify="right")
    if baseline:
        table.add_row("teacher", "0", "-", "-", "fp32", _fmt(baseline.get("accuracy")), "0.0",
                      _fmt(baseline.get("latency_ms"), ".2f"), "1.00x", _fmt(baseline.get("memory_mb"), ".0f"),
                      _fmt((baseline.get("params_total") or 0) / 1e6, ".2f"),
                      _fmt((baseline.get("emissions_kg_co2e") or 0) * 1e6, ".2f"), "", style="dim")
    for row in pareto.rows(front, baseline):
        m, d, p = row.metrics, row.deltas, row.params
        table.add_row(
            str(row.number), f"{p.get('pruning_ratio', 0):g}", f"{p.get('distill_temperature', 0):g}",
            f"{p.get('distill_alpha', 0):g}", str(p.get("precision")), _fmt(m.get("accuracy")),
            _fmt(d.get("delta_accuracy_points"), "+.1f"), _fmt(m.get("latency_ms"), ".2f"),
            _fmt(d.get("speedup"), ".2f") + ("x" if d.get("speedup") else ""), _fmt(m.get("memory_mb"), ".0f"),
            _fmt((m.get("params_total") or 0) / 1e6, ".2f"),
            _fmt(m["emissions_kg_co2e"] * 1e6, ".2f") if "emissions_kg_co2e" in m else "-",
            "yes" if row.feasible else "no",
        )
    return table


def trials_table(study: optuna.Study) -> Table:
    table = Table(title=f"study {study.study_name}", header_style="bold")
    for col in ("trial", "state", "ratio", "T", "alpha", "precision", "accuracy", "latency ms", "seconds", "note"):
        table.add_column(col, justify="right" if col not in ("state", "note", "precision") else "left")
    for t in study.get_trials(deepcopy=False):
        p = t.params or t.system_attrs.get("fixed_params", {})
        m = t.user_attrs.get("metrics", {})
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        note = t.user_attrs.get("fail_reason", "")
        if t.state == TrialState.COMPLETE and t.number in {b.number for b in study.best_trials}:
            note = "pareto front"
        table.add_row(str(t.number), t.state.name, f"{p.get('pruning_ratio', '-')}", f"{p.get('distill_temperature', '-')}",
                      f"{p.get('distill_alpha', '-')}", str(p.get("precision", "-")), _fmt(m.get("accuracy")),
                      _fmt(m.get("latency_ms"), ".2f"), _fmt(seconds, ".0f"), note[:80])
    return table


def pareto_plot(study: optuna.Study, objectives: Sequence[Objective], path: Path) -> Path | None:
    """Optuna's Pareto-front figure as a self-contained HTML file (plotly.js inlined: opens offline)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    names = [o.key for o in objectives]
    if 2 <= len(names) <= 3:
        fig = optuna.visualization.plot_pareto_front(study, target_names=names)
    else:
        keys = ["accuracy", "latency_ms"]
        fig = optuna.visualization.plot_pareto_front(
            study, target_names=keys, targets=lambda t: tuple(t.user_attrs.get("metrics", {}).get(k, float("nan")) for k in keys)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True)
    return path
