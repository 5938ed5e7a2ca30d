"""The training loop: one readable function for the teacher's fine-tune and every student.

Distillation, pruning and precision plug in as arguments; the loop itself stays plain
(nanoGPT style): batch -> forward under autocast -> loss -> scaled backward -> step.

Early stopping is a protocol, not a policy: the loop evaluates validation accuracy every epoch (or
every `eval_every_steps`) and asks `on_eval(step, epoch, val_accuracy)`; `on_step(step, total_steps,
epoch)` is called after every optimiser step (progress, stop requests). Either returning True stops
the loop cleanly after that step, and `TrainStats.stopped_early` / `stopped_at_step` say so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from trainers.config import TrainingConfig
from trainers.distill import distillation_loss, hidden_state_loss
from trainers.precision import autocast, grad_scaler

Batch = dict[str, torch.Tensor]
OnStep = Callable[[int, int, float], "bool | None"]  # (step, total_steps, epoch) -> stop?
OnEval = Callable[[int, float, float], "bool | None"]  # (step, epoch, val_accuracy) -> stop?


@dataclass
class TrainStats:
    steps: int = 0
    epochs: float = 0.0
    seconds: float = 0.0
    final_loss: float = math.nan
    val_accuracy: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)  # the step after which each val_accuracy was measured
    total_steps: int = 0  # the planned budget
    stopped_early: bool = False
    stopped_at_step: int | None = None


def planned_steps(n_rows: int, cfg: TrainingConfig) -> int:
    """Optimiser steps of a full training budget over `n_rows` training rows."""
    return max(1, math.ceil(cfg.epochs * math.ceil(n_rows / cfg.batch_size)))


def batches(
    split: Batch, batch_size: int, *, shuffle: bool, seed: int = 0, extra: dict[str, torch.Tensor] | None = None
):
    """Yield dict batches, each trimmed to its longest sequence (short texts cost short compute)."""
    n = split["labels"].shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        mask = split["attention_mask"][idx]
        width = int(mask.sum(dim=1).max().item()) or 1
        batch = {
            "input_ids": split["input_ids"][idx, :width],
            "attention_mask": mask[:, :width],
            "labels": split["labels"][idx],
        }
        for key, tensor in (extra or {}).items():
            batch[key] = tensor[idx]
        yield batch


def _to(batch: Batch, device: str) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.inference_mode()
def predict_logits(model: nn.Module, split: Batch, *, batch_size: int, device: str, precision: str = "fp32",
                   on_step: OnStep | None = None) -> torch.Tensor:
    """Logits for a whole split in its original order, as fp32 on the CPU (`on_step` per batch: progress)."""
    model.eval()
    ctx = autocast(precision, device)
    out = []
    total = math.ceil(split["labels"].shape[0] / batch_size)
    for i, batch in enumerate(batches(split, batch_size, shuffle=False), start=1):
        batch = _to(batch, device)
        with ctx():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out.append(logits.float().cpu())
        if on_step is not None:
            on_step(i, total, 0.0)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, split: Batch, *, batch_size: int, device: str, precision: str = "fp32") -> float:
    logits = predict_logits(model, split, batch_size=batch_size, device=device, precision=precision)
    return float((logits.argmax(-1) == split["labels"]).float().mean().item())


def train(
    model: nn.Module,
    train_split: Batch,
    cfg: TrainingConfig,
    *,
    device: str,
    precision: str = "fp32",
    alpha: float = 0.0,
    temperature: float = 1.0,
    teacher_logits: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
    pruner=None,
    score_lr: float | None = None,
    val_split: Batch | None = None,
    eval_every_steps: int | None = None,
    on_step: OnStep | None = None,
    on_eval: OnEval | None = None,
    log: Callable[[str], None] = print,
) -> TrainStats:
    """Train `model` in place; returns what happened.

    The soft targets come from `teacher_logits` (cached, aligned with the training split's rows) or,
    when only `teacher` is given, from a live teacher forward on each batch. `cfg.distill_hidden_weight` > 0
    adds that weight times `hidden_state_loss` (student vs teacher hidden states), which needs `teacher`
    (hidden states are not cached: a live forward per batch). With `val_split`,
    validation accuracy is measured after every epoch, or every `eval_every_steps` steps and after the
    last; `on_eval`/`on_step` returning True stop training after the current step.
    """
    if eval_every_steps is not None and eval_every_steps < 1:
        raise ValueError(f"eval_every_steps must be >= 1 (or None for once per epoch), got {eval_every_steps}")
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    n = train_split["labels"].shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = planned_steps(n, cfg)

    if cfg.freeze_word_embeddings:  # where the table is, is the family adapter's knowledge
        from trainers.families import adapter_for

        adapter_for(model).word_embeddings(model).weight.requires_grad_(False)
    score_params = list(pruner.score_parameters()) if pruner is not None else []
    score_ids = {id(p) for p in score_params}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in score_ids]}]
    if score_params:
        groups.append({"params": score_params, "lr": score_lr or cfg.learning_rate, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    scaler = grad_scaler(precision, device)
    ctx = autocast(precision, device)
    need_teacher = alpha > 0.0
    hidden_weight = cfg.distill_hidden_weight
    if need_teacher and teacher_logits is None and teacher is None:
        raise ValueError("distill_alpha > 0 needs cached teacher logits or a teacher model")
    if hidden_weight > 0 and teacher is None:
        raise ValueError("training.distill_hidden_weight > 0 needs the teacher model (hidden states are not cached)")
    if teacher is not None:
        teacher.to(device).eval()
    extra = {"index": torch.arange(n)}

    stats, step, t0 = TrainStats(total_steps=total_steps), 0, time.perf_counter()

    def evaluate() -> bool:
        acc = accuracy(model, val_split, batch_size=cfg.eval_batch_size, device=device, precision=precision)
        stats.val_accuracy.append(acc)
        stats.eval_steps.append(step)
        model.train()
        log(f"step {step}/{total_steps} (epoch {step / steps_per_epoch:.2f}): loss {stats.final_loss:.4f}, "
            f"validation accuracy {acc:.4f}")
        return bool(on_eval is not None and on_eval(step, step / steps_per_epoch, acc))

    epoch, stop = 0, False
    while step < total_steps and not stop:
        for batch in batches(train_split, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch, extra=extra):
            index = batch.pop("index")
            batch = _to(batch, device)
            soft, taught = None, None
            if hidden_weight > 0 or (need_teacher and teacher_logits is None):
                with torch.no_grad(), ctx():
                    taught = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     output_hidden_states=hidden_weight > 0)
            if need_teacher:
                soft = teacher_logits[index].to(device) if teacher_logits is not None else taught.logits.float()
            with ctx():
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            output_hidden_states=hidden_weight > 0)
            loss = distillation_loss(out.logits, batch["labels"], soft, alpha=alpha, temperature=temperature)
            if hidden_weight > 0:
                loss = loss + hidden_weight * hidden_state_loss(out.hidden_states, taught.hidden_states,
                                                                batch["attention_mask"])
            if pruner is not None:
                loss = loss + pruner.penalty()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            step += 1
            if pruner is not None:
                pruner.on_step(step, total_steps)
            stats.final_loss = float(loss.detach().item())
            stop = bool(on_step is not None and on_step(step, total_steps, step / steps_per_epoch))
            if not stop and eval_every_steps and val_split is not None and (
                    step % eval_every_steps == 0 or step >= total_steps):
                stop = evaluate()
            if stop or step >= total_steps:
                break
        epoch += 1
        if not stop and not eval_every_steps and val_split is not None:
            stop = evaluate()
    stats.steps, stats.epochs, stats.seconds = step, step / steps_per_epoch, time.perf_counter() - t0
    if stop and step < total_steps:
        stats.stopped_early, stats.stopped_at_step = True, step
        log(f"stopped early after step {step} of {total_steps}")
    model.eval()
    return stats
