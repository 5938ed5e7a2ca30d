"""Decision-grade results: intervals, 'within noise', ties within measurement noise, the teacher baseline
of the trial's own thread count, and the sweep's one-off costs kept out of every row."""

from __future__ import annotations

import optuna
import pytest

from orchestrator import pareto
from orchestrator.baselines import baseline_tags, placement_threads
from orchestrator.child_process import Placement
from orchestrator.record import set_trial, trial_record
from trainers import metrics as M
from trainers.teacher import oneoff_costs


def test_wilson_interval_matches_the_textbook_value():
    low, high = pareto.wilson_ci95(0.9, 100)
    assert low == pytest.approx(0.8256, abs=1e-4) and high == pytest.approx(0.9448, abs=1e-4)


def test_a_student_overlapping_the_teachers_interval_is_within_noise():
    teacher = {M.VAL_ACCURACY: 0.95, M.VAL_EXAMPLES: 100}  # one training: Wilson 0.888-0.978
    close = {M.VAL_ACCURACY: 0.90, M.ci95_name(M.VAL_ACCURACY): 0.02, M.seed_name(M.VAL_ACCURACY, 1): 0.9}
    far = {M.VAL_ACCURACY: 0.80, M.ci95_name(M.VAL_ACCURACY): 0.02, M.seed_name(M.VAL_ACCURACY, 1): 0.8}
    assert pareto.within_noise(close, teacher) is True
    assert pareto.within_noise(far, teacher) is False
    assert pareto.within_noise(close, {M.VAL_ACCURACY: 0.95}) is None  # no row count: no honest interval


def _row(number: int, acc: float, ms: float, params: float, p90: float | None = None) -> pareto.Row:
    m = {M.VAL_ACCURACY: acc, M.ci95_name(M.VAL_ACCURACY): 0.01, M.seed_name(M.VAL_ACCURACY, 1): acc,
         M.LATENCY_P50_BS1: ms, M.LATENCY_P90_BS1: p90 if p90 is not None else ms, M.PARAMS_TOTAL: params}
    return pareto.Row(number, {}, m, {}, True, None)


KEYS = [M.VAL_ACCURACY, M.LATENCY_P50_BS1]


def test_ties_within_noise_keep_fewer_params_then_the_lower_trial_and_say_so():
    # 7 and 4 train the same model (T unused at alpha 0): 1.9 % apart in latency, same accuracy.
    rows = [_row(7, 0.90, 10.0, 1e6), _row(4, 0.90, 10.19, 1e6), _row(2, 0.95, 20.0, 2e6)]
    kept, notes = pareto.break_ties(rows, KEYS, rel_tol=0.02)
    assert [r.number for r in kept] == [2, 4]
    assert notes == ["trial 7 ~ trial 4: tie within noise, kept 4"]
    # fewer parameters wins over the trial number; the order the rows come in does not matter
    rows = [_row(3, 0.90, 10.0, 1e6), _row(1, 0.90, 10.1, 2e6)]
    assert [r.number for r in pareto.break_ties(rows[::-1], KEYS, 0.02)[0]] == [3]


def test_no_tie_beyond_the_noise():
    # 10 % apart in latency with a tight p90: distinct; accuracies outside each other's interval: distinct
    assert len(pareto.break_ties([_row(1, 0.9, 10.0, 1e6), _row(2, 0.9, 11.0, 1e6)], KEYS, 0.02)[0]) == 2
    assert len(pareto.break_ties([_row(1, 0.9, 10.0, 1e6), _row(2, 0.95, 10.0, 1e6)], KEYS, 0.02)[0]) == 2
    # a wide p90-p50 spread is noise too
    assert len(pareto.break_ties([_row(1, 0.9, 10.0, 1e6, p90=12.0), _row(2, 0.9, 11.0, 1e6)], KEYS, 0.02)[0]) == 1


def test_each_trial_is_compared_with_the_teacher_of_its_own_thread_count():
    by_threads = {1: {M.LATENCY_P50_BS1: 20.0, M.VAL_ACCURACY: 0.9}, 2: {M.LATENCY_P50_BS1: 12.0, M.VAL_ACCURACY: 0.9}}
    default = by_threads[2]
    one, two = Placement(cores=[0]), Placement(cores=[0, 1])
    assert pareto.baseline_for(by_threads, placement_threads(one, None), default) == (1, by_threads[1])
    assert pareto.baseline_for(by_threads, placement_threads(two, None), default) == (2, by_threads[2])
    assert placement_threads(two, 1) == 1  # measure.threads set: every trial measures on that many
    assert pareto.baseline_for(by_threads, 4, default) == (None, default)
    assert "1 thread" in baseline_tags(1, 1)["sweep.baseline"] and "no teacher" in baseline_tags(None, 4)["sweep.baseline"]

    # the table's deltas follow the thread count recorded on each trial (real Optuna storage)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for threads in (1, 2):
        trial = study.ask()
        set_trial(study, trial, metrics={M.LATENCY_P50_BS1: 10.0, M.VAL_ACCURACY: 0.9}, baseline_threads=threads)
        study.tell(trial, [0.9, 10.0])
    rows = pareto.rows(study.trials, default, by_threads)
    assert [trial_record(t).baseline_threads for t in study.trials] == [1, 2]
    assert [r.deltas[M.SPEEDUP_BS1] for r in rows] == [2.0, 1.2]


def test_one_off_costs_are_named_once_and_say_who_paid():
    meta = {"train_metrics": {"energy_kwh_train": 0.01, "emissions_kg_co2e_train": 0.004},
            "logits_metrics": {"energy_kwh_logits": 0.001, "emissions_kg_co2e_logits": 0.0004},
            "train_tags": {"emissions_cpu_source_train": "TDP estimate"}}
    metrics, tags = oneoff_costs(meta, built_now=False)
    assert metrics == {M.ONEOFF_TEACHER_FINETUNE_ENERGY: 0.01, M.ONEOFF_TEACHER_FINETUNE_EMISSIONS: 0.004,
                       M.ONEOFF_TEACHER_LOGITS_ENERGY: 0.001, M.ONEOFF_TEACHER_LOGITS_EMISSIONS: 0.0004}
    assert "cached teacher" in tags["oneoff_paid_by"] and tags["oneoff_teacher_finetune_emissions_cpu_source_train"]
    assert all(name in M.METRICS for name in metrics)
