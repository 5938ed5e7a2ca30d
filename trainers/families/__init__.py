"""One adapter per encoder family (see base.py); `adapter_for` finds a model's.

Adding a family: one file here with its adapter, one entry in `ADAPTERS`, one row in
tests/test_families.py.
"""

from __future__ import annotations

from typing import Any

from .base import FamilyAdapter, UnsupportedFamily
from .albert import ALBERT
from .bert_like import BERT, CAMEMBERT, ELECTRA, ROBERTA, XLM_ROBERTA
from .deberta_v2 import DEBERTA_V2
from .distilbert import DISTILBERT
from .modernbert import MODERNBERT
from .mpnet import MPNET

ADAPTERS: dict[str, FamilyAdapter] = {
    a.family: a
    for a in (BERT, ROBERTA, XLM_ROBERTA, CAMEMBERT, ELECTRA, DISTILBERT, ALBERT, DEBERTA_V2, MPNET, MODERNBERT)
}


__all__ = ["ADAPTERS", "FamilyAdapter", "UnsupportedFamily", "adapter_for", "supported_families"]


def supported_families() -> list[str]:
    return list(ADAPTERS)


def adapter_for(config_or_model_type: Any) -> FamilyAdapter:
    """The adapter of a config, a model, or a model_type string; UnsupportedFamily names what is supported."""
    obj = config_or_model_type
    config = getattr(obj, "config", obj)
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    base_type = str(model_type or "").removeprefix("pruned_").replace("_", "-")
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types or base_type in adapter.model_types:
            if not isinstance(config, str) and (why := adapter.refusal(config)):
                raise UnsupportedFamily(f"model_type {model_type!r}: {why}")
            return adapter
    raise UnsupportedFamily(
        f"model_type {model_type!r} has no family adapter; supported: {', '.join(ADAPTERS)}. Nothing of a sweep "
        "runs without one (even pruning ratio 0 exports through the family's portable class)"
    )
