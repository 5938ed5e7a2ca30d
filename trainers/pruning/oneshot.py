"""One-shot structured pruning: rank heads and FFN neurons once, remove the weakest before training."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from trainers.pruning.config import PruningConfig
from trainers.pruning.plan import PruningPlan, apply_plan, encoder_dims, encoder_layers, layer_linears, select_plan
from trainers.pruning.static import StaticPruner

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def magnitude_importance(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """[L, H] L2 norm of each head's Q/K/V rows and O columns; [L, F] of each neuron's row and column."""
    d = encoder_dims(model)
    heads, neurons = [], []
    with torch.no_grad():
        for layer in encoder_layers(model):
            lin = {k: v.weight.float() for k, v in layer_linears(layer).items()}
            sq = sum(lin[k].pow(2).reshape(d.num_heads, -1).sum(1) for k in ("query", "key", "value"))
            sq = sq + lin["attn_out"].pow(2).reshape(d.hidden_size, d.num_heads, -1).sum((0, 2))
            heads.append(sq.sqrt())
            neurons.append((lin["intermediate"].pow(2).sum(1) + lin["output"].pow(2).sum(0)).sqrt())
    return torch.stack(heads).cpu(), torch.stack(neurons).cpu()


def taylor_importance(model: nn.Module, batches: Iterable[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order Taylor estimate of the loss change from masking each head / neuron output.

    For a mask m on a head's (neuron's) output, dL/dm = sum over its O (output) columns of W * dL/dW;
    importance = sum over batches of |dL/dm| (Michel et al. 2019; Molchanov et al. 2019).
    """
    d = encoder_dims(model)
    layers = encoder_layers(model)
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
                for i, layer in enumerate(layers):
                    o, out = layer.attention.output.dense.weight, layer.output.dense.weight
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
