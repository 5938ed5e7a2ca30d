"""Structured pruning of encoders (every family in trainers/families): Block Movement Pruning, one-shot baselines,
physical removal.

Names load on first use (PEP 562), so `import trainers.pruning.config` and the
read-only commands do not import torch."""

from __future__ import annotations

from trainers.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "LayerPlan": "trainers.pruning.plan",
    "NoOpPruner": "trainers.pruning.pruner",
    "Pruner": "trainers.pruning.pruner",
    "PruningConfig": "trainers.pruning.config",
    "PruningPlan": "trainers.pruning.plan",
    "achieved_ratio": "trainers.pruning.plan",
    "apply_plan": "trainers.pruning.plan",
    "encoder_weight_count": "trainers.pruning.plan",
    "identity_plan": "trainers.pruning.plan",
    "load_pruned": "trainers.pruning.io",
    "make_pruner": "trainers.pruning.pruner",
    "pruning_summary": "trainers.pruning.plan",
    "save_pruned": "trainers.pruning.io",
})
