"""Structured pruning of encoders (every family in trainers/families): Block Movement Pruning, one-shot baselines, physical removal."""

from trainers.pruning.config import PruningConfig
from trainers.pruning.io import load_pruned, save_pruned
from trainers.pruning.plan import (
    LayerPlan,
    PruningPlan,
    achieved_ratio,
    apply_plan,
    encoder_weight_count,
    identity_plan,
    pruning_summary,
)
from trainers.pruning.pruner import NoOpPruner, Pruner, make_pruner

__all__ = [
    "LayerPlan",
    "NoOpPruner",
    "Pruner",
    "PruningConfig",
    "PruningPlan",
    "achieved_ratio",
    "apply_plan",
    "encoder_weight_count",
    "identity_plan",
    "load_pruned",
    "make_pruner",
    "pruning_summary",
    "save_pruned",
]
