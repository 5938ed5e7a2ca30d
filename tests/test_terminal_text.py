"""What the terminal prints is the message itself: brackets in errors and logs are text, not rich markup."""

from __future__ import annotations

from orchestrator import terminal

MESSAGES = [
    "vocabulary.trim is 'corpus' but search_space.vocabulary has no 'trimmed' value (e.g. [full, trimmed])",
    "BertModel is not a BERT-like encoder: expected base_model.encoder.layer[i] with attention",
]


def test_log_and_say_print_brackets_as_written():
    with terminal.console.capture() as captured:
        for message in MESSAGES:
            terminal.log(message)
            terminal.say(message)
    text = captured.get()
    for message in MESSAGES:
        assert text.count(message) == 2, text


def test_cli_errors_print_brackets_as_written():
    import pytest
    import typer

    from orchestrator.cli import _fail

    with terminal.console.capture() as captured, pytest.raises(typer.Exit):
        _fail(MESSAGES[0])
    assert MESSAGES[0] in captured.get()


def test_an_interrupted_sweep_shows_its_partial_front_and_leaves_the_export_alone(tmp_path):
    """Ctrl-C a quarter into a grid: the partial front is printed, the export folder is not replaced."""
    import optuna
    import yaml

    from orchestrator.context import Context
    from orchestrator.record import set_trial
    from orchestrator.spec import load_sweep
    from orchestrator.tracking import Tracker, default_tracking_uri
    from trainers import metrics as M
    from trainers.jobs import PrepareResult

    exports = tmp_path / "exports" / "int"
    (exports / "model").mkdir(parents=True)
    (exports / "config.yaml").write_text("trial: 7  # the export of an earlier, finished sweep\n")
    path = tmp_path / "int.yaml"
    path.write_text(yaml.safe_dump({
        "name": "int", "teacher": {"model": "some/model"}, "data": {"path": "data.csv"},
        "search_space": {"pruning_ratio": [0.0, 0.3, 0.5, 0.7], "precision": ["fp32"]},
        "export": {"dir": str(exports), "pick": "fastest"}}))
    spec = load_sweep(path, check_hardware=False)
    root = tmp_path / "mlruns"
    tracker = Tracker(default_tracking_uri(root), root)
    experiment = tracker.experiment_id("int")
    parent = tracker.parent_run(experiment, "int", params={}, tags={}, sweep_file=None)
    study = optuna.create_study(study_name="int", directions=["maximize", "minimize"])
    trial = study.ask()
    set_trial(study, trial, metrics={M.VAL_ACCURACY: 0.8, M.LATENCY_P50_BS1: 3.0})
    study.tell(trial, [0.8, 3.0])
    for _ in range(3):
        study.enqueue_trial({"pruning_ratio": 0.5})
    ctx = Context(spec=spec, study=study, storage_url=None, tracker=tracker, experiment_id=experiment,
                  parent_run_id=parent, root=root, prepared=PrepareResult())
    with terminal.console.capture() as captured:
        answered = terminal.finish(ctx, interrupted=True, export=True)
    text = " ".join(captured.get().split())
    assert answered  # one trial completed: its front is shown ...
    assert "Partial pareto front of int" in text and "3 trial(s) still to run" in text
    assert "not exported: the sweep was interrupted" in text and "--export-interrupted" in text
    # ... and the earlier export is untouched
    assert (exports / "config.yaml").read_text().startswith("trial: 7") and not (tmp_path / "exports" / "int.tmp").exists()
