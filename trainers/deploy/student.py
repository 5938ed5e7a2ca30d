"""What a trial writes when it saves its student: the portable folder at its precision, ONNX, parity.

ONNX is exported once per training: `shared_onnx` makes model.onnx, model.int8.onnx and
onnx_parity.json beside the shared training (`trainers.training_share.derive_once`), and every
variant of that training links them into its own folder (`link_onnx`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from trainers.deploy.parity import export_with_parity

ONNX_DIR = "onnx"  # inside a shared training's folder


def save_student(student: nn.Module, tokenizer: Any, plan: Any, model_dir: str | Path, *, precision: str,
                 validation: Any | None, batch_size: int = 64, threads: int | None = None,
                 onnx: bool = True) -> dict | None:
    """save_pruned at `precision`, then model.onnx + model.int8.onnx checked against torch on the
    validation split (onnx_parity.json). Returns the parity record (None when ONNX is skipped)."""
    from trainers.pruning.io import save_pruned

    save_pruned(student, tokenizer, plan, model_dir, precision=precision)
    if not onnx:
        return None
    return export_with_parity(student, model_dir, _rows(validation, batch_size), threads=threads)


def shared_onnx(trainings_dir: str | Path, key: str, student: nn.Module, *, validation: Any | None,
                batch_size: int = 64, threads: int | None = None) -> tuple[Path, bool]:
    """The ONNX graphs (fp32 and ONNX Runtime's int8) and their parity record of the shared training `key`,
    exported from `student` (that training's float model) by the first caller; (folder, exported now)."""
    from trainers.training_share import derive_once

    return derive_once(trainings_dir, key, ONNX_DIR,
                       lambda out: export_with_parity(student, out, _rows(validation, batch_size), threads=threads))


def link_onnx(onnx_dir: Path, model_dir: str | Path) -> None:
    """Hard-link (copy across file systems) the shared ONNX files (graphs, external weights of large
    models, parity record) into a trial's model folder."""
    from trainers.training_share import DONE

    for src in sorted(Path(onnx_dir).iterdir()):
        if src.name == DONE or not src.is_file():
            continue
        dst = Path(model_dir) / src.name
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def _rows(validation: Any | None, batch_size: int) -> list:
    from trainers.train import batches

    return [] if validation is None else list(batches(validation, batch_size, shuffle=False))
