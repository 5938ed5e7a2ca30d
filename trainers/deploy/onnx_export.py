"""ONNX export of a (pruned) classifier and ONNX Runtime's int8 dynamic quantisation of it.

The graph takes `input_ids` and `attention_mask` ([batch, sequence], int64, both axes dynamic)
and returns `logits` ([batch, num_labels]); per-layer head counts and FFN widths are whatever the
torch model has, so pruned students export like any other.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from trainers.deploy.modeling_pruned import Int8Embedding, Int8Linear

ONNX_FILE = "model.onnx"  # fp32 graph
ONNX_INT8_FILE = "model.int8.onnx"  # ONNX Runtime dynamic quantisation of model.onnx
INPUT_NAMES = ("input_ids", "attention_mask")
EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf caps a file at 2 GiB: larger models keep weights beside the graph


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(model: nn.Module, path: str | Path, *, opset: int | None = None) -> Path:
    """Write `model` (fp32; bf16/fp16 weights are upcast in a copy) as an ONNX graph with dynamic batch and sequence."""
    if any(isinstance(m, (Int8Linear, Int8Embedding)) for m in model.modules()):
        raise ValueError("export the float model: int8 ONNX comes from ONNX Runtime's quantisation of the fp32 graph")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
    fp32 = model if floats <= {torch.float32} else copy.deepcopy(model).float()
    fp32 = fp32.to("cpu").eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    big = sum(p.numel() * 4 for p in fp32.parameters()) > EXTERNAL_DATA_BYTES
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # exporter chatter (torchvision ops, pytree deprecations)
        torch.onnx.export(
            _LogitsOnly(fp32), (ids, torch.ones_like(ids)), str(path), input_names=list(INPUT_NAMES),
            output_names=["logits"], dynamic_shapes={name: {0: batch, 1: seq} for name in INPUT_NAMES},
            dynamo=True, external_data=big, opset_version=opset, verbose=False,
        )
    return path


def quantise_onnx_int8(fp32_path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime dynamic quantisation: int8 weights (per channel), activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, per_channel=True)
    return Path(out_path)
