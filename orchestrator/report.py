"""Terminal tables and the offline Pareto plot (side effects kept here, at the rim)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich import box
from rich.table import Table

from orchestrator import pareto
from orchestrator.plots import PlotPoint, write_pareto_plots
from orchestrator.record import study_record, superseded, trial_point, trial_record
from orchestrator.spec import SweepSpec
from trainers import metrics as M


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


@dataclass
class FrontReport:
    """What the Pareto table says beyond the rows: noise ties, per-thread baselines, one-off costs, methods."""

    front: list[FrozenTrial]  # after ties within noise were broken
    notes: list[str] = field(default_factory=list)  # "trial 7 ~ trial 4: tie within noise, kept 4"
    baselines: dict[int, dict[str, float]] = field(default_factory=dict)
    oneoff: dict[str, float] = field(default_factory=dict)
    oneoff_tags: dict[str, str] = field(default_factory=dict)
    method_tags: dict[str, str] = field(default_factory=dict)
    seeds: int = 1  # the most seeds a point has (adaptive seeds: the policy's max)
    adaptive_seeds: bool = False  # each point has its own seed count (column 'seeds')
    constraints: list = field(default_factory=list)  # spec.Constraint: the caption says which rule each one used
    by_context: dict[str, dict[str, float]] = field(default_factory=dict)  # the teacher per measurement context
    context: str | None = None  # the measurement context of this front (trainers.measure.context)
    other_fronts: dict[str | None, list[int]] = field(default_factory=dict)  # other contexts: their own fronts


def front_report(study: optuna.Study, spec: SweepSpec, front: Sequence[FrozenTrial] | None = None,
                 tracker=None) -> FrontReport:
    """Optuna's front with ties within measurement noise broken (pareto.break_ties), and what the caption needs."""
    from orchestrator.contexts import main_front
    from orchestrator.prediction_files import paired_accuracy

    record = study_record(study)
    context, main, others = main_front(study)
    front = list(main if front is None else front)
    by_number = {t.number: t for t in front}
    paired = paired_accuracy(tracker)
    kept_rows, notes = pareto.break_ties(pareto.rows(front, record.baseline_metrics, by_context=record.baselines_by_context),
                                         [o.key for o in spec.objectives], spec.measure.rel_tol,
                                         paired=lambda a, b: paired(by_number[a], by_number[b]))
    kept = {r.number for r in kept_rows}
    return FrontReport(front=[t for t in front if t.number in kept], notes=notes,
                       baselines={int(k): v for k, v in record.baselines_by_threads.items()},
                       oneoff=record.oneoff_metrics, oneoff_tags=record.oneoff_tags,
                       method_tags=record.measure_method_tags, seeds=spec.training.seed_policy.max, context=context,
                       adaptive_seeds=spec.training.seed_policy.adaptive,
                       other_fronts={c: [t.number for t in f] for c, f in others.items()},
                       by_context=record.baselines_by_context, constraints=list(spec.constraints))


def seed_values(metrics: dict[str, float], name: str = M.VAL_ACCURACY) -> list[float]:
    """The per-seed values of a quality metric (`<name>_seed<i>`), in seed order."""
    out, i = [], 0
    while M.seed_name(name, i) in metrics:
        out.append(metrics[M.seed_name(name, i)])
        i += 1
    return out


def _acc(metrics: dict[str, float], name: str, seeds: int) -> str:
    value, ci = metrics.get(name), metrics.get(M.ci95_name(name))
    if value is None:
        return "-"
    low, high = metrics.get(name + "_ci_low"), metrics.get(name + "_ci_high")
    if low is not None and high is not None:  # pooled: rows and seeds
        return f"{value:.3f} [{low:.3f},{high:.3f}]"
    return f"{value:.3f}±{ci:.3f}" if seeds > 1 and ci is not None else f"{value:.4f}"


def _delta(metrics: dict[str, float], deltas: dict[str, float]) -> str:
    """Δ val accuracy in points, with its paired 95 % interval when the rows were paired."""
    point = deltas.get(f"delta_{M.VAL_ACCURACY}_points")
    low, high = metrics.get(M.DELTA_VAL_ACCURACY_CI_LOW), metrics.get(M.DELTA_VAL_ACCURACY_CI_HIGH)
    if point is None:
        return "-"
    return f"{point:+.1f} [{low:+.1f},{high:+.1f}]" if low is not None and high is not None else f"{point:+.1f}"


RUNTIME_SHORT = {"torch": "torch", "onnxruntime": "ort"}  # ort = ONNX Runtime (the caption says so)


def _noise(student: dict[str, float], teacher: dict[str, float]) -> str:
    return pareto.versus_teacher(student, teacher)


def constraint_rule(c) -> str:
    """Which rule a constraint was judged by, in words."""
    if c.confidence is not None:
        return (f"{c.metric} max_drop {c.max_drop:g}: holds when the lower end of the paired {c.confidence:.0%} "
                f"interval of Δ is >= {-100 * c.max_drop:+.1f} points")
    bound = next(k for k in ("max_drop", "max_ratio", "max", "min") if getattr(c, k) is not None)
    return f"{c.metric} {bound} {getattr(c, bound):g}: on the point estimate"


def caption(report: FrontReport | None, baseline: dict[str, float]) -> str:
    lines = ["validation decides, test reports: the front and the pick read val acc; * test acc is shown, never used to "
             "choose. Δ in points vs. the teacher; ms = latency p50 at batch 1; MiB = model memory (weights at their "
             "precision + activation peak); kWh/1k = inference energy per 1,000 predictions; runtime ort = ONNX Runtime; "
             "ok = meets the constraints"]
    if report is None:
        return lines[0]
    if report.adaptive_seeds:
        lines.append("students: accuracy = mean over the point's own seeds (column 'seeds': adaptive, an extra seed only "
                     "where a verdict was still uncertain; why: sweep.adaptive_seeds on the parent run), each seed's "
                     "model scored in its deployed runtime; latency, memory and energy measured once, on the median-val "
                     "seed's model (the one exported)")
    elif report.seeds > 1:
        lines.append(f"students: accuracy = mean over {report.seeds} seeds, each seed's model scored in its deployed "
                     "runtime; latency, memory and energy measured once, on the median-val seed's model (the one exported)")
    lines.append(r"acc \[low,high] = 95 % interval counting seed AND row noise: two-level bootstrap (2,000 replicates: "
                 "validation rows resampled, then seeds), at least the Wilson interval on the rows; Δval \\[low,high] = "
                 "paired 95 % interval of student - teacher on the shared rows (paired bootstrap: one row resample for "
                 "both, seeds resampled); noise = '~teacher' when that interval contains 0, else 'worse' / 'better' "
                 "('(unpaired)': no per-row predictions, the two intervals overlap)")
    teacher_iv = pareto.interval(baseline, M.VAL_ACCURACY)
    if teacher_iv is not None:
        lines.append(f"teacher: one training, val acc {teacher_iv[2]}: {teacher_iv[0]:.4f}-{teacher_iv[1]:.4f}")
    if report.constraints:
        lines.append("constraints: " + "; ".join(constraint_rule(c) for c in report.constraints))
    lines.append(f"sweep export picks: trials within the measured noise of the best ({pareto.NOISE_RULE}) are tied; "
                 "the most accurate of them wins, then fewer params, then the best on the pick's own metric "
                 "(most_accurate: fewer params among the tied)")
    lines.extend(f"{note} (latency within p90-p50 spread or measure.rel_tol, accuracies within each other's interval; "
                 "fewer params, then lower trial number wins)" for note in report.notes)
    if len(report.baselines) > 1:
        per = ", ".join(f"{t} threads: {b.get(M.LATENCY_P50_BS1, math.nan):.2f} ms" for t, b in sorted(report.baselines.items()))
        lines.append(f"each student is compared with the teacher measured on its own thread count ({per}); "
                     "the teacher row shows the all-core measurement")
    if report.context is not None:
        lines.append(f"measured in {report.context}; each student is divided by the teacher measured in its own context")
    for other, numbers in report.other_fronts.items():
        lines.append(f"not on this front: trials measured in {other or 'an unrecorded context'} (other hardware or "
                     f"device) form a front of their own, trials {numbers}; their numbers are not comparable with these")
    tags = report.method_tags
    if tags:
        sources = "; ".join(f"{part}: {tags[key]}" for part in ("cpu", "gpu", "ram")
                            if (key := f"emissions_{part}_source_infer_per_1k") in tags)
        lines.append(f"energy (CodeCarbon, country {tags.get('energy_per_1k_country', '?')}): {sources or 'sources unknown'}")
    if report.oneoff:
        parts = ", ".join(f"{name.removeprefix(M.ONEOFF_PREFIX)} {value:.3g}" for name, value in sorted(report.oneoff.items()))
        paid = report.oneoff_tags.get("oneoff_paid_by")
        lines.append(f"one-off costs of the sweep (parent run; in no row): {parts}" + (f" - paid by {paid}" if paid else ""))
    return "\n".join(lines)


def pareto_table(front: Sequence[FrozenTrial], baseline: dict[str, float], title: str,
                 report: FrontReport | None = None) -> Table:
    """Validation columns decide (the front, the pick); test columns are reported beside them, labelled."""
    if report is not None:
        front = report.front
    seeds = report.seeds if report is not None else 1
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, caption=caption(report, baseline),
                  caption_justify="left")
    adaptive = report is not None and report.adaptive_seeds
    for col in ("trial", *(("seeds",) if adaptive else ()), "prune", "T", "alpha", "prec", "runtime", "vocab", "val acc",
                "Δval", "noise", "test acc*", "ms", "speedup", "MiB", "train kWh", "kWh/1k", "ok"):
        table.add_column(col, justify="right")
    if baseline:
        table.add_row("teacher", *(("1",) if adaptive else ()), "0", "-", "-", "fp32", "torch", "full", _acc(baseline, M.VAL_ACCURACY, 1), "0.0", "",
                      _acc(baseline, M.TEST_ACCURACY, 1), _fmt(baseline.get(M.LATENCY_P50_BS1), ".2f"), "1.00x",
                      _fmt(baseline.get(M.MEMORY_MODEL), ".1f"), "-",
                      _fmt(baseline.get(M.ENERGY_PER_1K), ".2e"), "", style="dim")
    for row in pareto.rows(front, baseline, report.baselines if report is not None else None,
                           by_context=report.by_context if report is not None else None):
        m, d, p = row.metrics, row.deltas, row.params
        table.add_row(
            str(row.number), *((str(len(seed_values(m)) or 1),) if adaptive else ()), f"{p.get('pruning_ratio', 0):g}", f"{p.get('distill_temperature', 0):g}",
            f"{p.get('distill_alpha', 0):g}", str(p.get("precision")), RUNTIME_SHORT.get(p.get("runtime", "torch"), "?"),
            str(p.get("vocabulary", "full")), _acc(m, M.VAL_ACCURACY, seeds),
            _delta(m, d), _noise(m, baseline), _acc(m, M.TEST_ACCURACY, seeds),
            _fmt(m.get(M.LATENCY_P50_BS1), ".2f"),
            _fmt(d.get(M.SPEEDUP_BS1), ".2f") + ("x" if d.get(M.SPEEDUP_BS1) else ""), _fmt(m.get(M.MEMORY_MODEL), ".1f"),
            _fmt(m.get(M.ENERGY_TRAIN), ".2e"),
            _fmt(m.get(M.ENERGY_PER_1K), ".2e"),
            "yes" if row.feasible else "no",
        )
    return table


def trials_table(study: optuna.Study) -> Table:
    table = Table(title=f"study {study.study_name}", header_style="bold")
    for col in ("trial", "state", "ratio", "T", "alpha", "precision", "runtime", "vocab", "val acc", "test acc (reported)",
                "latency ms", "seconds", "note"):
        table.add_column(col, justify="right" if col not in ("state", "note", "precision", "runtime", "vocab") else "left")
    from orchestrator.contexts import main_front

    front = {b.number for b in main_front(study)[1]}
    gone = superseded(study.get_trials(deepcopy=False))
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
        if record.supersedes is not None:
            note = f"{record.seeds} seeds, replaces trial {record.supersedes}" + (" - pareto front" if t.number in front else "")
        if t.number in gone:
            note = "replaced by a top-up with more seeds"
        table.add_row(str(t.number), t.state.name, f"{p.get('pruning_ratio', '-')}", f"{p.get('distill_temperature', '-')}",
                      f"{p.get('distill_alpha', '-')}", str(p.get("precision", "-")), str(p.get("runtime", "torch")),
                      str(p.get("vocabulary", "full")), _fmt(m.get(M.VAL_ACCURACY)),
                      _fmt(m.get(M.TEST_ACCURACY)), _fmt(m.get(M.LATENCY_P50_BS1), ".2f"), _fmt(seconds, ".0f"), note[:80])
    return table


def plot_points(study: optuna.Study, on_front: set[int]) -> list[PlotPoint]:
    """Every completed trial as a plot point (its parameters, measured metrics, feasibility, front membership)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    gone = superseded(done)  # a trial an adaptive-seeds top-up replaced is not a point of its own
    return [PlotPoint(number=t.number, params=trial_point(t), metrics=trial_record(t).metrics, feasible=pareto.feasible(t),
                      on_front=t.number in on_front)
            for t in done if t.number not in gone]


def teacher_point(baseline: dict[str, float]) -> dict[str, float]:
    """The teacher's metrics, with a `val_accuracy_ci95` (half the Wilson interval) for its error bar."""
    out = dict(baseline)
    for name in (M.VAL_ACCURACY, M.TEST_ACCURACY):
        iv = pareto.interval(baseline, name)
        if iv is not None and M.ci95_name(name) not in out:
            out[M.ci95_name(name)] = (iv[1] - iv[0]) / 2
    return out


def write_plots(study: optuna.Study, spec: SweepSpec, out_dir: Path, front: Sequence[FrozenTrial] | None = None) -> list[Path]:
    """pareto.html and pareto*.png (orchestrator.plots) of the completed trials against the teacher; [] when none."""
    front = study.best_trials if front is None else front
    points = plot_points(study, {t.number for t in front})
    if not points or len(spec.objectives) < 2:
        return []
    objectives = [(o.key, o.direction) for o in spec.objectives]
    return write_pareto_plots(points, teacher_point(study_record(study).baseline_metrics), objectives, spec.constraints,
                              out_dir, title=f"Pareto front of {study.study_name}")


def studies_table(storage, *, title: str) -> Table:
    """One row per sweep study in `storage` (early stopping's companion studies left out)."""
    import optuna

    from orchestrator.early_stopping import is_companion

    table = Table(title=title)
    for col in ("study", "trials", "complete", "pruned", "failed", "running", "started"):
        table.add_column(col)
    for s in optuna.get_all_study_summaries(storage):
        if is_companion(s.study_name):  # early stopping's curves, not a sweep
            continue
        trials = optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)
        n = lambda st: str(sum(t.state.name == st for t in trials))  # noqa: E731
        table.add_row(s.study_name, str(len(trials)), n("COMPLETE"), n("PRUNED"), n("FAIL"), n("RUNNING"),
                      str(s.datetime_start or "-"))
    return table
