"""Where the per-row predictions of a trial or of the teacher are: the local folder, else the MLflow run's artifact.

The file format is `trainers.measure.predictions`; the statistics over it are `orchestrator.stats`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from orchestrator.record import study_record, trial_record
from trainers.measure import predictions as P

if TYPE_CHECKING:  # MLflow loads only when a file has to be downloaded
    from orchestrator.tracking import Tracker

TEACHER = "teacher"


def _from_run(tracker: Tracker | None, run_id: str | None) -> P.Predictions | None:
    if tracker is None or not run_id:
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="predictions-") as tmp:
            return P.load(tracker.download(run_id, P.PREDICTIONS_FILE, Path(tmp)))
    except Exception:  # noqa: BLE001 - a run logged before predictions existed has none
        return None


def _local(path: str | Path | None) -> P.Predictions | None:
    return P.load(path) if path and Path(path).is_file() else None


def teacher_predictions(study: optuna.Study, tracker: Tracker | None = None) -> P.Predictions | None:
    record = study_record(study)
    return _local(record.baseline_predictions) or _from_run(tracker, record.baseline_run_id)


def trial_predictions(trial: FrozenTrial, tracker: Tracker | None = None) -> P.Predictions | None:
    record = trial_record(trial)
    local = Path(record.output_dir) / P.PREDICTIONS_FILE if record.output_dir else None
    return _local(local) or _from_run(tracker, record.mlflow_run_id)


def predictions_of(study: optuna.Study, who: str, tracker: Tracker | None = None) -> P.Predictions:
    """`teacher` or a completed trial's number -> its predictions; a clear error when there are none."""
    if who == TEACHER:
        found = teacher_predictions(study, tracker)
        if found is None:
            raise ValueError(f"study {study.study_name!r}: the teacher baseline logged no {P.PREDICTIONS_FILE}")
        return found
    if not who.isdigit():
        raise ValueError(f"{who!r}: expected a trial number or 'teacher'")
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == int(who)), None)
    if trial is None or trial.state != TrialState.COMPLETE:
        raise ValueError(f"study {study.study_name!r} has no completed trial {who}")
    found = trial_predictions(trial, tracker)
    if found is None:
        raise ValueError(f"trial {who} of {study.study_name!r} logged no {P.PREDICTIONS_FILE} (run before predictions "
                         "were logged?)")
    return found


def paired_accuracy(tracker: Tracker | None = None):
    """pareto.pick's `paired(a, b)`: the paired 95 % interval of val accuracy a - b (fractions) from the two
    trials' prediction files, None when either has none."""
    from orchestrator.stats import paired_delta

    cache: dict[int, P.Predictions | None] = {}

    def rows(t: FrozenTrial) -> P.Predictions | None:
        if t.number not in cache:
            cache[t.number] = trial_predictions(t, tracker)
        return cache[t.number]

    def paired(a: FrozenTrial, b: FrozenTrial) -> tuple[float, float] | None:
        pa, pb = rows(a), rows(b)
        if pa is None or pb is None or "val" not in pa.splits or "val" not in pb.splits:
            return None
        p = paired_delta(pa.splits["val"], pb.splits["val"], kept_a=pa.kept, kept_b=pb.kept)
        return p.low, p.high

    return paired
