"""What a trial writes when it saves its student: the portable folder at its precision, ONNX, parity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from trainers.deploy.parity import export_with_parity


def save_student(student: nn.Module, tokenizer: Any, plan: Any, model_dir: str | Path, *, precision: str,
                 validation: Any | None, batch_size: int = 64, threads: int | None = None,
                 onnx: bool = True) -> dict | None:
    """save_pruned at `precision`, then model.onnx + model.int8.onnx checked against torch on the
    validation split (onnx_parity.json). Returns the parity record (None when ONNX is skipped)."""
    from trainers.pruning.io import save_pruned
    from trainers.train import batches

    save_pruned(student, tokenizer, plan, model_dir, precision=precision)
    if not onnx:
        return None
    rows = [] if validation is None else list(batches(validation, batch_size, shuffle=False))
    return export_with_parity(student, model_dir, rows, threads=threads)
