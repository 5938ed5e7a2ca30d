"""The interface the training loop drives, and the factory that picks an implementation."""

from __future__ import annotations

from typing import Iterable, Protocol

import torch
from torch import nn

from trainers.pruning.config import PruningConfig
from trainers.pruning.movement import BlockMovementPruner
from trainers.pruning.oneshot import OneShotPruner
from trainers.pruning.plan import PruningPlan, check_unpruned, encoder_layers, identity_plan
from trainers.pruning.static import StaticPruner


class Pruner(Protocol):
    """prepare -> (each step: loss += penalty(); optimizer step; on_step) -> finalize."""

    def prepare(self, model: nn.Module, calib_batches: Iterable[dict] | None) -> None: ...
    def score_parameters(self) -> list[nn.Parameter]: ...
    def on_step(self, step: int, total_steps: int) -> None: ...
    def penalty(self) -> torch.Tensor: ...
    def finalize(self, model: nn.Module) -> PruningPlan: ...


class NoOpPruner(StaticPruner):
    """ratio 0: touches nothing, returns the identity plan."""

    def prepare(self, model: nn.Module, calib_batches: Iterable[dict] | None = None) -> None:
        encoder_layers(model)  # still fail early on a family no adapter handles

    def finalize(self, model: nn.Module) -> PruningPlan:
        return identity_plan(model)


def make_pruner(model: nn.Module, ratio: float, cfg: PruningConfig) -> Pruner:
    """`ratio` = fraction of encoder attention + FFN weights to remove, hit within a point by every method and
    mode (threshold mode calibrates its final threshold to it)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
    check_unpruned(model)
    if ratio == 0.0:
        return NoOpPruner()
    if cfg.method == "one_shot":
        return OneShotPruner(model, ratio, cfg)
    return BlockMovementPruner(model, ratio, cfg)
