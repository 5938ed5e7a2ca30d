"""ONNX next to every saved student, with a recorded parity check against torch.

fp32: max |logit difference| between torch and ONNX Runtime on the given rows (tolerance 1e-4).
int8: accuracy of torch int8 (this project's per-row int8 weights, per-token dynamic activations)
and of ONNX Runtime int8 (its dynamic quantisation) on the validation rows (tolerance 0.5 points).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from trainers.deploy.modeling_pruned import quantise_int8
from trainers.deploy.onnx_export import ONNX_FILE, ONNX_INT8_FILE, export_onnx, exporter_of, quantise_onnx_int8
from trainers.deploy.session import OrtClassifier

PARITY_FILE = "onnx_parity.json"
FP32_MAX_ABS_DIFF = 1e-4
INT8_MAX_DIFF_POINTS = 0.5
Batch = Mapping[str, torch.Tensor]


def _logits(model: nn.Module, batches: list[Batch]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
                          for b in batches])


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).double().mean())


def export_with_parity(model: nn.Module, model_dir: str | Path, batches: Iterable[Batch], *,
                       threads: int | None = None, split: str = "validation") -> dict:
    """Write model.onnx, model.int8.onnx and onnx_parity.json into `model_dir`; return the parity record.

    `model` is the float student (any float dtype; compared in fp32); `batches` carry input_ids,
    attention_mask and labels. The graph is traced (fast); if its logits disagree with torch beyond the
    tolerance, it is exported again through torch.export, and the record says so (`retraced`).
    """
    model_dir = Path(model_dir)
    batches = list(batches)
    fp32 = copy.deepcopy(model).float().to("cpu").eval()
    record = _export_and_compare(fp32, model_dir, batches, threads=threads, split=split, exporter="auto")
    if not record.get("fp32", {}).get("ok", True) and record["exporter"] == "torchscript":
        # the trace disagrees with torch (a data-dependent branch traced at one shape): torch.export instead
        traced = record
        record = _export_and_compare(fp32, model_dir, batches, threads=threads, split=split, exporter="dynamo")
        record["retraced"] = (f"the TorchScript graph's max |logit diff| was {traced['fp32']['max_abs_logit_diff']:.2e} "
                              f"(tolerance {FP32_MAX_ABS_DIFF:g}): re-exported with the dynamo exporter")
    record["ok"] = bool(record.get("fp32", {}).get("ok", True) and record.get("int8", {}).get("ok", True))
    (model_dir / PARITY_FILE).write_text(json.dumps(record, indent=2))
    return record


def _export_and_compare(fp32: nn.Module, model_dir: Path, batches: list[Batch], *, threads: int | None, split: str,
                        exporter: str) -> dict:
    import onnxruntime

    export_onnx(fp32, model_dir / ONNX_FILE, exporter=exporter)
    quantise_onnx_int8(model_dir / ONNX_FILE, model_dir / ONNX_INT8_FILE)
    record: dict = {"split": split, "rows": 0, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                    "exporter": exporter_of(model_dir / ONNX_FILE), "threads": threads,
                    "files": {"fp32": ONNX_FILE, "int8": ONNX_INT8_FILE}}
    if batches:
        labels = torch.cat([b["labels"] for b in batches]).long()
        ref = _logits(fp32, batches)
        ort32 = _logits(OrtClassifier(model_dir / ONNX_FILE, fp32.config, threads=threads), batches)
        diff = float((ref - ort32).abs().max())
        torch_int8_logits = _logits(quantise_int8(fp32), batches)
        ort_int8_logits = _logits(OrtClassifier(model_dir / ONNX_INT8_FILE, fp32.config, threads=threads), batches)
        torch_int8, ort_int8 = _accuracy(torch_int8_logits, labels), _accuracy(ort_int8_logits, labels)
        agreement = float((torch_int8_logits.argmax(-1) == ort_int8_logits.argmax(-1)).double().mean())
        points = abs(torch_int8 - ort_int8) * 100
        record.update(rows=int(labels.numel()), fp32={
            "compared": "logits of torch fp32 and ONNX Runtime fp32 (model.onnx) on the same rows",
            "max_abs_logit_diff": diff, "tolerance": FP32_MAX_ABS_DIFF, "ok": diff <= FP32_MAX_ABS_DIFF,
        }, int8={
            "compared": "accuracy of torch int8 (per-row int8 weights, per-token dynamic activations) and ONNX "
                        "Runtime int8 (quantize_dynamic, QInt8 per-channel weights) on the same labelled rows",
            "torch_int8_accuracy": torch_int8, "onnxruntime_int8_accuracy": ort_int8,
            "fp32_accuracy": _accuracy(ref, labels), "diff_points": points,
            "agreement": agreement,  # fraction of rows where both int8 models predict the same label
            "tolerance_points": INT8_MAX_DIFF_POINTS, "ok": points <= INT8_MAX_DIFF_POINTS,
        })
    return record
