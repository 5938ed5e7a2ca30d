"""Train once, measure many: trials whose training is identical share one trained student.

int8 is post-training dynamic quantisation of an fp32-trained student, and the distillation
temperature has no effect when alpha is 0, so several points of a sweep train the very same
weights. `training_key` hashes everything that determines the trained weights and nothing about how
the result is run afterwards; `train_once` lets the first trial with a key train and save it under
`<root>/<key>/` while any other trial with that key waits on the key's file lock and then loads it.

Crash safety: the trainer writes into `<key>.tmp-<pid>/` and renames it to `<key>/` only when the
model and its `DONE` marker are complete; the lock is an OS file lock, released when its process
dies; a later claimant removes the leftovers and trains again.

What every variant of a training would otherwise redo (the ONNX export and its parity check) is made
once beside it by `derive_once`, under the same lock and with the same write-then-rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from trainers.config import TrialConfig
from trainers.precision import train_precision

DONE = "DONE"
META_FILE = "training.json"

# TrialConfig fields that do not change the trained weights: where things are, and how the trained
# student is run afterwards. A new field is part of the key unless it is named here, so a forgotten
# field costs a retraining, never a wrong reuse.
NOT_TRAINING_FIELDS = {"name", "teacher_dir", "teacher_logits", "data_base_dir", "cache_dir", "measure", "precision",
                       "output_dir", "measure_lock", "save_model", "trainings_dir", "runtime", "export_onnx",
                       "onnx_variants", "await_verdict_s"}
# inside `training:`: evaluation never touches the weights; `seeds` is how many trainings, each keyed by its own `seed`
NOT_TRAINING_SETTINGS = {"eval_batch_size", "eval_every_steps", "seeds"}


def training_key(cfg: TrialConfig, *, teacher_fingerprint: str, data_fingerprint: str) -> str:
    """Hash of what determines the trained student: teacher, data, training settings and seed, pruning
    settings and ratio, distillation alpha (and T only when alpha > 0), and the precision it TRAINS in
    (int8 trains in fp32, so fp32 and int8 points share; bf16 trains in bf16, so it does not)."""
    doc = cfg.model_dump(mode="json", exclude=NOT_TRAINING_FIELDS)
    doc["training"] = {k: v for k, v in doc["training"].items() if k not in NOT_TRAINING_SETTINGS}
    if cfg.distill_alpha == 0:
        doc.pop("distill_temperature")  # no soft targets: T is never used
    if cfg.pruning_ratio == 0:
        doc.pop("pruning")  # nothing is pruned: the pruning method's settings are never used
    doc.update(train_precision=train_precision(cfg.precision), teacher=teacher_fingerprint, data=data_fingerprint)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class SharedTraining:
    key: str
    dir: Path
    meta: dict
    trained_now: bool  # False: this trial reused a training another trial did (meta["trained_by"] says which)

    @property
    def model_dir(self) -> Path:
        return self.dir / "model"


def find_training(root: str | Path, key: str) -> SharedTraining | None:
    """The completed training for `key`, or None (never a half-written one)."""
    final = Path(root) / key
    if not (final / DONE).exists():
        return None
    return SharedTraining(key=key, dir=final, meta=json.loads((final / META_FILE).read_text()), trained_now=False)


def train_once(root: str | Path, key: str, build: Callable[[Path], dict | None], *,
               log: Callable[[str], None] = print) -> SharedTraining | None:
    """Reuse the training for `key`, or train it: `build(model_dir)` trains, saves the model into
    `model_dir` and returns what to remember about the training (steps, seconds, energy, who trained).

    `build` returning None (e.g. training stopped early) or raising leaves nothing behind; another
    trial with the key will then train it. Returns None exactly when `build` returned None.
    """
    root = Path(root)
    if (found := find_training(root, key)) is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    lock = FileLock(str(final) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"training {key}: another trial is training it; waiting to reuse it")
        lock.acquire()
    try:
        if (found := find_training(root, key)) is not None:
            return found
        for stale in root.glob(f"{key}.tmp-*"):  # left by a claimant that died; the lock says it is gone
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f"{key}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            meta = build(tmp / "model")
            if meta is None:
                return None
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
            (tmp / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
            shutil.rmtree(final, ignore_errors=True)  # an incomplete folder (no DONE) from an older layout
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return SharedTraining(key=key, dir=final, meta=meta, trained_now=True)
    finally:
        lock.release()


def derive_once(root: str | Path, key: str, name: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """`<root>/<key>/<name>/`: something derived from the completed training `key` (e.g. its ONNX graphs),
    built once by `build(folder)` under the training's lock; (folder, True) when built by this call.

    `build` writes into a temporary folder renamed into place when it returns, so a crash leaves no
    half-derived folder, and the next caller builds it again.
    """
    shared = Path(root) / key
    if not (shared / DONE).exists():
        raise FileNotFoundError(f"{shared}: no completed training to derive {name!r} from")
    final = shared / name
    if (final / DONE).exists():
        return final, False
    with FileLock(str(shared) + ".lock"):
        if (final / DONE).exists():
            return final, False
        for stale in shared.glob(f"{name}.tmp-*"):  # a builder that died; the lock says it is gone
            shutil.rmtree(stale, ignore_errors=True)
        tmp = shared / f"{name}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            build(tmp)
            (tmp / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final, True
