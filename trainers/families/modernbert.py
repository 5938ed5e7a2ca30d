"""ModernBERT: fused QKV, GLU feed-forward, rotary positions, alternating global/local attention.

`model.layers[i]` with
- `attn.Wqkv`: one Linear, hidden -> 3 x heads x head_dim, its output viewed as [3, heads, head_dim]:
  rows [0, H*d) are Q, [H*d, 2*H*d) K, [2*H*d, 3*H*d) V, head h owning rows h*d..(h+1)*d-1 of each third;
  the forward splits by `view(..., 3, -1, head_dim)`, so a Wqkv with fewer heads just works.
- `attn.Wo`: heads x head_dim -> hidden.
- `mlp.Wi`: hidden -> 2 x intermediate; `ModernBertMLP.forward` does `input, gate = Wi(x).chunk(2)` and
  `Wo(act(input) * gate)`: rows [0, I) are the value half (activated), rows [I, 2I) the gate half; neuron j
  owns row j of each. `mlp.Wo`: intermediate -> hidden.
No attribute of the forward counts heads (`head_dim` stays), so `set_heads` has nothing to update.
Rotary embeddings act per head on head_dim (unchanged); local (sliding window) vs global layers differ only
in the mask they get; both are unaffected by which heads or neurons remain.

Attention implementation: transformers 5 has no unpadding path left (the flash-attention-only unpadded
batches of transformers 4 are gone); every layer gets a dense [batch, 1, query, key] mask (full or sliding
window) and `config._attn_implementation` picks the kernel. A model built or loaded without asking for one
gets "sdpa" (what this project does everywhere); "sdpa" and "eager" both run on CPU, give the same logits, and
export with torch.onnx.export(dynamo=True) as trainers/deploy/onnx_export.py calls it, the sliding-window mask
included, with dynamic batch and sequence. Flash-attention (CUDA only) and flex attention are never selected by
this project; a model loaded with one would be switched with `model.set_attn_implementation("sdpa")` before
export.
"""

from __future__ import annotations

from torch import nn
from transformers import ModernBertConfig, ModernBertForSequenceClassification

from .base import FamilyAdapter, Layout, Rows

class ModernBertAdapter(FamilyAdapter):
    family = "modernbert"
    model_types = ("modernbert",)
    config_class = ModernBertConfig
    model_class = ModernBertForSequenceClassification
    notes = ("fused attn.Wqkv (Q, K, V as three row slices of one Linear) and GLU mlp.Wi (value rows [0, I), "
             "gate rows [I, 2I); a neuron owns one row of each); rotary positions and global/local layers need no "
             "change; ONNX export with attention implementation sdpa (the default) or eager; "
             "vocabulary trimming refused: its tokenizer is BPE")

    def layers(self, model: nn.Module) -> list[nn.Module]:
        return list(model.base_model.layers)

    def layout(self, layer: nn.Module) -> Layout:
        qkv = layer.attn.Wqkv.out_features // 3  # heads x head_dim now (the offsets move when heads leave)
        ffn = layer.mlp.Wi.out_features // 2
        return Layout(
            q=Rows("attn.Wqkv", 0, qkv),
            k=Rows("attn.Wqkv", qkv, 2 * qkv),
            v=Rows("attn.Wqkv", 2 * qkv, 3 * qkv),
            o="attn.Wo",
            ffn_in=(Rows("mlp.Wi", 0, ffn), Rows("mlp.Wi", ffn, 2 * ffn)),
            ffn_out="mlp.Wo",
        )

    def set_heads(self, layer: nn.Module, kept_heads: list[int], head_size: int) -> None:
        """Nothing to update: the forward infers the head count from Wqkv's width (head_dim is unchanged)."""


MODERNBERT = ModernBertAdapter()
