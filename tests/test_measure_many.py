"""Measure many, pay once: the variants of one training reuse its ONNX export, say where measuring's
time goes, and start from a warm, preloaded process that still isolates each trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TOPICS, make_tiny_classifier, make_topics_csv
from trainers.config import TrainingConfig, TrialConfig
from trainers.data import DataConfig
from trainers.pruning import PruningConfig

LABELS = sorted(TOPICS)
TRAINING = TrainingConfig(epochs=1, batch_size=16, learning_rate=2e-3, max_seq_len=16, seed=0)
MEASURE = {"batch_size": 8, "seq_len": 16, "warmup": 1, "min_repeats": 2, "max_repeats": 3, "max_seconds": 1,
           "measure_power_secs": 1}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_encoder) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-classifier"), tiny_encoder, LABELS)


def _trial_config(tmp_path: Path, teacher: Path, name: str, **update) -> TrialConfig:
    csv = make_topics_csv(tmp_path / "topics.csv")
    return TrialConfig(
        name=name, teacher_dir=str(teacher), data=DataConfig(path=csv), data_base_dir=tmp_path,
        cache_dir=tmp_path / "cache", training=TRAINING, pruning=PruningConfig(method="block_movement", block_size="head"),
        pruning_ratio=0.5, measure=MEASURE, output_dir=tmp_path / name, trainings_dir=tmp_path / "trainings", **update)


def test_onnx_runtime_variants_of_one_training_share_one_export(tmp_path, teacher_dir):
    from trainers.trial import run_trial

    ort = {"runtime": "onnxruntime", "export_onnx": True}
    first = run_trial(_trial_config(tmp_path, teacher_dir, "t0", precision="fp32", **ort), log=lambda _: None)
    second = run_trial(_trial_config(tmp_path, teacher_dir, "t1", precision="int8", **ort), log=lambda _: None)
    assert first.training_key == second.training_key and second.reused_training_of == "t0"
    assert "onnx_export_s" in first.timings and "onnx_export_s" not in second.timings  # exported once
    assert second.tags["onnx_export"].startswith("reused") and first.tags["onnx_export"].startswith("exported")
    shared = tmp_path / "trainings" / first.training_key / "onnx"
    for name in ("model.onnx", "model.int8.onnx", "onnx_parity.json"):
        a, b = tmp_path / "t0" / "model" / name, tmp_path / "t1" / "model" / name
        assert a.read_bytes() == b.read_bytes() == (shared / name).read_bytes()
        assert a.stat().st_ino == b.stat().st_ino == (shared / name).stat().st_ino  # linked, not re-made
    assert json.loads((shared / "onnx_parity.json").read_text())["rows"] > 0
    # each variant was measured on the graph of its own precision
    assert second.metrics["model_disk_mb"] < first.metrics["model_disk_mb"]


def test_a_failed_derivation_leaves_nothing_and_the_next_caller_builds_it(tmp_path):
    from trainers.training_share import DONE, derive_once

    (tmp_path / "k" ).mkdir()
    with pytest.raises(FileNotFoundError, match="no completed training"):
        derive_once(tmp_path, "k", "onnx", lambda out: None)
    (tmp_path / "k" / DONE).write_text("x")

    def crash(out: Path) -> None:
        (out / "model.onnx").write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError):
        derive_once(tmp_path, "k", "onnx", crash)
    assert not (tmp_path / "k" / "onnx").exists() and not list((tmp_path / "k").glob("onnx.tmp-*"))
    calls = []
    folder, built = derive_once(tmp_path, "k", "onnx", lambda out: calls.append((out / "model.onnx").write_bytes(b"whole")))
    again, built_again = derive_once(tmp_path, "k", "onnx", lambda out: calls.append("again"))
    assert built and not built_again and folder == again and len(calls) == 1
    assert (folder / "model.onnx").read_bytes() == b"whole"
