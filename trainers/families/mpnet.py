"""MPNet: BERT-like layers plus a relative attention bias shared by all layers.

`mpnet.encoder.layer[i]` with `attention.attn.{q,k,v,o}` (the output projection sits inside the
self-attention) and a BERT-style FFN `intermediate.dense` -> `output.dense`.

The encoder computes the relative position bias once, from `encoder.relative_attention_bias`
(Embedding(num_buckets, num_heads): one column per head of the unpruned numbering), as a
[batch, heads, query, key] tensor, and hands the same tensor to every layer, which adds it to its
attention scores. A layer that kept heads [0, 2] must add only those heads' bias. `set_heads` records the
kept indices on the layer's `attention.attn` as a plain attribute `kept_heads` (a tuple of ints: not a
tensor, so not in a checkpoint, and not a buffer, which `from_pretrained` would leave uninitialised after
building the model on the meta device) and registers a forward pre-hook that selects those heads of the
incoming bias (`index_select` on dim 1 with a constant index). Plain torch: torch.export /
torch.onnx.export(dynamo=True) traces it as a Gather with a constant index, it survives deepcopy and
state_dict round trips, and a fresh model rebuilt with `shrink_layer` and the same indices (the portable
folder, in `__init__`) gets the same hook. The shared bias table stays whole (num_buckets x heads
parameters; a head pruned in one layer is still used by the others).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import MPNetConfig, MPNetForSequenceClassification

from .base import FamilyAdapter, Layout, Rows

LAYOUT = Layout(
    q=Rows("attention.attn.q"),
    k=Rows("attention.attn.k"),
    v=Rows("attention.attn.v"),
    o="attention.attn.o",
    ffn_in=(Rows("intermediate.dense"),),
    ffn_out="output.dense",
)

KEPT_HEADS = "kept_heads"  # attribute of MPNetSelfAttention: the unpruned indices of the heads it kept
_BIAS_ARG = 2  # MPNetSelfAttention.forward(hidden_states, attention_mask, position_bias, ...)


def select_bias_heads(attn: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """Forward pre-hook of a pruned MPNetSelfAttention: keep only its heads' rows of the shared position bias."""
    def select(bias: torch.Tensor) -> torch.Tensor:
        return bias.index_select(1, torch.tensor(getattr(attn, KEPT_HEADS), dtype=torch.long, device=bias.device))

    if kwargs.get("position_bias") is not None:
        kwargs = {**kwargs, "position_bias": select(kwargs["position_bias"])}
    elif len(args) > _BIAS_ARG and args[_BIAS_ARG] is not None:
        args = (*args[:_BIAS_ARG], select(args[_BIAS_ARG]), *args[_BIAS_ARG + 1:])
    return args, kwargs


class MPNetAdapter(FamilyAdapter):
    family = "mpnet"
    model_types = ("mpnet",)
    config_class = MPNetConfig
    model_class = MPNetForSequenceClassification
    notes = ("relative attention bias (encoder.relative_attention_bias, one column per head) computed once and "
             "shared by all layers: a pruned layer keeps its head indices (attribute attention.attn.kept_heads, "
             "not saved) and a forward pre-hook selects those heads of the bias; the bias table stays whole; "
             "vocabulary trimming: WordPiece tokenizer, supported; MPNetEmbeddings hard-codes padding_idx 1 (position "
             "ids skip id 1), so trimming is exact only when ids 0 and 1 are special tokens (always kept): true for "
             "MPNet's own tokenizer (<s>, <pad>), refused by vocabulary_refusal for others, e.g. a BERT one")

    def vocabulary_refusal(self, tokenizer: Any) -> str | None:
        """Why trimming `tokenizer`'s vocabulary would change an MPNet model's outputs (None: it would not).

        MPNetEmbeddings treats token id 1 as padding whatever the config says (`padding_idx = 1`: its embedding
        row and position ids skip it). Trimming renumbers the kept ids in their old order, so old ids 0 and 1
        keep their numbers exactly when both are kept, i.e. special tokens."""
        special = sorted(set(tokenizer.all_special_ids))
        if {0, 1} <= set(special):
            return None
        return ("MPNet treats token id 1 as padding (MPNetEmbeddings.padding_idx is fixed at 1), and vocabulary "
                "trimming renumbers token ids: ids 0 and 1 must be special tokens, which trimming always keeps, "
                f"but this tokenizer's special token ids are {special}")

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.base_model.encoder.layer)

    def layout(self, layer: nn.Module) -> Layout:
        return LAYOUT

    def set_heads(self, layer: nn.Module, kept_heads: list[int], head_size: int) -> None:
        attn = layer.attention.attn
        attn.num_attention_heads = len(kept_heads)
        attn.all_head_size = len(kept_heads) * head_size
        already = hasattr(attn, KEPT_HEADS)  # set again: the hook is there and reads the attribute
        setattr(attn, KEPT_HEADS, tuple(int(h) for h in kept_heads))
        if not already:
            attn.register_forward_pre_hook(select_bias_heads, with_kwargs=True)


MPNET = MPNetAdapter()
