"""Per-row predictions: the file every statistic in the table can be recomputed from.

`predictions.npz` (numpy's compressed archive, `numpy.load` reads it) sits in a trial's folder (all
its seeds) and in the teacher baseline's folder (one model), and is logged as an MLflow artifact on
its run. For each split prefix `p` (`val`, `test`):

- `p_row_id` (n,) int64: the row's index in the split, in the split's order (the pairing key)
- `p_gold` (n,) int64: the gold label id
- `p_pred` (S, n) int64: the label each of the S models predicted (argmax of its logits)
- `p_logits` (S, n, C) float32: each model's logits (scores before softmax)

and `seeds` (S,) int64, the training seeds in order, and `kept` () int64, the index of the seed whose
model was saved and shipped. numpy only, so the orchestrator reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

PREDICTIONS_FILE = "predictions.npz"
SPLITS = {"validation": "val", "test": "test"}  # split name -> prefix of its arrays (and of its metrics)


@dataclass
class SplitRows:
    """One split's predictions of S models on the same n rows."""

    row_id: np.ndarray
    gold: np.ndarray
    logits: np.ndarray  # (S, n, C)

    @property
    def pred(self) -> np.ndarray:
        return self.logits.argmax(-1)

    @property
    def correct(self) -> np.ndarray:
        """(S, n) booleans: did model s get row r right."""
        return self.pred == self.gold[None, :]

    def accuracies(self) -> np.ndarray:
        return self.correct.mean(axis=1)


@dataclass
class Predictions:
    splits: dict[str, SplitRows]  # by prefix: "val", "test"
    seeds: list[int] = field(default_factory=lambda: [0])
    kept: int = 0


def rows_of(gold, logits) -> SplitRows:
    """One model's predictions on one split (gold labels and logits in the split's order)."""
    gold = np.asarray(gold, dtype=np.int64).reshape(-1)
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[0] != gold.shape[0]:
        raise ValueError(f"logits of shape {logits.shape} do not match {gold.shape[0]} gold labels")
    return SplitRows(row_id=np.arange(gold.shape[0], dtype=np.int64), gold=gold, logits=logits[None])


def stack(per_seed: Sequence[dict[str, SplitRows]], seeds: Sequence[int], kept: int = 0) -> Predictions:
    """Every seed's one-model predictions as one file's content (same rows, same gold, in every seed)."""
    if len(per_seed) != len(seeds) or not per_seed:
        raise ValueError(f"{len(per_seed)} prediction sets for {len(seeds)} seeds")
    splits = {}
    for prefix in per_seed[0]:
        parts = [p[prefix] for p in per_seed]
        first = parts[0]
        for i, part in enumerate(parts[1:], 1):
            if not (np.array_equal(part.row_id, first.row_id) and np.array_equal(part.gold, first.gold)):
                raise ValueError(f"seed {seeds[i]}: its {prefix} rows or gold labels differ from seed {seeds[0]}'s")
        splits[prefix] = SplitRows(first.row_id, first.gold, np.concatenate([p.logits for p in parts]))
    return Predictions(splits=splits, seeds=[int(s) for s in seeds], kept=int(kept))


def save(path: str | Path, predictions: Predictions) -> Path:
    arrays: dict[str, np.ndarray] = {"seeds": np.asarray(predictions.seeds, dtype=np.int64),
                                     "kept": np.asarray(predictions.kept, dtype=np.int64)}
    for prefix, rows in predictions.splits.items():
        arrays.update({f"{prefix}_row_id": rows.row_id, f"{prefix}_gold": rows.gold,
                       f"{prefix}_pred": rows.pred.astype(np.int64), f"{prefix}_logits": rows.logits.astype(np.float32)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


def load(path: str | Path) -> Predictions:
    with np.load(Path(path), allow_pickle=False) as f:
        splits = {prefix: SplitRows(f[f"{prefix}_row_id"], f[f"{prefix}_gold"], f[f"{prefix}_logits"])
                  for prefix in SPLITS.values() if f"{prefix}_gold" in f.files}
        return Predictions(splits=splits, seeds=[int(s) for s in f["seeds"]], kept=int(f["kept"]))
