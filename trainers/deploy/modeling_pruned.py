"""The project's handle on the int8 kernels and the portable pruned classes (they live in trainers/families).

Exported folders no longer ship this file: they ship trainers/families/{base,int8,portable}.py, the
family's adapter file and a generated `modeling_pruned.py` (see trainers/deploy/folder.py). Folders
written before that ship their own copy of the previous version and keep loading with it.
"""

from __future__ import annotations

from torch import nn

from trainers.families import adapter_for
from trainers.families.int8 import INT8_MAX, Int8Embedding, Int8Linear, quantise_linears, quantise_model, quantise_rows

__all__ = ["INT8_MAX", "Int8Embedding", "Int8Linear", "quantise_int8", "quantise_linears", "quantise_rows"]


def quantise_int8(model: nn.Module) -> nn.Module:
    """In place: every Linear inside the family's encoder layers and the word embeddings become int8."""
    return quantise_model(adapter_for(model), model)
