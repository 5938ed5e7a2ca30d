"""Validation decides, test reports: the front, constraints and every pick read val_* metrics."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from orchestrator import pareto
from orchestrator.spec import Constraint, Objective


def _trial(number: int, val: float, test: float, latency: float) -> optuna.trial.FrozenTrial:
    t = create_trial(state=TrialState.COMPLETE, values=[val, latency],
                     params={"pruning_ratio": 0.1 * number}, distributions={"pruning_ratio": FloatDistribution(0, 1)},
                     user_attrs={"metrics": {"val_accuracy": val, "test_accuracy": test, "latency_ms_p50_bs1": latency},
                                 "mlflow_run_id": f"run-{number}"})
    t.number = number
    return t


# Trial 0 is better on validation, trial 1 on test: whatever chooses must follow validation.
TRIALS = [_trial(0, val=0.90, test=0.70, latency=5.0), _trial(1, val=0.80, test=0.95, latency=5.0)]


def test_most_accurate_pick_follows_validation_not_test():
    objectives = [Objective(metric="accuracy", direction="maximize"), Objective(metric="latency", direction="minimize")]
    assert pareto.pick(TRIALS, "most_accurate", objectives).number == 0


def test_the_front_is_computed_from_validation_values():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for t in TRIALS:
        study.add_trial(t)
    # Same latency: only the better *validation* accuracy is non-dominated.
    assert [t.number for t in study.best_trials] == [0]


def test_accuracy_constraint_compares_with_the_teachers_validation_score():
    baseline = {"val_accuracy": 0.92, "test_accuracy": 0.60}
    c = Constraint(metric="accuracy", max_drop=0.01)
    assert c.key == "val_accuracy"
    value = pareto.constraint_value(c, TRIALS[0].user_attrs["metrics"], baseline)
    assert value == pytest.approx((0.92 - 0.90) - 0.01)  # against val 0.92, not test 0.60 (which it would meet)


def test_deltas_are_labelled_by_split():
    d = pareto.deltas(TRIALS[1].user_attrs["metrics"], {"val_accuracy": 0.9, "test_accuracy": 0.9, "latency_ms_p50_bs1": 10.0})
    assert d["delta_val_accuracy_points"] == pytest.approx(-10.0)
    assert d["delta_test_accuracy_points"] == pytest.approx(5.0)
    assert d["speedup_p50_bs1"] == pytest.approx(2.0)
