"""Inference latency on a fixed-shape synthetic input, repeated until its median is stable."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, ContextManager, Iterator, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

StopReason = Literal["stable", "max_repeats", "max_seconds"]


class LatencyStats(BaseModel):
    """Per-forward-pass wall time of one batch (ms) over `repeats` timed runs after `warmup` untimed ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    throughput_samples_per_s: float  # batch_size / median latency
    repeats: int
    warmup: int
    batch_size: int
    seq_len: int
    device: str
    threads: int
    timer: str
    stable: bool
    stop_reason: StopReason
    halves_rel_gap: float  # |median(first half) - median(second half)| / median(all)
    # process CPU time / (wall time x threads) over the timed runs: well below 1 on CPU means other work
    # competed for the cores (the halves test cannot see steady contention, this can)
    cpu_utilisation: float

    def metrics(self) -> dict[str, float]:
        b = self.batch_size
        return {
            f"latency_ms_p50_bs{b}": self.p50_ms,
            f"latency_ms_p90_bs{b}": self.p90_ms,
            f"latency_ms_p99_bs{b}": self.p99_ms,
            f"throughput_samples_per_s_bs{b}": self.throughput_samples_per_s,
        }

    def tags(self) -> dict[str, str]:
        b = self.batch_size
        return {
            f"latency_bs{b}_input_shape": f"[{b}, {self.seq_len}] token ids, full attention mask",
            f"latency_bs{b}_repeats": str(self.repeats),
            f"latency_bs{b}_warmup": str(self.warmup),
            f"latency_bs{b}_stop_reason": self.stop_reason,
            f"latency_bs{b}_halves_rel_gap": f"{self.halves_rel_gap:.4f}",
            f"latency_bs{b}_cpu_utilisation": f"{self.cpu_utilisation:.2f}",
            f"latency_bs{b}_timer": self.timer,
            f"latency_bs{b}_threads": str(self.threads),
            f"latency_bs{b}_device": self.device,
        }


def synthetic_inputs(batch_size: int, seq_len: int, vocab_size: int, device: str,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of exactly `seq_len` (no padding): latency must not depend on the data's lengths."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def halves_gap(samples: list[float]) -> float:
    """Relative gap between the medians of the first and second half; drift or noise both widen it."""
    half = len(samples) // 2
    a, b = statistics.median(samples[:half]), statistics.median(samples[half:])
    return abs(a - b) / statistics.median(samples)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run with `threads` intra-op CPU threads, restoring the previous setting afterwards."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _timed_call(fn: Callable[[], Any], cuda: bool) -> float:
    """One call's duration in ms: CUDA events around the kernels (+ synchronize) on GPU, perf_counter on CPU."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


def measure_latency(
    model: nn.Module,
    *,
    batch_size: int,
    seq_len: int,
    device: str = "cpu",
    warmup: int = 3,
    min_repeats: int = 10,
    max_repeats: int = 100,
    rel_tol: float = 0.02,
    max_seconds: float = 60.0,
    autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    vocab_size: int | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> LatencyStats:
    """Time `model(**inputs)` on a [batch_size, seq_len] input in eval + inference mode.

    Stops once at least `min_repeats` timings exist and the two halves' medians agree within
    `rel_tol`, else at `max_repeats` or after `max_seconds` of timed runs. p99 from fewer than
    100 repeats is an interpolation toward the maximum; `repeats` says how many there were.
    """
    if min_repeats < 2 or max_repeats < min_repeats:
        raise ValueError(f"need 2 <= min_repeats <= max_repeats, got {min_repeats}, {max_repeats}")
    if vocab_size is None:
        vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab_size is None:
            raise ValueError("vocab_size not given and the model has no config.vocab_size")
    cuda = device.startswith("cuda")
    inputs = synthetic_inputs(batch_size, seq_len, vocab_size, device, seed)

    def forward() -> None:
        with autocast():
            model(**inputs)

    was_training = model.training
    model.eval()
    samples: list[float] = []
    reason: StopReason = "max_repeats"
    try:
        with torch_threads(threads) as used_threads, torch.inference_mode():
            for _ in range(warmup):
                forward()
            if cuda:
                torch.cuda.synchronize()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            deadline = wall0 + max_seconds
            while len(samples) < max_repeats:
                samples.append(_timed_call(forward, cuda))
                if len(samples) >= min_repeats and halves_gap(samples) <= rel_tol:
                    reason = "stable"
                    break
                if time.perf_counter() >= deadline and len(samples) >= 2:
                    reason = "max_seconds"
                    break
            utilisation = (time.process_time() - cpu0) / ((time.perf_counter() - wall0) * used_threads)
    finally:
        model.train(was_training)

    arr = np.asarray(samples)
    p50 = float(np.percentile(arr, 50))
    gap = halves_gap(samples)
    return LatencyStats(
        p50_ms=p50,
        p90_ms=float(np.percentile(arr, 90)),
        p99_ms=float(np.percentile(arr, 99)),
        mean_ms=float(arr.mean()),
        min_ms=float(arr.min()),
        max_ms=float(arr.max()),
        throughput_samples_per_s=batch_size * 1000.0 / p50,
        repeats=len(samples),
        warmup=warmup,
        batch_size=batch_size,
        seq_len=seq_len,
        device=device,
        threads=used_threads,
        timer="cuda events + synchronize" if cuda else "time.perf_counter_ns",
        stable=gap <= rel_tol,
        stop_reason=reason,
        halves_rel_gap=gap,
        cpu_utilisation=utilisation,
    )
