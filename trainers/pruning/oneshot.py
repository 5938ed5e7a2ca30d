"""One-shot structured pruning: rank heads and FFN neurons once, remove the weakest before training."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from trainers.pruning.config import PruningConfig
from trainers.families.base import linear_at, slice_bounds
from trainers.pruning.plan import PruningPlan, apply_plan, encoder_dims, family, select_plan
from trainers.pruning.static import StaticPruner

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def _head_sq(weight: torch.Tensor, start: int, d, dim: int) -> torch.Tensor:
    """[H] sum of squares of each head's rows (dim 0, from `start`) or columns (dim 1) of `weight`."""
    span = weight.narrow(dim, start, d.num_heads * d.head_size).float().pow(2)
    return span.reshape(d.num_heads, -1).sum(1) if dim == 0 else span.reshape(-1, d.num_heads, d.head_size).sum((0, 2))


def magnitude_importance(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """[L, H] L2 norm of each head's Q/K/V (and per-head projection) rows and O columns; [L, F] of each
    neuron's FFN-in rows (two for a GLU) and FFN-out column."""
    adapter, d = family(model), encoder_dims(model)
    heads, neurons = [], []
    with torch.no_grad():
        for layer in adapter.layers(model):
            lay = adapter.layout(layer)
            sq = sum(_head_sq(linear_at(layer, r.path).weight, slice_bounds(layer, r)[0], d, 0) for r in lay.head_slices)
            heads.append((sq + _head_sq(linear_at(layer, lay.o).weight, 0, d, 1)).sqrt())
            nsq = linear_at(layer, lay.ffn_out).weight.float().pow(2).sum(0)
            for r in lay.ffn_in:
                w = linear_at(layer, r.path).weight
                nsq = nsq + w.narrow(0, slice_bounds(layer, r)[0], d.intermediate_size).float().pow(2).sum(1)
            neurons.append(nsq.sqrt())
    return torch.stack(heads).cpu(), torch.stack(neurons).cpu()


def taylor_importance(model: nn.Module, batches: Iterable[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order Taylor estimate of the loss change from masking each head / neuron output.

    For a mask m on a head's (neuron's) output, dL/dm = sum over its O (FFN-out) columns of W * dL/dW;
    importance = sum over batches of |dL/dm| (Michel et al. 2019; Molchanov et al. 2019).
    """
    adapter, d = family(model), encoder_dims(model)
    layers = adapter.layers(model)
    outs = [(linear_at(l, adapter.layout(l).o), linear_at(l, adapter.layout(l).ffn_out)) for l in layers]
    heads = torch.zeros(d.num_layers, d.num_heads)
    neurons = torch.zeros(d.num_layers, d.intermediate_size)
    device = next(model.parameters()).device
    was_training, seen = model.training, 0
    model.eval()  # no dropout: the estimate should not depend on the dropout draw
    try:
        for batch in batches:
            if "labels" not in batch:
                raise ValueError(f"taylor importance needs 'labels' in each calibration batch, got {sorted(batch)}")
            inputs = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
            model.zero_grad(set_to_none=True)
            model(**inputs).loss.backward()
            with torch.no_grad():
                for i, (o_lin, out_lin) in enumerate(outs):
                    o, out = o_lin.weight, out_lin.weight
                    heads[i] += (o * o.grad).float().reshape(d.hidden_size, d.num_heads, -1).sum((0, 2)).abs().cpu()
                    neurons[i] += (out * out.grad).float().sum(0).abs().cpu()
            seen += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if seen == 0:
        raise ValueError("taylor importance needs at least one calibration batch (got none)")
    return heads, neurons


class OneShotPruner(StaticPruner):
    """Scores and physically prunes in prepare(); training afterwards just fine-tunes the smaller model."""

    def __init__(self, model: nn.Module, ratio: float, cfg: PruningConfig):
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
        self.ratio, self.cfg = ratio, cfg
        self.plan: PruningPlan | None = None

    def prepare(self, model: nn.Module, calib_batches: Iterable[dict] | None = None) -> None:
        if self.cfg.one_shot_importance == "taylor":
            if calib_batches is None:
                raise ValueError("one_shot_importance='taylor' needs calibration batches (prepare(model, batches))")
            heads, neurons = taylor_importance(model, calib_batches)
        else:
            heads, neurons = magnitude_importance(model)
        self.plan = select_plan(heads, neurons, self.ratio, encoder_dims(model), ffn_round_to=self.cfg.ffn_round_to,
                                method=f"one_shot/{self.cfg.one_shot_importance}")
        apply_plan(model, self.plan)

    def finalize(self, model: nn.Module) -> PruningPlan:
        if self.plan is None:
            raise RuntimeError("finalize() called before prepare()")
        return self.plan
