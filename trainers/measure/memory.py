"""Memory of the deployed model (weight bytes + activation peak), process peak RSS of a phase, parameter
counts and size on disk."""

from __future__ import annotations

import contextlib
import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import psutil
import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from trainers.metrics import MEMORY_ACTIVATIONS, MEMORY_MODEL, MEMORY_WEIGHTS

MIB = float(2**20)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")

# Peak counters (VmHWM, CUDA max_memory_allocated) are per process/device; a nested tracker resets them,
# so the live ones hand their peak-so-far to enclosing trackers first.
_active: list["MemoryStats"] = []
_lock = threading.Lock()


def _read_hwm_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    """Linux >= 4.0 resets the kernel's peak-RSS counter when '5' is written to clear_refs."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    hwm, rss = _read_hwm_bytes(), psutil.Process().memory_info().rss
    return hwm is not None and hwm <= rss + 16 * 2**20  # reset really happened (HWM back near RSS)


class _RssSampler(threading.Thread):
    """Samples this process's RSS every `interval` s: the fallback where the kernel peak cannot be reset."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.samples = 1
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.samples += 1

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return self.peak


@dataclass
class MemoryStats:
    """Filled in when the `track_memory` block exits. All sizes in MiB (2**20 bytes).

    This is the whole measuring process (interpreter, torch, data), named `memory_process_*`; the memory
    of the model itself is `measure_model_memory`.
    """

    phase: str
    device: str
    rss_baseline_mb: float = float("nan")
    rss_peak_mb: float = float("nan")
    rss_method: str = ""
    cuda_baseline_allocated_mb: float | None = None
    cuda_peak_allocated_mb: float | None = None
    cuda_peak_reserved_mb: float | None = None
    _carried_hwm: int = field(default=0, repr=False)
    _carried_cuda: tuple[int, int] = field(default=(0, 0), repr=False)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def rss_increase_mb(self) -> float:
        return self.rss_peak_mb - self.rss_baseline_mb

    @property
    def peak_mb(self) -> float:
        """The headline number: CUDA peak allocated on GPU, peak process RSS on CPU."""
        return self.cuda_peak_allocated_mb if self.cuda else self.rss_peak_mb  # type: ignore[return-value]

    def metrics(self) -> dict[str, float]:
        p = self.phase
        out = {
            f"memory_process_peak_mb_{p}": self.peak_mb,
            f"memory_process_rss_peak_mb_{p}": self.rss_peak_mb,
            f"memory_process_rss_increase_mb_{p}": self.rss_increase_mb,
        }
        if self.cuda:
            out[f"memory_process_cuda_peak_allocated_mb_{p}"] = self.cuda_peak_allocated_mb  # type: ignore[assignment]
            out[f"memory_process_cuda_peak_reserved_mb_{p}"] = self.cuda_peak_reserved_mb  # type: ignore[assignment]
        return out

    def tags(self) -> dict[str, str]:
        p = self.phase
        kind = ("cuda_peak_allocated: torch.cuda.max_memory_allocated after reset_peak_memory_stats (tensors only)"
                if self.cuda else "process_peak_rss: resident memory of the whole measuring process")
        tags = {
            f"memory_process_kind_{p}": kind,
            f"memory_process_unit_{p}": "MiB (2^20 bytes)",
            f"memory_process_rss_method_{p}": self.rss_method,
            f"memory_process_rss_increase_{p}": "peak RSS minus RSS just before the phase; allocator reuse of "
                                                "memory freed earlier can make it smaller than the working set",
        }
        if self.cuda:
            tags[f"memory_process_cuda_reserved_{p}"] = "peak memory held by the CUDA caching allocator (>= allocated)"
        return tags


def _hand_peaks_to_enclosing() -> None:
    hwm = _read_hwm_bytes() or 0
    for outer in _active:
        outer._carried_hwm = max(outer._carried_hwm, hwm)
        if outer.cuda and torch.cuda.is_available():
            alloc, res = outer._carried_cuda
            outer._carried_cuda = (max(alloc, torch.cuda.max_memory_allocated(outer.device)),
                                   max(res, torch.cuda.max_memory_reserved(outer.device)))


@contextlib.contextmanager
def track_memory(phase: str, device: str = "cpu", *, sample_interval_s: float = 0.002) -> Iterator[MemoryStats]:
    """Measure the peak memory of the enclosed block (inference or training), e.g.

        with track_memory("train", device) as mem: ...
        run.log_metrics(mem.metrics()); run.set_tags(mem.tags())

    CPU: the kernel's peak RSS (VmHWM, reset at entry) where Linux allows it, plus a psutil sampling
    thread as a floor and fallback. CUDA: reset_peak_memory_stats at entry, max allocated/reserved at exit.
    """
    stats = MemoryStats(phase=phase, device=device)
    cuda = stats.cuda
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"track_memory: device {device!r} asked for, but torch sees no CUDA device")
    with _lock:
        _hand_peaks_to_enclosing()
        kernel_peak = _reset_hwm()
        if cuda:
            torch.cuda.synchronize(device)
            stats.cuda_baseline_allocated_mb = torch.cuda.memory_allocated(device) / MIB
            torch.cuda.reset_peak_memory_stats(device)
        _active.append(stats)
    baseline = psutil.Process().memory_info().rss
    sampler = _RssSampler(sample_interval_s)
    sampler.start()
    try:
        yield stats
    finally:
        if cuda:
            torch.cuda.synchronize(device)
        sampled_peak = sampler.stop()
        with _lock:
            _active.remove(stats)
            hwm = max(_read_hwm_bytes() or 0, stats._carried_hwm) if kernel_peak else 0
            stats.rss_baseline_mb = baseline / MIB
            stats.rss_peak_mb = max(sampled_peak, hwm) / MIB
            stats.rss_method = (
                "kernel VmHWM reset via /proc/self/clear_refs (exact peak)" if kernel_peak
                else f"psutil RSS sampled every {sample_interval_s * 1000:g} ms ({sampler.samples} samples; "
                     "a lower bound on the true peak)"
            )
            if cuda:
                alloc, res = stats._carried_cuda
                stats.cuda_peak_allocated_mb = max(alloc, torch.cuda.max_memory_allocated(device)) / MIB
                stats.cuda_peak_reserved_mb = max(res, torch.cuda.max_memory_reserved(device)) / MIB


def _linear_weight(module: nn.Module) -> torch.Tensor | None:
    """The weight of a float or dynamically quantised Linear (whose packed weight is not a Parameter)."""
    if isinstance(module, nn.Linear):
        return module.weight
    weight = getattr(module, "weight", None)
    if callable(weight) and hasattr(module, "_packed_params"):
        return weight()
    return None


def count_parameters(model: nn.Module) -> int:
    """All parameters, counting int8 dynamically quantised Linear weights/biases that parameters() misses."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            total += module.weight().numel()
            bias = module.bias() if callable(getattr(module, "bias", None)) else None
            total += bias.numel() if bias is not None else 0
    return total


def encoder_linear_params(model: nn.Module) -> int:
    """Weights (no biases) of the Linear layers inside encoder blocks: attention q/k/v/output and the FFN.

    This is what pruning removes; embeddings, pooler and classifier are left out so that ratios
    between models reflect pruning, not vocabulary size.
    """
    total = 0
    for name, module in model.named_modules():
        if ".layer." in f".{name}" and "encoder" in name:
            weight = _linear_weight(module)
            if weight is not None:
                total += weight.numel()
    return total


def model_disk_mb(model_dir: str | Path) -> float:
    """Sum of the weight files (safetensors/bin/pt/pth) under a saved model directory, in MiB."""
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"model directory {root} does not exist")
    files = [p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    if not files:
        raise ValueError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {root}")
    return sum(p.stat().st_size for p in files) / MIB


# ------------------------------------------------------------------ memory of the deployed model


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds as stored: int8 1 per element, bf16 2, fp32 4, plus quantisation scales/zero points.

    Wrapper subclasses (torchao's quantised tensors and the like) report their logical dtype, so their
    inner tensors (`__tensor_flatten__`) are counted instead.
    """
    if is_traceable_wrapper_subclass(t):
        inner, _ = t.__tensor_flatten__()  # type: ignore[attr-defined]
        return sum(tensor_bytes(getattr(t, name)) for name in inner)
    n = t.numel() * t.element_size()
    if t.is_quantized:
        if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            n += 16  # one float64 scale, one int64 zero point
        else:
            n += tensor_bytes(t.q_per_channel_scales()) + tensor_bytes(t.q_per_channel_zero_points())
    return n


def _packed_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Weight and bias behind torch.ao's packed params (dynamic/static quantised Linear), not Parameters.

    Only the module holding the packed object itself is unpacked (LinearPackedParams); the quantised
    Linear above it exposes the same `_weight_bias` through it and would count the weights twice.
    """
    unpack: Callable[[], Any] | None = getattr(module, "_weight_bias", None)
    if not callable(unpack) or isinstance(getattr(module, "_packed_params", None), nn.Module):
        return []
    return [t for t in unpack() if isinstance(t, torch.Tensor)]


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter, buffer and packed weight of `model` at the precision it is stored in.

    A module that stores its weights in its own format can define `weight_bytes() -> int` (covering
    itself and its children); it is then trusted and not looked inside. Shared tensors count once.
    """
    seen: set[int] = set()

    def visit(module: nn.Module) -> int:
        own = getattr(module, "weight_bytes", None)
        if callable(own) and module is not model:
            return int(own())
        total = 0
        for t in itertools.chain(module.parameters(recurse=False), module.buffers(recurse=False)):
            if t.device.type == "meta":  # a description of weights held elsewhere (an ONNX graph): fresh each call
                total += tensor_bytes(t)
                continue
            key = id(t) if is_traceable_wrapper_subclass(t) or t.data_ptr() == 0 else t.data_ptr()
            if key not in seen:  # tied weights (one storage, two modules) count once
                seen.add(key)
                total += tensor_bytes(t)
        # unpacked copies are fresh tensors each call (their addresses get reused): never deduplicated
        total += sum(tensor_bytes(t) for t in _packed_tensors(module))
        return total + sum(visit(child) for child in module.children())

    return visit(model)


@dataclass(frozen=True)
class ModelMemory:
    """The deployed model's memory: weights at their stored precision + peak activation/workspace of one batch."""

    weights_bytes: int
    activations_peak_bytes: int
    method: str
    batch_size: int
    seq_len: int
    device: str
    repeats: int

    @property
    def weights_mb(self) -> float:
        return self.weights_bytes / MIB

    @property
    def activations_peak_mb(self) -> float:
        return self.activations_peak_bytes / MIB

    @property
    def model_mb(self) -> float:
        return self.weights_mb + self.activations_peak_mb

    def metrics(self) -> dict[str, float]:
        return {MEMORY_WEIGHTS: self.weights_mb, MEMORY_ACTIVATIONS: self.activations_peak_mb,
                MEMORY_MODEL: self.model_mb}

    def tags(self) -> dict[str, str]:
        return {
            "memory_model_unit": "MiB (2^20 bytes)",
            "memory_model_definition": f"{MEMORY_MODEL} = {MEMORY_WEIGHTS} + {MEMORY_ACTIVATIONS}",
            "memory_weights_method": "sum of numel x element size over parameters, buffers and packed quantised "
                                     "weights (+ scales/zero points), at the stored dtype; shared tensors once",
            "memory_activations_method": self.method,
            "memory_activations_input": f"[{self.batch_size}, {self.seq_len}] token ids, full attention mask",
            "memory_activations_repeats": f"{self.repeats} forward passes after 1 warm-up (peak over them)",
            "memory_activations_device": self.device,
        }


CPU_ACTIVATION_METHOD = ("torch.profiler(profile_memory=True): running sum of the CPU allocator's allocation/"
                         "free events during the forward passes, peak above the start (tensors only: "
                         "independent of the process's other memory and of RSS/allocator reuse)")
CUDA_ACTIVATION_METHOD = "torch.cuda.max_memory_allocated minus memory_allocated just before the forward passes"


def _cpu_allocation_peak(run: Callable[[], None]) -> int:
    """Peak of live bytes allocated through torch's CPU allocator while `run` executes, above its start."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    sizes: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            sizes.append((node.start_time_ns, int(node.extra_fields.alloc_size)))  # < 0 for a free
        stack.extend(node.children)
    if not sizes:
        raise RuntimeError("the profiler recorded no CPU allocation events (profile_memory unsupported here?)")
    live = peak = 0
    for _, size in sorted(sizes):
        live += size
        peak = max(peak, live)
    return peak


def measure_model_memory(model: nn.Module, *, batch_size: int, seq_len: int, device: str = "cpu",
                         autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
                         vocab_size: int | None = None, repeats: int = 2, seed: int = 0) -> ModelMemory:
    """Weight bytes at the deployed precision and peak activation/workspace bytes of [batch_size, seq_len].

    CPU: torch.profiler's allocator events (see CPU_ACTIVATION_METHOD): repeatable to the byte for the same
    model and input, and blind to unrelated memory in the process, unlike RSS. Allocations torch's
    allocator does not see (e.g. oneDNN/fbgemm internal scratch) are not counted. CUDA: the caching
    allocator's peak above the memory allocated before the passes (the weights).
    """
    from trainers.measure.latency import synthetic_inputs

    if vocab_size is None:
        vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab_size is None:
            raise ValueError("vocab_size not given and the model has no config.vocab_size")
    inputs = synthetic_inputs(batch_size, seq_len, vocab_size, device, seed)
    cuda = device.startswith("cuda")

    def forwards(n: int) -> None:
        for _ in range(n):
            with autocast():
                model(**inputs)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            forwards(1)  # warm-up: lazy one-off initialisation is not the model's per-batch memory
            if cuda:
                torch.cuda.synchronize(device)
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                forwards(repeats)
                torch.cuda.synchronize(device)
                peak, method = torch.cuda.max_memory_allocated(device) - before, CUDA_ACTIVATION_METHOD
            elif getattr(model, "allocates_outside_torch", False):  # e.g. an ONNX Runtime session
                forwards(repeats)
                peak, method = 0, "not seen by torch's allocator (the runtime allocates its own memory): measured by the caller"
            else:
                peak, method = _cpu_allocation_peak(lambda: forwards(repeats)), CPU_ACTIVATION_METHOD
    finally:
        model.train(was_training)
    return ModelMemory(weights_bytes=weight_bytes(model), activations_peak_bytes=max(0, int(peak)), method=method,
                       batch_size=batch_size, seq_len=seq_len, device=device, repeats=repeats)
