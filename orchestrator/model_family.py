"""Refuse a teacher whose model family no adapter handles, from its config.json alone, before any compute."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def teacher_config(ref: str) -> tuple[Any, str | None]:
    """(the transformers config of a resolved model ref, or None when unknown here; the raw model_type).

    A local folder (also a `pkg:` one) is read from its config.json; a hub id only from the local cache:
    validating a sweep file downloads nothing.
    """
    from transformers import AutoConfig

    local = Path(ref)
    if (local / "config.json").is_file():
        try:
            model_type = json.loads((local / "config.json").read_text()).get("model_type")
        except (OSError, ValueError):
            return None, None  # the teacher's own loading reports a broken config.json
        try:
            return AutoConfig.from_pretrained(local), model_type
        except (ValueError, KeyError):  # a model_type this transformers does not know
            return None, model_type
    if local.exists():
        return None, None
    try:
        config = AutoConfig.from_pretrained(ref, local_files_only=True)
    except (OSError, ValueError):
        return None, None  # not cached: the family is checked when the teacher loads
    return config, config.model_type


def family_refusal(ref: str) -> str | None:
    """Why a sweep cannot run on the model at `ref` (None: its family has an adapter, or it is not known yet)."""
    from trainers.families import UnsupportedFamily, adapter_for, supported_families

    config, model_type = teacher_config(ref)
    if config is None:
        if model_type is None:
            return None
        return (f"model_type {model_type!r} is not a transformers model type this installation knows; supported "
                f"families: {', '.join(supported_families())}. Nothing of a sweep runs without a family adapter")
    try:
        adapter_for(config)
    except UnsupportedFamily as exc:
        return str(exc)
    return None
