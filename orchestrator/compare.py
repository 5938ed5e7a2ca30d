"""`sweep compare STUDY A B`: two trials (or a trial and the teacher) on the rows both predicted.

Read from the prediction files the runs logged (`predictions.npz`), so every number here can be
recomputed from the artifacts: each accuracy with its pooled interval (rows and seeds), the paired
difference A - B with its paired bootstrap interval, the kept models' discordant rows and the exact
McNemar test on them. Validation decides; test is shown, labelled, never used to choose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from orchestrator import stats
from orchestrator.prediction_files import TEACHER, predictions_of
from trainers.measure.predictions import Predictions

SPLIT_LABELS = {"val": "validation (decides)", "test": "test (reported only)"}
VERDICT = {"~": "within noise (interval contains 0)", "better": "A better", "worse": "A worse"}


def compare_table(a_name: str, a: Predictions, b_name: str, b: Predictions) -> Table:
    """One row per split both files hold."""
    table = Table(title=f"{a_name} (A) vs {b_name} (B): paired on shared rows", box=box.SIMPLE_HEAD, header_style="bold",
                  caption=f"acc [low,high]: {stats.METHOD}. Δ = A - B in points, {stats.PAIRED_METHOD}. discordant: "
                          "rows only A's / only B's kept (exported) model got right; McNemar: exact two-sided binomial "
                          "test on them (scipy.stats.binomtest)", caption_justify="left")
    for col in ("split", "rows", "seeds A/B", "acc A", "acc B", "Δ points", "verdict", "discordant A/B", "McNemar p"):
        table.add_column(col, justify="right")
    for prefix in [p for p in ("val", "test") if p in a.splits and p in b.splits]:
        ra, rb = a.splits[prefix], b.splits[prefix]
        paired = stats.paired_delta(ra, rb, kept_a=a.kept, kept_b=b.kept)
        ca, cb = stats.shared(ra, rb)
        _, la, ha = stats.accuracy_interval(ca)
        _, lb, hb = stats.accuracy_interval(cb)
        table.add_row(SPLIT_LABELS[prefix], str(paired.rows), f"{ca.shape[0]}/{cb.shape[0]}",
                      f"{paired.a:.4f} [{la:.3f},{ha:.3f}]", f"{paired.b:.4f} [{lb:.3f},{hb:.3f}]",
                      f"{100 * paired.delta:+.2f} [{100 * paired.low:+.2f},{100 * paired.high:+.2f}]",
                      VERDICT[paired.verdict], f"{paired.a_only}/{paired.b_only}", f"{stats.mcnemar(paired):.3g}")
    return table


def label(who: str) -> str:
    return "teacher" if who == TEACHER else f"trial {who}"


def compare_command(
    study_name: str = typer.Argument(..., help="the study"),
    a: str = typer.Argument(..., help="a trial number, or 'teacher'"),
    b: str = typer.Argument(..., help="a trial number, or 'teacher'"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL; default a journal under --root"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI"),
    root: Path = typer.Option(Path("mlruns"), "--root", help="local store"),
) -> None:
    """Paired comparison of two trials (or a trial and the teacher) from their logged per-row predictions."""
    from orchestrator.cli import _fail, _study, _tracker
    from orchestrator.terminal import console

    study, record = _study(study_name, storage, root)
    tracker = _tracker(record, tracking_uri, root)
    try:
        table = compare_table(label(a), predictions_of(study, a, tracker), label(b), predictions_of(study, b, tracker))
    except ValueError as exc:
        _fail(str(exc))
    console.print(table)
