"""Terminal tables and the offline Pareto plot (side effects kept here, at the rim)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.table import Table

from orchestrator import pareto
from orchestrator.record import trial_point, trial_record
from orchestrator.spec import Objective
from trainers import metrics as M


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def pareto_table(front: Sequence[FrozenTrial], baseline: dict[str, float], title: str) -> Table:
    """Validation columns decide (the front, the pick); test columns are reported beside them, labelled."""
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption="validation decides, test reports: the front and the pick read val acc; test acc is shown, "
                          "never used to choose. Δ in points vs. the teacher; latency p50 at batch 1; "
                          "ok = meets the constraints")
    for col in ("trial", "prune", "T", "alpha", "prec", "val acc", "Δval", "test acc (reported)", "Δtest", "ms",
                "speedup", "Mparams", "ok"):
        table.add_column(col, justify="right")
    if baseline:
        table.add_row("teacher", "0", "-", "-", "fp32", _fmt(baseline.get(M.VAL_ACCURACY)), "0.0",
                      _fmt(baseline.get(M.TEST_ACCURACY)), "0.0", _fmt(baseline.get(M.LATENCY_P50_BS1), ".2f"), "1.00x",
                      _fmt((baseline.get(M.PARAMS_TOTAL) or 0) / 1e6, ".2f"), "", style="dim")
    for row in pareto.rows(front, baseline):
        m, d, p = row.metrics, row.deltas, row.params
        table.add_row(
            str(row.number), f"{p.get('pruning_ratio', 0):g}", f"{p.get('distill_temperature', 0):g}",
            f"{p.get('distill_alpha', 0):g}", str(p.get("precision")), _fmt(m.get(M.VAL_ACCURACY)),
            _fmt(d.get(f"delta_{M.VAL_ACCURACY}_points"), "+.1f"), _fmt(m.get(M.TEST_ACCURACY)),
            _fmt(d.get(f"delta_{M.TEST_ACCURACY}_points"), "+.1f"), _fmt(m.get(M.LATENCY_P50_BS1), ".2f"),
            _fmt(d.get(M.SPEEDUP_BS1), ".2f") + ("x" if d.get(M.SPEEDUP_BS1) else ""),
            _fmt((m.get(M.PARAMS_TOTAL) or 0) / 1e6, ".2f"),
            "yes" if row.feasible else "no",
        )
    return table


def trials_table(study: optuna.Study) -> Table:
    table = Table(title=f"study {study.study_name}", header_style="bold")
    for col in ("trial", "state", "ratio", "T", "alpha", "precision", "val acc", "test acc (reported)", "latency ms",
                "seconds", "note"):
        table.add_column(col, justify="right" if col not in ("state", "note", "precision") else "left")
    front = {b.number for b in study.best_trials}
    for t in study.get_trials(deepcopy=False):
        p = trial_point(t)
        record = trial_record(t)
        m = record.metrics
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        note = record.fail_reason or record.stop_reason or ""
        if record.reused_training_of and t.state == TrialState.COMPLETE:
            note = f"reused the training of {record.reused_training_of}"
        if t.state == TrialState.COMPLETE and t.number in front:
            note = "pareto front"
        table.add_row(str(t.number), t.state.name, f"{p.get('pruning_ratio', '-')}", f"{p.get('distill_temperature', '-')}",
                      f"{p.get('distill_alpha', '-')}", str(p.get("precision", "-")), _fmt(m.get(M.VAL_ACCURACY)),
                      _fmt(m.get(M.TEST_ACCURACY)), _fmt(m.get(M.LATENCY_P50_BS1), ".2f"), _fmt(seconds, ".0f"), note[:80])
    return table


def pareto_plot(study: optuna.Study, objectives: Sequence[Objective], path: Path) -> Path | None:
    """Optuna's Pareto-front figure as a self-contained HTML file (plotly.js inlined: opens offline)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    names = [o.key for o in objectives]
    if 2 <= len(names) <= 3:
        fig = optuna.visualization.plot_pareto_front(study, target_names=names)
    else:
        keys = [M.VAL_ACCURACY, M.LATENCY_P50_BS1]
        fig = optuna.visualization.plot_pareto_front(
            study, target_names=keys, targets=lambda t: tuple(trial_record(t).metrics.get(k, float("nan")) for k in keys)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True)
    return path
