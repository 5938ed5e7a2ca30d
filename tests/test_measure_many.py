"""Measure many, pay once: the variants of one training reuse its ONNX export, say where measuring's
time goes, and start from a warm, preloaded process that still isolates each trial."""

from __future__ import annotations

import json
import os
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
        cache_dir=tmp_path / "cache", pruning=PruningConfig(method="block_movement", block_size="head"),
        pruning_ratio=0.5, measure=MEASURE, output_dir=tmp_path / name, trainings_dir=tmp_path / "trainings",
        **{"training": TRAINING, **update})


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


def test_the_trial_that_trains_exports_for_its_onnx_runtime_variants_and_they_only_link(tmp_path, teacher_dir):
    from trainers.trial import run_trial

    seeds2 = TRAINING.model_copy(update={"seeds": 2})
    quiet = lambda _: None  # noqa: E731
    # a sweep with ONNX Runtime in its space: the torch trial trains both seeds and exports each seed's graphs
    trained = run_trial(_trial_config(tmp_path, teacher_dir, "t0", precision="fp32", runtime="torch", export_onnx=False,
                                      onnx_variants=True, training=seeds2), log=quiet)
    assert trained.reused_training_of is None and trained.timings["onnx_export_s"] > 0
    assert trained.tags["onnx_export"].startswith("exported by this trial") and "ONNX Runtime variants" in trained.tags["onnx_export"]
    assert not (tmp_path / "t0" / "model" / "model.onnx").exists()  # a torch trial ships no graph of its own
    keys = [p.parent.name for p in sorted((tmp_path / "trainings").glob("*/onnx"))]
    assert len(keys) == 2  # one per seed's training
    # the ONNX Runtime variants of both seeds export nothing: they link the graphs and score each seed with them
    for name, precision in (("t1", "fp32"), ("t2", "int8")):
        variant = run_trial(_trial_config(tmp_path, teacher_dir, name, precision=precision, runtime="onnxruntime",
                                          export_onnx=True, onnx_variants=True, training=seeds2), log=quiet)
        assert variant.reused_training_of == "t0" and "onnx_export_s" not in variant.timings
        assert variant.tags["onnx_export"].startswith("reused")
        graph = "model.int8.onnx" if precision == "int8" else "model.onnx"
        assert (tmp_path / name / "model" / graph).stat().st_ino == (tmp_path / "trainings" / variant.training_key / "onnx" / graph).stat().st_ino
    # a reused torch variant of a sweep with ONNX Runtime exports nothing either (the trainer did)
    twin = run_trial(_trial_config(tmp_path, teacher_dir, "t3", precision="int8", runtime="torch", export_onnx=False,
                                   onnx_variants=True, training=seeds2), log=quiet)
    assert "onnx_export_s" not in twin.timings and "onnx_export" not in twin.tags
    # the flag is not part of the training: without it the same training is reused, not retrained
    assert twin.training_key == trained.training_key
    plain = run_trial(_trial_config(tmp_path, teacher_dir, "t4", precision="fp32", runtime="torch", export_onnx=False,
                                    training=seeds2), log=quiet)
    assert plain.reused_training_of == "t0"


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


def test_measuring_says_where_its_time_goes_and_measures_energy_on_the_latency_run():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from trainers.measure import MeasureConfig, measure_model
    from trainers.measure.accuracy import evaluate

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                     intermediate_size=64, vocab_size=100, num_labels=3)).eval()
    gen = torch.Generator().manual_seed(1)

    def split(n: int) -> list[dict]:
        ids = torch.randint(1, 100, (n, 8), generator=gen)
        labels = torch.randint(0, 3, (n,), generator=gen)
        return [{"input_ids": ids[i:i + 4], "attention_mask": torch.ones_like(ids[i:i + 4]), "labels": labels[i:i + 4]}
                for i in range(0, n, 4)]

    val, test = split(24), split(16)
    cfg = MeasureConfig(batch_size=4, seq_len=8, warmup=1, min_repeats=2, max_repeats=3, max_seconds=1,
                        measure_power_secs=1, device="cpu")
    measured = measure_model(model, test_batches=test, val_batches=val, num_labels=3, cfg=cfg)
    phases = measured.timings
    assert set(phases) == {"latency_bs4_s", "latency_bs1_s", "test_score_s", "memory_s", "val_score_s", "energy_s"}
    assert all(v >= 0 for v in phases.values()) and phases["energy_s"] > 1.0  # topped up past the sampling window
    latency = measured.latency[4]
    tags = measured.tags
    assert "latency run" in tags["energy_per_1k_workload"] and "[4, 8]" in tags["energy_per_1k_workload"]
    top_ups = int(tags["energy_per_1k_top_up_forwards"])
    assert top_ups > 0 and int(tags["energy_per_1k_predictions"]) == 4 * (latency.warmup + latency.repeats + top_ups)
    expected = evaluate(model, val, num_labels=3)
    assert measured.metrics["val_accuracy"] == expected["accuracy"] and measured.metrics["val_macro_f1"] == expected["macro_f1"]
    assert measured.metrics["val_examples"] == 24 and measured.val_per_class_f1 == expected["per_class_f1"]


@pytest.mark.parametrize("k", [384, 1536, 2100])
def test_int8_matmul_on_cpu_gives_torchs_int_mm_integers(k):
    import torch

    from trainers.families.int8 import _int8_matmul

    gen = torch.Generator().manual_seed(k)
    weight = torch.randint(-127, 128, (48, k), dtype=torch.int8, generator=gen)
    random = torch.randint(-127, 128, (40, k), dtype=torch.int8, generator=gen)
    worst = torch.full((40, k), 127, dtype=torch.int8) * torch.where(weight[:40].float() < 0, -1, 1).to(torch.int8)
    for xq in (random, worst):  # worst: every product +127^2 on the diagonal rows, the largest sums there are
        assert torch.equal(_int8_matmul(xq.float(), weight), torch._int_mm(xq, weight.t()))


def test_warm_started_trials_are_forks_and_a_crash_fails_only_its_own_trial(tmp_path, monkeypatch):
    import signal
    import threading

    from orchestrator import child_process as cp
    from trainers.jobs import MeasureResult

    monkeypatch.delenv("SWEEP_WARM_START", raising=False)
    placement = cp.Placement(cores=cp.available_cores()[:1])
    job = tmp_path / "job.json"
    job.write_text("{}")  # not a valid measure job: the job reports that in its result, exit code 1
    try:
        pids: list[int] = []
        crashed = cp.run_job("trial", job, tmp_path / "r0.json", tmp_path / "w0.log", placement, stop=threading.Event(),
                             on_start=lambda pid: (pids.append(pid), os.kill(pid, signal.SIGKILL)))
        assert crashed.returncode == -signal.SIGKILL and crashed.died and "SIGKILL" in crashed.reason("")
        server = cp._servers[(tuple(placement.cores), None)]
        assert server.alive() and pids[0] != server.proc.pid  # the trial was a process of its own

        cp.WARM_KINDS.add("measure")  # the next job on the same server runs to its end and says what was wrong
        second = cp.run_job("measure", job, tmp_path / "r1.json", tmp_path / "w1.log", placement, stop=threading.Event())
        assert second.returncode == 1 and cp._servers[(tuple(placement.cores), None)] is server
        result = MeasureResult.model_validate_json((tmp_path / "r1.json").read_text())
        assert not result.ok and "ValidationError" in result.error
        assert "Traceback" in (tmp_path / "w1.log").read_text()  # the job's output went to its own log
        assert json.loads((tmp_path / "r1.json.boot.json").read_text())["forked"]
    finally:
        cp.WARM_KINDS.discard("measure")
        cp.close_servers()
    assert not server.alive()


def test_read_only_commands_import_neither_torch_nor_mlflow():
    """`sweep status` / `sweep pareto` read the study and print; torch, transformers, MLflow and plotly stay unloaded
    until a command needs them (pareto loads MLflow after its table, to log the plots)."""
    import subprocess
    import sys

    code = ("import sys, orchestrator.cli, orchestrator.report, orchestrator.study, orchestrator.record, orchestrator.spec; "
            "print(sorted(m for m in ('torch', 'transformers', 'mlflow', 'plotly', 'onnxruntime') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
