"""Load a saved model folder as it is deployed: (precision, runtime) -> a callable classifier.

The measuring code calls `load_for_inference` for every trial, so latency, memory, accuracy and
energy of a torch model and of an ONNX Runtime session come from the same harness.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # torch loads only when a model does: `sweep check`/`status` read RUNTIMES without it
    from torch import nn

Runtime = Literal["torch", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime")
ORT_PRECISIONS: tuple[str, ...] = ("fp32", "int8")


def runtime_unsupported_reason(runtime: str, precision: str, device: str = "cpu") -> str | None:
    """Why (runtime, precision, device) cannot run (None when it can)."""
    if runtime not in RUNTIMES:
        return f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}"
    if runtime == "onnxruntime":
        if precision not in ORT_PRECISIONS:
            return (f"onnxruntime runs fp32 or int8 (its dynamic quantisation) here, not {precision}; "
                    "drop that combination or use runtime torch")
        if device.startswith("cuda"):
            return "onnxruntime is measured on its CPU execution provider; set measure.device: cpu"
    return None


def onnx_path(model_dir: str | Path, precision: str) -> Path:
    """model.onnx (fp32) or model.int8.onnx, exported/quantised into the folder on first use."""
    from trainers.deploy.onnx_export import ONNX_FILE, ONNX_INT8_FILE, export_onnx, quantise_onnx_int8

    model_dir = Path(model_dir)
    fp32 = model_dir / ONNX_FILE
    if not fp32.exists():
        from trainers.pruning.io import load_pruned

        model, _ = load_pruned(model_dir)
        export_onnx(model, fp32)
    if precision == "fp32":
        return fp32
    int8 = model_dir / ONNX_INT8_FILE
    if not int8.exists():
        quantise_onnx_int8(fp32, int8)
    return int8


def load_for_inference(model_dir: str | Path, precision: str, runtime: str = "torch", *,
                       threads: int | None = None) -> nn.Module:
    """The classifier as measured and deployed.

    torch: the folder loaded by the project's loader, int8 quantised if it was saved in float.
    onnxruntime: an `OrtClassifier` on model.onnx (fp32) or model.int8.onnx, with `threads`
    intra-op threads (pass the same number torch measures with).
    """
    if reason := runtime_unsupported_reason(runtime, precision):
        raise ValueError(f"runtime {runtime} with precision {precision}: {reason}")
    from trainers.precision import for_inference
    from trainers.pruning.io import load_pruned

    if runtime == "torch":
        model, _ = load_pruned(model_dir)
        return for_inference(model, precision)
    from transformers import PretrainedConfig

    from trainers.deploy.session import OrtClassifier

    config = PretrainedConfig.from_dict(json.loads((Path(model_dir) / "config.json").read_text()))
    return OrtClassifier(onnx_path(model_dir, precision), config, threads=threads)
