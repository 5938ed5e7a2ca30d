"""Calibration for `sweep check`: seconds per training step of the students a sweep will train.

A few real optimiser steps (after a warm-up step) of the teacher-as-student at ratio 0 and of
pruned students, through the same pruner and training loop a trial uses, so that the orchestrator
can estimate a sweep's wall time as steps per trial x seconds per step x distinct trainings.
Block movement pruning trains the full shapes under masks (weights are removed only at the end),
so its students cost what the teacher costs per step; one-shot pruning trains the smaller model.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import torch
from pydantic import BaseModel

from trainers.config import TrainingConfig
from trainers.pruning import PruningConfig, encoder_weight_count, load_pruned, make_pruner
from trainers.train import Batch, batches, train


class StepTiming(BaseModel):
    pruning_ratio: float
    seconds_per_step: float
    steps_timed: int
    warmup_steps: int
    trained_weights: int  # encoder attention + FFN weights of the model the steps trained
    precision: str
    device: str


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_training_steps(teacher_dir: str | Path, train_split: Batch, training: TrainingConfig, pruning: PruningConfig,
                        ratios: list[float], *, precision: str = "fp32", device: str = "cpu", steps: int = 5,
                        warmup: int = 1, alpha: float = 0.0) -> list[StepTiming]:
    """Time `steps` training steps (after `warmup` untimed ones) for each pruning ratio, in `precision`
    (the precision the student trains in: fp32 for int8 points)."""
    if steps < 1 or warmup < 1:
        raise ValueError(f"calibration needs steps >= 1 and warmup >= 1 (got steps={steps}, warmup={warmup})")
    n = train_split["labels"].shape[0]
    soft = torch.zeros(n, 1) if alpha > 0 else None  # distilling from cached logits costs an index, not a forward
    timings = []
    for ratio in ratios:
        model, _ = load_pruned(teacher_dir)
        if soft is not None:
            soft = torch.zeros(n, model.config.num_labels)
        pruner = make_pruner(model, ratio, pruning)
        pruner.prepare(model, list(itertools.islice(batches(train_split, training.batch_size, shuffle=True,
                                                             seed=training.seed), 8)))
        stamps: dict[int, float] = {}

        def on_step(step: int, total: int, epoch: float) -> bool:
            _sync(device)
            stamps[step] = time.perf_counter()
            return step >= warmup + steps

        budget = training.model_copy(update={"epochs": float(warmup + steps + 1)})  # never runs out of rows
        train(model, train_split, budget, device=device, precision=precision, alpha=alpha, temperature=2.0,
              teacher_logits=soft, pruner=pruner, score_lr=pruning.scores_lr, log=lambda _: None, on_step=on_step)
        last = max(stamps)
        timed = last - warmup
        timings.append(StepTiming(pruning_ratio=ratio, seconds_per_step=(stamps[last] - stamps[warmup]) / timed,
                                  steps_timed=timed, warmup_steps=warmup, trained_weights=encoder_weight_count(model),
                                  precision=precision, device=device))
        del model, pruner
    return timings
