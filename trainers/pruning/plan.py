"""Which heads and FFN neurons survive, and physically removing the rest.

A `PruningPlan` is the whole outcome of pruning: per encoder layer the kept head indices and kept
FFN neuron indices (in the unpruned model's numbering), plus the unpruned dimensions. It is
JSON-serialisable, so a saved model can be rebuilt with the right shapes before its weights load.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from trainers.families import adapter_for
from trainers.families.base import FamilyAdapter, Layout, layer_ffn_width, layer_heads, linear_at, shrink_layer

CONFIG_FIELD = "pruned_shapes"  # model.config attribute describing per-layer shapes (kept heads, FFN widths)


@dataclass(frozen=True)
class EncoderDims:
    """Unpruned shapes of an encoder's prunable layers (from its config, which pruning never changes).

    `head_matrices` / `neuron_matrices`: how many weight matrices one head / FFN neuron has rows or
    columns in (4: Q, K, V, O; more with DeBERTa-v2's position projections; 3 for a GLU neuron), from
    the family's Layout.
    """

    num_layers: int
    num_heads: int
    head_size: int
    hidden_size: int
    intermediate_size: int
    head_matrices: int = 4
    neuron_matrices: int = 2

    @property
    def head_weights(self) -> int:
        """Weights one head owns: its rows of Q, K, V (and any per-head projections) and its columns of O."""
        return self.head_matrices * self.head_size * self.hidden_size

    @property
    def neuron_weights(self) -> int:
        """Weights one FFN neuron owns: its row of each FFN-in slice and its FFN-out column."""
        return self.neuron_matrices * self.hidden_size

    @property
    def total_weights(self) -> int:
        return self.num_layers * (self.num_heads * self.head_weights + self.intermediate_size * self.neuron_weights)


def family(model: nn.Module) -> FamilyAdapter:
    """The model's family adapter (UnsupportedFamily names the supported ones)."""
    return adapter_for(model)


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The prunable transformer blocks, each once (an ALBERT layer shared by every depth is one block)."""
    return family(model).layers(model)


def encoder_dims(model: nn.Module) -> EncoderDims:
    adapter = family(model)
    layers = adapter.layers(model)
    shape = adapter.shape(model.config)
    layout = adapter.layout(layers[0])
    return EncoderDims(
        num_layers=len(layers),
        num_heads=shape.num_heads,
        head_size=shape.head_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        head_matrices=layout.head_matrices(),
        neuron_matrices=layout.neuron_matrices(),
    )


def layer_linears(layer: nn.Module, layout: Layout) -> dict[str, nn.Linear]:
    """The prunable Linear layers of one encoder block by dotted path (a fused Linear once)."""
    paths = [r.path for r in (*layout.head_slices, *layout.ffn_in)] + [layout.o, layout.ffn_out]
    return {path: linear_at(layer, path) for path in dict.fromkeys(paths)}


def encoder_weight_count(model: nn.Module) -> int:
    """Current number of prunable encoder weights (the denominator/numerator of `pruning_ratio`)."""
    adapter = family(model)
    return sum(lin.weight.numel() for layer in adapter.layers(model)
               for lin in layer_linears(layer, adapter.layout(layer)).values())


class LayerPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    heads: list[int]
    ffn: list[int]


class PruningPlan(BaseModel):
    """Kept heads/neurons per layer, in the unpruned model's numbering."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int
    num_attention_heads: int
    attention_head_size: int
    intermediate_size: int
    layers: list[LayerPlan]
    target_ratio: float | None = None
    method: str = "identity"
    refilled: bool = False  # hybrid filled: pruned blocks of kept heads were restored, so retrain after pruning
    head_matrices: int = 4  # weight matrices a head has rows/columns in (EncoderDims)
    neuron_matrices: int = 2  # weight matrices an FFN neuron has a row/column in

    @model_validator(mode="after")
    def _check(self) -> PruningPlan:
        for i, lp in enumerate(self.layers):
            checks = (("heads", lp.heads, self.num_attention_heads), ("ffn", lp.ffn, self.intermediate_size))
            for name, kept, size in checks:
                if not kept:
                    raise ValueError(f"pruning plan layer {i}: at least one of {name} must be kept")
                if kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= size:
                    raise ValueError(f"pruning plan layer {i}: {name} must be sorted unique indices in [0, {size})")
        return self

    @property
    def dims(self) -> EncoderDims:
        return EncoderDims(
            num_layers=len(self.layers),
            num_heads=self.num_attention_heads,
            head_size=self.attention_head_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            head_matrices=self.head_matrices,
            neuron_matrices=self.neuron_matrices,
        )

    @property
    def is_identity(self) -> bool:
        return all(
            len(lp.heads) == self.num_attention_heads and len(lp.ffn) == self.intermediate_size for lp in self.layers
        )

    def kept_weights(self) -> int:
        d = self.dims
        return sum(len(lp.heads) * d.head_weights + len(lp.ffn) * d.neuron_weights for lp in self.layers)

    def achieved_ratio(self) -> float:
        return 1.0 - self.kept_weights() / self.dims.total_weights

    def shapes(self) -> dict[str, Any]:
        """Compact per-layer description for model.config (enough to rebuild shapes, not the FFN indices)."""
        return {
            "heads": [lp.heads for lp in self.layers],
            "intermediate_sizes": [len(lp.ffn) for lp in self.layers],
            "pruning_ratio": round(self.achieved_ratio(), 6),
        }

    @classmethod
    def from_shapes(cls, config: Any, shapes: dict[str, Any]) -> PruningPlan:
        """A plan with the shapes a config describes (FFN neurons numbered 0..width-1; only shapes matter there)."""
        try:
            layers = [
                LayerPlan(heads=list(h), ffn=list(range(w)))
                for h, w in zip(shapes["heads"], shapes["intermediate_sizes"], strict=True)
            ]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"config.{CONFIG_FIELD} is malformed ({err!r}): {shapes!r}") from None
        adapter = adapter_for(config)
        shape = adapter.shape(config)
        return cls(
            hidden_size=shape.hidden_size,
            num_attention_heads=shape.num_heads,
            attention_head_size=shape.head_size,
            intermediate_size=shape.intermediate_size,
            layers=layers,
            method="from_config",
            **_matrices(adapter, config),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> PruningPlan:
        try:
            return cls.model_validate_json(Path(path).read_text())
        except ValueError as err:
            raise ValueError(f"{path}: not a valid pruning plan: {err}") from None


def identity_plan(model: nn.Module) -> PruningPlan:
    d = encoder_dims(model)
    return _plan(d, [torch.ones(d.num_heads, dtype=torch.bool)] * d.num_layers,
                 [torch.ones(d.intermediate_size, dtype=torch.bool)] * d.num_layers, target_ratio=0.0)


def _matrices(adapter: FamilyAdapter, config: Any) -> dict[str, int]:
    """head_matrices / neuron_matrices of a family, from the layout of a layer of a config-built model."""
    layout = _LAYOUTS.get(adapter.family)
    if layout is None:
        layout = _LAYOUTS[adapter.family] = adapter.layout(adapter.layers(_meta_model(adapter, config))[0])
    return {"head_matrices": layout.head_matrices(), "neuron_matrices": layout.neuron_matrices()}


_LAYOUTS: dict[str, Layout] = {}


def _meta_model(adapter: FamilyAdapter, config: Any) -> nn.Module:
    with torch.device("meta"):
        return adapter.model_class(config)


def _plan(d: EncoderDims, head_keep: Any, ffn_keep: Any, **extra: Any) -> PruningPlan:
    return PruningPlan(
        hidden_size=d.hidden_size,
        num_attention_heads=d.num_heads,
        attention_head_size=d.head_size,
        intermediate_size=d.intermediate_size,
        head_matrices=d.head_matrices,
        neuron_matrices=d.neuron_matrices,
        layers=[
            LayerPlan(heads=h.nonzero().flatten().tolist(), ffn=f.nonzero().flatten().tolist())
            for h, f in zip(head_keep, ffn_keep)
        ],
        **extra,
    )


def _keep_top(scores: torch.Tensor, n_remove: int) -> torch.Tensor:
    """Bool [L, N] keep-mask removing the `n_remove` lowest scores globally, but never a layer's best unit."""
    scores = scores.detach().float()
    protected = torch.zeros_like(scores, dtype=torch.bool)
    protected[torch.arange(scores.shape[0]), scores.argmax(1)] = True
    ranked = torch.where(protected, torch.inf, scores).flatten().argsort(stable=True)
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[ranked[: max(0, min(n_remove, scores.numel() - scores.shape[0]))].cpu()] = False
    return keep.view_as(scores)


def round_up_kept(keep: torch.Tensor, scores: torch.Tensor, multiple: int) -> torch.Tensor:
    """Give back each layer's best removed neurons until its kept width is a multiple of `multiple`.

    `scores` [L, F] must rank the removed neurons too (raw scores, not margins that are 0 for all of them)."""
    if multiple <= 1:
        return keep
    keep = keep.clone()
    for i in range(keep.shape[0]):
        width = int(keep[i].sum())
        extra = min(keep.shape[1], math.ceil(width / multiple) * multiple) - width
        if extra > 0:
            candidates = torch.where(keep[i], -torch.inf, scores[i].detach().float().cpu())
            keep[i, candidates.argsort(descending=True, stable=True)[:extra]] = True
    return keep


def select_plan(
    head_scores: torch.Tensor,
    neuron_scores: torch.Tensor,
    ratio: float,
    dims: EncoderDims,
    *,
    ffn_round_to: int = 1,
    method: str = "",
) -> PruningPlan:
    """Keep the best-scoring heads [L, H] and FFN neurons [L, F] so that `ratio` of the weights go.

    Heads take `ratio` of the attention weights (to the nearest head); FFN neurons then take what
    is left of the budget, which absorbs the head rounding to within one neuron. Every layer keeps
    at least its best head and neuron. Rounding FFN widths up leaves the ratio slightly under target.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    n_heads = round(ratio * dims.num_layers * dims.num_heads)
    head_keep = _keep_top(head_scores.cpu(), n_heads)
    removed_heads = int((~head_keep).sum())
    budget = ratio * dims.total_weights - removed_heads * dims.head_weights
    ffn_keep = _keep_top(neuron_scores.cpu(), max(0, round(budget / dims.neuron_weights)))
    ffn_keep = round_up_kept(ffn_keep, neuron_scores.cpu(), ffn_round_to)
    return _plan(dims, head_keep, ffn_keep, target_ratio=ratio, method=method)


def remove_to_budget(keys: torch.Tensor, costs: torch.Tensor, removable: torch.Tensor, target: float) -> torch.Tensor:
    """Bool mask of the units to remove so that their costs sum as close as possible to `target`.

    Lowest keys go first (a global TopK where units of different sizes count their own weights). Two
    candidates: stop before the first unit that would overshoot and fill the gap with any later unit
    that still fits; or take that unit and give back the highest-keyed removed units the overshoot
    allows. The one closer to the target wins, so the result is within one smallest unit of it.
    """
    keys, costs = keys.detach().float().cpu(), costs.float().cpu()
    order = torch.where(removable.cpu(), keys, torch.inf).argsort(stable=True)[: int(removable.sum())].tolist()
    cost = costs.tolist()
    under, spent_under, spent = [], 0.0, 0.0
    over: list[int] = []
    for u in order:
        if spent_under + cost[u] <= target + 1e-6:
            under.append(u)
            spent_under += cost[u]
        if spent < target - 1e-6:
            over.append(u)
            spent += cost[u]
    given_back = set()
    for u in reversed(over[:-1]):
        if spent - cost[u] >= target - 1e-6:
            given_back.add(u)
            spent -= cost[u]
    over = [u for u in over if u not in given_back]
    chosen = over if abs(spent - target) < abs(spent_under - target) else under
    removed = torch.zeros(keys.numel(), dtype=torch.bool)
    removed[torch.tensor(chosen, dtype=torch.long)] = True
    return removed


def achieved_ratio(plan: PruningPlan) -> float:
    """`pruning_ratio` of a plan: removed / original prunable encoder weights."""
    return plan.achieved_ratio()


def check_unpruned(model: nn.Module) -> EncoderDims:
    """Plans and scores index the unpruned shapes; refuse a model whose layers are already smaller."""
    adapter, d = family(model), encoder_dims(model)
    for i, layer in enumerate(adapter.layers(model)):
        heads, width = layer_heads(adapter, layer, d.head_size), layer_ffn_width(adapter, layer)
        if heads != d.num_heads or width != d.intermediate_size:
            raise ValueError(
                f"encoder layer {i} is already pruned ({heads} of {d.num_heads} heads, FFN width {width} of "
                f"{d.intermediate_size}); prune the unpruned model instead"
            )
    return d


def apply_plan(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Physically remove what `plan` drops (in place; returns the model). The model must be unpruned."""
    adapter, d = family(model), check_unpruned(model)
    if d != plan.dims:
        raise ValueError(f"pruning plan is for an encoder with {plan.dims}, the model has {d}")
    shape = adapter.shape(model.config)
    for layer, lp in zip(adapter.layers(model), plan.layers):
        shrink_layer(adapter, layer, lp.heads, lp.ffn, shape)
    setattr(model.config, CONFIG_FIELD, None if plan.is_identity else plan.shapes())
    return model


def pruning_summary(model: nn.Module, plan: PruningPlan) -> dict[str, Any]:
    """Flat-ish dict for logging, computed from the pruned model and its plan (no unpruned copy needed)."""
    d = plan.dims
    removed_weights = d.total_weights - plan.kept_weights()
    adapter = family(model)
    layer = adapter.layers(model)[0]
    layout = adapter.layout(layer)
    head_bias = sum(linear_at(layer, r.path).bias is not None for r in layout.head_slices)
    neuron_bias = sum(linear_at(layer, r.path).bias is not None for r in layout.ffn_in)
    removed_bias = sum(
        (d.num_heads - len(lp.heads)) * head_bias * d.head_size + (d.intermediate_size - len(lp.ffn)) * neuron_bias
        for lp in plan.layers
    )
    total_after = sum(p.numel() for p in model.parameters())
    return {
        "target_ratio": plan.target_ratio,
        "achieved_ratio": plan.achieved_ratio(),
        "method": plan.method,
        "needs_retraining": plan.refilled,
        "params_total_before": total_after + removed_weights + removed_bias,
        "params_total_after": total_after,
        "params_encoder_before": d.total_weights,
        "params_encoder_after": encoder_weight_count(model),
        "heads_per_layer": [len(lp.heads) for lp in plan.layers],
        "ffn_per_layer": [len(lp.ffn) for lp in plan.layers],
    }
