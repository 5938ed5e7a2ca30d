"""The part of the Pruner protocol that pruners which learn nothing during training share."""

from __future__ import annotations

import torch
from torch import nn


class StaticPruner:
    """No scores, no schedule, no penalty: the structure is decided before training (one-shot) or not at all."""

    def score_parameters(self) -> list[nn.Parameter]:
        return []

    def on_step(self, step: int, total_steps: int) -> None:
        pass

    def penalty(self) -> torch.Tensor:
        return torch.zeros(())
