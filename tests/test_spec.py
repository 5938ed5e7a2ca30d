"""Malformed sweep files fail before anything runs, naming the file, the field and what was expected."""

from pathlib import Path

import pytest
import yaml

from orchestrator.spec import SpecError, load_sweep

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "t",
    "teacher": {"model": "some/model"},
    "data": {"path": "data.csv"},
    "search_space": {"pruning_ratio": [0.0, 0.5], "distill_alpha": [0.0], "distill_temperature": [2.0], "precision": ["fp32"]},
}


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def with_(update: dict) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in update.items():
        *parents, last = dotted.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


@pytest.mark.parametrize(
    "update, field, expected",
    [
        ({"search_space.pruning_ratio": [0.2, 1.5]}, "search_space", "outside the allowed"),
        ({"search_space.precision": ["fp8"]}, "search_space", "unknown"),
        ({"search_space.distill_alpha": {"low": 0.0, "high": 1.0}}, "(top level)", "grid needs a list"),
        ({"sampler": {"type": "annealing"}}, "sampler.type", "'grid', 'random', 'tpe' or 'nsga2'"),
        ({"teacher": None}, "teacher", "Field required"),
        ({"training.epochs": -1}, "training.epochs", "greater than 0"),
        ({"training.batchsize": 8}, "training.batchsize", "Extra inputs are not permitted"),
        ({"constraints": [{"metric": "accuracy"}]}, "constraints.0", "exactly one of"),
        ({"name": "has space"}, "name", "pattern"),
        ({"objectives": []}, "objectives", "at least 1"),
        ({"data": {"path": "a.csv", "train": "b.csv"}}, "data", "exactly one of"),
        # One metric vocabulary: a typo is refused with the known names, before any compute.
        ({"objectives": [{"metric": "latncy", "direction": "minimize"}]}, "objectives.0.metric", "latency_ms_p50_bs1"),
        ({"constraints": [{"metric": "acuracy", "max_drop": 0.01}]}, "constraints.0.metric", "unknown metric 'acuracy'"),
        # Validation decides, test reports: nothing that chooses may read a test metric.
        ({"objectives": [{"metric": "test_accuracy", "direction": "maximize"}]}, "objectives.0.metric",
         "test reports, never chooses"),
        ({"constraints": [{"metric": "test_macro_f1", "min": 0.5}]}, "constraints.0.metric", "test reports, never chooses"),
        ({"export.pick": "quickest"}, "export.pick", "expected one of"),
        ({"constraints": [{"metric": "accuracy", "max_drop": -0.1}]}, "constraints.0.max_drop",
         "must be >= 0 (to ask for better than the teacher, give min"),
    ],
)
def test_field_errors_name_file_field_and_expectation(tmp_path, update, field, expected):
    path = write(tmp_path, with_(update))
    with pytest.raises(SpecError) as err:
        load_sweep(path)
    message = str(err.value)
    assert str(path) in message
    assert f"field {field}" in message
    assert expected in message


def test_a_block_size_the_models_heads_cannot_take_is_refused_before_any_compute(tmp_path, tiny_encoder):
    """block_size 7 on 8-wide heads would silently run with 1x1 blocks; the check names field and head size."""
    from orchestrator.check import check_sweep

    doc = with_({"teacher.model": str(tiny_encoder), "pruning": {"block_size": 7}, "data.path": "absent.csv"})
    spec = load_sweep(write(tmp_path, doc), check_hardware=False)
    with pytest.raises(SpecError) as err:  # raised before the (absent) data is read
        check_sweep(spec, say=print, calibrate=False)
    assert str(err.value) == (f"{spec.source}: field pruning.block_size: 7 does not divide the model's head size 8 "
                              "(hidden size 32); use one of [1, 2, 4, 8] or 'head'")


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, "name: t\nteacher: [unclosed\n")
    with pytest.raises(SpecError, match=r"sweep.yaml: line \d+, column \d+ is not valid YAML"):
        load_sweep(path)


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="expected a mapping"):
        load_sweep(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(SpecError, match="no such sweep file"):
        load_sweep(tmp_path / "nope.yaml")


def test_impossible_precision_is_refused_at_validation(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only refusal")
    path = write(tmp_path, with_({"search_space.precision": ["fp32", "fp16"]}))
    with pytest.raises(SpecError, match=r"field search_space.precision: cannot run on this machine \(cpu\): fp16: fp16 training needs a CUDA GPU"):
        load_sweep(path)


def test_grid_defaults_and_subset(tmp_path):
    spec = load_sweep(write(tmp_path, BASE))
    assert spec.n_trials == 2 and [p["pruning_ratio"] for p in spec.search_space.grid()] == [0.0, 0.5]
    assert [o.key for o in spec.objectives] == ["val_accuracy", "latency_ms_p50_bs1"]  # aliases read validation


@pytest.mark.parametrize("name", ["demo.yaml", "grid.yaml"])
def test_shipped_sweep_files_parse(name):
    spec = load_sweep(REPO / "sweeps" / name, check_hardware=False)
    assert spec.n_trials >= 6


def test_passwords_in_urls_never_reach_logged_params_or_tags():
    from orchestrator.tracking import flatten, redact

    url = "postgresql://sweep:s3cret@db:5432/sweeps"
    assert redact(url) == "postgresql://sweep:***@db:5432/sweeps"
    assert "s3cret" not in str(flatten("", {"storage": url, "tracking": {"uri": "http://u:pw@mlflow:5000"}}))
    assert redact("journal:/tmp/a.journal") == "journal:/tmp/a.journal"
