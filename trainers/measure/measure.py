"""The single measurement entry point shared by a trial, the teacher baseline and `sweep measure MODEL`.

Quality is measured on both held-out splits: `val_*` (what every decision reads) and `test_*`
(reported beside it, never used to choose). Names come from `trainers.metrics`.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator

import torch
from torch import nn

from trainers import metrics as M
from trainers.measure.accuracy import Batch, evaluate_rows
from trainers.measure.config import MeasureConfig
from trainers.measure.context import CONTEXT_TAG, measurement_context
from trainers.measure.emissions import measure_energy_of_run
from trainers.measure.hardware import hardware_context
from trainers.measure.latency import LatencyStats, measure_latency, synthetic_inputs, torch_threads
from trainers.measure.memory import (MemoryStats, ModelMemory, count_parameters, encoder_linear_params, measure_model_memory,
                                     model_disk_mb, track_memory)
from trainers.precision import resolve_device

UNIT_TAGS = {
    "unit_accuracy": "val_/test_ accuracy and macro_f1 are fractions 0-1 on the validation/test split",
    "unit_latency": "latency_ms_*: wall-clock ms per forward pass of one batch; _bsN = batch size N",
    "unit_throughput": "throughput_samples_per_s_bsN = N / p50 latency at batch N",
    "unit_memory": "memory_*_mb: MiB (2^20 bytes)",
    "unit_energy": "energy_kwh_*: kWh; emissions_kg_co2e_*: kg CO2-equivalent (CodeCarbon offline)",
}


def _load_avg() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "unknown"


@dataclass
class Measurement:
    """`metrics` (name carries the unit) and `tags` (what/how/where) are ready to log; the rest is detail."""

    metrics: dict[str, float]
    tags: dict[str, str]
    per_class_f1: dict[int, float]  # on the test split
    val_per_class_f1: dict[int, float] = field(default_factory=dict)
    latency: dict[int, LatencyStats] = field(default_factory=dict)
    memory: MemoryStats | None = None
    model_memory: ModelMemory | None = None
    rows: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # split prefix -> (gold, logits), numpy, per row
    timings: dict[str, float] = field(default_factory=dict)  # seconds per measuring phase (latency_bsN_s, ...)


def measure_model(
    model: nn.Module,
    *,
    test_batches: Iterable[Batch],
    val_batches: Iterable[Batch] | None = None,
    num_labels: int,
    cfg: MeasureConfig,
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    model_dir: str | Path | None = None,
) -> Measurement:
    """Accuracy/F1 on the validation and the test batches (`val_*` decides, `test_*` reports), latency at batch 1 and cfg.batch_size, inference memory,
    inference energy, parameter counts (and weight size on disk when `model_dir` is given).

    Memory is the peak over the forward passes at [batch_size, seq_len] (warm-up included, so first-time
    allocations count); energy is per 1,000 predictions of the latency run's forwards at cfg.batch_size,
    topped up with the same forward until they outlast CodeCarbon's sampling interval
    (`measure_energy_of_run`). The model is moved to the
    resolved device and left in eval mode.
    """
    device = resolve_device(cfg.device)
    model.to(device).eval()
    latency_kwargs = dict(
        seq_len=cfg.seq_len, device=device, warmup=cfg.warmup, min_repeats=cfg.min_repeats,
        max_repeats=cfg.max_repeats, rel_tol=cfg.rel_tol, max_seconds=cfg.max_seconds,
        autocast=autocast, seed=cfg.seed,
    )
    metrics: dict[str, float] = {
        "params_total": float(count_parameters(model)),
        "params_encoder": float(encoder_linear_params(model)),
    }
    tags: dict[str, str] = dict(UNIT_TAGS)
    tags["params_encoder"] = "weights of Linear layers in encoder blocks (attention q/k/v/output + FFN), no biases"
    if model_dir is not None:
        metrics["model_disk_mb"] = model_disk_mb(model_dir)
        tags["model_disk_mb"] = "sum of weight files (safetensors/bin/pt/pth) in the saved model dir, MiB"

    load_before = _load_avg()
    latency: dict[int, LatencyStats] = {}
    phases: dict[str, float] = {}  # seconds per phase of measuring (Measurement.timings)
    with torch_threads(cfg.resolved_threads()) as threads:
        tags.update({f"hw_{k}": v for k, v in hardware_context().items()})  # torch_threads as measured
        memory: dict[str, MemoryStats] = {}
        shape = synthetic_inputs(cfg.batch_size, cfg.seq_len, _vocab_size(model), device, cfg.seed)

        def latency_run() -> int:  # the forwards energy is measured on: the latency run at cfg.batch_size
            with track_memory("infer", device, sample_interval_s=cfg.memory_sample_interval_s) as mem, \
                    _timed(phases, f"latency_bs{cfg.batch_size}_s"):
                latency[cfg.batch_size] = stats = measure_latency(model, batch_size=cfg.batch_size, **latency_kwargs)
            memory["infer"] = mem
            return (stats.warmup + stats.repeats) * cfg.batch_size

        def one_more() -> int:  # the same forward, for the seconds CodeCarbon's sampling still needs
            with torch.inference_mode(), autocast():
                model(**shape)
            return cfg.batch_size

        # Energy per 1,000 predictions over the latency run's forwards (warm-up + timed, [batch_size,
        # seq_len]), topped up with the same forwards until they outlast CodeCarbon's sampling interval:
        # one fixed workload for every model, and no second loop over the data.
        energy_metrics, energy_tags = measure_energy_of_run(
            latency_run, one_more, cfg, device=device, phases=phases,
            workload=f"[{cfg.batch_size}, {cfg.seq_len}] synthetic token ids, full attention mask (the latency "
                     "run's warm-up and timed forwards, then the same forward repeated)")
        mem = memory["infer"]
        if cfg.batch_size != 1:
            with _timed(phases, "latency_bs1_s"):
                latency[1] = measure_latency(model, batch_size=1, **latency_kwargs)
        test_batches = list(test_batches)
        with _timed(phases, "test_score_s"):
            scores, rows = evaluate_rows(model, test_batches, num_labels=num_labels, device=device, autocast=autocast)
        per_row = {"test": rows}
        val_batches = list(val_batches or [])
        val = None
        if val_batches:
            with _timed(phases, "val_score_s"):
                val, per_row["val"] = evaluate_rows(model, val_batches, num_labels=num_labels, device=device,
                                                    autocast=autocast)
        with _timed(phases, "memory_s"):
            model_memory = measure_model_memory(model, batch_size=cfg.batch_size, seq_len=cfg.seq_len, device=device,
                                                autocast=autocast, seed=cfg.seed)

    metrics[M.TEST_ACCURACY] = scores["accuracy"]
    metrics[M.TEST_MACRO_F1] = scores["macro_f1"]
    metrics[M.TEST_EXAMPLES] = float(scores["num_examples"])
    if val is not None:
        metrics[M.VAL_ACCURACY] = val["accuracy"]
        metrics[M.VAL_MACRO_F1] = val["macro_f1"]
        metrics[M.VAL_EXAMPLES] = float(val["num_examples"])
    for stats in latency.values():
        metrics.update(stats.metrics())
        tags.update(stats.tags())
    metrics.update(mem.metrics())
    tags.update(mem.tags())
    tags["memory_scope_infer"] = (f"forward passes (warm-up + timed) on a [{cfg.batch_size}, {cfg.seq_len}] input")
    tags.update({
        "measure_device": device,
        "measure_threads": str(threads),
        CONTEXT_TAG: measurement_context(device=device, threads=threads, cpu_model=tags.get("hw_cpu_model", "unknown"),
                                         gpu_model=tags.get("hw_gpu_name")),
        "measure_load_avg_1m": f"{load_before} -> {(load_after := _load_avg())} (other work on the machine inflates latency)",
        "accuracy_scope": f"test split, {scores['num_examples']} examples, {num_labels} labels (reported only)",
        "val_accuracy_scope": (f"validation split, {val['num_examples']} examples, {num_labels} labels (decides)"
                               if val is not None else "no validation split given: val_* not measured"),
    })
    if "unknown" not in (load_before, load_after):
        metrics[M.MEASURE_LOAD] = (float(load_before) + float(load_after)) / 2 / (os.cpu_count() or 1)
    metrics.update(model_memory.metrics())
    tags.update(model_memory.tags())
    metrics.update(energy_metrics)
    tags.update(energy_tags)
    return Measurement(metrics=metrics, tags=tags, per_class_f1=scores["per_class_f1"],
                       val_per_class_f1=val["per_class_f1"] if val is not None else {},
                       latency=latency, memory=mem, model_memory=model_memory, rows=per_row,
                       timings=phases)


def _vocab_size(model: nn.Module) -> int:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is None:
        raise ValueError("the model has no config.vocab_size (latency and energy inputs are drawn from it)")
    return int(vocab)


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
