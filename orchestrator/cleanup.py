"""Starting over: remove one study, its early-stopping companion, its MLflow runs and its trial folders.

Only what carries the study's name is touched: other studies in the same storage, their runs (runs
are selected by the study tag) and the shared caches (teachers, data, trainings) stay.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna

from orchestrator.early_stopping import companion_name
from orchestrator.tracking import STUDY, Tracker


@dataclass
class Removal:
    studies: list[str]
    runs: list[str]
    folders: list[Path]


def plan_removal(study_name: str, storage, tracker: Tracker, experiment: str | None, root: Path) -> Removal:
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    studies = [n for n in (study_name, companion_name(study_name)) if n in names]
    runs = []
    exp = tracker.client.get_experiment_by_name(experiment or study_name)
    if exp is not None:
        runs = [r.info.run_id for r in tracker.client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`{STUDY}` = '{study_name}'", max_results=50000)]
    folder = root / "trials" / study_name
    return Removal(studies=studies, runs=runs, folders=[folder] if folder.exists() else [])


def remove(removal: Removal, storage, tracker: Tracker) -> None:
    for name in removal.studies:
        optuna.delete_study(study_name=name, storage=storage)
    for run_id in removal.runs:
        tracker.client.delete_run(run_id)
    for folder in removal.folders:
        shutil.rmtree(folder, ignore_errors=True)
