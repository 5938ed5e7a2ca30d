"""Settings of one pruning run; the target ratio itself is a trial parameter, not part of this config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PruningConfig(BaseModel):
    """How to prune (Block Movement Pruning, Lagunas et al. 2021, or a one-shot baseline).

    `pruning_ratio` everywhere in this project is the fraction of the encoder's attention (Q, K, V, O)
    and FFN (intermediate, output) Linear *weights* that are physically removed.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["block_movement", "one_shot"] = Field(
        "block_movement",
        description="block_movement: learn scores while fine-tuning; one_shot: remove by importance before training",
    )
    mode: Literal["topk", "threshold"] = Field(
        "topk",
        description="topk: one global budget over attention blocks and FFN neurons, ranked by score, that "
        "follows the cubic schedule to the target ratio; threshold: the paper's sigmoid(score) > threshold with "
        "L1 during training, then the final threshold is calibrated so that the target ratio is removed",
    )
    granularity: Literal["block", "head"] = Field(
        "block",
        description="block_movement: 'block' = independent block masks in Q, K, V, O and neuron masks in the FFN, "
        "hybrid filled at the end (Lagunas et al. 2021); 'head' = whole heads chosen from their mean block score "
        "and attention/FFN forced to lose the same fraction (the earlier behaviour, topk only, for comparison)",
    )
    block_size: int | Literal["head"] = Field(
        32,
        description="side of the attention score blocks (paper: 32); 'head' = one block per head and matrix. "
        "An int must divide the model's head size and hidden size (`sweep check` refuses one that does not, "
        "naming the divisors)",
    )
    ffn_round_to: int = Field(
        1, ge=1, description="round each layer's kept FFN width up to a multiple of this (8 helps CPU/GPU kernels)"
    )
    scores_lr: float = Field(1e-2, gt=0, description="learning rate of the score parameters (own optimizer group)")
    l1_lambda: float = Field(
        10.0,
        ge=0,
        description="threshold mode: weight of the L1 penalty on sigmoid(scores) (ramped with the threshold)",
    )
    initial_threshold: float = Field(0.0, ge=0, lt=1, description="threshold mode: sigmoid threshold at the start")
    final_threshold: float = Field(0.1, gt=0, lt=1, description="threshold mode: sigmoid threshold after the ramp")
    warmup_fraction: float = Field(
        0.1, ge=0, lt=1, description="fraction of steps before the cubic schedule starts (nothing is masked)"
    )
    final_fraction: float = Field(
        0.2, ge=0, lt=1, description="fraction of the last steps spent at the final ratio/threshold (masks settle)"
    )
    hybrid_filled: bool = Field(
        True,
        description="granularity 'block': heads that keep any block are kept whole with their pruned blocks "
        "restored (paper's 'hybrid filled'); this changes the function, so the trial fine-tunes again after "
        "finalize. False: kept heads keep their pruned blocks as zeros (same function as the masked model)",
    )
    refill_epochs: float = Field(
        1.0, ge=0, description="epochs of fine-tuning after a hybrid-filled finalize changed the function (0 = none)",
    )
    one_shot_importance: Literal["magnitude", "taylor"] = Field(
        "magnitude", description="one_shot: weight L2 norm, or first-order Taylor |sum W*grad| over calibration batches"
    )

    def refills(self, ratio: float) -> bool:
        """Whether a student pruned at `ratio` is planned to fine-tune again after a hybrid-filled finalize
        (it is skipped only when filling restored no block)."""
        return (ratio > 0 and self.method == "block_movement" and self.granularity == "block" and self.hybrid_filled
                and self.refill_epochs > 0)

    @model_validator(mode="after")
    def _check(self) -> PruningConfig:
        if self.warmup_fraction + self.final_fraction >= 1:
            raise ValueError(
                f"warmup_fraction + final_fraction must be < 1, got {self.warmup_fraction} + {self.final_fraction}"
            )
        if self.initial_threshold > self.final_threshold:
            raise ValueError(
                f"initial_threshold ({self.initial_threshold}) must not exceed final_threshold ({self.final_threshold})"
            )
        if self.granularity == "head" and self.mode != "topk":
            raise ValueError("granularity 'head' supports mode 'topk' only (it is kept for comparison); "
                             f"got mode {self.mode!r}")
        if isinstance(self.block_size, int) and self.block_size < 1:
            raise ValueError(f"block_size must be >= 1 or 'head', got {self.block_size}")
        return self


def block_size_problem(cfg: PruningConfig, *, head_size: int, hidden_size: int) -> str | None:
    """Why `cfg.block_size` cannot be used as given on a model with these dimensions (None when it can).

    The pruner's blocks never straddle two heads, so a side that does not divide the head size would
    silently shrink to the gcd (`block_size: 7` on MiniLM's 32-wide heads would run with 1x1 blocks)."""
    size = cfg.block_size
    if size == "head" or (head_size % size == 0 and hidden_size % size == 0):
        return None
    fits = [d for d in range(1, head_size + 1) if head_size % d == 0 and hidden_size % d == 0]
    return (f"pruning.block_size: {size} does not divide the model's head size {head_size} (hidden size "
            f"{hidden_size}); use one of {fits} or 'head'")
