"""Tokenise once per study: every trial and worker reads the same safetensors file.

Padding: each split is padded to its own longest sequence, capped at max_seq_len (texts beyond it are
truncated). Short-text data (headlines) thus costs ~30 positions instead of max_seq_len; a trainer that
wants less padding per batch can trim columns beyond `attention_mask[batch].sum(1).max()`.

The cache key hashes the cleaned data (`fingerprint`), the tokenizer's identity and max_seq_len, so any
change in data, tokenizer or length is a miss and nothing stale is ever read. Two processes building the
same entry at once serialise on a file lock; the file appears by atomic rename, so readers never see a
half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from trainers.data.config import SPLITS
from trainers.data.load import LoadedData

if TYPE_CHECKING:
    import torch

_FIELDS = ("input_ids", "attention_mask", "labels")
_VERSION = "trainers.data.encode/v1"


def fingerprint(loaded: LoadedData) -> str:
    """Stable sha256 of the cleaned data (label names, and texts + label ids of every split, in order)."""
    h = hashlib.sha256(b"trainers.data/v1\0")
    h.update(json.dumps(loaded.label_names, ensure_ascii=False).encode())
    for name in sorted(loaded.splits):
        split = loaded.splits[name]
        h.update(json.dumps([name, split.texts, split.labels], ensure_ascii=False).encode())
    return h.hexdigest()


def tokenizer_identity(tokenizer) -> str:
    """name_or_path + class + size + a hash of everything that decides the ids (full pipeline when available)."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # fast tokenizers: normaliser, pre-tokeniser, vocab, post-processor in one JSON
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)  # call-time state, changed by every tokenizer(..., truncation=...) call
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    for attr in ("padding_side", "pad_token_id", "model_input_names"):
        h.update(repr(getattr(tokenizer, attr, None)).encode())
    name = getattr(tokenizer, "name_or_path", "") or ""
    return f"{type(tokenizer).__name__}:{name}:{len(tokenizer)}:{h.hexdigest()[:16]}"


def cache_key(loaded: LoadedData, tokenizer, max_seq_len: int) -> str:
    payload = json.dumps([_VERSION, fingerprint(loaded), tokenizer_identity(tokenizer), max_seq_len])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _build(loaded: LoadedData, tokenizer, max_seq_len: int) -> dict[str, torch.Tensor]:
    import torch

    flat: dict[str, torch.Tensor] = {}
    for name, split in loaded.splits.items():
        if split.texts:
            enc = tokenizer(
                list(split.texts), truncation=True, max_length=max_seq_len, padding="longest", return_tensors="pt"
            )
            ids, mask = enc["input_ids"], enc["attention_mask"]
        else:
            ids = mask = torch.zeros((0, 0), dtype=torch.int64)
        flat[f"{name}.input_ids"] = ids.to(torch.int64).contiguous()
        flat[f"{name}.attention_mask"] = mask.to(torch.int64).contiguous()
        flat[f"{name}.labels"] = torch.tensor(split.labels, dtype=torch.int64)
    return flat


def _nest(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{"train.input_ids": t} -> {"train": {"input_ids": t}}, splits in train/validation/test order."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key in sorted(flat, key=lambda k: (SPLITS.index(k.rsplit(".", 1)[0]), _FIELDS.index(k.rsplit(".", 1)[1]))):
        split, field = key.rsplit(".", 1)
        out.setdefault(split, {})[field] = flat[key]
    return out


def _read(path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except FileNotFoundError:
        return None
    except SafetensorError:  # damaged by something outside our atomic write: rebuild
        return None


def encode_cached(
    loaded: LoadedData, tokenizer, *, max_seq_len: int, cache_dir: Path
) -> dict[str, dict[str, torch.Tensor]]:
    """Per split {"input_ids", "attention_mask", "labels"} (int64), from cache_dir or built once and stored."""
    from safetensors.torch import save_file

    cache_dir = Path(cache_dir)
    path = cache_dir / f"tokens-{cache_key(loaded, tokenizer, max_seq_len)}.safetensors"
    flat = _read(path)
    if flat is not None:
        return _nest(flat)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        flat = _read(path)  # another process may have built it while we waited
        if flat is None:
            flat = _build(loaded, tokenizer, max_seq_len)
            meta = {
                "fingerprint": fingerprint(loaded),
                "tokenizer": tokenizer_identity(tokenizer),
                "max_seq_len": str(max_seq_len),
                "label_names": json.dumps(loaded.label_names, ensure_ascii=False),
            }
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file(flat, tmp, metadata=meta)
            os.replace(tmp, path)
    return _nest(flat)
