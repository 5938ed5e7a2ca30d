"""BERT-layout encoders: BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA.

`<prefix>.encoder.layer[i]` with `attention.self.{query,key,value}`, `attention.output.dense` and an
FFN `intermediate.dense` -> `output.dense`. ELECTRA's factorised embedding (`embeddings_project`
when `embedding_size` != `hidden_size`) sits before the encoder and is not pruned.
"""

from __future__ import annotations

from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    CamembertConfig,
    CamembertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from .base import FamilyAdapter, Layout, Rows

LAYOUT = Layout(
    q=Rows("attention.self.query"),
    k=Rows("attention.self.key"),
    v=Rows("attention.self.value"),
    o="attention.output.dense",
    ffn_in=(Rows("intermediate.dense"),),
    ffn_out="output.dense",
)


class BertLikeAdapter(FamilyAdapter):
    def __init__(self, family: str, config_class: type, model_class: type, notes: str = "") -> None:
        self.family, self.model_types = family, (family,)
        self.config_class, self.model_class, self.notes = config_class, model_class, notes

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.base_model.encoder.layer)

    def layout(self, layer: nn.Module) -> Layout:
        return LAYOUT

    def set_heads(self, layer: nn.Module, kept_heads: list[int], head_size: int) -> None:
        att = layer.attention.self
        att.num_attention_heads = len(kept_heads)
        att.all_head_size = len(kept_heads) * head_size


BERT = BertLikeAdapter("bert", BertConfig, BertForSequenceClassification)
ROBERTA = BertLikeAdapter("roberta", RobertaConfig, RobertaForSequenceClassification)
XLM_ROBERTA = BertLikeAdapter("xlm-roberta", XLMRobertaConfig, XLMRobertaForSequenceClassification)
CAMEMBERT = BertLikeAdapter("camembert", CamembertConfig, CamembertForSequenceClassification)
ELECTRA = BertLikeAdapter("electra", ElectraConfig, ElectraForSequenceClassification,
                          notes="factorised embedding (embeddings_project) kept whole")
