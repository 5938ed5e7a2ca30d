"""A sweep's life in one place: open it, run its trials, close it.

- `open_sweep`: storage, study, MLflow experiment and parent run, preparation, teacher baseline.
  `launch=True` for `sweep launch`; `launch=False` rebuilds the same context from the study alone,
  so `sweep worker STUDY --storage URL` (another orchestrator process) can help from any machine.
- `run_sweep`: the pool of executors (`executors.run_executors`) until the sweep is done.
- `close_sweep`: tag the Pareto front, write the plot, end the parent run.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from optuna.trial import FrozenTrial, TrialState

from orchestrator.baselines import ensure_baselines, load_baselines, measured_threads, remember_baseline
from orchestrator import teacher_share
from orchestrator.child_process import HOST, Placement, prewarm
from trainers.measure.context import context_of
from orchestrator.context import Context, Log, work_dir
from orchestrator.executors import run_executors
from orchestrator.cleanup import Removal, plan_removal, remove
from orchestrator.early_stopping import EarlyStopping
from orchestrator.preparation import PreparationDisplay, run_preparation
from orchestrator.record import set_study, storage_of, study_record, trial_record
from orchestrator.report import FrontReport, front_report, write_plots
from orchestrator.seed_rounds import run_rounds
from orchestrator.spec import SpecError, SweepSpec, check_precisions, stored_spec  # noqa: F401 (stored_spec: re-exported)
from orchestrator.study import DEFAULT_ROOT, counts, default_storage_url, load_study, open_storage, open_study
from orchestrator.tracking import FINISHED, KILLED, Tracker, flatten, git_commit, overridden, resolve_tracking_uri, software_tags
from orchestrator.stats import decision_metrics
from trainers import metrics as M
from trainers.measure.predictions import load as load_predictions

# Sections that define what a study measures: changing them under an existing study would mix
# incomparable trials on one Pareto front.
FROZEN_SECTIONS = ("teacher", "data", "training", "pruning", "measure", "search_space", "objectives", "constraints", "sampler")


def _check_unchanged(study, spec: SweepSpec) -> None:
    stored = study_record(study).spec
    if stored is None:
        return
    now = json.loads(spec.model_dump_json())
    changed = [s for s in FROZEN_SECTIONS if json.dumps(stored.get(s), sort_keys=True) != json.dumps(now.get(s), sort_keys=True)]
    if changed:
        raise SpecError(
            f"{spec.source}: study {spec.name!r} already exists and this sweep file changes {changed}; "
            "trials measured under other settings would share one Pareto front. Give the sweep a new name, "
            f"or remove the old study first: sweep delete {spec.name}"
        )


def open_sweep(
    spec: SweepSpec,
    *,
    storage_url: str | None,
    tracking_uri: str | None,
    root: Path = DEFAULT_ROOT,
    launching: bool,
    log: Log,
    heartbeat_s: float = 10.0,
    show: PreparationDisplay | None = None,
    teacher_wait_s: float = 3600.0,
) -> Context:
    """A launch whose preparation fails before the study has any trial removes the study, its companion
    and its runs again (`cleanup.py`), so the corrected file launches under the same name.

    With a tracking server, the teacher is built once: the first launch publishes it on the parent run,
    every other process downloads it (a worker waits up to `teacher_wait_s` for it) and never fine-tunes
    (`teacher_share.py`)."""
    root.mkdir(parents=True, exist_ok=True)
    storage_url = storage_url or spec.storage or default_storage_url(root)
    storage = open_storage(storage_url, root)
    study = open_study(spec, storage)
    _check_unchanged(study, spec)
    record = study_record(study)
    stored = None if launching else record.tracking_uri
    if (stored and not overridden(tracking_uri) and stored.startswith("sqlite:")
            and not Path(stored.removeprefix("sqlite:///")).exists()):
        raise SpecError(f"study {spec.name!r} tracks runs in {stored}, a file not on this machine; "
                        "pass --tracking-uri http://HOST:5000 (an `mlflow server`), see docs/distributed.md")
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri, root, stored=stored)
    tracker = Tracker(uri, root)
    experiment_id = tracker.experiment_id(spec.experiment)
    parent = record.mlflow_parent_run_id
    if launching or parent is None:
        tags = {"sweep.storage": storage_url, "sweep.git_commit": git_commit(spec.base_dir), "sweep.sampler": spec.sampler.type,
                "sweep.objectives": json.dumps([o.model_dump() for o in spec.objectives]), **software_tags()}
        parent = tracker.parent_run(experiment_id, spec.name, params=flatten("", json.loads(spec.model_dump_json())),
                                    tags=tags, sweep_file=spec.source)
        set_study(study, mlflow_parent_run_id=parent, mlflow_experiment=spec.experiment, tracking_uri=uri,
                  spec=json.loads(spec.model_dump_json()), spec_source=str(spec.source))
    has_baseline = record.baseline_run_id is not None
    try:
        check_data_here(spec)
        published = _published_teacher(tracker, parent, root, launching=launching, wait_s=teacher_wait_s, log=log)
        prepared = run_preparation(spec, root, measure_baseline=launching and not has_baseline, log=log, show=show,
                                   published_teacher=published)
        if launching and published is None and not tracker.local:
            teacher_share.publish(tracker, parent, prepared, log)
    except BaseException:
        if launching and not study.get_trials(deepcopy=False):
            removal = plan_removal(spec.name, storage, tracker, spec.experiment, root)
            remove(Removal(studies=removal.studies, runs=removal.runs, folders=[]), storage, tracker)
            log(f"preparation failed before any trial: study {spec.name!r} and its runs removed again "
                "(the corrected file launches under the same name)")
        raise
    ctx = Context(spec=spec, study=study, storage_url=storage_url, tracker=tracker, experiment_id=experiment_id,
                  parent_run_id=parent, root=root, prepared=prepared, heartbeat_s=heartbeat_s)
    if spec.pruner.enabled:
        ctx.early_stopping = EarlyStopping(storage_of(study), spec.name, spec.pruner,
                                           final_fraction=spec.pruning.final_fraction,
                                           movement=spec.pruning.method == "block_movement")
    if launching:
        if prepared.data_report:
            tracker.log_dict(parent, prepared.data_report, "data_report.json")
            tracker.log(parent, tags={"sweep.teacher_key": prepared.teacher_key, "sweep.labels": json.dumps(prepared.label_names)},
                        metrics={f"data_rows_{k}": v for k, v in _rows(prepared.data_report).items()})
        if prepared.baseline_metrics or has_baseline:
            record_baseline(ctx, log)
        if prepared.oneoff_metrics:
            record_oneoff(ctx, log)
        hw = {k: v for k, v in prepared.baseline_tags.items() if k.startswith("hw_")}
        if hw:
            tracker.log(parent, tags=hw)
    ctx.baseline = study_record(study).baseline_metrics or ctx.baseline
    ctx.baselines.update(load_baselines(ctx))
    return ctx


def check_data_here(spec: SweepSpec) -> None:
    """Every data file the sweep names, on this machine (the same path on every machine)."""
    for field_name, path in spec.data.files(spec.base_dir).items():
        if not path.exists():
            raise SpecError(f"{spec.source or spec.name}: field data.{field_name}: {path} is missing on host {HOST}; "
                            "every machine needs the data files at the path the sweep file names (docs/distributed.md)")


def _published_teacher(tracker: Tracker, parent: str, root: Path, *, launching: bool, wait_s: float,
                       log: Log) -> dict[str, str] | None:
    """The teacher published on the parent run, downloaded into this root's cache; None where this process
    builds it (the first launch, or a local tracking store: one machine, one cache)."""
    if tracker.local:
        return None
    path = teacher_share.published(tracker, parent)
    if path is None and not launching:
        path = teacher_share.wait_published(tracker, parent, bound_s=wait_s, log=log)
    return None if path is None else teacher_share.fetch(tracker, parent, path, root, log)


def record_oneoff(ctx: Context, log: Log) -> None:
    """The sweep's one-off costs (teacher fine-tune, teacher logits) on the parent run, charged to no row."""
    prep = ctx.prepared
    ctx.tracker.log(ctx.parent_run_id, metrics=prep.oneoff_metrics, tags=prep.oneoff_tags)
    set_study(ctx.study, oneoff_metrics=dict(prep.oneoff_metrics), oneoff_tags=dict(prep.oneoff_tags))
    log("one-off costs (parent run): " + oneoff_line(prep.oneoff_metrics, prep.oneoff_tags))


def oneoff_line(metrics: dict[str, float], tags: dict[str, str]) -> str:
    parts = [f"{name.removeprefix(M.ONEOFF_PREFIX)} {value:.3g}" for name, value in sorted(metrics.items())]
    paid = tags.get("oneoff_paid_by")
    return ", ".join(parts) + (f"; paid by {paid}" if paid else "")


def _rows(report: dict) -> dict[str, float]:
    rows = report.get("rows_final") or report.get("rows") or {}
    return {k: float(v) for k, v in rows.items() if isinstance(v, (int, float))}


def spec_from_study(name: str, storage_url: str, root: Path = DEFAULT_ROOT) -> SweepSpec:
    """The sweep spec a study was launched with, for workers that join without the file."""
    record = study_record(load_study(name, open_storage(storage_url, root)))
    if record.spec is None:
        raise SpecError(f"study {name!r} was not created by `sweep launch` (no spec stored on it)")
    return stored_spec(record, name, check_hardware=True)


def record_baseline(ctx: Context, log: Log) -> None:
    """The teacher, measured like a trial, as a child run: once per study."""
    study, prep = ctx.study, ctx.prepared
    record = study_record(study)
    if record.baseline_run_id is not None:
        ctx.baseline = record.baseline_metrics
        return
    run_id = ctx.tracker.child_run(ctx.experiment_id, ctx.parent_run_id, ctx.spec.name, name="baseline-teacher",
                                   role="baseline", tags={"sweep.teacher_key": prep.teacher_key})
    ctx.tracker.log(run_id, params={"teacher.model": ctx.spec.teacher.model, "pruning_ratio": 0.0, "distill_alpha": 0.0,
                                    "precision": "fp32", "teacher.fine_tuned": prep.teacher_meta.get("fine_tuned")},
                    metrics=prep.baseline_metrics, tags=prep.baseline_tags)
    ctx.tracker.log_dict(run_id, prep.baseline_per_class_f1, "per_class_f1.json")
    if prep.baseline_val_per_class_f1:
        ctx.tracker.log_dict(run_id, prep.baseline_val_per_class_f1, "val_per_class_f1.json")
    ctx.tracker.log_dict(run_id, prep.teacher_meta, "teacher_meta.json")
    baseline = dict(prep.baseline_metrics)
    if prep.baseline_predictions and Path(prep.baseline_predictions).is_file():
        ctx.tracker.log_artifacts(run_id, Path(prep.baseline_predictions))
        own = decision_metrics(load_predictions(prep.baseline_predictions))  # its accuracy interval
        ctx.tracker.log(run_id, metrics=own)
        baseline.update(own)
    ctx.tracker.end(run_id, FINISHED)
    set_study(study, baseline_metrics=baseline, baseline_run_id=run_id,  # the teacher's predictions: an artifact of that run
              measure_method_tags=method_tags(prep.baseline_tags))
    ctx.baseline = baseline
    threads = measured_threads(prep.baseline_tags)
    if threads is not None:
        remember_baseline(ctx, threads, baseline, run_id, context=context_of(prep.baseline_tags))
    b = baseline
    log(f"baseline (teacher): val accuracy {b.get(M.VAL_ACCURACY, math.nan):.4f}, "
        f"test accuracy {b.get(M.TEST_ACCURACY, math.nan):.4f} (reported), "
        f"latency {b.get(M.LATENCY_P50_BS1, math.nan):.2f} ms (batch 1)")


def run_sweep(ctx: Context, placements: list[Placement], *, stop: threading.Event, log: Log,
              progress: Callable[[], None] | None = None) -> None:
    """Run the sweep's trials until done; KeyboardInterrupt (after recording everything) when stopped."""
    prewarm(placements)  # trials start as forks of a warm server per executor; it imports meanwhile
    ensure_baselines(ctx, placements, log)  # the teacher on the same thread counts as the trials
    run_executors(ctx, placements, stop=stop, log=log, progress=progress)
    # adaptive seeds: rounds of top-ups for the points whose verdict is still uncertain
    run_rounds(ctx, lambda: run_executors(ctx, placements, stop=stop, log=log, progress=progress), stop, log)


def method_tags(tags: dict[str, str]) -> dict[str, str]:
    """The tags that say how energy and emissions were estimated (RAPL / TDP estimate / NVML, country)."""
    return {k: v for k, v in tags.items() if k.startswith("energy_per_1k_") or "_source_" in k}


def tag_pareto(ctx: Context, front: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
    front = ctx.study.best_trials if front is None else front
    on_front = {trial_record(t).mlflow_run_id for t in front}
    for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = trial_record(t).mlflow_run_id
        if run_id:
            ctx.tracker.set_tags([run_id], "sweep.pareto_front", str(run_id in on_front).lower())
    return front


def trainings_run(trials: list[FrozenTrial]) -> int:
    """Student trainings actually performed: trials that trained their own (not reusing another's),
    to the end or until early stopping pruned them."""
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and trial_record(t).reused_training_of is None
               for t in trials)


@dataclass
class Closed:
    front: list[FrozenTrial]
    counts: dict[str, int]
    plot: Path | None
    report: FrontReport | None = None
    plots: list[Path] = field(default_factory=list)


def close_sweep(ctx: Context, *, interrupted: bool) -> Closed:
    """Break ties within noise, tag the Pareto front on the trial runs, write and log the plots, end the parent run."""
    report = front_report(ctx.study, ctx.spec)
    front = tag_pareto(ctx, report.front)
    plots = write_plots(ctx.study, ctx.spec, work_dir(ctx.root, ctx.spec.name), front)
    for path in plots:
        ctx.tracker.log_artifacts(ctx.parent_run_id, path)
    if report.notes:
        ctx.tracker.log(ctx.parent_run_id, tags={"sweep.pareto_ties": "; ".join(report.notes)[:5000]})
    c = counts(ctx.study)
    ctx.tracker.log(ctx.parent_run_id, metrics={"trials_complete": c["complete"], "trials_failed": c["fail"],
                                                "trials_pruned": c["pruned"],
                                                "trainings_run": trainings_run(ctx.study.get_trials(deepcopy=False))})
    ctx.tracker.end(ctx.parent_run_id, KILLED if interrupted else FINISHED)
    return Closed(front=front, counts=c, plot=plots[0] if plots else None, report=report, plots=plots)
