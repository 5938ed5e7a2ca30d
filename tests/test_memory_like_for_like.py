"""Memory measured two ways never decides between runtimes: only memory_weights_mb compares torch with ONNX Runtime."""

from __future__ import annotations

import optuna
import pytest
import yaml

from orchestrator import pareto
from orchestrator.record import set_trial
from orchestrator.spec import SpecError, load_sweep
from trainers import metrics as M


def _spec(tmp_path, runtime, **extra):
    doc = {"name": "mem", "teacher": {"model": "some/model"}, "data": {"path": "absent.csv"},
           "search_space": {"pruning_ratio": [0.0], "precision": ["fp32"], "runtime": runtime}, **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_sweep(path, check_hardware=False)


@pytest.mark.parametrize("extra, field", [
    ({"objectives": [{"metric": "accuracy", "direction": "maximize"}, {"metric": "memory", "direction": "minimize"}]},
     "objectives.1.metric"),
    ({"constraints": [{"metric": "memory", "max_ratio": 0.5}]}, "constraints.0.metric"),
    ({"export": {"pick": "lightest"}}, "export.pick"),
])
def test_deciding_on_model_memory_across_runtimes_is_refused_before_any_compute(tmp_path, extra, field):
    from orchestrator.check import check_sweep

    spec = _spec(tmp_path, ["torch", "onnxruntime"], **extra)
    with pytest.raises(SpecError) as err:  # before the (absent) data or the model are read
        check_sweep(spec, say=print, calibrate=False)
    message = str(err.value)
    assert f"field {field}: memory_model_mb is measured two ways" in message and "use memory_weights_mb" in message
    from orchestrator.check import check_memory_like_for_like

    check_memory_like_for_like(_spec(tmp_path, ["torch"], **extra))  # one runtime: one method, nothing to refuse


def test_the_lightest_pick_refuses_to_compare_two_memory_methods():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for runtime, mib in (("torch", 103.2), ("onnxruntime", 141.0)):  # the same weights, measured two ways
        study.enqueue_trial({"runtime": runtime})
        trial = study.ask()
        assert trial.suggest_categorical("runtime", ["torch", "onnxruntime"]) == runtime
        set_trial(study, trial, metrics={M.VAL_ACCURACY: 0.9, M.MEMORY_MODEL: mib, M.MEMORY_WEIGHTS: 86.0})
        study.tell(trial, [0.9, 1.0])
    with pytest.raises(ValueError, match="measured two ways across runtimes"):
        pareto.pick(study.trials, "lightest", [])
    assert pareto.pick(study.trials[:1], "lightest", []).number == 0  # one runtime: picks as before
