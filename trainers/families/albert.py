"""ALBERT: one shared layer group, applied at every depth, and a factorised embedding.

`albert.encoder.albert_layer_groups[g].albert_layers[i]`, usually one group of one layer that every
depth runs: `layers` lists each shared layer once, so pruning keeps one mask set (and one plan row)
per shared layer and a head removed from it is removed at every depth. Attention: `attention.{query,
key,value}` -> `attention.dense`; FFN: `ffn` -> `ffn_output`. The factorised embedding (vocabulary x
embedding_size, then `encoder.embedding_hidden_mapping_in` to hidden_size) is not pruned; trimming and
int8 act on the embedding_size table.
"""

from __future__ import annotations

from torch import nn
from transformers import AlbertConfig, AlbertForSequenceClassification

from .base import FamilyAdapter, Layout, Rows

LAYOUT = Layout(
    q=Rows("attention.query"),
    k=Rows("attention.key"),
    v=Rows("attention.value"),
    o="attention.dense",
    ffn_in=(Rows("ffn"),),
    ffn_out="ffn_output",
)


class AlbertAdapter(FamilyAdapter):
    family = "albert"
    model_types = ("albert",)
    config_class = AlbertConfig
    model_class = AlbertForSequenceClassification
    notes = "one shared layer group (one mask set per shared layer); factorised embedding kept whole"

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return [layer for group in model.base_model.encoder.albert_layer_groups for layer in group.albert_layers]

    def layout(self, layer: nn.Module) -> Layout:
        return LAYOUT

    def set_heads(self, layer: nn.Module, kept_heads: list[int], head_size: int) -> None:
        att = layer.attention
        att.num_attention_heads = len(kept_heads)
        att.all_head_size = len(kept_heads) * head_size


ALBERT = AlbertAdapter()
