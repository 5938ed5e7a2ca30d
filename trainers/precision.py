"""Precision modes: what a trial trains in, what it is measured in, and whether the hardware can do it.

A precision that cannot run here must be refused up front, never silently run as fp32, or the
Pareto front would compare numbers that mean something else than their labels say.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, ContextManager, Literal

if TYPE_CHECKING:  # torch loads on first use: reading a sweep file (`sweep status`, `sweep check`) needs none
    import torch
    from torch import nn

Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")


def resolve_device(preference: str = "auto") -> str:
    """'auto' picks CUDA when present; an explicit 'cuda' without a GPU is an error, not a fallback."""
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} was asked for, but torch sees no CUDA device")
    return preference


def unsupported_reason(precision: str, device: str) -> str | None:
    """Why `precision` cannot run on `device` (None when it can)."""
    cuda = device.startswith("cuda")
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
    if precision == "fp16" and not cuda:
        return "fp16 training needs a CUDA GPU (autocast + gradient scaling); on CPU use bf16 or int8"
    if precision == "bf16" and cuda and not __import__("torch").cuda.is_bf16_supported():
        return f"bf16 is not supported by {__import__('torch').cuda.get_device_name()}; use fp16"
    if precision == "int8" and cuda:
        return "int8 is dynamic quantisation (int8 weights, torch._int_mm), a CPU inference path; set training.device: cpu or drop int8"
    return None


def train_precision(precision: str) -> str:
    """int8 is post-training dynamic quantisation: the student itself trains in fp32."""
    return "fp32" if precision == "int8" else precision


def autocast(precision: str, device: str) -> Callable[[], ContextManager]:
    """A factory of autocast contexts for the forward pass in `precision` (fp32/int8: no autocast)."""
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    return lambda: torch.autocast(device_type=device_type, dtype=dtype)


def grad_scaler(precision: str, device: str) -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    import torch

    enabled = precision == "fp16" and device.startswith("cuda")
    return torch.amp.GradScaler("cuda" if enabled else "cpu", enabled=enabled)


def for_inference(model: nn.Module, precision: str) -> nn.Module:
    """The model as it is measured and saved: int8 turns Linear weights into int8 with per-row scales.

    In place, so the fp32 weights are released rather than kept beside the int8 copies (the measured
    memory would charge the int8 model for both). A model of a supported family gets exactly the int8
    layout its saved folder has (encoder Linear layers + word embeddings, see trainers/families/int8.py);
    any other module has every Linear quantised. Activations are quantised per token at run time.
    """
    if precision != "int8":
        return model
    from trainers.families import UnsupportedFamily
    from trainers.deploy.modeling_pruned import quantise_int8, quantise_linears

    model = model.to("cpu").float().eval()
    try:
        return quantise_int8(model)
    except UnsupportedFamily:  # not an encoder classifier of a family with an adapter
        return quantise_linears(model)


def cpu_numerics() -> dict[str, str]:
    """Flush denormal floats to zero on CPU, as inference runtimes do.

    Denormal arithmetic runs in microcode on x86 and can slow a forward pass by orders of magnitude
    when pruned or distilled weights drift towards zero; flushing keeps latencies comparable across
    students. Returned as a tag so the setting is on record.
    """
    import torch

    flushed = torch.set_flush_denormal(True)
    return {"cpu_flush_denormal": str(bool(flushed)).lower()}
