"""Measurement: names/units, known-answer accuracy, latency ordering, memory, energy, hardware tags."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from trainers.measure import (
    MeasureConfig,
    available_cores,
    count_parameters,
    encoder_linear_params,
    evaluate,
    hardware_context,
    measure_latency,
    measure_model,
    model_disk_mb,
    track_emissions,
    track_memory,
)
from trainers.measure.emissions import _new_tracker, _serialise_measurements
from trainers.measure.memory import MIB, _RssSampler
from trainers.measure.emissions import measure_inference_energy
from trainers.measure.memory import measure_model_memory, weight_bytes
from trainers.metrics import (EMISSIONS_PER_1K, ENERGY_PER_1K, MEMORY_ACTIVATIONS, MEMORY_MODEL, MEMORY_PROCESS_PEAK,
                              MEMORY_WEIGHTS, METRICS)
from trainers.precision import for_inference

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def tiny_bert(hidden: int = 32, layers: int = 2, num_labels: int = 3, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(hidden_size=hidden, num_attention_heads=4, intermediate_size=2 * hidden,
                     num_hidden_layers=layers, vocab_size=100, num_labels=num_labels)
    return BertForSequenceClassification(cfg)


def batches_with_labels(labels: list[int], batch_size: int = 4, seq_len: int = 8) -> list[dict[str, torch.Tensor]]:
    """First token id = the label the Echo model will predict; labels are the gold ones."""
    out = []
    for i in range(0, len(labels), batch_size):
        chunk = torch.tensor(labels[i:i + batch_size])
        ids = torch.randint(0, 100, (len(chunk), seq_len))
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": chunk})
    return out


class Echo(nn.Module):
    """Predicts class `input_ids[:, 0] % k`: a model whose predictions the test knows in advance."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=nn.functional.one_hot(input_ids[:, 0] % self.k, self.k).float() * self.scale)


FAST = dict(batch_size=4, seq_len=16, warmup=1, min_repeats=3, max_repeats=6, max_seconds=5.0)


# ---------------------------------------------------------------- config


def test_config_defaults_and_validation():
    cfg = MeasureConfig()
    assert (cfg.batch_size, cfg.seq_len, cfg.warmup, cfg.min_repeats, cfg.max_repeats) == (32, 128, 3, 10, 100)
    assert cfg.country_iso_code == "USA" and cfg.device == "auto"
    assert cfg.resolved_threads() == available_cores()
    assert MeasureConfig(threads=1).resolved_threads() == 1
    with pytest.raises(ValidationError, match="extra"):
        MeasureConfig(batchsize=8)
    with pytest.raises(ValidationError, match="max_repeats"):
        MeasureConfig(min_repeats=20, max_repeats=10)
    with pytest.raises(ValidationError, match="global energy mix"):
        MeasureConfig(country_iso_code="XYZ")
    assert MeasureConfig(country_iso_code="IND").country_iso_code == "IND"


# ---------------------------------------------------------------- accuracy


def test_evaluate_bias_forced_class_gives_known_scores():
    model = tiny_bert(num_labels=3)
    with torch.no_grad():  # classifier ignores the input and always says class 2
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    model.train()
    gold = [2, 2, 0, 1, 2, 0]
    out = evaluate(model, batches_with_labels(gold), num_labels=3, device="cpu")
    assert out["accuracy"] == pytest.approx(0.5)
    # class 2: tp=3, gold=3, predicted=6 -> F1 = 2*3/(3+6); classes 0 and 1 are never predicted -> 0
    assert out["per_class_f1"] == pytest.approx({0: 0.0, 1: 0.0, 2: 6 / 9})
    assert out["macro_f1"] == pytest.approx((6 / 9) / 3)
    assert out["num_examples"] == 6
    assert model.training, "evaluate must restore the caller's train/eval mode"


def test_evaluate_matches_sklearn_and_skips_absent_classes():
    torch.manual_seed(1)
    k = 5
    batches = batches_with_labels(torch.randint(0, 4, (37,)).tolist(), batch_size=8)
    for b in batches:  # class 4 is neither gold nor predicted: it must not drag macro F1 down
        b["input_ids"][:, 0] = b["input_ids"][:, 0] % 4
    gold = torch.cat([b["labels"] for b in batches]).tolist()
    pred = torch.cat([b["input_ids"][:, 0] for b in batches]).tolist()
    out = evaluate(Echo(k), batches, num_labels=k, device="cpu")
    assert out["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert out["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert 4 not in out["per_class_f1"]
    sk = f1_score(gold, pred, average=None, labels=[0, 1, 2, 3])
    assert [out["per_class_f1"][c] for c in range(4)] == pytest.approx(list(sk))


def test_evaluate_autocast_factory_is_used():
    entered = []

    class Ctx:
        def __enter__(self):
            entered.append(1)

        def __exit__(self, *exc):
            return False

    evaluate(Echo(3), batches_with_labels([0, 1, 2, 0, 1]), num_labels=3, device="cpu", autocast=Ctx)
    assert len(entered) == 2  # one per batch


def test_evaluate_rejects_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        evaluate(Echo(3), [], num_labels=3, device="cpu")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        evaluate(Echo(3), batches_with_labels([0, 3]), num_labels=3, device="cpu")
    with pytest.raises(ValueError, match="expected num_labels=4"):
        evaluate(Echo(3), batches_with_labels([0, 1]), num_labels=4, device="cpu")


# ---------------------------------------------------------------- latency


def test_latency_stats_are_consistent_and_named():
    model = tiny_bert()
    threads_before = torch.get_num_threads()
    s = measure_latency(model, batch_size=4, seq_len=16, warmup=1, min_repeats=5, max_repeats=30, threads=1)
    assert torch.get_num_threads() == threads_before, "thread setting must be restored"
    assert s.threads == 1 and s.device == "cpu" and s.timer == "time.perf_counter_ns"
    assert 5 <= s.repeats <= 30
    assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.throughput_samples_per_s == pytest.approx(4 * 1000 / s.p50_ms)
    assert s.stable == (s.halves_rel_gap <= 0.02)
    assert s.stop_reason in ("stable", "max_repeats", "max_seconds")
    assert 0 < s.cpu_utilisation < 1.5  # one thread busy for most of the wall time (plus sampling slack)
    assert set(s.metrics()) == {"latency_ms_p50_bs4", "latency_ms_p90_bs4", "latency_ms_p99_bs4",
                                "throughput_samples_per_s_bs4"}
    assert s.tags()["latency_bs4_input_shape"].startswith("[4, 16]")


def test_latency_caps_stop_the_loop():
    model = tiny_bert()
    s = measure_latency(model, batch_size=1, seq_len=8, warmup=0, min_repeats=10, max_repeats=50, max_seconds=1e-6)
    assert (s.repeats, s.stop_reason) == (2, "max_seconds")
    s = measure_latency(model, batch_size=1, seq_len=8, warmup=0, min_repeats=3, max_repeats=3, rel_tol=1e-12)
    assert s.repeats == 3
    with pytest.raises(ValueError, match="vocab_size"):
        measure_latency(Echo(3), batch_size=1, seq_len=8)


def test_latency_orders_a_bigger_model_above_a_smaller_one():
    small, big = tiny_bert(hidden=64, layers=2), tiny_bert(hidden=128, layers=4)  # ~8x the Linear FLOPs
    kw = dict(batch_size=4, seq_len=64, warmup=2, min_repeats=7, max_repeats=15, max_seconds=3.0)
    assert measure_latency(big, **kw).p50_ms > measure_latency(small, **kw).p50_ms


# ---------------------------------------------------------------- memory


def test_track_memory_sees_a_transient_allocation():
    with track_memory("infer", "cpu") as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    assert mem.rss_peak_mb - mem.rss_baseline_mb >= 50
    assert mem.rss_peak_mb > 0 and mem.peak_mb == mem.rss_peak_mb
    assert set(mem.metrics()) == {MEMORY_PROCESS_PEAK, "memory_process_rss_peak_mb_infer",
                                  "memory_process_rss_increase_mb_infer"}
    tags = mem.tags()
    assert "process_peak_rss" in tags["memory_process_kind_infer"]
    assert tags["memory_process_unit_infer"].startswith("MiB")


def test_nested_memory_trackers_keep_the_outer_peak():
    slow = dict(sample_interval_s=1.0)  # sampler stays idle: the kernel peak counter must carry the number
    with track_memory("train", "cpu", **slow) as outer:
        block = torch.ones(96 * 2**20 // 4)  # peak happens before the inner tracker resets the counter
        del block
        with track_memory("infer", "cpu", **slow) as inner:
            small = torch.ones(8 * 2**20 // 4)
            del small
    assert outer.rss_peak_mb - outer.rss_baseline_mb >= 80
    assert inner.rss_peak_mb < outer.rss_peak_mb


def test_rss_sampler_fallback_catches_a_held_allocation():
    sampler = _RssSampler(0.001)
    before = sampler.peak
    sampler.start()
    block = torch.ones(64 * 2**20 // 4)
    time.sleep(0.05)
    del block
    peak = sampler.stop()
    assert peak - before >= 50 * MIB and sampler.samples > 5


def test_parameter_counts_and_disk_size(tmp_path):
    model = tiny_bert(hidden=32, layers=2)
    h, i, layers = 32, 64, 2
    assert encoder_linear_params(model) == layers * (4 * h * h + 2 * h * i)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    quantised = for_inference(tiny_bert(), "int8")  # the int8 model a trial measures
    assert count_parameters(quantised) == count_parameters(model)
    assert encoder_linear_params(quantised) == encoder_linear_params(model)

    model.save_pretrained(tmp_path / "m")
    weights = sum(p.stat().st_size for p in (tmp_path / "m").glob("*.safetensors"))
    assert weights > 0 and model_disk_mb(tmp_path / "m") == pytest.approx(weights / MIB)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model_disk_mb(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no weight files"):
        model_disk_mb(tmp_path / "empty")


def weights_dominated_bert() -> BertForSequenceClassification:
    """Small vocabulary, wide layers: Linear weights (what int8 quantises) dominate, as in a real encoder."""
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=256, num_attention_heads=4, intermediate_size=1024, num_hidden_layers=2,
                     vocab_size=100, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def test_weight_bytes_counts_the_stored_precision():
    fp32 = weights_dominated_bert()
    n = sum(p.numel() for p in fp32.parameters())
    buffers = sum(b.numel() * b.element_size() for b in fp32.buffers())
    assert weight_bytes(fp32) == 4 * n + buffers
    assert weight_bytes(weights_dominated_bert().to(torch.bfloat16)) == 2 * n + buffers
    int8 = for_inference(weights_dominated_bert(), "int8")
    # Quantised weights (Linear and word embeddings) at 1 byte each, plus one fp32 scale per row; everything
    # else (biases, norms, position embeddings) stays fp32.
    quantised = [p for p in int8.parameters() if p.dtype == torch.int8]
    assert quantised, "int8 inference must hold int8 weights"
    q = sum(p.numel() for p in quantised)
    scales = sum(b.numel() for name, b in int8.named_buffers() if name.endswith("weight_scale"))
    assert scales == sum(p.shape[0] for p in quantised)
    others = sum(p.numel() for p in int8.parameters() if p.dtype != torch.int8)
    other_buffers = sum(b.numel() * b.element_size() for name, b in int8.named_buffers() if not name.endswith("weight_scale"))
    assert q + others == n  # same parameters, stored smaller
    assert weight_bytes(int8) == q + 4 * scales + 4 * others + other_buffers
    assert weight_bytes(int8) < 0.3 * weight_bytes(fp32)

    class OwnFormat(nn.Module):  # a module storing weights its own way reports its own bytes
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("packed", torch.zeros(1000, dtype=torch.uint8))

        def weight_bytes(self) -> int:
            return 123

    assert weight_bytes(nn.Sequential(OwnFormat(), nn.Linear(2, 2, bias=False))) == 123 + 16


def test_model_memory_orders_int8_below_bf16_below_fp32():
    shape = dict(batch_size=2, seq_len=16)
    with torch.no_grad():
        sizes = {
            "fp32": measure_model_memory(weights_dominated_bert(), **shape),
            "bf16": measure_model_memory(weights_dominated_bert().to(torch.bfloat16), **shape),
            "int8": measure_model_memory(for_inference(weights_dominated_bert(), "int8"), **shape),
        }
    assert sizes["int8"].model_mb < sizes["bf16"].model_mb < sizes["fp32"].model_mb
    for mem in sizes.values():
        assert mem.activations_peak_bytes > 0
        assert mem.model_mb == pytest.approx(mem.weights_mb + mem.activations_peak_mb)
        assert set(mem.metrics()) == {MEMORY_MODEL, MEMORY_WEIGHTS, MEMORY_ACTIVATIONS} <= set(METRICS)
        assert "profile_memory" in mem.tags()["memory_activations_method"]
    # the activation peak scales with the batch: a 4x bigger input needs more memory
    bigger = measure_model_memory(weights_dominated_bert(), batch_size=8, seq_len=16)
    assert bigger.activations_peak_bytes > sizes["fp32"].activations_peak_bytes


def test_model_memory_ignores_unrelated_process_memory():
    model = weights_dominated_bert()
    before = measure_model_memory(model, batch_size=4, seq_len=32)
    ballast = torch.ones(200 * 2**20 // 4)  # 200 MiB held by the process, touched, not part of the model
    after = measure_model_memory(model, batch_size=4, seq_len=32)
    assert ballast.sum() > 0
    assert after.weights_bytes == before.weights_bytes
    assert abs(after.activations_peak_mb - before.activations_peak_mb) < 0.5
    assert after.model_mb < before.model_mb + 1


# ---------------------------------------------------------------- emissions


def test_emissions_positive_and_no_files_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = torch.randn(256, 256)
    with track_emissions("infer", MeasureConfig()) as em:
        for _ in range(200):
            a @ a
    assert em.error is None, em.error
    assert em.energy_kwh > 0 and em.emissions_kg_co2e > 0
    assert set(em.metrics()) == {"energy_kwh_infer", "emissions_kg_co2e_infer"}
    tags = em.tags()
    for key in ("cpu_source", "gpu_source", "ram_source", "country_iso_code", "start_overhead_s", "stop_overhead_s"):
        assert f"emissions_{key}_infer" in tags
    assert tags["emissions_country_iso_code_infer"] == "USA"
    assert os.listdir(tmp_path) == [], "CodeCarbon must not write into the working directory"


def test_emissions_csv_only_where_asked(tmp_path):
    with track_emissions("train", output_dir=tmp_path / "cc") as em:
        pass
    assert em.error is None and (tmp_path / "cc" / "emissions.csv").is_file()


def test_emissions_failure_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    ran = False
    with track_emissions("train", output_dir=blocker / "sub") as em:  # cannot create a dir under a file
        ran = True
    assert ran and em.energy_kwh is None and em.metrics() == {}
    assert em.tags()["emissions_error_train"].startswith("start failed")


def test_concurrent_codecarbon_measurements_do_not_double_count():
    """The scheduler thread and stop() measuring at once must not both charge the same interval."""
    tracker = _new_tracker(MeasureConfig(measure_power_secs=60), None)
    assert _serialise_measurements(tracker)
    tracker.start()
    time.sleep(0.3)
    barrier = threading.Barrier(2)

    def measure() -> None:
        barrier.wait()
        tracker._measure_power_and_energy()

    workers = [threading.Thread(target=measure) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    tracker.stop()
    data = tracker.final_emissions_data
    assert data.ram_energy * 3.6e6 == pytest.approx(data.ram_power * data.duration, rel=0.2)


def test_emissions_tracker_stops_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with track_emissions("train") as em:
            raise RuntimeError("boom")
    assert em.error is None and em.energy_kwh is not None


def test_inference_energy_per_1k_predictions_spans_the_sampling_interval():
    cfg = MeasureConfig(measure_power_secs=1)
    batches = batches_with_labels([0, 1, 2, 1, 0, 2, 1, 0], batch_size=4, seq_len=16)
    model = tiny_bert()
    metrics, tags = measure_inference_energy(model, batches, cfg, min_seconds=2.0)
    assert set(metrics) == {ENERGY_PER_1K, EMISSIONS_PER_1K}
    assert all(0 < v < float("inf") for v in metrics.values())
    assert float(tags["energy_per_1k_seconds"]) >= 3 * cfg.measure_power_secs  # > the sampling interval
    predictions = int(tags["energy_per_1k_predictions"])
    assert predictions % 4 == 0 and predictions >= 8 and int(tags["energy_per_1k_full_passes"]) >= 1
    total = float(tags["energy_per_1k_total_kwh"])
    assert metrics[ENERGY_PER_1K] == pytest.approx(total * 1000 / predictions, rel=1e-3)
    assert tags["energy_per_1k_country"] == "USA"
    assert tags["emissions_cpu_source_infer_per_1k"] != "none"  # RAPL or the TDP estimate, said which
    assert model.training  # the caller's mode is restored


def test_energy_of_a_run_counts_its_forwards_and_tops_up_to_the_sampling_window():
    """The latency run's forwards are the energy workload: a short run is topped up with the same forward
    until the tracked span outlasts 3 x measure_power_secs; a long one is not topped up at all."""
    from trainers.measure.emissions import measure_energy_of_run

    cfg = MeasureConfig(measure_power_secs=0.5)
    calls = {"top_up": 0}

    def top_up() -> int:
        calls["top_up"] += 1
        time.sleep(0.05)
        return 4

    phases: dict[str, float] = {}
    metrics, tags = measure_energy_of_run(lambda: 12, top_up, cfg, workload="w", min_seconds=1.0, phases=phases)
    assert calls["top_up"] >= 15 and int(tags["energy_per_1k_top_up_forwards"]) == calls["top_up"]
    assert int(tags["energy_per_1k_predictions"]) == 12 + 4 * calls["top_up"]
    assert float(tags["energy_per_1k_seconds"]) >= 1.5 and phases["energy_s"] >= 1.4  # all of it added by energy
    assert metrics[ENERGY_PER_1K] == pytest.approx(float(tags["energy_per_1k_total_kwh"]) * 1000 / int(
        tags["energy_per_1k_predictions"]), rel=1e-3)

    calls["top_up"] = 0
    phases = {}
    _, tags = measure_energy_of_run(lambda: time.sleep(1.6) or 40, top_up, cfg, workload="w", min_seconds=1.0,
                                    phases=phases)
    assert calls["top_up"] == 0 and tags["energy_per_1k_predictions"] == "40"
    assert float(tags["energy_per_1k_run_seconds"]) >= 1.6 and phases["energy_s"] < 1.6  # the run is not energy's
    with pytest.raises(ValueError, match="no predictions"):
        measure_energy_of_run(lambda: 0, lambda: 0, MeasureConfig(measure_power_secs=0.1), workload="w",
                              min_seconds=0.1)


def test_inference_energy_refuses_no_batches():
    with pytest.raises(ValueError, match="empty"):
        measure_inference_energy(tiny_bert(), [], MeasureConfig())


# ---------------------------------------------------------------- entry point


def expected_names(b: int) -> set[str]:
    names = {"test_accuracy", "test_macro_f1", "test_examples", "params_total", "params_encoder",
             "memory_process_peak_mb_infer", "memory_process_rss_peak_mb_infer",
             "memory_process_rss_increase_mb_infer",
             MEMORY_MODEL, MEMORY_WEIGHTS, MEMORY_ACTIVATIONS, ENERGY_PER_1K, EMISSIONS_PER_1K,
             "measure_load_per_core"}  # the load the latency was timed under: a speed-up compares both sides'
    for n in {1, b}:
        names |= {f"latency_ms_p50_bs{n}", f"latency_ms_p90_bs{n}", f"latency_ms_p99_bs{n}",
                  f"throughput_samples_per_s_bs{n}"}
    return names


def test_measure_model_reports_every_metric_with_units(tmp_path):
    model = tiny_bert(num_labels=3)
    model.save_pretrained(tmp_path / "m")
    cfg = MeasureConfig(device="cpu", threads=1, **FAST)
    batches = batches_with_labels([0, 1, 2, 1, 0, 2, 2], seq_len=16)
    m = measure_model(model, test_batches=batches, num_labels=3, cfg=cfg, model_dir=tmp_path / "m")
    assert set(m.metrics) == expected_names(4) | {"model_disk_mb"}
    assert all(isinstance(v, float) for v in m.metrics.values())
    assert m.metrics[MEMORY_MODEL] > m.metrics[MEMORY_WEIGHTS] > 0
    assert m.metrics["memory_process_peak_mb_infer"] > 0
    assert m.metrics[ENERGY_PER_1K] > 0
    assert 0 <= m.metrics["test_accuracy"] <= 1 and set(m.per_class_f1) <= {0, 1, 2}
    assert m.metrics["latency_ms_p50_bs4"] >= m.latency[4].min_ms
    for key in ("measure_device", "measure_threads", "measure_load_avg_1m", "unit_latency", "unit_memory",
                "unit_energy", "memory_process_kind_infer", "latency_bs1_repeats", "latency_bs4_input_shape",
                "memory_activations_method", "energy_per_1k_predictions", "emissions_cpu_source_infer_per_1k",
                "hw_cpu_model", "hw_torch_version"):
        assert key in m.tags, key
    assert m.tags["measure_threads"] == "1" and m.tags["latency_bs4_threads"] == "1"
    assert m.tags["measurement_context"].startswith("cpu|threads=1|cpu=")  # where: the key baselines are kept by
    assert m.tags["accuracy_scope"].startswith("test split, 7 examples")
    assert not model.training


def test_measure_model_batch_size_one_measures_once():
    cfg = MeasureConfig(device="cpu", **{**FAST, "batch_size": 1})
    m = measure_model(tiny_bert(), test_batches=batches_with_labels([0, 1]), num_labels=3, cfg=cfg)
    assert set(m.latency) == {1} and set(m.metrics) == expected_names(1)


# ---------------------------------------------------------------- hardware and GPU paths


def test_hardware_context_keys():
    ctx = hardware_context()
    for key in ("cpu_model", "cpu_physical_cores", "cpu_logical_cores", "cpu_cores_available", "torch_threads",
                "ram_total_gb", "os", "python_version", "torch_version", "transformers_version", "gpu_name"):
        assert ctx[key], key
    assert all(isinstance(v, str) for v in ctx.values())
    assert ctx["torch_version"] == torch.__version__
    if CUDA:
        assert ctx["cuda_version"] and ctx["gpu_driver"]


def test_cuda_asked_without_gpu_is_an_error():
    if CUDA:
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA device"):
        with track_memory("infer", "cuda"):
            pass


@needs_cuda
def test_cuda_memory_and_latency_paths():
    with track_memory("infer", "cuda") as mem:
        block = torch.ones(16 * 2**20 // 4, device="cuda")
        del block
    assert mem.cuda_peak_allocated_mb - mem.cuda_baseline_allocated_mb >= 15
    assert mem.cuda_peak_reserved_mb >= mem.cuda_peak_allocated_mb
    assert {"memory_process_cuda_peak_allocated_mb_infer",
            "memory_process_cuda_peak_reserved_mb_infer"} <= set(mem.metrics())
    s = measure_latency(tiny_bert().cuda(), batch_size=2, seq_len=16, device="cuda", min_repeats=3, max_repeats=5)
    assert s.timer.startswith("cuda events") and s.p50_ms > 0


def test_measure_model_scores_validation_and_test_splits_separately():
    """`val_*` (decides) and `test_*` (reports) each come from their own split: a model that gets every
    validation row right and every test row wrong must show exactly that."""
    model = tiny_bert(num_labels=3).eval()
    ids = torch.randint(0, 100, (8, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.argmax(-1)
    val = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": predicted}]
    test = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (predicted + 1) % 3}]
    cfg = MeasureConfig(device="cpu", threads=1, **FAST)
    m = measure_model(model, test_batches=test, val_batches=val, num_labels=3, cfg=cfg)
    assert m.metrics["val_accuracy"] == 1.0 and m.metrics["test_accuracy"] == 0.0
    assert m.metrics["val_macro_f1"] > m.metrics["test_macro_f1"] == 0.0
    assert "validation split, 8 examples" in m.tags["val_accuracy_scope"]
    assert "accuracy" not in m.metrics and "macro_f1" not in m.metrics  # no bare, split-less names
