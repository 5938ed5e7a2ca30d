"""A model folder that loads anywhere: config with per-layer shapes, the modeling file, weights at their precision.

`save_portable` writes what `AutoModelForSequenceClassification.from_pretrained(folder,
trust_remote_code=True)` needs in a process that has never imported this project; `load_portable`
is the project's own reader of the same folder (it uses its copy of the modeling file, so no remote
code is executed).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from trainers.deploy import modeling_pruned
from trainers.deploy.modeling_pruned import FAMILIES, encoder_blocks, quantise_int8

MODELING_FILE = "modeling_pruned.py"
WEIGHTS_FILE = "model.safetensors"
STORAGE_DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}
PORTABLE_PREFIX = "pruned_"


def base_model_type(config: Any) -> str:
    """The transformers family ('bert', 'roberta', 'xlm-roberta') of a plain or portable config."""
    model_type = config.model_type
    for family, (cfg_cls, _) in FAMILIES.items():
        if model_type in (family, cfg_cls.model_type):
            return family
    raise ValueError(f"model_type {model_type!r} has no portable pruned class; supported: {', '.join(FAMILIES)}")


def portable_config(model: nn.Module, precision: str) -> Any:
    """The model's config rewritten for the shipped modeling file: per-layer shapes, weight dtype, auto_map."""
    if precision not in STORAGE_DTYPE:
        raise ValueError(f"precision {precision!r}; expected one of {', '.join(STORAGE_DTYPE)}")
    cfg_cls, model_cls = FAMILIES[base_model_type(model.config)]
    fields = model.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "num_attention_heads_per_layer",
                "intermediate_size_per_layer", "weight_dtype", "dtype", "torch_dtype", "_name_or_path", "name_or_path"):
        fields.pop(key, None)
    blocks = encoder_blocks(model)
    config = cfg_cls(
        **fields,
        num_attention_heads_per_layer=[int(b.attention.self.num_attention_heads) for b in blocks],
        intermediate_size_per_layer=[int(b.intermediate.dense.out_features) for b in blocks],
        weight_dtype="int8" if precision == "int8" else "float",
    )
    config.architectures = [model_cls.__name__]
    module = Path(MODELING_FILE).stem
    config.auto_map = {"AutoConfig": f"{module}.{cfg_cls.__name__}",
                       "AutoModelForSequenceClassification": f"{module}.{model_cls.__name__}"}
    config.dtype = str(STORAGE_DTYPE[precision]).removeprefix("torch.")
    return config


def at_precision(model: nn.Module, precision: str) -> nn.Module:
    """A copy of `model` stored as `precision` says (bf16/fp16 cast, int8 quantised); fp32 returns the model."""
    if precision == "fp32":
        return model
    out = copy.deepcopy(model).to("cpu")
    return quantise_int8(out.float()) if precision == "int8" else out.to(STORAGE_DTYPE[precision])


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory: clone any second view of the same storage."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        out[key] = tensor.detach().clone().contiguous() if ptr in seen else tensor.detach().contiguous()
        if ptr != -1:
            seen.add(ptr)
    return out


def save_portable(model: nn.Module, out_dir: str | Path, precision: str = "fp32") -> Path:
    """config.json (+auto_map), modeling_pruned.py and model.safetensors at `precision`'s storage dtype."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = portable_config(model, precision)
    stored = at_precision(model.to("cpu"), precision)
    save_file(_unshared(stored.state_dict()), str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config.save_pretrained(out)
    shutil.copyfile(modeling_pruned.__file__, out / MODELING_FILE)
    return out


def is_portable(model_dir: str | Path) -> bool:
    path = Path(model_dir) / "config.json"
    if not path.exists():
        return False
    return str(json.loads(path.read_text()).get("model_type", "")).startswith(PORTABLE_PREFIX)


def portable_classes(model_dir: str | Path) -> tuple[type, type]:
    """(config class, model class) of a portable folder, from this project's copy of the modeling file."""
    model_type = json.loads((Path(model_dir) / "config.json").read_text()).get("model_type")
    for cfg_cls, model_cls in FAMILIES.values():
        if cfg_cls.model_type == model_type:
            return cfg_cls, model_cls
    raise ValueError(f"{model_dir}/config.json: model_type {model_type!r} is not one of "
                     f"{', '.join(c.model_type for c, _ in FAMILIES.values())}")


def build_portable(model_dir: str | Path) -> nn.Module:
    """The architecture a portable folder describes, weights not loaded yet (the caller loads them strictly)."""
    cfg_cls, model_cls = portable_classes(model_dir)
    return model_cls(cfg_cls.from_pretrained(model_dir))
