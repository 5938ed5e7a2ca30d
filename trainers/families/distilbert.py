"""DistilBERT: `distilbert.transformer.layer[i]` with `attention.{q,k,v,out}_lin` and `ffn.lin1` -> `ffn.lin2`.

Its config names the sizes `dim`, `n_heads` and `hidden_dim` (the FFN width); the attention's forward
reshapes to (-1, attention_head_size), so after pruning only `n_heads` (read nowhere else) is updated.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from .base import FamilyAdapter, Layout, Rows, Shape

LAYOUT = Layout(
    q=Rows("attention.q_lin"),
    k=Rows("attention.k_lin"),
    v=Rows("attention.v_lin"),
    o="attention.out_lin",
    ffn_in=(Rows("ffn.lin1"),),
    ffn_out="ffn.lin2",
)


class DistilBertAdapter(FamilyAdapter):
    family = "distilbert"
    model_types = ("distilbert",)
    config_class = DistilBertConfig
    model_class = DistilBertForSequenceClassification
    notes = "q_lin/k_lin/v_lin/out_lin, ffn.lin1/lin2; config sizes dim, n_heads, hidden_dim"

    def shape(self, config: Any) -> Shape:
        return Shape(num_heads=int(config.n_heads), head_size=int(config.dim) // int(config.n_heads),
                     hidden_size=int(config.dim), intermediate_size=int(config.hidden_dim))

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.base_model.transformer.layer)

    def layout(self, layer: nn.Module) -> Layout:
        return LAYOUT

    def set_heads(self, layer: nn.Module, kept_heads: list[int], head_size: int) -> None:
        layer.attention.n_heads = len(kept_heads)


DISTILBERT = DistilBertAdapter()
