"""Pruned (and optionally int8) BERT-family classifiers that plain `transformers` can load.

This file is copied into every saved model folder and registered in its config.json `auto_map`
(the Hub convention for custom architectures), so

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

rebuilds the exact architecture in a process that has only torch and transformers installed.
It must therefore import nothing but torch and transformers.

Config fields (on top of the base BertConfig / RobertaConfig / XLMRobertaConfig, whose
`num_attention_heads` and `intermediate_size` keep the unpruned values, so the head size is unchanged):

- `num_attention_heads_per_layer`: list[int], attention heads kept in each encoder layer
- `intermediate_size_per_layer`: list[int], FFN width of each encoder layer
- `weight_dtype`: "float" (weights stored at the checkpoint's float dtype) or "int8": the encoder's
  Linear weights and the word embeddings are stored as int8 with one fp32 scale per output row
  (`<name>.weight_scale`, symmetric, scale = max|row| / 127); Linear activations are quantised per
  token at run time (dynamic quantisation) and multiplied exactly in integers (`torch._int_mm` on CUDA,
  exact fp32 chunks on CPU).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

INT8_MAX = 127.0


def _row_scales(weight: torch.Tensor) -> torch.Tensor:
    return (weight.detach().float().abs().amax(dim=1) / INT8_MAX).clamp_min(1e-12)


def quantise_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, fp32 scale per row): symmetric per-row quantisation."""
    scale = _row_scales(weight)
    q = torch.round(weight.detach().float() / scale[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


class Int8Linear(nn.Linear):
    """y = x W^T + b with W int8 (per-output-row scales) and x quantised per token at run time.

    A subclass of nn.Linear so code that looks for Linear layers (parameter counts, pruning
    bookkeeping) still finds it; `weight` is an int8 Parameter that never requires grad.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features, dtype=torch.int8), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def reset_parameters(self) -> None:  # weights always come from a checkpoint or from_linear
        pass

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        w, s = quantise_rows(linear.weight)
        q.weight.data, q.weight_scale = w.to(linear.weight.device), s.to(linear.weight.device)
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.detach().float().clone(), requires_grad=False)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        x2 = x.reshape(-1, self.in_features).float()
        m = x2.shape[0]
        int_mm_ok = m > 0 and self.out_features > 0 and self.in_features > 0 and (
            x2.device.type == "cpu" or (m > 16 and self.in_features % 8 == 0 and self.out_features % 8 == 0))
        if int_mm_ok:
            xs = x2.abs().amax(dim=1, keepdim=True).clamp_min_(1e-12).div_(INT8_MAX)
            xq = torch.div(x2, xs).round_().clamp_(-INT8_MAX, INT8_MAX)
            y = _int8_matmul(xq, self.weight).to(torch.float32).mul_(xs)
            y = y.mul_(self.weight_scale) if self.bias is None else torch.addcmul(self.bias.float(), y, self.weight_scale)
        else:
            y = F.linear(x2, self.weight.float() * self.weight_scale[:, None], None if self.bias is None else self.bias.float())
        return y.reshape(*shape[:-1], self.out_features).to(dtype)


EXACT_FP32_K = 1024  # 1024 x 127 x 127 < 2^24: a sum of that many int8 products is exact in fp32


def _int8_matmul(xq: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """int32 `xq @ weight.T` of int8-valued activations (given as whole floats) and int8 weights.

    On CUDA `torch._int_mm`; on CPU the same integers from fp32 matmuls over chunks of at most
    EXACT_FP32_K inputs (each chunk's sum is exact in fp32), since `torch._int_mm` has no fast CPU
    kernel (about 30x slower than the fp32 matmul on a 2-core x86 machine)."""
    if xq.device.type != "cpu":
        return torch._int_mm(xq.to(torch.int8), weight.t())
    k = xq.shape[1]
    out = None
    for start in range(0, k, EXACT_FP32_K):
        part = (xq[:, start:start + EXACT_FP32_K] @ weight[:, start:start + EXACT_FP32_K].float().t()).to(torch.int32)
        out = part if out is None else out.add_(part)
    return out


class Int8Embedding(nn.Module):
    """A lookup table stored as int8 rows with one fp32 scale per row (weight-only quantisation)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = nn.Parameter(torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8), requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(num_embeddings))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding) -> "Int8Embedding":
        q = cls(emb.num_embeddings, emb.embedding_dim, emb.padding_idx)
        w, s = quantise_rows(emb.weight)
        q.weight.data, q.weight_scale = w.to(emb.weight.device), s.to(emb.weight.device)
        return q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight).float() * self.weight_scale[ids].unsqueeze(-1)


def encoder_blocks(model: nn.Module) -> list[nn.Module]:
    return list(model.base_model.encoder.layer)


def resize_layers(model: nn.Module, heads: list[int], widths: list[int]) -> None:
    """Give each encoder block `heads[i]` attention heads and an FFN of width `widths[i]` (fresh weights)."""
    c = model.config
    head_size = c.hidden_size // c.num_attention_heads
    blocks = encoder_blocks(model)
    if len(heads) != len(blocks) or len(widths) != len(blocks):
        raise ValueError(f"config lists {len(heads)} head counts and {len(widths)} FFN widths "
                         f"for {len(blocks)} encoder layers")
    for block, h, w in zip(blocks, heads, widths):
        att = block.attention.self
        if h != att.num_attention_heads:
            att.query, att.key, att.value = (nn.Linear(c.hidden_size, h * head_size) for _ in range(3))
            block.attention.output.dense = nn.Linear(h * head_size, c.hidden_size)
            att.num_attention_heads, att.all_head_size = h, h * head_size
        if w != block.intermediate.dense.out_features:
            block.intermediate.dense = nn.Linear(c.hidden_size, w)
            block.output.dense = nn.Linear(w, c.hidden_size)


def quantise_linears(root: nn.Module) -> nn.Module:
    """In place: every plain nn.Linear under `root` becomes an Int8Linear."""
    for module in list(root.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, Int8Linear.from_linear(child))
    return root


def quantise_int8(model: nn.Module) -> nn.Module:
    """In place: every Linear inside the encoder blocks and the word embeddings become int8."""
    for block in encoder_blocks(model):
        quantise_linears(block)
    emb = model.base_model.embeddings
    if type(emb.word_embeddings) is nn.Embedding:
        emb.word_embeddings = Int8Embedding.from_embedding(emb.word_embeddings)
    return model


def restructure(model: nn.Module) -> None:
    """Shapes and storage as the config says (called at the end of __init__, before weights load)."""
    c = model.config
    heads = getattr(c, "num_attention_heads_per_layer", None)
    widths = getattr(c, "intermediate_size_per_layer", None)
    if heads is not None or widths is not None:
        n = c.num_hidden_layers
        resize_layers(model, list(heads or [c.num_attention_heads] * n), list(widths or [c.intermediate_size] * n))
    weight_dtype = getattr(c, "weight_dtype", "float")
    if weight_dtype == "int8":
        quantise_int8(model)
    elif weight_dtype != "float":
        raise ValueError(f"config.weight_dtype={weight_dtype!r}; expected 'float' or 'int8'")


def _pruned_config(base: type):
    def __init__(self, num_attention_heads_per_layer=None, intermediate_size_per_layer=None,
                 weight_dtype="float", **kwargs):
        base.__init__(self, **kwargs)
        self.num_attention_heads_per_layer = num_attention_heads_per_layer
        self.intermediate_size_per_layer = intermediate_size_per_layer
        self.weight_dtype = weight_dtype

    return __init__


class PrunedBertConfig(BertConfig):
    model_type = "pruned_bert"
    __init__ = _pruned_config(BertConfig)


class PrunedRobertaConfig(RobertaConfig):
    model_type = "pruned_roberta"
    __init__ = _pruned_config(RobertaConfig)


class PrunedXLMRobertaConfig(XLMRobertaConfig):
    model_type = "pruned_xlm_roberta"
    __init__ = _pruned_config(XLMRobertaConfig)


class PrunedBertForSequenceClassification(BertForSequenceClassification):
    config_class = PrunedBertConfig

    def __init__(self, config):
        super().__init__(config)
        restructure(self)


class PrunedRobertaForSequenceClassification(RobertaForSequenceClassification):
    config_class = PrunedRobertaConfig

    def __init__(self, config):
        super().__init__(config)
        restructure(self)


class PrunedXLMRobertaForSequenceClassification(XLMRobertaForSequenceClassification):
    config_class = PrunedXLMRobertaConfig

    def __init__(self, config):
        super().__init__(config)
        restructure(self)


# base model_type -> (config class, model class); read by the project's saver and loader
FAMILIES = {
    "bert": (PrunedBertConfig, PrunedBertForSequenceClassification),
    "roberta": (PrunedRobertaConfig, PrunedRobertaForSequenceClassification),
    "xlm-roberta": (PrunedXLMRobertaConfig, PrunedXLMRobertaForSequenceClassification),
}
