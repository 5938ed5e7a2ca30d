"""A model's inputs: the cleaned splits and their cached token ids, and the check that labels agree."""

from __future__ import annotations

from pathlib import Path

from trainers.data import encode_cached, load_data


def load_and_encode(data_cfg, base_dir: Path, tokenizer, *, max_seq_len: int, cache_dir: Path, report_truncation: bool = False):
    """Cleaned splits and their (cached) token ids; truncation counts only when asked (they tokenise everything)."""
    loaded = load_data(data_cfg, base_dir, max_seq_len=max_seq_len, tokenizer=tokenizer if report_truncation else None)
    encoded = encode_cached(loaded, tokenizer, max_seq_len=max_seq_len, cache_dir=cache_dir)
    return loaded, encoded


def check_labels(model, label_names: list[str], source: str) -> None:
    id2label = {int(k): v for k, v in (model.config.id2label or {}).items()}
    model_labels = [id2label.get(i) for i in range(len(id2label))]
    if model_labels != list(label_names):
        raise ValueError(f"{source}: the model's labels {model_labels} differ from the data's {label_names}")
