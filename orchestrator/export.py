"""Export the picked trial for deployment: its config, its measured metrics and its model.

The metrics are read back from the trial's MLflow run (not recomputed), so the exported numbers
are exactly those the user browsed; the model comes from the run's artifacts, so export works from
any machine that can reach the tracking server.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from orchestrator import pareto
from orchestrator.record import study_record, trial_record
from orchestrator.spec import SweepSpec
from orchestrator.tracking import Tracker
from trainers import metrics


def export_trial(study: optuna.Study, spec: SweepSpec, tracker: Tracker, *, rule: str, out_dir: Path) -> dict:
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise ValueError(f"study {study.study_name!r} has no completed trial to export")
    chosen = pareto.pick(completed, rule, spec.objectives)
    record = trial_record(chosen)
    run_id = record.mlflow_run_id
    run = tracker.client.get_run(run_id)

    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tracker.download(run_id, "model", staging)
    trial_cfg_path = Path(tracker.download(run_id, "trial_config.yaml", staging))
    trial_cfg = yaml.safe_load(trial_cfg_path.read_text())
    trial_cfg["output_dir"] = str((out_dir / "reproduced").resolve())
    trial_cfg["name"] = f"{study.study_name}/trial-{chosen.number}/reproduced"
    trial_cfg["measure_lock"] = None  # a lock of the sweep's machine; a reproduction runs alone
    trial_cfg["trainings_dir"] = None  # a reproduction trains the student itself, never reuses the sweep's training
    trial_cfg_path.write_text(yaml.safe_dump(trial_cfg, sort_keys=False))

    baseline = study_record(study).baseline_metrics
    document = {
        "study": study.study_name,
        "trial": chosen.number,
        "pick": rule,
        "mlflow": {"run_id": run_id, "tracking_uri": tracker.uri, "experiment_id": run.info.experiment_id},
        "hyperparameters": dict(chosen.params),
        "pruning": {"method": spec.pruning.method, **record.pruning},
        "chosen_on": "validation metrics (val_*); test_* are reported, never used to choose",
        "validation": {k: v for k, v in sorted(run.data.metrics.items()) if k.startswith("val_")},
        "test_reported": {k: v for k, v in sorted(run.data.metrics.items()) if metrics.is_test_metric(k)},
        "metrics": dict(sorted(run.data.metrics.items())),
        "baseline_metrics": dict(sorted(baseline.items())),
        "vs_teacher": pareto.deltas(run.data.metrics, baseline),
        "meets_constraints": pareto.feasible(chosen),
        "on_pareto_front": chosen.number in {t.number for t in study.best_trials},
        "measured_on": {k: v for k, v in run.data.tags.items() if k.startswith("hw_") or k.startswith("measure_")},
        "model": "model/",
        "reproduce": f"sweep trial {(out_dir / 'trial_config.yaml').resolve()}",
        "measure": f"sweep measure {(out_dir / 'model').resolve()} --sweep {spec.source}",
    }
    (staging / "config.yaml").write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return document
