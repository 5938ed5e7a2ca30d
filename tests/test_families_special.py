"""The families with their own attention structure: DeBERTa-v2 (disentangled attention, both position-projection
variants), MPNet (relative attention bias shared across layers) and ModernBERT (fused Wqkv, GLU FFN, rotary
positions, global/local layers), on tiny configs built in memory (hidden 64, 2 layers, 4 heads, no download).

Each family is pruned physically with uneven kept heads and neurons per layer through its adapter and checked
against the masked model, a rebuilt fresh model, ONNX Runtime and an int8 kernel swap.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    ModernBertConfig,
    ModernBertForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
)

from trainers.deploy.modeling_pruned import Int8Linear
from trainers.families import ADAPTERS, adapter_for
from trainers.families.base import (
    FamilyAdapter,
    Layout,
    Rows,
    head_row_index,
    layer_ffn_width,
    layer_heads,
    linear_at,
    mask_layer,
    shrink_layer,
    slice_bounds,
)
from trainers.families.mpnet import select_bias_heads

COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, vocab_size=128,
              num_labels=3, initializer_range=0.3)  # large init: a wrong row or bias visibly moves the logits
DEBERTA = dict(COMMON, max_position_embeddings=64, relative_attention=True, position_buckets=8, type_vocab_size=0,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

# name -> (config, model class): both DeBERTa-v2 variants of the relative-position projections
CASES = {
    "deberta-v2/separate-pos-proj": (lambda: DebertaV2Config(**DEBERTA, share_att_key=False,
                                                             pos_att_type=["p2c", "c2p"]),
                                     DebertaV2ForSequenceClassification),
    "deberta-v2/shared-att-key": (lambda: DebertaV2Config(**DEBERTA, share_att_key=True, pos_att_type=["p2c", "c2p"],
                                                          norm_rel_ebd="layer_norm"),  # DeBERTa-v3's settings
                                  DebertaV2ForSequenceClassification),
    "mpnet": (lambda: MPNetConfig(**COMMON, max_position_embeddings=64, relative_attention_num_buckets=32,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
              MPNetForSequenceClassification),
    # layer 0 global, layer 1 local with a 4-token window (shorter than the test inputs); the special token ids
    # must lie inside the tiny vocabulary; biases on so that the fused Wqkv / Wi bias slicing is exercised too
    "modernbert": (lambda: ModernBertConfig(**COMMON, max_position_embeddings=64, global_attn_every_n_layers=2,
                                            local_attention=4, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                            cls_token_id=1, sep_token_id=2, attention_bias=True, mlp_bias=True),
                   ModernBertForSequenceClassification),
}
FAMILY = {"deberta-v2/separate-pos-proj": "deberta-v2", "deberta-v2/shared-att-key": "deberta-v2",
          "mpnet": "mpnet", "modernbert": "modernbert"}
# Weight matrices a head / an FFN neuron has rows or columns in, per case: the layout each family must declare
HEAD_MATRICES = {"deberta-v2/separate-pos-proj": 6,  # Q, K, V, pos_key_proj, pos_query_proj, O
                 "deberta-v2/shared-att-key": 4, "mpnet": 4, "modernbert": 4}
NEURON_MATRICES = {"deberta-v2/separate-pos-proj": 2, "deberta-v2/shared-att-key": 2, "mpnet": 2,
                   "modernbert": 3}  # GLU: value row, gate row, Wo column
LINEARS_PER_LAYER = {"deberta-v2/separate-pos-proj": 8, "deberta-v2/shared-att-key": 6, "mpnet": 6,
                     "modernbert": 4}  # fused: Wqkv holds Q, K, V; Wi holds value and gate

KEPT_HEADS = [[0, 2], [1, 2, 3]]  # uneven per layer; [0, 2] is not a prefix (MPNet must pick bias heads 0 and 2)
NEURONS_KEPT = [40, 71]


def build(case: str, seed: int = 0) -> nn.Module:
    config_fn, model_class = CASES[case]
    torch.manual_seed(seed)
    model = model_class(config_fn()).eval()
    with torch.no_grad():  # trained models have non-zero biases
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
    return model


def kept_neurons(intermediate: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [sorted(torch.randperm(intermediate, generator=g)[:n].tolist()) for n in NEURONS_KEPT]


def inputs(batch: int = 3, seq: int = 12, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # one padded row
    ids[1, 9:] = 0
    return ids, mask


@torch.no_grad()
def logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask).logits


def apply(model: nn.Module, how) -> nn.Module:
    """`how` (shrink_layer or mask_layer) with KEPT_HEADS and kept_neurons on every layer, through the adapter."""
    adapter = adapter_for(model.config)
    shape = adapter.shape(model.config)
    for layer, heads, kept in zip(adapter.layers(model), KEPT_HEADS, kept_neurons(shape.intermediate_size)):
        how(adapter, layer, heads, kept, shape)
    return model


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def dropped_by_layout(adapter: FamilyAdapter, model: nn.Module) -> int:
    """Parameters the layout says shrinking removes: per dropped head, its rows (weight + bias) in every head
    slice and its columns of O; per dropped neuron, its row in every FFN-in slice and its column of FFN-out."""
    shape = adapter.shape(model.config)
    total = 0
    for layer, heads, kept in zip(adapter.layers(model), KEPT_HEADS, kept_neurons(shape.intermediate_size)):
        lay = adapter.layout(layer)
        gone_heads, gone_neurons = shape.num_heads - len(heads), shape.intermediate_size - len(kept)
        for rows in lay.head_slices:
            lin = linear_at(layer, rows.path)
            total += gone_heads * shape.head_size * (lin.in_features + (lin.bias is not None))
        total += gone_heads * shape.head_size * linear_at(layer, lay.o).out_features
        for rows in lay.ffn_in:
            lin = linear_at(layer, rows.path)
            total += gone_neurons * (lin.in_features + (lin.bias is not None))
        total += gone_neurons * linear_at(layer, lay.ffn_out).out_features
    return total


@pytest.mark.parametrize("case", CASES)
def test_adapter_is_found_and_layout_names_every_per_head_matrix(case):
    model = build(case)
    adapter = adapter_for(model.config)
    assert adapter is ADAPTERS[FAMILY[case]]
    assert adapter_for("pruned_" + model.config.model_type.replace("-", "_")) is adapter  # the portable config's type
    assert adapter.notes
    shape = adapter.shape(model.config)
    assert (shape.num_heads, shape.head_size, shape.hidden_size, shape.intermediate_size) == (4, 16, 64, 96)
    for layer in adapter.layers(model):
        lay = adapter.layout(layer)
        assert lay.head_matrices() == HEAD_MATRICES[case] and lay.neuron_matrices() == NEURON_MATRICES[case]
        for rows in lay.head_slices:
            start, stop = slice_bounds(layer, rows)
            assert stop - start == shape.num_heads * shape.head_size
        assert linear_at(layer, lay.o).in_features == shape.num_heads * shape.head_size
        for rows in lay.ffn_in:
            start, stop = slice_bounds(layer, rows)
            assert stop - start == shape.intermediate_size
        assert linear_at(layer, lay.ffn_out).in_features == shape.intermediate_size
        # every Linear of the layer is in the layout: none with per-head rows is forgotten (a position projection)
        named = {rows.path for rows in lay.head_slices} | {rows.path for rows in lay.ffn_in} | {lay.o, lay.ffn_out}
        linears = {path for path, m in layer.named_modules() if isinstance(m, nn.Linear)}
        assert linears == named and len(linears) == LINEARS_PER_LAYER[case]


@pytest.mark.parametrize("case", CASES)
def test_pruned_equals_masked_and_drops_exactly_the_layout_parameters(case):
    ids, mask = inputs()
    full = build(case)
    adapter = adapter_for(full.config)
    before, expected_drop = param_count(full), dropped_by_layout(adapter, full)
    masked, pruned = apply(build(case), mask_layer), apply(build(case), shrink_layer)

    assert param_count(pruned) == before - expected_drop
    assert expected_drop > 0
    head_size = adapter.shape(full.config).head_size
    for layer, heads, n in zip(adapter.layers(pruned), KEPT_HEADS, NEURONS_KEPT):
        assert layer_heads(adapter, layer, head_size) == len(heads) and layer_ffn_width(adapter, layer) == n

    out_masked, out_pruned = logits(masked, ids, mask), logits(pruned, ids, mask)
    torch.testing.assert_close(out_pruned, out_masked, rtol=1e-4, atol=1e-5)
    assert (out_masked - logits(full, ids, mask)).abs().max() > 1e-2  # pruning really changed the model


@pytest.mark.parametrize("case", CASES)
def test_rebuilt_fresh_model_reproduces_the_pruned_logits(case):
    """What the portable folder does: shrink a fresh model with the kept indices, then load the pruned weights."""
    ids, mask = inputs()
    pruned = apply(build(case), shrink_layer)
    fresh = apply(build(case, seed=7), shrink_layer)  # different weights, same shapes
    missing = fresh.load_state_dict(pruned.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    torch.testing.assert_close(logits(fresh, ids, mask), logits(pruned, ids, mask), rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_from_pretrained_of_a_class_that_shrinks_in_init_reproduces_the_logits(case, tmp_path):
    """The portable folder's way: a class whose __init__ shrinks the layers, loaded with from_pretrained, which
    builds the model on the meta device first (per-head state kept as a tensor buffer would come back garbage)."""
    ids, mask = inputs()
    pruned = apply(build(case), shrink_layer)
    pruned.save_pretrained(tmp_path)
    adapter = adapter_for(pruned.config)
    neurons = kept_neurons(adapter.shape(pruned.config).intermediate_size)  # outside __init__: not on meta

    class Shrunk(CASES[case][1]):
        def __init__(self, config):
            super().__init__(config)
            shape = adapter.shape(config)
            for layer, heads, kept in zip(adapter.layers(self), KEPT_HEADS, neurons):
                shrink_layer(adapter, layer, heads, kept, shape)

    loaded = Shrunk.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(loaded, ids, mask), logits(pruned, ids, mask), rtol=0, atol=0)


def _zero_head_and_neuron(adapter: FamilyAdapter, layer: nn.Module, head: int, neuron: int, head_size: int) -> None:
    """Zero head `head`'s rows in every head slice (weight and bias) and its O columns; likewise neuron
    `neuron`'s rows of the FFN-in slices and its FFN-out column: what a block mask over that head does."""
    lay = adapter.layout(layer)
    with torch.no_grad():
        for rows in lay.head_slices:
            index = head_row_index([head], head_size, slice_bounds(layer, rows)[0])
            lin = linear_at(layer, rows.path)
            lin.weight[index] = 0
            if lin.bias is not None:
                lin.bias[index] = 0
        linear_at(layer, lay.o).weight[:, head_row_index([head], head_size)] = 0
        for rows in lay.ffn_in:
            lin = linear_at(layer, rows.path)
            lin.weight[slice_bounds(layer, rows)[0] + neuron] = 0
            if lin.bias is not None:
                lin.bias[slice_bounds(layer, rows)[0] + neuron] = 0
        linear_at(layer, lay.ffn_out).weight[:, neuron] = 0


@pytest.mark.parametrize("case", CASES)
def test_block_masking_one_head_leaves_the_other_heads_intact(case):
    """Zeroing all of head 1's Q/K/V/(position) rows and O columns, and all of neuron 5's FFN rows and column,
    per the layout, equals zeroing only their O / FFN-out columns: the rows the layout gives a head are
    that head's and no other's (a wrong offset in a fused Wqkv or Wi would change a live head or neuron)."""
    ids, mask = inputs()
    untouched = build(case)
    adapter = adapter_for(untouched.config)
    shape = adapter.shape(untouched.config)
    all_heads, all_neurons = list(range(shape.num_heads)), list(range(shape.intermediate_size))
    blocked, o_only = build(case), build(case)
    for layer in adapter.layers(blocked):
        _zero_head_and_neuron(adapter, layer, 1, 5, shape.head_size)
    for layer in adapter.layers(o_only):
        mask_layer(adapter, layer, [h for h in all_heads if h != 1], [j for j in all_neurons if j != 5], shape)
    zeroed = sum((p == 0).sum().item() for p in blocked.parameters()) - sum((p == 0).sum().item()
                                                                            for p in untouched.parameters())
    per_layer = (shape.head_size * (shape.hidden_size + 1) * (HEAD_MATRICES[case] - 1)
                 + shape.head_size * shape.hidden_size + (shape.hidden_size + 1) * (NEURON_MATRICES[case] - 1)
                 + shape.hidden_size)
    assert zeroed == 2 * per_layer
    torch.testing.assert_close(logits(blocked, ids, mask), logits(o_only, ids, mask), rtol=1e-4, atol=1e-5)


def test_mpnet_layer_adds_only_its_kept_heads_relative_bias():
    """Without the bias-head selection a layer that kept heads [0, 2] would add heads 0 and 1's bias: wrong."""
    ids, mask = inputs()
    masked, pruned = apply(build("mpnet"), mask_layer), apply(build("mpnet"), shrink_layer)
    attn = ADAPTERS["mpnet"].layers(pruned)[0].attention.attn
    assert attn.kept_heads == (0, 2)
    assert [h for h in attn._forward_pre_hooks.values() if h is select_bias_heads] == [select_bias_heads]
    torch.testing.assert_close(logits(pruned, ids, mask), logits(masked, ids, mask), rtol=1e-4, atol=1e-5)
    attn.kept_heads = (0, 1)  # what a layer that ignored its kept indices would add
    assert (logits(pruned, ids, mask) - logits(masked, ids, mask)).abs().max() > 1e-3


def test_modernbert_glu_value_and_gate_halves_are_not_interchangeable():
    """Wi's first half is the activated value, the second the gate: a layout with the halves swapped pairs
    neuron j's value with another neuron's gate once neurons are removed unevenly, and the logits move."""
    ids, mask = inputs()
    masked = apply(build("modernbert"), mask_layer)
    adapter = ADAPTERS["modernbert"]

    class Swapped(type(adapter)):
        def layout(self, layer: nn.Module) -> Layout:
            lay = super().layout(layer)
            ffn = layer.mlp.Wi.out_features // 2
            # value and gate rows of neuron j taken from different neurons: j and (j + 1) mod I
            return Layout(lay.q, lay.k, lay.v, lay.o, (Rows("mlp.Wi", 0, ffn), Rows("mlp.Wi", ffn + 1, 2 * ffn)),
                          lay.ffn_out)

    wrong = build("modernbert")
    shape = adapter.shape(wrong.config)
    for layer, heads, kept in zip(adapter.layers(wrong), KEPT_HEADS, kept_neurons(shape.intermediate_size)):
        kept = [j for j in kept if j + 1 < shape.intermediate_size]
        shrink_layer(Swapped(), layer, heads, kept, shape)
    assert (logits(wrong, ids, mask) - logits(masked, ids, mask)).abs().max() > 1e-3


def test_modernbert_eager_and_sdpa_attention_agree_on_the_pruned_model():
    """Both CPU attention paths (and ONNX export, which traces the default sdpa one) see the pruned shapes alike."""
    ids, mask = inputs()
    pruned = apply(build("modernbert"), shrink_layer)
    assert pruned.config._attn_implementation == "sdpa"
    sdpa = logits(pruned, ids, mask)
    pruned.set_attn_implementation("eager")
    torch.testing.assert_close(logits(pruned, ids, mask), sdpa, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_onnx_export_of_the_pruned_model_matches_torch(case, tmp_path):
    import onnxruntime as ort

    from trainers.deploy.onnx_export import export_onnx

    pruned = apply(build(case), shrink_layer)
    path = export_onnx(pruned, tmp_path / "model.onnx")  # traced at [2, 8]; run at another batch and length
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask = inputs(batch=3, seq=12)
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), logits(pruned, ids, mask), rtol=1e-4, atol=1e-4)


def int8_swap(adapter: FamilyAdapter, model: nn.Module) -> int:
    """Every plain nn.Linear inside the adapter's encoder layers becomes an Int8Linear; returns how many."""
    swapped = 0
    for layer in adapter.layers(model):
        for module in list(layer.modules()):
            for name, child in list(module.named_children()):
                if type(child) is nn.Linear:
                    setattr(module, name, Int8Linear.from_linear(child))
                    swapped += 1
    return swapped


@pytest.mark.parametrize("case", CASES)
def test_int8_swap_of_the_pruned_layers_stays_close_to_fp32(case):
    ids, mask = inputs()
    pruned = apply(build(case), shrink_layer)
    adapter = adapter_for(pruned.config)
    fp32 = logits(pruned, ids, mask)
    linears = sum(type(m) is nn.Linear for layer in adapter.layers(pruned) for m in layer.modules())
    assert int8_swap(adapter, pruned) == linears == 2 * LINEARS_PER_LAYER[case]
    assert not any(type(m) is nn.Linear for layer in adapter.layers(pruned) for m in layer.modules())
    int8 = logits(pruned, ids, mask)
    assert not torch.equal(int8, fp32)  # the int8 kernels really ran
    # per-row int8 weights and per-token int8 activations on this deliberately large-weight model: 2-4 % measured
    assert (int8 - fp32).norm() <= 0.08 * fp32.norm()


# ---- vocabulary trimming: what each family's tokenizer type allows -------------------------------------

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "blue", "green", "house", "river"]
TEXTS = ["the cat sat on the mat", "the dog ran far"]  # blue, green, house, river are never used: trimmed


def mpnet_tokenizer():
    """WordPiece, MPNet's special-token layout (<s> 0, <pad> 1: MPNetEmbeddings hard-codes padding_idx 1)."""
    from transformers import MPNetTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<s>", "<pad>", "</s>", "[UNK]", *WORDS, *letters, *("##" + c for c in letters), "<mask>"]
    return MPNetTokenizer(vocab={t: i for i, t in enumerate(tokens)})


def deberta_tokenizer():
    """Unigram (what DeBERTa-v2/v3's SentencePiece model converts to), DeBERTa-v3's special tokens."""
    from transformers import DebertaV2Tokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0), ("\u2581", -3.0),
              *((f"\u2581{w}", -2.0) for w in WORDS), *((c, -5.0) for c in letters),
              *((f"\u2581{c}", -5.0) for c in letters), ("[MASK]", 0.0)]
    return DebertaV2Tokenizer(vocab=pieces)


@pytest.mark.parametrize("case, make_tokenizer", [("mpnet", mpnet_tokenizer),
                                                   ("deberta-v2/shared-att-key", deberta_tokenizer)])
def test_vocabulary_trimming_keeps_the_logits(case, make_tokenizer, tmp_path):
    from trainers.vocab import VocabularyConfig, trim_vocabulary

    tokenizer = make_tokenizer()
    config_fn, model_class = CASES[case]
    config = config_fn()
    config.vocab_size = len(tokenizer)
    config.pad_token_id, config.bos_token_id, config.eos_token_id = (
        tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = model_class(config).eval()
    model = apply(model, shrink_layer)  # trimming a pruned model, as a sweep does
    before = tokenizer(TEXTS, padding=True, return_tensors="pt")
    old = logits(model, before["input_ids"], before["attention_mask"])

    model, trimmed, report = trim_vocabulary(model, tokenizer, TEXTS, VocabularyConfig(trim="corpus"))
    assert report.vocab_size_after < report.vocab_size_before
    assert model.get_input_embeddings().num_embeddings == len(trimmed) == report.vocab_size_after
    assert "blue" not in " ".join(trimmed.get_vocab())
    if case == "mpnet":  # MPNetEmbeddings' fixed padding_idx (1) must still be the pad token
        assert trimmed.pad_token_id == model.config.pad_token_id == 1
    after = trimmed(TEXTS, padding=True, return_tensors="pt")
    assert after["input_ids"].shape == before["input_ids"].shape
    torch.testing.assert_close(logits(model, after["input_ids"], after["attention_mask"]), old, rtol=1e-5, atol=1e-6)


def test_mpnet_refuses_trimming_with_a_tokenizer_whose_id_1_is_not_special(monkeypatch):
    """With a BERT-layout vocabulary ([PAD] 0, an ordinary token at 1) trimming moves another token to id 1,
    which MPNetEmbeddings takes for padding: the logits change, so the adapter refuses such a tokenizer."""
    from transformers import BertTokenizer

    from trainers.vocab import VocabularyConfig, trim_vocabulary

    assert ADAPTERS["mpnet"].vocabulary_refusal(mpnet_tokenizer()) is None
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *("##" + c for c in letters)]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(tokens)})
    why = ADAPTERS["mpnet"].vocabulary_refusal(tokenizer)
    assert why and "id 1" in why and "[0, 2, 3, 4, 5]" in why

    texts = ["the cat sat on the mat 7", "the dog ran far"]  # "7" is unknown: [UNK], old id 2, becomes id 1
    config = CASES["mpnet"][0]()
    config.vocab_size, config.pad_token_id = len(tokenizer), 0
    torch.manual_seed(0)
    model = MPNetForSequenceClassification(config).eval()
    before = tokenizer(texts, padding=True, return_tensors="pt")
    old = logits(model, before["input_ids"], before["attention_mask"])
    with pytest.raises(ValueError, match="vocabulary trimming: MPNet treats token id 1 as padding"):
        trim_vocabulary(model, tokenizer, texts, VocabularyConfig(trim="corpus"))  # refused before anything is cut
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    monkeypatch.setattr(type(ADAPTERS["mpnet"]), "vocabulary_refusal", lambda self, tok: None)  # what it prevents:
    model, trimmed, _ = trim_vocabulary(model, tokenizer, texts, VocabularyConfig(trim="corpus"))
    after = trimmed(texts, padding=True, return_tensors="pt")
    assert trimmed.unk_token_id == 1 and (after["input_ids"] == 1).any()
    assert (logits(model, after["input_ids"], after["attention_mask"]) - old).abs().max() > 1e-3  # what it refuses


def test_vocabulary_trimming_of_a_bpe_tokenizer_is_refused_clearly():
    """ModernBERT ships a BPE tokenizer: trimming refuses it, naming the type, before touching the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from trainers.vocab import VocabularyConfig, trim_vocabulary

    vocab = {"[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "[SEP]": 3, **{w: 4 + i for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    config = CASES["modernbert"][0]()
    config.vocab_size = len(tokenizer)
    config.pad_token_id, config.bos_token_id, config.eos_token_id, config.cls_token_id, config.sep_token_id = 1, 2, 3, 2, 3
    model = ModernBertForSequenceClassification(config)
    weights = model.get_input_embeddings().weight.detach().clone()
    with pytest.raises(ValueError, match="supports WordPiece and Unigram tokenizers; this one is BPE"):
        trim_vocabulary(model, tokenizer, TEXTS, VocabularyConfig(trim="corpus"))
    assert torch.equal(model.get_input_embeddings().weight, weights)
