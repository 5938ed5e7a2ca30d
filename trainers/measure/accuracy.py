"""Quality on a held-out split: accuracy and macro F1 from one pass over labelled batches."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterable, Mapping

import torch
from torch import nn

Batch = Mapping[str, torch.Tensor]


def confusion_matrix(model: nn.Module, batches: Iterable[Batch], *, num_labels: int, device: str,
                     autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> torch.Tensor:
    """Counts[gold, predicted] over all batches, in eval and inference mode (the model's mode is restored)."""
    counts = torch.zeros(num_labels, num_labels, dtype=torch.long)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.inference_mode():
            for i, batch in enumerate(batches):
                if "labels" not in batch:
                    raise ValueError(f"batch {i} has no 'labels' (keys: {sorted(batch)})")
                inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                with autocast():
                    logits = model(**inputs).logits
                seen += count_predictions(counts, batch["labels"], logits, i)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("no test examples: `batches` was empty")
    return counts


def count_predictions(counts: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, i: int = 0) -> int:
    """Add one batch's (gold, predicted) pairs to `counts` [num_labels, num_labels]; returns its rows."""
    num_labels = counts.shape[0]
    labels = labels.to("cpu").long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(f"batch {i}: labels must lie in [0, {num_labels}), "
                         f"got min {int(labels.min())} max {int(labels.max())}")
    if logits.shape[-1] != num_labels:
        raise ValueError(f"model outputs {logits.shape[-1]} logits, expected num_labels={num_labels}")
    preds = logits.argmax(dim=-1).to("cpu")
    counts += torch.bincount(labels * num_labels + preds, minlength=num_labels**2).view(num_labels, -1)
    return int(labels.numel())


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
    return scores_from_confusion(confusion_matrix(model, batches, num_labels=num_labels, device=device,
                                                  autocast=autocast))
