"""What pruning needs to know about one encoder family, and the family-free code that uses it.

A `FamilyAdapter` says where one layer of its family keeps the weights that pruning removes (a
`Layout`: which rows of which Linear are a head's Q, K and V, which columns of which Linear are its
O, which rows the FFN neurons own and which Linear reads them), which layers are prunable (ALBERT
shares one), the unpruned `Shape` from the config, and which attributes its forward reads after a
layer lost heads (`set_heads`). Everything else is written once, here, for every family:
`shrink_layer` physically removes heads and neurons, `mask_layer` zeroes them (for the
masked == pruned check).

This package is self-contained (the standard library, torch and transformers, relative imports among
its own files) because an exported model folder ships these files: the code that pruned a model
rebuilds its shapes in a process that never imports this project.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn


@dataclass(frozen=True)
class Rows:
    """Rows [start, stop) of the Linear at `path` (dotted, relative to the layer) that one role owns.

    A Linear that is not fused has one role and owns all its rows (`stop` None). A fused one (ModernBERT's
    `Wqkv`, a GLU's `Wi`) is listed once per role with that role's rows.
    """

    path: str
    start: int = 0
    stop: int | None = None


@dataclass(frozen=True)
class Layout:
    """Where one encoder layer keeps what pruning removes.

    q, k, v:    heads x head_size rows each (head h owns rows [h*head_size, (h+1)*head_size) of its slice)
    o:          the Linear whose input columns are the heads x head_size context features
    ffn_in:     intermediate-sized row slices: one for a plain FFN, two (value, gate) for a GLU; neuron j
                owns row j of each
    ffn_out:    the Linear whose input columns are the FFN neurons
    head_rows:  further per-head row slices removed with their head but never scored (DeBERTa-v2's
                position projections when `share_att_key` is false)
    """

    q: Rows
    k: Rows
    v: Rows
    o: str
    ffn_in: tuple[Rows, ...]
    ffn_out: str
    head_rows: tuple[Rows, ...] = ()

    @property
    def head_slices(self) -> tuple[Rows, ...]:
        return (self.q, self.k, self.v, *self.head_rows)

    def head_matrices(self) -> int:
        """Weight matrices one head has rows or columns in (Q, K, V, O and any head_rows)."""
        return len(self.head_slices) + 1

    def neuron_matrices(self) -> int:
        """Weight matrices one FFN neuron has a row or column in."""
        return len(self.ffn_in) + 1


@dataclass(frozen=True)
class Shape:
    """The unpruned shape of one family's layers, from its config (pruning never changes the config's values)."""

    num_heads: int
    head_size: int
    hidden_size: int
    intermediate_size: int


class UnsupportedFamily(ValueError):
    """A model whose family (or configuration of a family) no adapter handles."""


class FamilyAdapter(ABC):
    """One encoder family. Subclasses set the class attributes and implement `layers`, `layout`, `set_heads`."""

    family: str  # the name shown in errors and tables
    model_types: tuple[str, ...]  # the config.model_type values this adapter handles
    config_class: type  # transformers' config class of the family
    model_class: type  # transformers' *ForSequenceClassification of the family
    notes: str = ""  # what is particular about the family, for the capability table

    def shape(self, config: Any) -> Shape:
        heads = int(config.num_attention_heads)
        head_size = getattr(config, "attention_head_size", None) or getattr(config, "head_dim", None)
        return Shape(num_heads=heads, head_size=int(head_size or config.hidden_size // heads),
                     hidden_size=int(config.hidden_size), intermediate_size=int(config.intermediate_size))

    def refusal(self, config: Any) -> str | None:
        """Why this adapter cannot prune a model with `config` (None: it can)."""
        return None

    @abstractmethod
    def layers(self, model: nn.Module) -> list[nn.Module]:
        """The prunable encoder layers, in order, each once (a layer shared by several depths is listed once)."""

    @abstractmethod
    def layout(self, layer: nn.Module) -> Layout:
        """Where `layer` keeps its heads and neurons, read from its current shapes (fused offsets move when it shrinks)."""

    @abstractmethod
    def set_heads(self, layer: nn.Module, kept_heads: list[int], head_size: int) -> None:
        """After Q/K/V/O lost heads: update what the family's forward reads (head counts, per-head buffers).

        `kept_heads` are indices in the unpruned numbering, so a family with per-head state shared across
        layers (MPNet's relative attention bias) can select its rows.
        """

    def vocabulary_refusal(self, tokenizer: Any) -> str | None:
        """Why trimming `tokenizer`'s vocabulary would change this family's outputs (None: it would not)."""
        return None

    def word_embeddings(self, model: nn.Module) -> nn.Embedding:
        """The token embedding table (vocabulary trimming cuts it, int8 stores it as int8)."""
        return model.get_input_embeddings()

    def prepare_export(self, model: nn.Module) -> None:
        """Make `model` (a copy about to be traced by the ONNX exporter) exportable, in place; default: nothing.

        A family whose attention the exporter cannot trace overrides this (e.g. switching to eager attention).
        """


# ---- family-free mechanics -------------------------------------------------------------------------

def get_module(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = getattr(module, part)
    return module


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get_module(root, parent) if parent else root, name, module)


def linear_at(layer: nn.Module, path: str) -> nn.Linear:
    module = get_module(layer, path)
    if not isinstance(module, nn.Linear):
        raise TypeError(f"{path} is a {type(module).__name__}, expected a Linear")
    return module


def slice_bounds(layer: nn.Module, rows: Rows) -> tuple[int, int]:
    stop = linear_at(layer, rows.path).out_features if rows.stop is None else rows.stop
    return rows.start, stop


def head_row_index(heads: Iterable[int], head_size: int, offset: int = 0) -> torch.Tensor:
    """Row indices of `heads` in a slice starting at `offset`."""
    idx = [torch.arange(offset + h * head_size, offset + (h + 1) * head_size) for h in heads]
    return torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)


def shrink_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping `index` along `dim` (0: output rows, 1: input columns); dtype, device, grad kept."""
    index = index.to(linear.weight.device)
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = None
    if linear.bias is not None:
        bias = (linear.bias.detach()[index] if dim == 0 else linear.bias.detach()).clone()
    out_f, in_f = weight.shape
    new = nn.Linear(in_f, out_f, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.requires_grad_(linear.weight.requires_grad)
    return new


def _rows_to_keep(layer: nn.Module, slices: Iterable[Rows], keep_in_slice) -> dict[str, torch.Tensor]:
    """Per Linear path, the rows to keep: for each slice of it, `keep_in_slice(start)` (slices in row order)."""
    kept: dict[str, list[torch.Tensor]] = defaultdict(list)
    for rows in sorted(slices, key=lambda r: (r.path, r.start)):
        start, _ = slice_bounds(layer, rows)
        kept[rows.path].append(keep_in_slice(start))
    return {path: torch.cat(parts) for path, parts in kept.items()}


def shrink_layer(adapter: FamilyAdapter, layer: nn.Module, kept_heads: list[int], kept_neurons: list[int],
                 shape: Shape) -> None:
    """Physically keep only `kept_heads` and `kept_neurons` (unpruned numbering) of an unpruned layer, in place."""
    lay = adapter.layout(layer)
    if len(kept_heads) < shape.num_heads:
        rows = _rows_to_keep(layer, lay.head_slices, lambda s: head_row_index(kept_heads, shape.head_size, s))
        for path, index in rows.items():
            set_module(layer, path, shrink_linear(linear_at(layer, path), index, 0))
        cols = head_row_index(kept_heads, shape.head_size)
        set_module(layer, lay.o, shrink_linear(linear_at(layer, lay.o), cols, 1))
        adapter.set_heads(layer, list(kept_heads), shape.head_size)
    if len(kept_neurons) < shape.intermediate_size:
        neurons = torch.as_tensor(list(kept_neurons), dtype=torch.long)
        rows = _rows_to_keep(layer, lay.ffn_in, lambda s: neurons + s)
        for path, index in rows.items():
            set_module(layer, path, shrink_linear(linear_at(layer, path), index, 0))
        set_module(layer, lay.ffn_out, shrink_linear(linear_at(layer, lay.ffn_out), neurons, 1))


@torch.no_grad()
def mask_layer(adapter: FamilyAdapter, layer: nn.Module, kept_heads: list[int], kept_neurons: list[int],
               shape: Shape) -> None:
    """Zero what `shrink_layer` would remove, keeping the shapes: the O columns of dropped heads and the
    FFN-out columns of dropped neurons (their contribution to the layer's output is exactly zero then)."""
    lay = adapter.layout(layer)
    o, out = linear_at(layer, lay.o), linear_at(layer, lay.ffn_out)
    dropped_heads = [h for h in range(shape.num_heads) if h not in set(kept_heads)]
    o.weight[:, head_row_index(dropped_heads, shape.head_size)] = 0
    dropped = [j for j in range(shape.intermediate_size) if j not in set(kept_neurons)]
    out.weight[:, torch.as_tensor(dropped, dtype=torch.long)] = 0


def layer_heads(adapter: FamilyAdapter, layer: nn.Module, head_size: int) -> int:
    """Heads the layer has now (from its O's input width)."""
    return linear_at(layer, adapter.layout(layer).o).in_features // head_size


def layer_ffn_width(adapter: FamilyAdapter, layer: nn.Module) -> int:
    """FFN neurons the layer has now (from its FFN-out's input width)."""
    return linear_at(layer, adapter.layout(layer).ffn_out).in_features
