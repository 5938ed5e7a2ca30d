"""The orchestrator's side of spending less: folded grid points, distinct trainings, estimates, and
Optuna's real pruners driven through a single-objective companion study."""

from __future__ import annotations

import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from orchestrator.cost import distinct_trainings, estimate, fold_points, seconds_per_step_at
from orchestrator.early_stopping import EarlyStopping, PrunerConfig, companion_name
from orchestrator.spec import load_sweep
from conftest import REPO


def test_the_demo_grid_runs_24_points_on_6_trainings_and_its_vocabulary_twin_16_on_4():
    grid = load_sweep(REPO / "sweeps" / "demo.yaml", check_hardware=False).search_space.grid()
    assert len(grid) == 32  # 2 ratios x 2 temperatures x 2 alphas x 2 precisions x 2 runtimes
    kept, folded = fold_points(grid)
    assert (len(kept), folded) == (24, 8)  # the temperature has no effect at alpha 0 (the no-distillation control)
    # fp32/int8 and torch/onnxruntime serve the same trained student: ratio x (alpha 0, alpha 0.7 at T 2, at T 4)
    assert distinct_trainings(kept) == 6
    vocab = load_sweep(REPO / "sweeps" / "demo_vocabulary.yaml", check_hardware=False).search_space.grid()
    assert len(vocab) == 16 and fold_points(vocab) == (vocab, 0)
    assert distinct_trainings(vocab) == 4  # the vocabulary picks another teacher


def test_temperature_folds_at_alpha_zero_only_and_every_other_dimension_is_kept():
    base = {"pruning_ratio": 0.5, "precision": "fp32", "runtime": "torch", "vocabulary": "full"}
    grid = [{**base, "distill_alpha": a, "distill_temperature": t, "runtime": rt}
            for a in (0.0, 0.7) for t in (2.0, 4.0) for rt in ("torch", "onnxruntime")]
    kept, folded = fold_points(grid)
    assert folded == 2 and len(kept) == 6
    assert {(p["distill_alpha"], p["runtime"]) for p in kept if p["distill_alpha"] == 0} == {(0.0, "torch"), (0.0, "onnxruntime")}
    assert distinct_trainings(grid) == 3  # alpha 0 (any T), alpha 0.7 at T 2, at T 4; runtimes share


def test_estimate_counts_each_distinct_training_once_at_its_calibrated_speed():
    points = [{"pruning_ratio": r, "distill_temperature": 2.0, "distill_alpha": 0.0, "precision": p}
              for r in (0.0, 0.5) for p in ("fp32", "int8", "bf16")]
    step = {"fp32": {0.0: 1.0, 1.0: 0.5}, "bf16": {0.0: 2.0, 1.0: 1.0}}
    assert seconds_per_step_at(0.5, step["fp32"]) == pytest.approx(0.75)
    est = estimate(points, steps_per_trial=10, step_seconds=step, measure_s_per_trial=3.0, teacher_s=5.0, workers=1)
    assert est.trainings == 4  # (0, fp32+int8), (0, bf16), (0.5, fp32+int8), (0.5, bf16)
    assert est.training_s == pytest.approx(10 * (1.0 + 2.0 + 0.75 + 1.5))
    assert est.wall_s == pytest.approx(5.0 + est.training_s + 6 * 3.0)
    # the hybrid-filled retraining of the pruned students runs at their speed too
    refilled = estimate(points, steps_per_trial=10, step_seconds=step, measure_s_per_trial=3.0, teacher_s=5.0,
                        refill_steps_per_trial=lambda ratio: 4 if ratio > 0 else 0)
    assert refilled.training_s == pytest.approx(est.training_s + 4 * (0.75 + 1.5))


@pytest.mark.parametrize("kind", ["median", "threshold", "successive_halving", "hyperband"])
def test_a_clear_loser_is_pruned_by_each_optuna_pruner_through_its_twin(tmp_path, kind):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "studies.journal")))
    floor = {"lower": 0.5} if kind == "threshold" else {}
    es = EarlyStopping(storage, "s", PrunerConfig(type=kind, n_startup_trials=2, min_resource=1, max_resource=4,
                                                  reduction_factor=2, **floor))
    for number in range(4):  # good trials run to the end
        twin = es.twin(number)
        assert not any(twin.report(step, 0.8 + 0.01 * step) for step in (1, 2, 3, 4))
        twin.complete(0.84)
    loser = es.twin(4)
    stopped = [step for step in (1, 2, 3, 4) if loser.report(step, 0.05)]
    assert stopped, f"{kind} never pruned a trial far below the others"
    loser.pruned()
    trials = es.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4 + [TrialState.PRUNED]
    assert trials[-1].user_attrs["main_trial"] == 4 and es.study.study_name == companion_name("s")


def test_pruner_config_rejects_unknown_types():
    with pytest.raises(ValueError):
        PrunerConfig(type="asha")
    with pytest.raises(ValueError, match="lower"):
        PrunerConfig(type="threshold")  # a threshold pruner without its floor
    with pytest.raises(ValueError, match="only applies to type threshold"):
        PrunerConfig(type="median", lower=0.5)
    assert not PrunerConfig().enabled


def test_sweep_check_prints_the_report_counts_and_estimate_and_writes_nothing(tmp_path, tiny_encoder, topics_csv):
    from conftest import sweep_cli, sweep_doc, write_sweep

    doc = sweep_doc(tiny_encoder, topics_csv, **{"search_space.precision": ["fp32", "int8"],
                                                 "search_space.distill_temperature": [2.0, 4.0]})
    path = write_sweep(tmp_path, doc)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = sweep_cli("check", str(path), cwd=tmp_path)
    out = proc.stdout
    assert "texts" in out and "no problems found" in out  # the data report
    # 2 ratios x 2 T x 2 alpha x 2 precisions = 16; T folded at alpha 0: 4 points; fp32/int8 share trainings
    assert "grid: 16 point(s), 4 folded" in out and "12 distinct point(s) with 6 distinct training(s)" in out
    assert "ms/step" in out and "estimate:" in out and "check passed" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no mlruns/, no study, no runs, no cache

    bad = write_sweep(tmp_path, {**doc, "data": {**doc["data"], "text_column": "nope"}}, name="bad.yaml")
    failed = sweep_cli("check", str(bad), cwd=tmp_path, check=False)
    assert failed.returncode != 0 and "nope" in failed.stdout + failed.stderr
    assert not (tmp_path / "mlruns").exists()


def test_sweep_delete_removes_one_study_its_runs_and_folders_and_nothing_else(tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    from conftest import sweep_cli
    from orchestrator.early_stopping import EarlyStopping, PrunerConfig
    from orchestrator.study import default_storage_url, open_storage
    from orchestrator.tracking import STUDY, Tracker, default_tracking_uri

    root = tmp_path / "mlruns"
    storage = open_storage(default_storage_url(root), root)
    tracker = Tracker(default_tracking_uri(root), root)
    for name in ("bad", "keep"):
        study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"])
        study.set_user_attr("mlflow_experiment", name)
        EarlyStopping(storage, name, PrunerConfig(type="median"))
        exp = tracker.experiment_id(name)
        tracker.client.create_run(exp, tags={STUDY: name})
        (root / "trials" / name / "trial-0000").mkdir(parents=True)
    sweep_cli("delete", "bad", "--yes", cwd=tmp_path)
    left = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert left == ["keep", "keep.early-stopping"]
    client = MlflowClient(default_tracking_uri(root))
    runs = lambda name: client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert runs("bad") == [] and len(runs("keep")) == 1
    assert not (root / "trials" / "bad").exists() and (root / "trials" / "keep" / "trial-0000").exists()
