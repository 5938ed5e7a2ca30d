"""What the orchestrator stores on an Optuna study and its trials, as typed records.

Optuna keeps free-form `user_attrs` on studies and trials; this module is the only code that reads
or writes them, and the only code that touches Optuna's private API (`study._storage`,
`trial._trial_id`), the way `tracking.Tracker` is the only code that talks to MLflow. Everything
else reads `trial_record(t)` / `study_record(study)` and writes through the functions below.
"""

from __future__ import annotations

import time
from typing import Any, Union

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict

AnyTrial = Union[optuna.Trial, FrozenTrial]


class TrialRecord(BaseModel):
    """One trial's bookkeeping: which attempt, who runs it, how it ended, where its results are."""

    model_config = ConfigDict(extra="ignore")

    attempt: int = 1
    retry_of: int | None = None  # the trial number this one reruns (retries do not use up n_trials)
    duplicate_of: int | str | None = None  # a skipped duplicate grid point (the trial that owns it)
    fail_reason: str | None = None
    interrupted: bool = False  # failed by Ctrl-C/SIGTERM: queued again without using up a retry
    mlflow_run_id: str | None = None
    output_dir: str | None = None
    # Who runs it: an orchestrator process (host, pid) and its trial's child process (trial_pid).
    host: str | None = None
    host_id: str | None = None
    pid: int | None = None
    pid_start: float | None = None
    trial_pid: int | None = None
    heartbeat: float | None = None
    metrics: dict[str, float] = {}
    pruning: dict[str, Any] = {}
    baseline_threads: int | None = None  # the thread count of the teacher baseline its deltas/constraints used
    # where it was measured (trainers.measure.context: hardware, device, threads) and so which baseline it divides by
    measurement_context: str | None = None
    baseline_context: str | None = None  # the context of the teacher baseline it was compared with
    # Train once, measure many: the shared training this trial's student is, and who trained it.
    training_key: str | None = None
    reused_training_of: str | None = None  # None: trained by this trial
    stop_reason: str | None = None  # why early stopping pruned it (PRUNED trials)
    # Adaptive seeds (orchestrator/adaptive_seeds.py): a top-up reruns a point with more seeds and replaces it.
    seeds: int | None = None  # None: the policy's min
    supersedes: int | None = None  # the trial of the same point with fewer seeds that this one replaces
    seeds_reason: str | None = None  # why the point got another seed


class StudyRecord(BaseModel):
    """A study's bookkeeping: the spec it was launched with, its MLflow home and the teacher baseline."""

    model_config = ConfigDict(extra="ignore")

    objectives: list[str] | None = None
    directions: list[str] | None = None
    spec: dict[str, Any] | None = None
    spec_source: str | None = None
    mlflow_parent_run_id: str | None = None
    mlflow_experiment: str | None = None
    tracking_uri: str | None = None
    baseline_metrics: dict[str, float] = {}
    baseline_run_id: str | None = None
    baseline_predictions: str | None = None  # studies before 2026-12: a local path; now read from baseline_run_id's artifact
    # The teacher measured with each thread count a placement measures with ({"4": metrics}): a trial is
    # compared with the teacher measured on as many threads as it was (pareto.baseline_for).
    baselines_by_threads: dict[str, dict[str, float]] = {}
    baseline_run_ids_by_threads: dict[str, str] = {}
    # The teacher per measurement context (trainers.measure.context: CPU/GPU model, device, threads): a trial is
    # compared with the teacher measured where it was measured; per-host baselines on a cluster use the same key.
    baselines_by_context: dict[str, dict[str, float]] = {}
    baseline_run_ids_by_context: dict[str, str] = {}
    # The sweep's one-off costs (teacher fine-tune, teacher logits): on the parent run, charged to no row.
    oneoff_metrics: dict[str, float] = {}
    oneoff_tags: dict[str, str] = {}
    measure_method_tags: dict[str, str] = {}  # how energy was estimated (RAPL / TDP / NVML, country), from the baseline


def trial_record(t: AnyTrial) -> TrialRecord:
    return TrialRecord.model_validate(t.user_attrs)


def study_record(study: optuna.Study) -> StudyRecord:
    return StudyRecord.model_validate(study.user_attrs)


def _check(record_type: type[BaseModel], fields: dict) -> dict:
    unknown = set(fields) - set(record_type.model_fields)
    if unknown:
        raise KeyError(f"{record_type.__name__} has no field(s) {sorted(unknown)}")
    return fields


def set_study(study: optuna.Study, **fields) -> None:
    for key, value in _check(StudyRecord, fields).items():
        study.set_user_attr(key, value)


def trial_id(trial: AnyTrial) -> int:
    return trial._trial_id


def frozen(study: optuna.Study, trial: AnyTrial) -> FrozenTrial:
    """The trial as stored now (another process may have finished it)."""
    return study._storage.get_trial(trial_id(trial))


def set_trial(study: optuna.Study, trial: AnyTrial, **fields) -> None:
    """Write fields on a running trial; UpdateFinishedTrialError once it is finished."""
    for key, value in _check(TrialRecord, fields).items():
        study._storage.set_trial_user_attr(trial_id(trial), key, value)


def set_trial_quietly(study: optuna.Study, trial: AnyTrial, **fields) -> None:
    """`set_trial` for facts that stop mattering once the trial is finished (reaped meanwhile)."""
    try:
        set_trial(study, trial, **fields)
    except Exception:
        pass


def beat(study: optuna.Study, trial: AnyTrial) -> bool | None:
    """Stamp the heartbeat; False once the trial is no longer ours (another worker failed it)."""
    try:
        set_trial(study, trial, heartbeat=time.time())
    except UpdateFinishedTrialError:
        return False
    except Exception:  # a storage hiccup: the next beat tries again
        return None
    return True


def mark_failed(study: optuna.Study, trial: AnyTrial, reason: str, *, interrupted: bool = False) -> bool:
    """Record the reason and set FAIL; False when the trial had already finished (another worker won).

    A trial this process asked for is told (the sampler sees it); another process's is set in storage.
    """
    try:
        set_trial(study, trial, fail_reason=reason[:2000], **({"interrupted": True} if interrupted else {}))
        if isinstance(trial, optuna.Trial):
            return tell(study, trial, state=TrialState.FAIL)
        study._storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    return True


def mark_pruned(study: optuna.Study, trial: optuna.Trial, reason: str, **fields) -> bool:
    """Record why early stopping stopped the trial, then tell Optuna PRUNED (no objective values:
    a pruned trial never reaches the Pareto front or an export). False when another worker finished it."""
    try:
        set_trial(study, trial, stop_reason=reason[:2000], **fields)
    except UpdateFinishedTrialError:
        return False
    return tell(study, trial, state=TrialState.PRUNED)


def storage_of(study: optuna.Study):
    """The study's storage object, for a companion study (early stopping) in the same place."""
    return study._storage


def tell(study: optuna.Study, trial: optuna.Trial, values: list[float] | None = None,
         state: TrialState | None = None) -> bool:
    """Tell Optuna; False when the trial had already been finished by another worker (reaped)."""
    try:
        study.tell(trial, values, state=state)
    except UpdateFinishedTrialError:
        return False
    except ValueError:  # "Cannot tell a FAIL trial": finished between our check and the write
        if frozen(study, trial).state.is_finished():
            return False
        raise
    return True


def enqueue(study: optuna.Study, params: dict, **fields) -> None:
    """Queue a trial of fixed `params` that starts with the given record fields (attempt, retry_of)."""
    study.enqueue_trial(dict(params), user_attrs=_check(TrialRecord, fields))


def superseded(trials) -> set[int]:
    """Trials replaced by a completed adaptive-seeds top-up of the same point with more seeds."""
    return {r.supersedes for t in trials if t.state == TrialState.COMPLETE
            and (r := trial_record(t)).supersedes is not None}


def trial_point(t: FrozenTrial) -> dict:
    """The parameters a trial runs: sampled ones, or the fixed ones of a queued (WAITING) trial."""
    return dict(t.params) or dict(t.system_attrs.get("fixed_params", {}))
