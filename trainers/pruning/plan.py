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
from transformers.pytorch_utils import prune_linear_layer

CONFIG_FIELD = "pruned_shapes"  # model.config attribute describing per-layer shapes (kept heads, FFN widths)


@dataclass(frozen=True)
class EncoderDims:
    """Unpruned shapes of a BERT-like encoder (read from its config, which pruning never changes)."""

    num_layers: int
    num_heads: int
    head_size: int
    hidden_size: int
    intermediate_size: int

    @property
    def head_weights(self) -> int:
        """Weights one head owns: its rows of Q, K, V and its columns of O."""
        return 4 * self.head_size * self.hidden_size

    @property
    def neuron_weights(self) -> int:
        """Weights one FFN neuron owns: its intermediate row and its output column."""
        return 2 * self.hidden_size

    @property
    def total_weights(self) -> int:
        return self.num_layers * (self.num_heads * self.head_weights + self.intermediate_size * self.neuron_weights)


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a BERT/RoBERTa/XLM-R style model (`model.base_model.encoder.layer`)."""
    try:
        layers = list(model.base_model.encoder.layer)
        for layer in layers:
            layer_linears(layer)
    except AttributeError as err:
        raise TypeError(
            f"{type(model).__name__} is not a BERT-like encoder: expected base_model.encoder.layer[i] with "
            f"attention.self.{{query,key,value}}, attention.output.dense, intermediate.dense, output.dense ({err})"
        ) from None
    return layers


def encoder_dims(model: nn.Module) -> EncoderDims:
    c = model.config
    return EncoderDims(
        num_layers=len(encoder_layers(model)),
        num_heads=c.num_attention_heads,
        head_size=c.hidden_size // c.num_attention_heads,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
    )


def layer_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    """The six prunable Linear layers of one encoder block, by short name."""
    att = layer.attention
    return {
        "query": att.self.query,
        "key": att.self.key,
        "value": att.self.value,
        "attn_out": att.output.dense,
        "intermediate": layer.intermediate.dense,
        "output": layer.output.dense,
    }


def encoder_weight_count(model: nn.Module) -> int:
    """Current number of prunable encoder weights (the denominator/numerator of `pruning_ratio`)."""
    return sum(lin.weight.numel() for layer in encoder_layers(model) for lin in layer_linears(layer).values())


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
        return cls(
            hidden_size=config.hidden_size,
            num_attention_heads=config.num_attention_heads,
            attention_head_size=config.hidden_size // config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            layers=layers,
            method="from_config",
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


def _plan(d: EncoderDims, head_keep: Any, ffn_keep: Any, **extra: Any) -> PruningPlan:
    return PruningPlan(
        hidden_size=d.hidden_size,
        num_attention_heads=d.num_heads,
        attention_head_size=d.head_size,
        intermediate_size=d.intermediate_size,
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


def _head_rows(heads: list[int], head_size: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in heads])


def _prune(layer: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """prune_linear_layer, keeping dtype and requires_grad (it builds the new layer in the default dtype)."""
    new = prune_linear_layer(layer, index, dim=dim).to(dtype=layer.weight.dtype)
    new.requires_grad_(layer.weight.requires_grad)
    return new


def check_unpruned(model: nn.Module) -> EncoderDims:
    """Plans and scores index the unpruned shapes; refuse a model whose layers are already smaller."""
    d = encoder_dims(model)
    for i, layer in enumerate(encoder_layers(model)):
        lin = layer_linears(layer)
        rows, width = lin["query"].out_features, lin["intermediate"].out_features
        if rows != d.num_heads * d.head_size or width != d.intermediate_size:
            raise ValueError(
                f"encoder layer {i} is already pruned (query has {rows} rows, intermediate {width});"
                " prune the unpruned model instead"
            )
    return d


def apply_plan(model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Physically remove what `plan` drops (in place; returns the model). The model must be unpruned."""
    d = check_unpruned(model)
    if d != plan.dims:
        raise ValueError(f"pruning plan is for an encoder with {plan.dims}, the model has {d}")
    for layer, lp in zip(encoder_layers(model), plan.layers):
        lin = layer_linears(layer)
        if len(lp.heads) < d.num_heads:
            rows = _head_rows(lp.heads, d.head_size)
            att = layer.attention.self
            att.query, att.key, att.value = (_prune(lin[k], rows, 0) for k in ("query", "key", "value"))
            layer.attention.output.dense = _prune(lin["attn_out"], rows, 1)
            att.num_attention_heads = len(lp.heads)
            att.all_head_size = len(lp.heads) * d.head_size
        if len(lp.ffn) < d.intermediate_size:
            neurons = torch.tensor(lp.ffn)
            layer.intermediate.dense = _prune(lin["intermediate"], neurons, 0)
            layer.output.dense = _prune(lin["output"], neurons, 1)
    setattr(model.config, CONFIG_FIELD, None if plan.is_identity else plan.shapes())
    return model


def pruning_summary(model: nn.Module, plan: PruningPlan) -> dict[str, Any]:
    """Flat-ish dict for logging, computed from the pruned model and its plan (no unpruned copy needed)."""
    d = plan.dims
    removed_weights = d.total_weights - plan.kept_weights()
    layer = encoder_layers(model)[0]
    lin = layer_linears(layer)
    qkv_bias = sum(lin[k].bias is not None for k in ("query", "key", "value"))
    removed_bias = sum(
        (d.num_heads - len(lp.heads)) * qkv_bias * d.head_size
        + (d.intermediate_size - len(lp.ffn)) * int(lin["intermediate"].bias is not None)
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
