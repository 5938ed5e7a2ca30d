"""Quality on a held-out split: accuracy and macro F1 from one pass over labelled batches."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterable, Mapping

import torch
from torch import nn

Batch = Mapping[str, torch.Tensor]


def predict(model: nn.Module, batches: Iterable[Batch], *, num_labels: int, device: str,
            autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """(gold labels (n,), logits (n, num_labels) as fp32 on the CPU) over all batches, in order, in eval and
    inference mode (the model's mode is restored)."""
    golds, logits_all = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i, batch in enumerate(batches):
                if "labels" not in batch:
                    raise ValueError(f"batch {i} has no 'labels' (keys: {sorted(batch)})")
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                with autocast():
                    logits = model(**inputs).logits
                gold, out = batch_rows(batch["labels"], logits, num_labels, i)
                golds.append(gold)
                logits_all.append(out)
    finally:
        model.train(was_training)
    if not golds or sum(g.numel() for g in golds) == 0:
        raise ValueError("no test examples: `batches` was empty")
    return torch.cat(golds), torch.cat(logits_all)


def batch_rows(labels: torch.Tensor, logits: torch.Tensor, num_labels: int, i: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's (gold labels, fp32 logits) on the CPU, checked: labels in range, one logit per label."""
    labels = labels.to("cpu").long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(f"batch {i}: labels must lie in [0, {num_labels}), "
                         f"got min {int(labels.min())} max {int(labels.max())}")
    if logits.shape[-1] != num_labels:
        raise ValueError(f"model outputs {logits.shape[-1]} logits, expected num_labels={num_labels}")
    return labels, logits.detach().float().to("cpu")


def scores_and_rows(gold: torch.Tensor, logits: torch.Tensor, num_labels: int):
    """Scores (see `evaluate`) of per-row (gold, logits), and the rows as numpy arrays."""
    return scores_from_confusion(confusion_from(gold, logits, num_labels)), (gold.numpy(), logits.numpy())


def confusion_from(gold: torch.Tensor, logits: torch.Tensor, num_labels: int) -> torch.Tensor:
    preds = logits.argmax(dim=-1)
    return torch.bincount(gold * num_labels + preds, minlength=num_labels**2).view(num_labels, -1)


def confusion_matrix(model: nn.Module, batches: Iterable[Batch], *, num_labels: int, device: str,
                     autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> torch.Tensor:
    """Counts[gold, predicted] over all batches, in eval and inference mode (the model's mode is restored)."""
    gold, logits = predict(model, batches, num_labels=num_labels, device=device, autocast=autocast)
    return confusion_from(gold, logits, num_labels)


def scores_from_confusion(counts: torch.Tensor) -> dict[str, Any]:
    """Accuracy and F1 per class present in gold or predictions (absent classes are left out, as sklearn does)."""
    counts = counts.double()
    tp = counts.diag()
    gold = counts.sum(dim=1)
    pred = counts.sum(dim=0)
    per_class = {
        int(c): float(2 * tp[c] / (gold[c] + pred[c]))
        for c in range(counts.shape[0])
        if gold[c] + pred[c] > 0
    }
    return {
        "accuracy": float(tp.sum() / counts.sum()),
        "macro_f1": sum(per_class.values()) / len(per_class),
        "per_class_f1": per_class,
        "num_examples": int(counts.sum()),
    }


def evaluate(model: nn.Module, batches: Iterable[Batch], *, num_labels: int, device: str = "cpu",
             autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> dict[str, Any]:
    """accuracy (fraction 0-1), macro_f1, per_class_f1 {label index: F1} and num_examples.

    Called once per split by `measure_model`: on validation batches the scores decide (`val_*`), on
    test batches they are only reported (`test_*`); never pass training data. Batches are dicts with input_ids,
    attention_mask (any other model inputs too) and labels. `autocast` is the caller's precision
    context factory, so accuracy is measured in the precision the model is deployed in.
    """
    return evaluate_rows(model, batches, num_labels=num_labels, device=device, autocast=autocast)[0]


def evaluate_rows(model: nn.Module, batches: Iterable[Batch], *, num_labels: int, device: str = "cpu",
                  autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext):
    """`evaluate`'s scores and the per-row (gold, logits) they were computed from (numpy arrays)."""
    gold, logits = predict(model, batches, num_labels=num_labels, device=device, autocast=autocast)
    return scores_and_rows(gold, logits, num_labels)
