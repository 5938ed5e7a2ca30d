"""Opening a sweep: storage, study, MLflow experiment and parent run, preparation, baseline.

`launch` does all of it for a sweep file; `join` rebuilds the same context from the study alone,
so `sweep worker STUDY --storage URL` can help from any machine.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from orchestrator.runner import Context, Log, prepare, record_baseline
from orchestrator.spec import SpecError, SweepSpec, check_precisions
from orchestrator.study import DEFAULT_ROOT, default_storage_url, load_study, open_storage, open_study
from orchestrator.tracking import Tracker, flatten, git_commit, resolve_tracking_uri, software_tags

# Sections that define what a study measures: changing them under an existing study would mix
# incomparable trials on one Pareto front.
FROZEN_SECTIONS = ("teacher", "data", "training", "pruning", "measure", "search_space", "objectives", "constraints", "sampler")


def _check_unchanged(study, spec: SweepSpec) -> None:
    stored = study.user_attrs.get("spec")
    if stored is None:
        return
    now = json.loads(spec.model_dump_json())
    changed = [s for s in FROZEN_SECTIONS if json.dumps(stored.get(s), sort_keys=True) != json.dumps(now.get(s), sort_keys=True)]
    if changed:
        raise SpecError(
            f"{spec.source}: study {spec.name!r} already exists and this sweep file changes {changed}; "
            "trials measured under other settings would share one Pareto front. Give the sweep a new name."
        )


def open_context(
    spec: SweepSpec,
    *,
    storage_url: str | None,
    tracking_uri: str | None,
    root: Path = DEFAULT_ROOT,
    launching: bool,
    log: Log,
    heartbeat_s: float = 10.0,
) -> Context:
    root.mkdir(parents=True, exist_ok=True)
    storage_url = storage_url or spec.storage or default_storage_url(root)
    study = open_study(spec, open_storage(storage_url, root))
    _check_unchanged(study, spec)
    stored = None if launching else study.user_attrs.get("tracking_uri")
    if (stored and not tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI") and stored.startswith("sqlite:")
            and not Path(stored.removeprefix("sqlite:///")).exists()):
        raise SpecError(f"study {spec.name!r} tracks runs in {stored}, a file not on this machine; "
                        "pass --tracking-uri http://HOST:5000 (an `mlflow server`), see docs/distributed.md")
    uri = resolve_tracking_uri(tracking_uri, spec.tracking.uri or stored, root)
    tracker = Tracker(uri, root)
    experiment_id = tracker.experiment_id(spec.experiment)
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if launching or parent is None:
        tags = {"sweep.storage": storage_url, "sweep.git_commit": git_commit(spec.base_dir), "sweep.sampler": spec.sampler.type,
                "sweep.objectives": json.dumps([o.model_dump() for o in spec.objectives]), **software_tags()}
        parent = tracker.parent_run(experiment_id, spec.name, params=flatten("", json.loads(spec.model_dump_json())),
                                    tags=tags, sweep_file=spec.source)
        study.set_user_attr("mlflow_parent_run_id", parent)
        study.set_user_attr("mlflow_experiment", spec.experiment)
        study.set_user_attr("tracking_uri", uri)
        study.set_user_attr("spec", json.loads(spec.model_dump_json()))
        study.set_user_attr("spec_source", str(spec.source))
    prepared = prepare(spec, root, measure_baseline=launching and "baseline_run_id" not in study.user_attrs, log=log)
    ctx = Context(spec=spec, study=study, storage_url=storage_url, tracker=tracker, experiment_id=experiment_id,
                  parent_run_id=parent, root=root, prepared=prepared, heartbeat_s=heartbeat_s)
    if launching:
        if prepared.data_report:
            tracker.log_dict(parent, prepared.data_report, "data_report.json")
            tracker.log(parent, tags={"sweep.teacher_key": prepared.teacher_key, "sweep.labels": json.dumps(prepared.label_names)},
                        metrics={f"data_rows_{k}": v for k, v in _rows(prepared.data_report).items()})
        if prepared.baseline_metrics or "baseline_run_id" in study.user_attrs:
            record_baseline(ctx, log)
        hw = {k: v for k, v in prepared.baseline_tags.items() if k.startswith("hw_")}
        if hw:
            tracker.log(parent, tags=hw)
    ctx.baseline = study.user_attrs.get("baseline_metrics", ctx.baseline)
    return ctx


def _rows(report: dict) -> dict[str, float]:
    rows = report.get("rows_final") or report.get("rows") or {}
    return {k: float(v) for k, v in rows.items() if isinstance(v, (int, float))}


def spec_from_study(name: str, storage_url: str, root: Path = DEFAULT_ROOT) -> SweepSpec:
    """The sweep spec a study was launched with, for workers that join without the file."""
    study = load_study(name, open_storage(storage_url, root))
    raw = study.user_attrs.get("spec")
    if raw is None:
        raise SpecError(f"study {name!r} was not created by `sweep launch` (no spec stored on it)")
    spec = SweepSpec.model_validate(raw)
    source = study.user_attrs.get("spec_source")
    spec.source = Path(source) if source else None
    check_precisions(spec, source or name)
    return spec
