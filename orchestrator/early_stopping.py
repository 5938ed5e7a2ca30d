"""Early stopping with Optuna's own pruners, for multi-objective studies too.

Optuna's `Trial.report()` / `should_prune()` are not supported on multi-objective studies, so each
sweep has a single-objective companion study in the same storage, `<study>.early-stopping`
(direction maximize on validation accuracy, `val_accuracy`). Every trial of the sweep gets a twin trial there; the
orchestrator reports the worker's per-evaluation validation accuracy to the twin (step = optimiser
step) and asks the pruner whether to stop. The companion study holds nothing but these curves.
"""

from __future__ import annotations

import math
from typing import Literal, Union

import optuna
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict, Field, model_validator


SUFFIX = ".early-stopping"


class PrunerConfig(BaseModel):
    """`pruner:` in a sweep file: which Optuna pruner stops losing trials early (on validation accuracy)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["none", "median", "threshold", "successive_halving", "hyperband"] = "none"
    n_startup_trials: int = Field(4, ge=0, description="median: trials that finish before any is pruned")
    n_warmup_steps: int = Field(0, ge=0, description="median/threshold: steps of a trial before it can be pruned")
    lower: float | None = Field(None, ge=0.0, le=1.0,
                                description="threshold: stop a trial whose validation accuracy is below this")
    min_resource: Union[int, Literal["auto"]] = Field(
        "auto", description="successive_halving/hyperband: steps before the first rung")
    max_resource: Union[int, Literal["auto"]] = Field("auto", description="hyperband: steps of a full training")
    reduction_factor: int = Field(3, ge=2, description="successive_halving/hyperband: keep 1/reduction_factor per rung")

    @model_validator(mode="after")
    def _threshold_has_a_floor(self) -> "PrunerConfig":
        if self.type == "threshold" and self.lower is None:
            raise ValueError("type threshold needs `lower`: the validation accuracy below which a trial is stopped "
                             "(e.g. lower: 0.6)")
        if self.type != "threshold" and self.lower is not None:
            raise ValueError(f"`lower` only applies to type threshold, not {self.type}")
        return self

    @property
    def enabled(self) -> bool:
        return self.type != "none"


def make_pruner(cfg: PrunerConfig) -> optuna.pruners.BasePruner:
    if cfg.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps)
    if cfg.type == "threshold":
        return optuna.pruners.ThresholdPruner(lower=cfg.lower, n_warmup_steps=cfg.n_warmup_steps)
    if cfg.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.min_resource,
                                                      reduction_factor=cfg.reduction_factor)
    if cfg.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1 if cfg.min_resource == "auto" else cfg.min_resource,
                                              max_resource=cfg.max_resource, reduction_factor=cfg.reduction_factor)
    return optuna.pruners.NopPruner()


def companion_name(study_name: str) -> str:
    return study_name + SUFFIX


def is_companion(study_name: str) -> bool:
    return study_name.endswith(SUFFIX)


def judged_from(total_steps: int, final_fraction: float, *, movement: bool) -> int:
    """The first optimiser step whose evaluation early stopping judges.

    Block movement masks `ratio x progress` of the weights mid-schedule, so before the schedule reaches
    its final fraction a high-ratio trial is judged more damaged than a low-ratio one at the same step.
    From step (1 - final_fraction) x total on, every trial is at its own final ratio: like is compared
    with like. One-shot pruning removes everything before training: every evaluation is judged."""
    return math.ceil((1.0 - final_fraction) * total_steps) if movement else 0


JUDGED_SEEDS = "the first seed's curve (seed training.seed); later seeds of a trial are not judged"


class EarlyStopping:
    """The companion study of one sweep (opened by every worker of the sweep)."""

    def __init__(self, storage, study_name: str, cfg: PrunerConfig, *, final_fraction: float = 0.0,
                 movement: bool = False):
        self.cfg = cfg
        self.final_fraction, self.movement = final_fraction, movement
        self.study = optuna.create_study(study_name=companion_name(study_name), storage=storage, direction="maximize",
                                         pruner=make_pruner(cfg), load_if_exists=True)

    def twin(self, main_trial_number: int) -> "Twin":
        trial = self.study.ask()
        trial.set_user_attr("main_trial", main_trial_number)
        return Twin(self.study, trial, self)

    def judged_from(self, total_steps: int) -> int:
        return judged_from(total_steps, self.final_fraction, movement=self.movement)


class Twin:
    """One trial's stand-in in the companion study: reported to while it trains, told how it ended."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, early_stopping: "EarlyStopping | None" = None):
        self.study, self.trial, self.early_stopping = study, trial, early_stopping
        self.last_step: int | None = None
        self.last_value: float | None = None
        self.finished = False

    def report(self, step: int, val_accuracy: float, total_steps: int | None = None) -> bool:
        """Report one evaluation; True when the pruner says stop. Repeated steps (a later seed's curve) and,
        given `total_steps`, steps before the pruning schedule's final fraction are ignored."""
        if self.finished or (self.last_step is not None and step <= self.last_step):
            return False
        if total_steps is not None and self.early_stopping is not None and step < self.early_stopping.judged_from(total_steps):
            return False
        self.trial.report(float(val_accuracy), step)
        self.last_step, self.last_value = step, float(val_accuracy)
        return self.trial.should_prune()

    def complete(self, val_accuracy: float | None) -> None:
        value = val_accuracy if val_accuracy is not None else self.last_value
        self._tell(TrialState.COMPLETE if value is not None else TrialState.FAIL, value)

    def reused(self, trained_by: str) -> None:
        """The trial reused another's training: no curve of its own, so it is no startup trial (FAIL, said why)."""
        self.trial.set_user_attr("not_judged", f"reused the training of {trained_by}: no curve of its own")
        self._tell(TrialState.FAIL, None)

    def pruned(self) -> None:
        self._tell(TrialState.PRUNED, None)

    def failed(self) -> None:
        self._tell(TrialState.FAIL, None)

    def _tell(self, state: TrialState, value: float | None) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            self.study.tell(self.trial, value if state == TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
