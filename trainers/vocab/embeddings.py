"""Cut every vocabulary-sized weight of a transformers model down to the kept token ids."""

from __future__ import annotations

import torch
from torch import nn

from trainers.families import UnsupportedFamily, adapter_for
from trainers.families.int8 import replace_module

# config fields holding a token id, renumbered with the vocabulary
_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "unk_token_id",
              "mask_token_id", "decoder_start_token_id")


def unique_param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once


def unique_param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def word_embeddings(model: nn.Module) -> nn.Embedding:
    """The token embedding table: the family adapter's (ALBERT's is the factorised embedding_size one),
    else `get_input_embeddings()`."""
    try:
        return adapter_for(model).word_embeddings(model)
    except UnsupportedFamily:
        return model.get_input_embeddings()


def trim_embeddings(model: nn.Module, kept: list[int]) -> None:
    """Keep rows `kept` (sorted old ids) of the input embedding, the output embedding (tied or not) and
    any output bias with one entry per token (an LM head's); renumber the config's token ids."""
    old_in = word_embeddings(model)
    old_size = old_in.num_embeddings
    index = torch.tensor(kept, dtype=torch.long)
    new_id = {old: new for new, old in enumerate(kept)}
    old_out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = old_out is not None and old_out.weight is old_in.weight

    pad = old_in.padding_idx
    new_in = nn.Embedding(len(kept), old_in.embedding_dim, padding_idx=new_id.get(pad) if pad is not None else None,
                          dtype=old_in.weight.dtype, device=old_in.weight.device)
    with torch.no_grad():
        new_in.weight.copy_(old_in.weight[index])
    done = {id(old_in.weight)}
    if not replace_module(model, old_in, new_in):
        model.set_input_embeddings(new_in)

    if old_out is not None:
        done.add(id(old_out.weight))
        old_out.weight = new_in.weight if tied else nn.Parameter(old_out.weight.detach()[index].clone())
        if getattr(old_out, "out_features", None) is not None:
            old_out.out_features = len(kept)
    # an output bias with one entry per token (BERT's LM-head bias, shared with its decoder); only 1-D
    # biases, so that a 2-D table that happens to have as many rows (positions) is never cut
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if id(param) in done or name != "bias" or param.dim() != 1 or param.shape[0] != old_size:
                continue
            trimmed = nn.Parameter(param.detach()[index].clone(), requires_grad=param.requires_grad)
            for other in model.modules():  # keep sharing intact: replace every reference to this tensor
                for other_name, other_param in list(other.named_parameters(recurse=False)):
                    if other_param is param:
                        setattr(other, other_name, trimmed)
            done.add(id(trimmed))

    config = model.config
    config.vocab_size = len(kept)
    for field in _ID_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int):
            if value not in new_id:
                raise ValueError(f"vocabulary trimming: config.{field}={value} is not among the kept tokens")
            setattr(config, field, new_id[value])
