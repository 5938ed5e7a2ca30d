"""DeBERTa-v2 / DeBERTa-v3 / mDeBERTa-v3: disentangled attention.

`deberta.encoder.layer[i]` with `attention.self.{query_proj,key_proj,value_proj}`, `attention.output.dense`
and a BERT-style FFN `intermediate.dense` -> `output.dense`.

The relative-position part of the attention (`relative_attention: true`) projects the encoder's shared
`rel_embeddings` table per layer, per head:
- `share_att_key: false`: with `c2p` in `pos_att_type` a `pos_key_proj`, with `p2c` a `pos_query_proj`
  (hidden -> heads x head_size, the same head order as the content projections). Their rows belong to
  the heads and leave with them (`Layout.head_rows`); they are not scored: a head's importance is read from
  its content Q/K/V/O, as for every family.
- `share_att_key: true` (DeBERTa-v3): `query_proj` / `key_proj` themselves project the relative embeddings,
  so pruning their rows prunes the position part too; there is nothing more to remove.
The forward reads `num_attention_heads` (reshapes, the `repeat` of the position projections) and
`all_head_size`; `attention_head_size` and the scale (sqrt(head_size x factor)) do not change. The shared
`rel_embeddings` (2 x position_buckets x hidden) and the optional first-layer `ConvLayer` are hidden-sized,
not head-sized, and stay whole.
"""

from __future__ import annotations

from torch import nn
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

from .base import FamilyAdapter, Layout, Rows

_SELF = "attention.self"


class DebertaV2Adapter(FamilyAdapter):
    family = "deberta-v2"
    model_types = ("deberta-v2",)
    config_class = DebertaV2Config
    model_class = DebertaV2ForSequenceClassification
    notes = ("disentangled attention: with share_att_key false the c2p/p2c position projections (pos_key_proj, "
             "pos_query_proj) lose the pruned heads' rows too; with share_att_key true query_proj/key_proj also "
             "project the relative embeddings, pruned with them; rel_embeddings and the optional ConvLayer stay "
             "whole; vocabulary trimming: its SentencePiece tokenizer converts to Unigram (supported)")

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.base_model.encoder.layer)

    def layout(self, layer: nn.Module) -> Layout:
        att = layer.attention.self
        position = []
        if getattr(att, "relative_attention", False) and not att.share_att_key:
            # present exactly when the forward uses them: c2p -> pos_key_proj, p2c -> pos_query_proj
            position = [Rows(f"{_SELF}.{name}") for name in ("pos_key_proj", "pos_query_proj") if hasattr(att, name)]
        return Layout(
            q=Rows(f"{_SELF}.query_proj"),
            k=Rows(f"{_SELF}.key_proj"),
            v=Rows(f"{_SELF}.value_proj"),
            o="attention.output.dense",
            ffn_in=(Rows("intermediate.dense"),),
            ffn_out="output.dense",
            head_rows=tuple(position),
        )

    def set_heads(self, layer: nn.Module, kept_heads: list[int], head_size: int) -> None:
        att = layer.attention.self
        att.num_attention_heads = len(kept_heads)
        att.all_head_size = len(kept_heads) * head_size


DEBERTA_V2 = DebertaV2Adapter()
