"""Adaptive seeds: an extra seed only where a verdict is still uncertain, within the trainings budget.

Constructed points: each margin is chosen so that a rule that topped up everything, nothing, or ignored
the budget would give another answer.
"""

from __future__ import annotations

import math

import pytest
import yaml

from orchestrator import adaptive_seeds as A
from orchestrator.spec import SpecError, load_sweep


def _p(number: int, acc: float, ms: float, *, seeds: int = 1, per_seed=(), low=None, high=None, training=None,
       rows: int = 400, feasible: bool = True, constraints=()) -> A.Point:
    return A.Point(number=number, seeds=seeds, accuracy=acc, seed_accuracies=tuple(per_seed), others=(ms,),
                   feasible=feasible, delta_low=low, delta_high=high, training=training or f"t{number}", rows=rows,
                   constraint_values=tuple(constraints))


def test_front_margin_is_the_gap_to_the_point_that_decides_membership():
    fast, slow_better, slow_worse = _p(1, 0.80, 5.0), _p(2, 0.90, 10.0), _p(3, 0.85, 12.0)
    points = [fast, slow_better, slow_worse]
    assert A.front_margin(slow_better, points) == (pytest.approx(10.0), 1, True)  # caught up by the faster one? 10 pt
    gap, rival, on = A.front_margin(slow_worse, points)
    assert (round(gap, 6), rival, on) == (5.0, 2, False)  # dominated by trial 2, 5 points behind it
    assert A.front_margin(fast, points)[1] is None  # nobody is at least as fast: on the front whatever its accuracy


def test_only_points_within_two_seed_errors_of_a_flip_get_a_seed():
    # seed SD measured on two points with 2 seeds: 1 point of accuracy
    a = _p(1, 0.800, 5.0, seeds=2, per_seed=(0.79293, 0.80707))
    b = _p(2, 0.900, 20.0, seeds=2, per_seed=(0.89293, 0.90707))
    close = _p(3, 0.805, 6.0)  # 0.5 points above trial 1, which is faster: 0.5 seed SEs from falling off the front
    far = _p(4, 0.950, 30.0)  # 5 points above trial 2: 5 seed SEs, settled
    sd, pooled = A.seed_sd([a, b, close, far])
    assert sd == pytest.approx(0.01, rel=1e-3) and pooled == 2
    plan = A.uncertainties([a, b, close, far], max_seeds=3)
    # trial 1 is the fastest (on the front whatever its accuracy); trial 2 is 9.5 points above trial 3
    assert [t.number for t in plan] == [3]
    assert plan[0].seeds == 2 and "0.5 seed standard errors" in plan[0].reason and "pooled over 2" in plan[0].reason
    assert all(t.number != 4 for t in plan)


def test_the_teacher_verdict_and_accuracy_constraints_are_verdicts_too():
    lonely = _p(1, 0.90, 5.0, per_seed=(), low=-0.3, high=4.0, rows=400)  # paired Δ's low end 0.3 pt from 0
    plan = A.uncertainties([lonely], max_seeds=2)
    assert len(plan) == 1 and "~teacher" in plan[0].reason
    assert "assumed" in plan[0].reason  # no point has 2 seeds yet: the row noise stands in for seed noise
    settled = _p(1, 0.90, 5.0, low=-8.0, high=-5.0)
    assert A.uncertainties([settled], max_seeds=2) == []
    borderline = _p(1, 0.90, 5.0, low=-8.0, high=-5.0, constraints=(0.2,))  # holds by 0.2 points
    assert "constraint holds by 0.20" in A.uncertainties([borderline], max_seeds=2)[0].reason


def test_no_seed_beyond_max_and_the_budget_counts_a_shared_training_once():
    # three variants of one training and one of another, all uncertain
    pts = [_p(1, 0.80, 5.0, low=-0.1, high=3, training="x"), _p(2, 0.80, 5.1, low=-0.1, high=3, training="x"),
           _p(3, 0.80, 5.2, low=-0.2, high=3, training="x"), _p(4, 0.80, 5.3, low=-0.3, high=3, training="y")]
    plan = A.plan_round(pts, max_seeds=2, trainings_left=1)
    assert sorted(t.number for t in plan) == [1, 2, 3]  # one new training (x, seed 2) serves all three
    assert sorted(t.number for t in A.plan_round(pts, max_seeds=2, trainings_left=2)) == [1, 2, 3, 4]
    assert A.plan_round(pts, max_seeds=2, trainings_left=0) == []
    at_max = [_p(1, 0.80, 5.0, seeds=2, per_seed=(0.8, 0.8), low=-0.1, high=3)]
    assert A.plan_round(at_max, max_seeds=2, trainings_left=math.inf) == []


def _sweep(tmp_path, seeds) -> object:
    doc = {"name": "s", "teacher": {"model": "prajjwal1/bert-tiny"}, "data": {"path": "d.csv"},
           "training": {"seeds": seeds}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_sweep_file_takes_a_count_or_a_policy_and_refuses_a_bad_one(tmp_path):
    spec = load_sweep(_sweep(tmp_path, {"min": 1, "max": 3, "max_trainings": 12}), check_hardware=False, check_model=False)
    policy = spec.training.seed_policy
    assert (policy.min, policy.max, policy.max_trainings, policy.adaptive) == (1, 3, 12, True)
    assert spec.training.for_trial().seeds == 1 and spec.training.for_trial(3).seeds == 3
    fixed = load_sweep(_sweep(tmp_path, 2), check_hardware=False, check_model=False).training
    assert (fixed.seed_policy.min, fixed.seed_policy.max, fixed.seed_policy.adaptive) == (2, 2, False)
    with pytest.raises(SpecError) as err:
        load_sweep(_sweep(tmp_path, {"min": 3, "max": 2}), check_hardware=False, check_model=False)
    assert "s.yaml" in str(err.value) and "training.seeds" in str(err.value) and "max 2 is below min 3" in str(err.value)
    with pytest.raises(SpecError, match="training.seeds"):
        load_sweep(_sweep(tmp_path, 0), check_hardware=False, check_model=False)


def test_a_sweep_tops_up_uncertain_points_within_its_budget_and_the_top_up_replaces_them(tmp_path, tiny_encoder,
                                                                                        topics_csv):
    """A real launch: 2 alphas x fp32/int8 = 4 points on 2 trainings, seeds {min 1, max 2, max_trainings 3}.
    An fp32/int8 twin pair shares a training and differs by a row or two, so the slower twin's front
    margin is a few points against a prior seed SE of about 10 on ~20 val rows: uncertain whatever the
    tiny model learns. The budget leaves one new training: the top-ups of round 1 all belong to one
    training (one trains seed 1, a twin reuses it), round 2 finds the budget spent. The replaced trials
    leave the front; the log, runs and status say so."""
    import optuna
    from mlflow.tracking import MlflowClient

    from conftest import sweep_cli, sweep_doc, write_sweep
    from orchestrator.contexts import main_front
    from orchestrator.record import superseded, trial_record
    from orchestrator.seed_rounds import trainings_spent
    from orchestrator.study import default_storage_url, open_storage
    from trainers import metrics as M

    root = tmp_path / "mlruns"
    doc = sweep_doc(tiny_encoder, topics_csv, **{"training.seeds": {"min": 1, "max": 2, "max_trainings": 3},
                                                  "search_space.pruning_ratio": [0.5],
                                                  "search_space.precision": ["fp32", "int8"]})
    # 6 trials at most, in two rounds: 2-4 minutes on 2 idle cores; the limit leaves room for a loaded machine
    proc = sweep_cli("launch", str(write_sweep(tmp_path, doc)), cwd=tmp_path, timeout=1800)
    out = proc.stdout
    study = optuna.load_study(study_name="tiny", storage=open_storage(default_storage_url(root), root))
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    tops = [t for t in done if trial_record(t).supersedes is not None]
    assert 1 <= len(tops) <= 2 and len(done) == 4 + len(tops), out[-3000:]
    assert trainings_spent(trials) == 3  # 2 trainings, then exactly the one the budget left
    assert len({trial_record(t).training_key for t in tops}) == 1  # all top-ups of the one training it paid for
    assert sum(trial_record(t).metrics[M.TRAININGS_RUN] for t in tops) == 1.0  # seed 0 came from the cache
    for t in tops:
        record = trial_record(t)
        old = next(o for o in done if o.number == record.supersedes)
        assert record.seeds == 2 and dict(t.params) == dict(old.params)
        assert M.seed_name(M.VAL_ACCURACY, 1) in record.metrics and "seed standard errors" in record.seeds_reason
        assert f"trial {old.number} gets seed 2 of at most 2" in out
    assert superseded(trials) == {trial_record(t).supersedes for t in tops}
    assert not {t.number for t in main_front(study)[1]} & superseded(trials)
    assert "round 2: no point left to top up (3 of 3 trainings spent" in out

    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').resolve()}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags["sweep.role"] == "study")
    assert parent.data.tags["sweep.adaptive_seeds"].startswith(
        f"seeds 1-2: {4 - len(tops)} point(s) with 1, {len(tops)} point(s) with 2; 3 student trainings run")
    top_runs = [r for r in runs if r.data.tags.get("sweep.supersedes_trial")]
    assert len(top_runs) == len(tops) and all(r.data.params["training.seeds"] == "2" for r in top_runs)

    status = sweep_cli("status", "tiny", cwd=tmp_path).stdout
    assert "replaced by a top-up" in status and "2 seeds, replaces trial" in status
    pareto = sweep_cli("pareto", "tiny", cwd=tmp_path).stdout
    assert "seeds" in pareto and "the point's own seeds" in pareto
