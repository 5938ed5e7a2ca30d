"""int8 weights with per-row scales: the Linear and Embedding an int8 student computes with, and the swap.

Symmetric per-output-row quantisation (scale = max|row| / 127) of the encoder layers' Linear weights
(`adapter.layers`) and of the word embeddings (`adapter.word_embeddings`); Linear activations are
quantised per token at run time (dynamic quantisation) and multiplied exactly in integers (`torch._int_mm` on CUDA, exact fp32 chunks on CPU). Shipped in
every exported folder (see portable.py), so it imports only torch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

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
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

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


def quantise_linears(root: nn.Module, *, skeleton: bool = False) -> nn.Module:
    """In place: every plain nn.Linear under `root` becomes an Int8Linear (`skeleton`: of its shape, zero
    weights, nothing quantised)."""
    for module in list(root.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                new = (Int8Linear(child.in_features, child.out_features, bias=child.bias is not None) if skeleton
                       else Int8Linear.from_linear(child))
                setattr(module, child_name, new)
    return root


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> int:
    """Put `new` wherever `old` is a child under `root` (every reference, so sharing stays intact); how many."""
    done = 0
    for module in list(root.modules()):
        for name, child in list(module.named_children()):
            if child is old:
                setattr(module, name, new)
                done += 1
    return done


def quantise_model(adapter, model: nn.Module, *, skeleton: bool = False) -> nn.Module:
    """In place: every Linear inside `adapter.layers(model)` and the word embeddings become int8.

    `skeleton`: int8 modules of the same shapes with zero weights, nothing quantised (a model whose int8
    weights are loaded next: quantising the float weights it was built with would be thrown away)."""
    for layer in adapter.layers(model):
        quantise_linears(layer, skeleton=skeleton)
    emb = adapter.word_embeddings(model)
    if type(emb) is nn.Embedding:
        new = (Int8Embedding(emb.num_embeddings, emb.embedding_dim, emb.padding_idx) if skeleton
               else Int8Embedding.from_embedding(emb))
        replace_module(model, emb, new)
    return model
