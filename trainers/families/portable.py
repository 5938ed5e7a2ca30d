"""The portable pruned classes of a family: its config and *ForSequenceClassification with per-layer shapes.

An exported folder ships this file, base.py, int8.py, the family's adapter file and a generated
`modeling_pruned.py` that picks the family's adapter, so

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

rebuilds the pruned architecture in a process that never imported this project: the family's own
transformers classes are built unpruned, then `shrink_layer` gives each layer its kept heads and FFN
width (and int8 storage where the config says so) before the weights load.

Config fields on top of the family's own config, whose head count and FFN width stay the unpruned ones:

- `kept_heads_per_layer`: list[list[int]], the kept heads of each prunable layer (`adapter.layers`), in
  the unpruned numbering (a family with per-head state, such as MPNet's relative attention bias,
  needs the indices, not only the counts)
- `intermediate_size_per_layer`: list[int], the FFN width of each prunable layer
- `weight_dtype`: "float" (weights at the checkpoint's float dtype) or "int8" (see int8.py)
- `num_attention_heads_per_layer`: read only, from folders written before kept head indices were stored
  (heads 0..n-1: only their count mattered to those families)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .base import FamilyAdapter, shrink_layer
from .int8 import quantise_model

PREFIX = "pruned_"
HEADS_FIELD = "kept_heads_per_layer"
WIDTHS_FIELD = "intermediate_size_per_layer"
LEGACY_HEADS_FIELD = "num_attention_heads_per_layer"
DTYPE_FIELD = "weight_dtype"


def portable_model_type(adapter: FamilyAdapter) -> str:
    return PREFIX + adapter.family.replace("-", "_")


def layer_shapes(adapter: FamilyAdapter, config: Any, n_layers: int) -> tuple[list[list[int]], list[int]]:
    """(kept heads, FFN width) per prunable layer as `config` records them (unpruned where it records nothing)."""
    shape = adapter.shape(config)
    heads = getattr(config, HEADS_FIELD, None)
    if heads is None and getattr(config, LEGACY_HEADS_FIELD, None) is not None:
        heads = [list(range(int(n))) for n in getattr(config, LEGACY_HEADS_FIELD)]
    heads = [list(h) for h in heads] if heads is not None else [list(range(shape.num_heads))] * n_layers
    widths = getattr(config, WIDTHS_FIELD, None)
    widths = [int(w) for w in widths] if widths is not None else [shape.intermediate_size] * n_layers
    if len(heads) != n_layers or len(widths) != n_layers:
        raise ValueError(f"config lists kept heads for {len(heads)} and FFN widths for {len(widths)} layers; "
                         f"the {adapter.family} model has {n_layers} prunable layers")
    for i, (h, w) in enumerate(zip(heads, widths)):
        if not h or h != sorted(set(h)) or h[0] < 0 or h[-1] >= shape.num_heads:
            raise ValueError(f"config.{HEADS_FIELD}[{i}]={h}: expected sorted unique head indices in "
                             f"[0, {shape.num_heads})")
        if not 0 < w <= shape.intermediate_size:
            raise ValueError(f"config.{WIDTHS_FIELD}[{i}]={w}: expected 1..{shape.intermediate_size}")
    return heads, widths


def restructure(adapter: FamilyAdapter, model: nn.Module) -> None:
    """Shapes and storage as the config says (called at the end of __init__, before weights load)."""
    config, layers = model.config, adapter.layers(model)
    shape = adapter.shape(config)
    heads, widths = layer_shapes(adapter, config, len(layers))
    for layer, kept, width in zip(layers, heads, widths):
        shrink_layer(adapter, layer, kept, list(range(width)), shape)
    weight_dtype = getattr(config, DTYPE_FIELD, "float")
    if weight_dtype == "int8":  # int8 modules of these shapes; their weights and scales are loaded next
        quantise_model(adapter, model, skeleton=True)
    elif weight_dtype != "float":
        raise ValueError(f"config.{DTYPE_FIELD}={weight_dtype!r}; expected 'float' or 'int8'")


_CLASSES: dict[str, tuple[type, type]] = {}


def portable_classes(adapter: FamilyAdapter) -> tuple[type, type]:
    """(config class, model class) of the family's portable pruned model (one pair per family, cached)."""
    if adapter.family in _CLASSES:
        return _CLASSES[adapter.family]
    base_config, base_model = adapter.config_class, adapter.model_class

    def config_init(self, kept_heads_per_layer=None, intermediate_size_per_layer=None, weight_dtype="float",
                    num_attention_heads_per_layer=None, **kwargs):
        base_config.__init__(self, **kwargs)
        self.kept_heads_per_layer = kept_heads_per_layer
        self.intermediate_size_per_layer = intermediate_size_per_layer
        self.weight_dtype = weight_dtype
        if num_attention_heads_per_layer is not None:
            self.num_attention_heads_per_layer = num_attention_heads_per_layer

    def model_init(self, config):
        base_model.__init__(self, config)
        restructure(adapter, self)

    name = "Pruned" + base_model.__name__.removesuffix("ForSequenceClassification")
    config_cls = type(f"{name}Config", (base_config,), {
        "model_type": portable_model_type(adapter), "__init__": config_init, "__module__": __name__})
    model_cls = type(f"{name}ForSequenceClassification", (base_model,), {
        "config_class": config_cls, "__init__": model_init, "__module__": __name__})
    _CLASSES[adapter.family] = (config_cls, model_cls)
    return config_cls, model_cls


def portable_fields(adapter: FamilyAdapter, model: nn.Module, int8: bool) -> dict[str, Any]:
    """The shape fields describing `model` as it is now (head indices from its config's pruned_shapes when
    pruning recorded them, else 0..n-1), for its portable config."""
    from .base import layer_ffn_width, layer_heads

    shape = adapter.shape(model.config)
    layers = adapter.layers(model)
    recorded = (getattr(model.config, "pruned_shapes", None) or {}).get("heads")
    heads = []
    for i, layer in enumerate(layers):
        n = layer_heads(adapter, layer, shape.head_size)
        kept = list(recorded[i]) if recorded and len(recorded) == len(layers) and len(recorded[i]) == n else None
        heads.append(kept if kept is not None else list(range(n)))
    return {HEADS_FIELD: heads, WIDTHS_FIELD: [layer_ffn_width(adapter, layer) for layer in layers],
            DTYPE_FIELD: "int8" if int8 else "float"}
