"""MLflow: one experiment per sweep, a parent run per study, a nested child run per trial.

Uses MlflowClient (not the fluent API) so several worker threads can log at once, and writes run
ids into the Optuna study so that any worker on any machine finds the same parent run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from orchestrator.study import DEFAULT_ROOT
from trainers import metrics as vocab

ROLE = "sweep.role"  # study | baseline | trial
STUDY = "sweep.study"
PARENT = "mlflow.parentRunId"
# MLflow 3's UI opens an experiment by its kind: without this tag it guesses "GenAI" and lands on a
# traces overview; "custom_model_development" opens the training-runs view.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# A runs-table layout stored on the experiment (MLflow 3's "shared view": an experiment tag the UI
# reads when the URL names it): trials flat, sorted by validation accuracy, the compared metrics shown.
RUNS_VIEW = "sweep"
RUNS_VIEW_TAG = "mlflow.sharedViewState." + RUNS_VIEW
COMPARED_METRICS = (vocab.VAL_ACCURACY, vocab.TEST_ACCURACY, vocab.LATENCY_P50_BS1, vocab.MEMORY_MODEL,
                    vocab.MODEL_DISK, vocab.ENERGY_PER_1K)
COMPARED_PARAMS = ("pruning_ratio", "distill_temperature", "distill_alpha", "precision")
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
_MAX_PARAM = 6000


def default_tracking_uri(root: Path = DEFAULT_ROOT) -> str:
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def resolve_tracking_uri(flag: str | None, spec_uri: str | None, root: Path = DEFAULT_ROOT, *,
                         stored: str | None = None) -> str:
    """--tracking-uri, then $MLFLOW_TRACKING_URI, then the sweep file's, then the one stored on the study
    at launch, then sqlite under mlruns/: the one order every command uses."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or spec_uri or stored or default_tracking_uri(root)


def overridden(flag: str | None) -> bool:
    """Whether the user named a tracking URI for this command (flag or environment)."""
    return bool(flag or os.environ.get("MLFLOW_TRACKING_URI"))


_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@", re.I)


def redact(text: str) -> str:
    """Hide passwords in URLs (storage, tracking server) before they reach logged params or tags."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)


def flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return {prefix: redact(text)[:_MAX_PARAM]}


def _retrying(fn, *args, attempts: int = 8, **kwargs):
    """SQLite stores answer 'database is locked' under concurrent writers; back off and try again."""
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # mlflow wraps sqlalchemy's OperationalError in MlflowException
            if "locked" not in str(exc).lower() or i == attempts - 1:
                raise
            time.sleep(0.1 * 2**i)


def git_commit(cwd: Path | None = None) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown (not a git checkout)"
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


class Tracker:
    def __init__(self, uri: str, root: Path = DEFAULT_ROOT):
        self.uri = uri
        self.root = root
        self.client = MlflowClient(tracking_uri=uri)

    # --- experiment and parent -------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            # made before these tags existed: add them; a kind chosen in the UI since stays
            for key, value in experiment_tags().items():
                if key not in exp.tags:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:") or self.uri.startswith("file:"):
            location = (self.root / "artifacts").resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=experiment_tags())
        except Exception:
            exp = self.client.get_experiment_by_name(name)  # another worker created it first
            if exp is None:
                raise
            return exp.experiment_id

    def find_runs(self, experiment_id: str, study: str, role: str) -> list:
        query = f"tags.`{STUDY}` = '{study}' and tags.`{ROLE}` = '{role}'"
        return self.client.search_runs([experiment_id], filter_string=query, max_results=5000)

    def parent_run(self, experiment_id: str, study: str, *, params: dict, tags: dict, sweep_file: Path | None) -> str:
        """The study's parent run, created on first launch and reopened on every resume."""
        existing = self.find_runs(experiment_id, study, "study")
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                experiment_id, run_name=f"study:{study}", tags={ROLE: "study", STUDY: study, **{k: redact(str(v)) for k, v in tags.items()}}
            )
            run_id = run.info.run_id
            self.log(run_id, params=params)
        if sweep_file is not None:
            self.client.log_artifact(run_id, str(sweep_file), "sweep")
        self.log(run_id, tags=tags)
        return run_id

    # --- children --------------------------------------------------------------------------
    def child_run(self, experiment_id: str, parent_id: str, study: str, *, name: str, role: str, tags: dict) -> str:
        run = _retrying(
            self.client.create_run,
            experiment_id,
            run_name=name,
            tags={ROLE: role, STUDY: study, PARENT: parent_id, **{k: redact(str(v)) for k, v in tags.items()}},
        )
        return run.info.run_id

    def log(self, run_id: str, *, params: dict | None = None, metrics: dict | None = None, tags: dict | None = None):
        now = int(time.time() * 1000)
        batch_params = [Param(k, redact(str(v))[:_MAX_PARAM]) for k, v in (params or {}).items()]
        batch_metrics = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
        batch_tags = [RunTag(k, redact(str(v))[:5000]) for k, v in (tags or {}).items()]
        for i in range(0, max(len(batch_params), len(batch_metrics), len(batch_tags)), 100):
            _retrying(
                self.client.log_batch,
                run_id,
                metrics=batch_metrics[i : i + 100],
                params=batch_params[i : i + 100],
                tags=batch_tags[i : i + 100],
            )

    def log_dict(self, run_id: str, data: Any, path: str) -> None:
        _retrying(self.client.log_dict, run_id, data, path)

    def log_artifacts(self, run_id: str, local: Path, path: str | None = None) -> None:
        if Path(local).is_dir():
            _retrying(self.client.log_artifacts, run_id, str(local), path)
        elif Path(local).exists():
            _retrying(self.client.log_artifact, run_id, str(local), path)

    def end(self, run_id: str, status: str) -> None:
        _retrying(self.client.set_terminated, run_id, status=status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def set_tags(self, run_ids: Iterable[str], key: str, value: str) -> None:
        for run_id in run_ids:
            _retrying(self.client.set_tag, run_id, key, value)

    @property
    def local(self) -> bool:
        """A store on this machine's disk (sqlite or a folder), not a tracking server other machines reach."""
        return self.uri.startswith(("sqlite:", "file:", "/")) or ("://" not in self.uri and not self.uri.startswith("databricks"))

    def run_tags(self, run_id: str) -> dict[str, str]:
        """The run's tags; LookupError once the run is deleted."""
        run = self.client.get_run(run_id)
        if run.info.lifecycle_stage == "deleted":
            raise LookupError(f"run {run_id} is deleted")
        return dict(run.data.tags)

    def artifact_names(self, run_id: str, path: str) -> list[str]:
        """Names (paths relative to the run's artifact root) directly under `path`; [] when none."""
        return [f.path for f in self.client.list_artifacts(run_id, path)]

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))


def experiment_tags() -> dict[str, str]:
    """Opens as a model-training experiment, with the sweep's runs-table layout available."""
    columns = [f"metrics.`{m}`" for m in COMPARED_METRICS] + [f"params.`{p}`" for p in COMPARED_PARAMS]
    view = {
        "orderByKey": f"metrics.`{vocab.VAL_ACCURACY}`",
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": columns,  # accuracy first, in the order above
        "columnWidths": {c: max(120, 8 * len(c)) for c in columns},  # wide enough for the full metric name
    }
    return {EXPERIMENT_KIND: MODEL_TRAINING, RUNS_VIEW_TAG: json.dumps(view)}


def runs_url(ui_base: str, experiment_id: str, *, view: bool = True) -> str:
    """The MLflow 3 UI's runs table of one experiment: `<base>/#/experiments/<id>/runs` (a hash route),
    in the model-training workflow, with the sweep's layout when the experiment has it (`view`)."""
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={RUNS_VIEW}" if view else "")
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def software_tags() -> dict[str, str]:
    import mlflow
    import optuna
    import torch
    import transformers

    return {
        "sw.python": platform.python_version(),
        "sw.torch": torch.__version__,
        "sw.transformers": transformers.__version__,
        "sw.optuna": optuna.__version__,
        "sw.mlflow": mlflow.__version__,
    }
