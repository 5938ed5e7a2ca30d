"""The export's README.md: what the model is, how well and how fast it measured, and how to run it."""

from __future__ import annotations

import re
from typing import Any

from trainers import metrics as vocab

PER_LAYER = re.compile(r"_layer\d+$|_seed\d+$")
RUNTIME_SNIPPET = '''```python
# plain transformers (no need for this project): the folder ships its modeling file
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained("model", trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained("tokenizer")  # its own folder: loads without remote code or a prompt
inputs = tokenizer(["{example}"], return_tensors="pt", truncation=True, max_length={max_len})
with torch.inference_mode():
    label = model.config.id2label[int(model(**inputs).logits.argmax(-1))]

# ONNX Runtime (model.onnx: fp32; model.int8.onnx: ONNX Runtime dynamic int8)
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("model/model.onnx", providers=["CPUExecutionProvider"])
enc = tokenizer(["{example}"], return_tensors="np", truncation=True, max_length={max_len})
(logits,) = session.run(["logits"], {{"input_ids": enc["input_ids"].astype(np.int64),
                                      "attention_mask": enc["attention_mask"].astype(np.int64)}})
```'''


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _metric_rows(metrics: dict[str, float], baseline: dict[str, float]) -> list[str]:
    rows = ["| metric | value | teacher | unit / meaning |", "| --- | --- | --- | --- |"]
    for name in sorted(metrics):
        if PER_LAYER.search(name):
            continue
        known = name in vocab.METRICS or name.startswith(("latency_ms_", "throughput_", "accuracy", "macro_f1"))
        if not known:
            continue
        rows.append(f"| `{name}` | {_fmt(metrics[name])} | {_fmt(baseline.get(name, '-'))} | {vocab.describe(name)} |")
    return rows


def _accuracy_lines(acc: dict[str, Any]) -> list[str]:
    """Two labelled accuracies: the configuration's (mean ± interval over seeds and rows) and the shipped file's own."""
    if not acc:
        return []
    config, shipped = acc.get("configuration", {}), acc.get("exported_model", {})
    lines = ["## Accuracy", "", "| | validation (chose it) | test (reported only) |", "| --- | --- | --- |"]

    def cell(part: dict, label: str) -> str:
        value, iv, rows = part.get(label), part.get(f"{label}_interval_95"), part.get(f"{label}_rows")
        if value is None:
            return "-"
        return f"{value:.4f}" + (f" [{iv[0]:.4f}, {iv[1]:.4f}]" if iv else "") + (f" ({rows} rows)" if rows else "")

    lines.append(f"| the configuration (mean over its seeds, 95 % interval) | {cell(config, 'val')} | "
                 f"{cell(config, 'test_reported')} |")
    lines.append(f"| this exported model (seed {shipped.get('seed', '-')}) | {cell(shipped, 'val')} | "
                 f"{cell(shipped, 'test_reported')} |")
    lines += ["", f"Configuration: {config.get('what', '')}. Exported model: {shipped.get('what', '')}; per-row "
              f"predictions in `{shipped.get('predictions', 'predictions.npz')}`.", ""]
    return lines


def model_card(doc: dict[str, Any]) -> str:
    """Markdown model card from the export document (config.yaml's content)."""
    hp = doc.get("hyperparameters", {})
    pruning = doc.get("pruning", {})
    metrics, baseline = doc.get("metrics", {}), doc.get("baseline_metrics", {})
    val = [n for n in metrics if n.startswith("val_")]
    test = [n for n in metrics if n.startswith("test_")]
    lines = [
        f"# {doc['study']}: trial {doc['trial']} (picked by `{doc['pick']}`)",
        "",
        "A pruned and distilled text classifier exported by compression-sweep. Validation metrics chose it; "
        "test metrics are reported only.",
        "",
        *_accuracy_lines(doc.get("accuracy", {})),
        "## Hyperparameters",
        "",
        *(f"- `{k}`: {_fmt(v)}" for k, v in hp.items()),
        "",
        "## Pruning plan",
        "",
        f"- method: {pruning.get('method', '-')}, target ratio {_fmt(pruning.get('target_ratio', '-'))}, "
        f"achieved {_fmt(pruning.get('achieved_ratio', '-'))} (fraction of encoder attention + FFN weights removed)",
        f"- attention heads per layer: {pruning.get('heads_per_layer', '-')}",
        f"- FFN width per layer: {pruning.get('ffn_per_layer', '-')}",
        f"- parameters: {_fmt(pruning.get('params_total_before', '-'))} -> {_fmt(pruning.get('params_total_after', '-'))}",
        "",
        "## Metrics",
        "",
        f"Validation metrics: {', '.join(f'`{n}`' for n in sorted(val)) or 'none logged'}; "
        f"test metrics: {', '.join(f'`{n}`' for n in sorted(test)) or 'none logged'}.",
        "",
        *_metric_rows(metrics, baseline),
        "",
        "## How and where it was measured",
        "",
        *(f"- `{k}`: {v}" for k, v in sorted(doc.get("measured_on", {}).items())),
        "",
        "## ONNX",
        "",
    ]
    parity = doc.get("onnx_parity")
    lines.append("`model/model.onnx` (fp32, dynamic batch and sequence axes) and `model/model.int8.onnx` "
                 "(ONNX Runtime dynamic quantisation).")
    if parity and parity.get("rows"):
        fp32, int8 = parity["fp32"], parity["int8"]
        lines += ["", f"Parity on {parity['rows']} {parity['split']} rows: max |logit diff| fp32 "
                  f"{fp32['max_abs_logit_diff']:.2e} (tolerance {fp32['tolerance']:.0e}); int8 accuracy torch "
                  f"{int8['torch_int8_accuracy']:.4f} vs ONNX Runtime {int8['onnxruntime_int8_accuracy']:.4f} "
                  f"({int8['diff_points']:.2f} points, tolerance {int8['tolerance_points']}; same label on "
                  f"{int8['agreement']:.1%} of rows); "
                  f"{'passed' if parity['ok'] else 'FAILED'} (model/onnx_parity.json)."]
    lines += [
        "",
        "## Use it",
        "",
        RUNTIME_SNIPPET.format(example="a short text to classify", max_len=doc.get("max_seq_len") or 128),
        "",
        "## Reproduce",
        "",
        f"From this folder: `{doc['reproduce']}` (retrains the trial) and `{doc['measure']}` (re-measures the model).",
        "",
    ]
    return "\n".join(lines)
