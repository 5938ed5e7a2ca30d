"""Intervals that count every source of noise, paired comparisons on shared rows, and picks that respect the noise.

Constructed cases: the numbers are chosen so that a wrong method (unpaired, seeds only, strict minimum) gives
a different answer from the right one.
"""

from __future__ import annotations

import numpy as np
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from pydantic import ValidationError

from orchestrator import pareto, stats
from orchestrator.report import constraint_rule
from orchestrator.spec import Constraint
from trainers import metrics as M
from trainers.measure import predictions as P


def _rows(correct: np.ndarray, gold: np.ndarray | None = None) -> P.SplitRows:
    """Prediction rows of S models (2 labels) that are right exactly where `correct` (S, n) says."""
    correct = np.atleast_2d(correct).astype(bool)
    n = correct.shape[1]
    gold = np.zeros(n, dtype=np.int64) if gold is None else gold
    pred = np.where(correct, gold[None, :], 1 - gold[None, :])
    logits = np.stack([pred == 0, pred == 1], axis=-1).astype(np.float32)
    return P.SplitRows(np.arange(n, dtype=np.int64), gold, logits)


def test_the_interval_is_never_zero_width_because_the_seeds_agreed():
    one = np.r_[np.ones(65), np.zeros(1)]  # 65 of 66 validation rows, two seeds in perfect agreement
    mean, low, high = stats.accuracy_interval(np.stack([one, one]))
    assert mean == pytest.approx(65 / 66)
    assert high - low > 0.05  # the rows' noise: the t-interval over the two seeds would say ±0.000
    w_low, w_high = stats.wilson(65 / 66, 66)
    assert low <= w_low and high >= w_high
    assert stats.accuracy_interval(np.ones((2, 66)))[1] < 1.0  # even at 100 %
    assert stats.accuracy_interval(np.stack([one, one])) == (mean, low, high)  # fixed bootstrap seed: deterministic


def test_seed_to_seed_variance_widens_the_interval_beyond_the_rows_noise():
    n = 400
    rows = np.zeros((2, n))
    rows[0, :240], rows[1, :360] = 1, 1  # seeds at 0.60 and 0.90 on the same rows
    agree = np.zeros((2, n))
    agree[:, :300] = 1  # the same mean, 0.75, with seeds that agree
    _, low, high = stats.accuracy_interval(rows)
    _, a_low, a_high = stats.accuracy_interval(agree)
    assert (high - low) > 2 * (a_high - a_low)
    # one seed: the bootstrap half-width is close to the binomial standard error's 1.96 multiple
    _, s_low, s_high = stats.accuracy_interval(agree[:1])
    assert (s_high - s_low) / 2 == pytest.approx(1.96 * np.sqrt(0.75 * 0.25 / n), rel=0.15)


def _pair_at_90_percent(drop_rows: int, n: int = 1000):
    """A teacher right on 900 of n rows and a student identical except `drop_rows` rows only the teacher gets."""
    teacher = np.zeros(n, bool)
    teacher[:900] = True
    student = teacher.copy()
    student[:drop_rows] = False
    return _rows(student), _rows(teacher)


def test_the_paired_interval_separates_models_whose_unpaired_intervals_overlap():
    student, teacher = _pair_at_90_percent(25)  # 0.875 vs 0.900
    s_iv, t_iv = stats.accuracy_interval(student.correct), stats.accuracy_interval(teacher.correct)
    assert s_iv[2] >= t_iv[1]  # unpaired: the intervals overlap, the old rule said "~teacher"
    # unpaired, the difference's standard error is sqrt(p1 q1/n + p2 q2/n) ~ 1.4 points: +-2.8 would contain 0
    unpaired_half = 1.96 * np.sqrt((0.875 * 0.125 + 0.9 * 0.1) / 1000)
    assert -0.025 + unpaired_half > 0
    p = stats.paired_delta(student, teacher)
    assert p.delta == pytest.approx(-0.025) and p.high < 0 and p.verdict == "worse"
    assert p.high - p.low < unpaired_half  # pairing removes the rows both get right or both get wrong
    assert (p.a_only, p.b_only, p.rows) == (0, 25, 1000)
    assert stats.mcnemar(p) < 1e-6  # exact McNemar on the 25 discordant rows agrees
    metrics = {M.VAL_ACCURACY: 0.875, **stats.decision_metrics(P.Predictions({"val": student}),
                                                                P.Predictions({"val": teacher}))}
    assert pareto.versus_teacher(metrics, {}) == "worse"
    assert metrics[M.DELTA_VAL_ACCURACY_CI_HIGH] < 0 < metrics[M.VAL_ACCURACY_CI_HIGH]
    # and a real tie stays a tie: 3 rows lost, 2 gained
    s = teacher.correct[0].copy()
    s[:3], s[950:952] = False, True
    assert stats.paired_delta(_rows(s), teacher).verdict == "~"


def test_a_paired_interval_is_never_zero_width_because_the_models_agreed_on_every_row():
    same = np.r_[np.ones(64), np.zeros(2)]  # 66 validation rows, student and teacher right on the same 64
    p = stats.paired_delta(_rows(np.stack([same, same])), _rows(same))
    assert p.delta == 0.0 and (p.a_only, p.b_only) == (0, 0)
    # the bootstrap alone is degenerate here; the floor (Agresti-Min: half a row in each cell) is 1.96 / 68
    assert p.high == pytest.approx(1.959964 / 68, rel=1e-4) and p.low == pytest.approx(-p.high)
    assert p.verdict == "~"
    # on 1,000 agreeing rows the floor is 10 times narrower: it shrinks with the evidence, it is no constant
    many = stats.paired_delta(_rows(np.ones(1000)), _rows(np.ones(1000)))
    assert many.high == pytest.approx(1.959964 / 1002, rel=1e-4)
    # where rows disagree, the floor is about the bootstrap's own width: it does not swamp the evidence
    student, teacher = _pair_at_90_percent(25)
    q = stats.paired_delta(student, teacher)
    assert stats.discordance_floor(0, 25, 1000) == pytest.approx(0.00986, abs=2e-4)
    assert q.high - q.low == pytest.approx(2 * 0.00986, rel=0.25)


def test_ties_on_the_front_read_the_paired_interval_of_accuracy():
    """Two front points 1 point apart in accuracy, their unpaired intervals overlapping, the same latency:
    unpaired they are one point; the paired interval on the shared rows separates them."""
    from orchestrator.pareto import Row

    keys = [M.VAL_ACCURACY, M.LATENCY_P50_BS1]
    common = {M.LATENCY_P50_BS1: 10.0, M.LATENCY_P90_BS1: 10.1, M.PARAMS_TOTAL: 1e6}
    a = Row(1, {}, {**common, M.VAL_ACCURACY: 0.90, "val_accuracy_ci_low": 0.88, "val_accuracy_ci_high": 0.92}, {}, True, None)
    b = Row(2, {}, {**common, M.VAL_ACCURACY: 0.89, "val_accuracy_ci_low": 0.87, "val_accuracy_ci_high": 0.91}, {}, True, None)
    assert len(pareto.break_ties([a, b], keys, 0.02)[0]) == 1  # unpaired: each within the other's interval
    apart = lambda x, y: (0.004, 0.016) if x == 2 else (-0.016, -0.004)  # noqa: E731 - 2 - 1 excludes 0
    kept, notes = pareto.break_ties([a, b], keys, 0.02, paired=apart)
    assert [r.number for r in kept] == [1, 2] and notes == []
    tie = lambda x, y: (-0.02, 0.001)  # noqa: E731
    assert len(pareto.break_ties([a, b], keys, 0.02, paired=tie)[0]) == 1


def test_pairing_follows_row_ids_and_refuses_different_data():
    student, teacher = _pair_at_90_percent(30)
    order = np.random.default_rng(1).permutation(1000)
    shuffled = P.SplitRows(student.row_id[order], student.gold[order], student.logits[:, order])
    assert stats.paired_delta(shuffled, teacher) == stats.paired_delta(student, teacher)
    other = _rows(teacher.correct[0], gold=np.ones(1000, dtype=np.int64))
    with pytest.raises(ValueError, match="different gold labels"):
        stats.paired_delta(other, teacher)


def test_a_confident_constraint_reads_the_lower_end_of_the_paired_interval():
    c = Constraint(metric="accuracy", max_drop=0.01, confidence=0.95)
    point = Constraint(metric="accuracy", max_drop=0.01)
    baseline = {M.VAL_ACCURACY: 0.90}
    close = {M.VAL_ACCURACY: 0.895, M.DELTA_VAL_ACCURACY_CI_LOW: -2.0, M.DELTA_VAL_ACCURACY_CI_HIGH: 1.0}
    assert pareto.constraint_value(point, close, baseline) <= 0  # the point estimate meets it
    assert pareto.constraint_value(c, close, baseline) == pytest.approx(0.01)  # the interval does not
    sure = {**close, M.DELTA_VAL_ACCURACY_CI_LOW: -0.8}
    assert pareto.constraint_value(c, sure, baseline) <= 0
    assert pareto.constraint_value(c, {M.VAL_ACCURACY: 0.95}, baseline) > 0  # no paired interval: not shown to hold
    assert "lower end of the paired 95%" in constraint_rule(c) and "point estimate" in constraint_rule(point)
    assert c.label == "accuracy_max_drop_c95" and point.label == "accuracy_max_drop"  # both can stand in one sweep
    with pytest.raises(ValidationError, match="confidence: 0.95 needs metric accuracy with max_drop"):
        Constraint(metric="latency", max_ratio=0.5, confidence=0.95)
    with pytest.raises(ValidationError, match="confidence: 0.9 is not measured; expected 0.95"):
        Constraint(metric="accuracy", max_drop=0.01, confidence=0.9)


def test_a_sweep_file_with_a_confidence_the_paired_interval_cannot_give_is_refused_with_file_and_field(tmp_path):
    import yaml

    from orchestrator.spec import SpecError, load_sweep

    doc = {"name": "s", "teacher": {"model": "prajjwal1/bert-tiny"}, "data": {"path": "d.csv"},
           "constraints": [{"metric": "latency", "max_ratio": 0.5, "confidence": 0.95}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError) as err:
        load_sweep(path)
    assert str(path) in str(err.value) and "constraints" in str(err.value) and "needs metric accuracy" in str(err.value)


def _trial(number: int, acc: float, ms: float, p90: float, params: float, **extra) -> object:
    metrics = {M.VAL_ACCURACY: acc, M.LATENCY_P50_BS1: ms, M.LATENCY_P90_BS1: p90, M.PARAMS_TOTAL: params,
               M.VAL_EXAMPLES: 1000.0, **extra}
    t = create_trial(state=TrialState.COMPLETE, values=[acc, ms], params={"pruning_ratio": 0.1},
                     distributions={"pruning_ratio": FloatDistribution(0, 1)}, user_attrs={"metrics": metrics})
    t.number = number
    return t


def test_fastest_no_longer_exports_the_less_accurate_twin():
    # 0.1 ms faster, inside both p90-p50 spreads (0.4 ms), and 10 points less accurate
    fast, accurate = _trial(0, 0.80, 10.0, 10.4, 1e6), _trial(1, 0.90, 10.1, 10.5, 1e6)
    old = min([fast, accurate], key=lambda t: t.user_attrs["metrics"][M.LATENCY_P50_BS1])
    assert old.number == 0
    chosen, why = pareto.pick_with_reason([fast, accurate], "fastest", rel_tol=0.02)
    assert chosen.number == 1 and "within its measured noise" in why and "trial 1" in why
    # beyond the noise the faster one wins, whatever its accuracy
    far = _trial(1, 0.90, 12.0, 12.1, 1e6)
    assert pareto.pick([_trial(0, 0.80, 10.0, 10.1, 1e6), far], "fastest", rel_tol=0.02).number == 0


def test_among_tied_equally_accurate_equal_sized_students_the_rule_still_decides():
    # the demo's case: two int8 ONNX Runtime students of one size, same val accuracy, 5.59 vs 5.25 ms within noise;
    # the lower trial number used to win, so `fastest` exported the slower one
    slower, faster = _trial(19, 0.9848, 5.59, 6.2, 1e6), _trial(23, 0.9848, 5.25, 6.0, 1e6)
    chosen, why = pareto.pick_with_reason([slower, faster], "fastest", rel_tol=0.02)
    assert chosen.number == 23 and "within its measured noise" in why and "then the better" in why
    # a more accurate tied trial still wins over the faster one
    assert pareto.pick([_trial(19, 0.99, 5.59, 6.2, 1e6), faster], "fastest", rel_tol=0.02).number == 19


def test_most_accurate_takes_fewer_params_among_those_the_paired_test_cannot_separate():
    big, small = _trial(0, 0.905, 20.0, 20.1, 2e6), _trial(1, 0.900, 10.0, 10.1, 1e6)
    tie = lambda a, b: (-0.01, 0.005)  # noqa: E731 - the paired interval of a - b contains 0
    apart = lambda a, b: (-0.02, -0.001) if a.number != b.number else (0.0, 0.0)  # noqa: E731
    assert pareto.pick([big, small], "most_accurate", paired=tie).number == 1
    assert pareto.pick([big, small], "most_accurate", paired=apart).number == 0
    # without predictions: the two pooled intervals (here 0.88-0.92 and 0.89-0.92) overlap, so tied too
    ivs = dict(val_accuracy_ci_low=0.88, val_accuracy_ci_high=0.92)
    a, b = _trial(0, 0.905, 20.0, 20.1, 2e6, **ivs), _trial(1, 0.900, 10.0, 10.1, 1e6, **ivs)
    assert pareto.pick([a, b], "most_accurate").number == 1


def test_prediction_files_round_trip_and_refuse_mismatched_seeds(tmp_path):
    a, b = _pair_at_90_percent(30)
    stacked = P.stack([{"val": a}, {"val": b}], seeds=[3, 4], kept=1)
    path = P.save(tmp_path / P.PREDICTIONS_FILE, stacked)
    back = P.load(path)
    assert back.seeds == [3, 4] and back.kept == 1 and back.splits["val"].correct.shape == (2, 1000)
    np.testing.assert_array_equal(back.splits["val"].pred, stacked.splits["val"].pred)
    with np.load(path) as f:
        assert {"val_row_id", "val_gold", "val_pred", "val_logits", "seeds", "kept"} <= set(f.files)
    with pytest.raises(ValueError, match="differ"):
        P.stack([{"val": a}, {"val": _rows(a.correct[0], gold=np.ones(1000, dtype=np.int64))}], seeds=[0, 1])
    names = stats.interval_names("val") + stats.delta_names("val")
    assert names == (M.VAL_ACCURACY_CI_LOW, M.VAL_ACCURACY_CI_HIGH, M.DELTA_VAL_ACCURACY_CI_LOW,
                     M.DELTA_VAL_ACCURACY_CI_HIGH)
