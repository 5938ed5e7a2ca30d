"""Sweeps that cost less, end to end through `sweep launch`: shared trainings, early stopping (PRUNED in
Optuna, KILLED + tagged in MLflow, shown by `sweep status`), checks before compute, and a failed launch
that leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import sweep_cli, sweep_doc, write_sweep
from orchestrator.cost import distinct_trainings
from orchestrator.early_stopping import companion_name
from orchestrator.study import default_storage_url, open_storage


def _studies(root: Path) -> set[str]:
    if not (root / "optuna").exists():
        return set()
    return {s.study_name for s in optuna.get_all_study_summaries(open_storage(default_storage_url(root), root))}


def _runs(root: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_a_failed_launch_leaves_nothing_and_fp32_int8_twins_share_one_training(tmp_path, tiny_encoder, topics_csv):
    from orchestrator.spec import SpecError, load_sweep
    from orchestrator.sweep import open_sweep

    root = tmp_path / "mlruns"
    doc = sweep_doc(tiny_encoder, topics_csv, **{"search_space.pruning_ratio": [0.5], "search_space.distill_alpha": [0.0, 0.7],
                                                  "search_space.precision": ["fp32", "int8"]})
    bad = {**doc, "data": {**doc["data"], "text_column": "headline"}}
    path = write_sweep(tmp_path, bad)

    # `sweep launch` runs the checks first: the bad column stops it before any study, run or compute.
    failed = sweep_cli("launch", str(path), cwd=tmp_path, check=False)
    assert failed.returncode != 0 and "headline" in failed.stdout + failed.stderr
    assert "tiny" not in _studies(root)

    # Past the checks (as a worker would be), a preparation that fails removes the study and its runs again.
    logged = []
    try:
        open_sweep(load_sweep(path), storage_url=None, tracking_uri=None, root=root, launching=True, log=logged.append)
        raise AssertionError("preparation should have failed on the bad column")
    except (SpecError, RuntimeError) as exc:
        assert "headline" in str(exc)
    assert "tiny" not in _studies(root) and any("removed again" in line for line in logged)
    assert not [r for r in _runs(root, "tiny") if r.info.lifecycle_stage == "active"]

    # The corrected file, same name, launches: 2 alphas x 2 precisions = 4 trials, 2 distinct trainings.
    path = write_sweep(tmp_path, doc)
    proc = sweep_cli("launch", str(path), cwd=tmp_path)
    out = proc.stdout
    assert out.index("texts") < out.index("teacher fine-tune")  # the data report comes before the teacher trains
    study = optuna.load_study(study_name="tiny", storage=open_storage(default_storage_url(root), root))
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    points = [dict(t.params) for t in trials]
    assert distinct_trainings(points) == 2
    trainings = [p for p in (root / "cache" / "trainings").iterdir() if p.is_dir() and (p / "DONE").exists()]
    assert len(trainings) == 2

    runs = _runs(root, "tiny")
    parent = next(r for r in runs if r.data.tags["sweep.role"] == "study")
    assert parent.data.metrics["trainings_run"] == 2
    trial_runs = [r for r in runs if r.data.tags["sweep.role"] == "trial"]
    by_key: dict[str, list] = {}
    for r in trial_runs:
        by_key.setdefault(r.data.tags["sweep.training_key"], []).append(r)
    assert sorted(len(v) for v in by_key.values()) == [2, 2]
    for pair in by_key.values():
        reused = [r for r in pair if "sweep.reused_training_of" in r.data.tags]
        assert len(reused) == 1  # one trained, its twin reused it
        fp32, int8 = sorted(pair, key=lambda r: r.data.params["precision"])
        assert int8.data.params["precision"] == "int8"
        # each trial measured its own deployed model: the reused training measured in int8
        assert int8.data.tags["precision_measured"] == "int8" and fp32.data.tags["precision_measured"] == "fp32"
        assert int8.data.metrics["memory_weights_mb"] < fp32.data.metrics["memory_weights_mb"]
        assert "val_accuracy" in int8.data.metrics and "val_accuracy" in fp32.data.metrics


def test_early_stopping_stops_trials_below_the_floor_in_optuna_mlflow_and_status(tmp_path, tiny_encoder, topics_csv):
    # A threshold pruner makes the verdict independent of how the tiny model happens to learn on this machine:
    # a student cannot be perfect on the validation split after 6 steps, so both trials stop at their first
    # evaluation that is judged (which pruner decides is Optuna's, covered in test_sweep_cost). Evaluations are
    # judged once the pruning schedule is at its final fraction: from step (1 - 0.5) x 12 = 6 of the 12 planned.
    root = tmp_path / "mlruns"
    doc = sweep_doc(tiny_encoder, topics_csv, **{
        "search_space.distill_alpha": [0.0], "training.epochs": 2, "training.eval_every_steps": 3,
        "pruning.final_fraction": 0.5,
    })
    doc["pruner"] = {"type": "threshold", "lower": 0.99, "n_warmup_steps": 6}
    path = write_sweep(tmp_path, doc)
    proc = sweep_cli("launch", str(path), cwd=tmp_path, check=False)

    storage = open_storage(default_storage_url(root), root)
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2, proc.stdout[-3000:]
    twins = optuna.load_study(study_name=companion_name("tiny"), storage=storage).get_trials(deepcopy=False)
    assert {t.user_attrs["main_trial"] for t in twins if t.state == TrialState.PRUNED} == {0, 1}

    runs = {int(r.data.tags["optuna.trial_number"]): r for r in _runs(root, "tiny") if r.data.tags["sweep.role"] == "trial"}
    for t in trials:
        run = runs[t.number]
        assert run.info.status == "KILLED" and run.data.tags["sweep.pruned"] == "true"
        assert "ThresholdPruner" in run.data.tags["sweep.stop_reason"]
        # stopped at the first evaluation past the warm-up, far short of its budget; what it spent is logged
        assert run.data.metrics["train_steps"] == 6 < run.data.metrics["train_steps_planned"]
        assert run.data.metrics["train_seconds"] > 0 and "val_accuracy" not in run.data.metrics
    # nothing completed: the launch says so instead of exporting, and leaves the study as it is
    assert proc.returncode != 0 and "pruned" in proc.stdout + proc.stderr
    assert not (tmp_path / "exports" / "tiny" / "config.yaml").exists()

    status = sweep_cli("status", "tiny", cwd=tmp_path).stdout
    assert status.count("PRUNED") >= 2 and "early stopping" in status
    listing = sweep_cli("status", cwd=tmp_path).stdout
    assert "pruned" in listing and companion_name("tiny") not in listing


def test_a_pruned_grid_point_is_done_and_never_queued_again(tmp_path, tiny_encoder, topics_csv):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from orchestrator.record import mark_pruned, trial_point, trial_record
    from orchestrator.spec import load_sweep
    from orchestrator.study import open_study
    from orchestrator.trial_queue import enqueue_grid, requeue

    spec = load_sweep(write_sweep(tmp_path, sweep_doc(tiny_encoder, topics_csv)), check_hardware=False)
    study = open_study(spec, JournalStorage(JournalFileBackend(str(tmp_path / "studies.journal"))))
    assert enqueue_grid(study, spec) == 4
    trial = study.ask()
    assert mark_pruned(study, trial, "early stopping: below the median", metrics={"train_steps": 3.0})
    done = study.get_trials(deepcopy=False)[0]
    assert done.state == TrialState.PRUNED and trial_record(done).stop_reason.startswith("early stopping")
    assert enqueue_grid(study, spec) == 0  # the pruned point is judged, not lost
    assert not requeue(study, trial_point(done))
    assert study.best_trials == []  # nothing pruned reaches the front
