"""Save and load (possibly pruned) models: the project's one way to read a model folder back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import safe_open
from torch import nn
from torch.nn.utils import parametrize
from transformers import AutoConfig, AutoTokenizer

from trainers.deploy.folder import build_portable, is_portable, portable_classes_of, save_portable
from trainers.pruning.plan import CONFIG_FIELD, PruningPlan, apply_plan
from trainers.models import unloaded

PLAN_FILE = "pruning_plan.json"


def save_pruned(model: nn.Module, tokenizer: Any, plan: PruningPlan | None, out_dir: str | Path,
                precision: str = "fp32") -> Path:
    """A portable folder: safetensors at `precision` (int8 weights + scales, bf16, fp16 or fp32), a config with
    per-layer head counts and FFN widths, the modeling file plain transformers loads it with
    (`trust_remote_code=True`), the tokenizer and pruning_plan.json."""
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("model still carries pruning masks: call pruner.finalize(model) before saving")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_portable(model, out, precision)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    if plan is not None:
        plan.save(out / PLAN_FILE)
    return out


def _model_class(config: Any, model_dir: Path) -> type:
    names = getattr(config, "architectures", None) or []
    for name in names:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise ValueError(f"{model_dir}/config.json: architectures={names!r} names no transformers model class")


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / s for s in shards]
    single = model_dir / "model.safetensors"
    if single.exists():
        return [single]
    raise FileNotFoundError(f"{model_dir}: no model.safetensors(.index.json); pruned models are saved as safetensors")


def load_state_strict(model: nn.Module, model_dir: Path) -> None:
    """Load safetensors into `model`, refusing unknown, missing (except tied) or wrongly shaped tensors."""
    expected = model.state_dict()
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(model_dir):
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                if key not in expected:
                    raise ValueError(f"{file}: tensor {key!r} is not a parameter of {type(model).__name__}")
                shape = tuple(f.get_slice(key).get_shape())
                if shape != tuple(expected[key].shape):
                    raise ValueError(
                        f"{file}: tensor {key!r} has shape {list(shape)}, the architecture built from config.json"
                        f" (+ {PLAN_FILE}) expects {list(expected[key].shape)}"
                    )
                state[key] = f.get_tensor(key)
    missing = sorted(set(expected) - set(state) - tied)
    if missing:
        raise ValueError(f"{model_dir}: weights missing for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        model.to(dtypes.pop())  # keep the saved precision (fp16/bf16 students stay that way)
    model.load_state_dict(state, strict=False)
    if tied:
        model.tie_weights()


def read_plan(model_dir: str | Path, config: Any | None = None) -> PruningPlan | None:
    """The folder's plan: pruning_plan.json, else the shapes recorded in config.json, else None (unpruned)."""
    model_dir = Path(model_dir)
    if (model_dir / PLAN_FILE).exists():
        return PruningPlan.load(model_dir / PLAN_FILE)
    if config is None and is_portable(model_dir):
        config = portable_classes_of(model_dir)[0].from_pretrained(model_dir)
    config = config or AutoConfig.from_pretrained(model_dir)
    shapes = getattr(config, CONFIG_FIELD, None)
    return PruningPlan.from_shapes(config, shapes) if shapes else None


def load_pruned(model_dir: str | Path) -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizer or None) from a folder written by save_pruned or save_pretrained."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir}: no config.json (not a saved model folder)")
    if is_portable(model_dir):  # shapes and storage from config.json, via this project's copy of the modeling file
        model = build_portable(model_dir)
        load_state_strict(model, model_dir)
        return model.eval(), _tokenizer(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    plan = read_plan(model_dir, config)
    cls = _model_class(config, model_dir)
    if plan is None:
        model, info = cls.from_pretrained(model_dir, output_loading_info=True)
        problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if problems:
            raise ValueError(f"{model_dir}: weights do not match {cls.__name__}: {problems}")
    else:
        model = unloaded(cls, config)  # every weight is loaded below, strictly
        apply_plan(model, plan)
        load_state_strict(model, model_dir)
    return model.eval(), _tokenizer(model_dir)


def _tokenizer(model_dir: Path) -> Any:
    # Never run code shipped in a folder: the tokenizer files say their class; the modeling file (auto_map)
    # is for users of plain transformers, and this project builds the model from its own copy.
    if not (model_dir / "tokenizer_config.json").exists():
        return None
    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
