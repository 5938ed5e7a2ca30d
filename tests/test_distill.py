import math

import pytest
import torch

from trainers.distill import distillation_loss


def test_matches_hand_computed_value():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    T, alpha = 2.0, 0.25
    # By hand: p_t = softmax([0, .5]), p_s = softmax([.5, 0]); KL(p_t || p_s) = sum p_t (log p_t - log p_s).
    a, b = math.exp(0.0), math.exp(0.5)
    pt = [a / (a + b), b / (a + b)]
    ps = [pt[1], pt[0]]
    kl = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))
    ce = -math.log(math.exp(1.0) / (math.exp(1.0) + 1.0))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    got = distillation_loss(s, y, t, alpha=alpha, temperature=T).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_plain_cross_entropy_and_needs_no_teacher():
    s = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    assert distillation_loss(s, y, None, alpha=0.0, temperature=5.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(s, y).item()
    )


def test_alpha_one_is_zero_when_student_equals_teacher():
    s = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    assert distillation_loss(s, y, s.clone(), alpha=1.0, temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_missing_teacher_logits_is_an_error():
    with pytest.raises(ValueError, match="teacher logits"):
        distillation_loss(torch.randn(2, 2), torch.tensor([0, 1]), None, alpha=0.5, temperature=2.0)


# --- hidden-state distillation (training.distill_hidden_weight) ---------------------------------------------

import copy  # noqa: E402

from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from trainers.config import TrainingConfig  # noqa: E402
from trainers.distill import hidden_state_loss  # noqa: E402
from trainers.pruning import PruningConfig, make_pruner  # noqa: E402
from trainers.train import train  # noqa: E402


def test_hidden_state_loss_is_the_mean_over_layers_of_the_masked_mse():
    s = [torch.tensor([[[1.0, 3.0], [100.0, -50.0]]]), torch.tensor([[[2.0, 2.0], [7.0, 7.0]]])]
    t = [torch.tensor([[[0.0, 0.0], [0.0, 0.0]]]), torch.tensor([[[0.0, 4.0], [0.0, 0.0]]])]
    mask = torch.tensor([[1, 0]])  # the second token is padding: its (huge) difference must not count
    # layer 0: ((1-0)^2 + (3-0)^2) / 2 = 5; layer 1: ((2-0)^2 + (2-4)^2) / 2 = 4; mean 4.5
    assert hidden_state_loss(s, t, mask).item() == pytest.approx(4.5)


def test_hidden_state_loss_gradient_reaches_the_student_only_and_only_on_real_tokens():
    s = torch.randn(2, 3, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    hidden_state_loss([s], [t], mask).backward()
    expected = 2 * (s - t).detach() * mask.unsqueeze(-1) / (3 * 4)  # 3 real tokens x hidden 4, one layer
    assert torch.allclose(s.grad, expected, atol=1e-6)
    assert t.grad is None  # the teacher is a target, not trained


def test_hidden_state_loss_refuses_unpaired_layers():
    with pytest.raises(ValueError, match="student has 2 hidden states, the teacher 3"):
        hidden_state_loss([torch.zeros(1, 1, 2)] * 2, [torch.zeros(1, 1, 2)] * 3, torch.ones(1, 1))


def _tiny_bert(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                     max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)
    return BertForSequenceClassification(cfg)


def _split(n: int = 8, width: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(n, width, dtype=torch.long)
    mask[::2, 4:] = 0  # half the rows padded: the loss must ignore those tokens
    return {"input_ids": torch.randint(1, 50, (n, width), generator=g) * mask, "attention_mask": mask,
            "labels": torch.randint(0, 2, (n,), generator=g)}


def test_training_loop_adds_the_weighted_hidden_state_term_to_the_loss_and_gradients():
    split, teacher = _split(), _tiny_bert(1).eval()
    one_step = TrainingConfig(epochs=1, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, max_seq_len=8)
    student = _tiny_bert(0)
    with torch.no_grad():  # what the loop must compute on its single full batch, by hand
        s_out = student(input_ids=split["input_ids"], attention_mask=split["attention_mask"], output_hidden_states=True)
        t_out = teacher(input_ids=split["input_ids"], attention_mask=split["attention_mask"], output_hidden_states=True)
        ce = torch.nn.functional.cross_entropy(s_out.logits, split["labels"]).item()
        hidden = hidden_state_loss(s_out.hidden_states, t_out.hidden_states, split["attention_mask"]).item()
    assert hidden > 0.01  # two different inits: the term is not trivially 0

    runs = {}
    for weight in (0.0, 3.0):
        model = copy.deepcopy(student)
        cfg = one_step.model_copy(update={"distill_hidden_weight": weight})
        stats = train(model, split, cfg, device="cpu", teacher=teacher, log=lambda _: None)
        runs[weight] = (stats.final_loss, model)
    assert runs[0.0][0] == pytest.approx(ce, rel=1e-5)
    assert runs[3.0][0] == pytest.approx(ce + 3.0 * hidden, rel=1e-5)
    # a different loss gave different gradients: the embeddings (only reachable via hidden states / logits) moved apart
    w0 = runs[0.0][1].bert.embeddings.word_embeddings.weight
    w3 = runs[3.0][1].bert.embeddings.word_embeddings.weight
    assert not torch.allclose(w0, w3)


def test_hidden_state_distillation_pulls_a_pruned_student_towards_the_teacher():
    """The pruned student (heads and FFN neurons physically removed, hidden size and depth kept) still pairs
    its layers with the teacher's; the same training with the term ends closer to the teacher than without."""
    split, teacher = _split(), _tiny_bert(1).eval()

    def term(student) -> float:
        with torch.no_grad():
            s = student.eval()(input_ids=split["input_ids"], attention_mask=split["attention_mask"], output_hidden_states=True)
            t = teacher(input_ids=split["input_ids"], attention_mask=split["attention_mask"], output_hidden_states=True)
            return hidden_state_loss(s.hidden_states, t.hidden_states, split["attention_mask"]).item()

    after = {}
    for weight in (0.0, 10.0):
        student = _tiny_bert(0)
        pruner = make_pruner(student, 0.5, PruningConfig(method="one_shot"))
        pruner.prepare(student, None)
        pruner.finalize(student)
        cfg = TrainingConfig(epochs=20, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, max_seq_len=8,
                             distill_hidden_weight=weight)
        train(student, split, cfg, device="cpu", teacher=teacher, log=lambda _: None)
        after[weight] = term(student)
    assert after[10.0] < 0.5 * after[0.0]


def test_hidden_state_distillation_without_a_teacher_model_is_refused_before_training():
    cfg = TrainingConfig(epochs=1, batch_size=8, max_seq_len=8, distill_hidden_weight=1.0)
    with pytest.raises(ValueError, match="distill_hidden_weight > 0 needs the teacher model"):
        train(_tiny_bert(0), _split(), cfg, device="cpu", teacher_logits=torch.zeros(8, 2), alpha=0.5, log=lambda _: None)


def test_live_teacher_soft_targets_equal_cached_logits():
    """alpha > 0 without cached logits runs the teacher per batch; the loss is the one the cached logits give."""
    split, teacher = _split(), _tiny_bert(1).eval()
    with torch.no_grad():
        cached = teacher(input_ids=split["input_ids"], attention_mask=split["attention_mask"]).logits
    cfg = TrainingConfig(epochs=1, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, max_seq_len=8)
    live = train(_tiny_bert(0), split, cfg, device="cpu", alpha=0.5, temperature=2.0, teacher=teacher, log=lambda _: None)
    from_cache = train(_tiny_bert(0), split, cfg, device="cpu", alpha=0.5, temperature=2.0, teacher_logits=cached,
                       log=lambda _: None)
    assert live.final_loss == pytest.approx(from_cache.final_loss, rel=1e-5)


def test_a_trial_with_hidden_state_distillation_loads_its_teacher_and_is_its_own_training(tmp_path, tiny_encoder, topics_csv):
    """`training.distill_hidden_weight` reaches the trial: the teacher runs, the loss changes, the training key differs."""
    from conftest import TOPICS, make_tiny_classifier
    from trainers.config import TrialConfig
    from trainers.data.config import DataConfig
    from trainers.inputs import load_and_encode
    from trainers.pruning import load_pruned
    from trainers.student_training import train_student
    from trainers.training_share import training_key

    teacher = make_tiny_classifier(tmp_path / "teacher", tiny_encoder, sorted(TOPICS))
    results, keys = {}, {}
    for weight in (0.0, 1.0):
        cfg = TrialConfig(teacher_dir=str(teacher), data=DataConfig(path=topics_csv), cache_dir=tmp_path / "cache",
                          training=TrainingConfig(epochs=1, batch_size=16, max_seq_len=16, distill_hidden_weight=weight),
                          pruning=PruningConfig(method="one_shot"), pruning_ratio=0.5, output_dir=tmp_path / f"out{weight}")
        student, tokenizer = load_pruned(cfg.teacher_dir)
        student.base_model.embeddings.word_embeddings.weight.data.mul_(3.0)  # the student differs from its teacher
        loaded, encoded = load_and_encode(cfg.data, tmp_path, tokenizer, max_seq_len=16, cache_dir=cfg.cache_dir)
        logs: list[str] = []
        results[weight] = (train_student(cfg, student, tokenizer, loaded, encoded, device="cpu", log=logs.append), logs)
        keys[weight] = training_key(cfg, teacher_fingerprint="t", data_fingerprint="d")
    assert any("hidden-state distillation (weight 1)" in line for line in results[1.0][1])
    assert not any("hidden-state" in line for line in results[0.0][1])
    assert results[1.0][0].stats["final_loss"] > results[0.0][0].stats["final_loss"]  # CE + a positive term
    assert keys[0.0] != keys[1.0]


def test_frozen_word_embeddings_keep_the_table_train_the_rest_and_key_their_own_training():
    """`training.freeze_word_embeddings`: the token table ends exactly as it started (for every family, through
    its adapter), every other weight still learns, and the option is part of the training key."""
    from trainers.config import TrialConfig
    from trainers.data.config import DataConfig
    from trainers.training_share import training_key

    split = _split()
    for freeze in (False, True):
        model = _tiny_bert(0)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        cfg = TrainingConfig(epochs=2, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, max_seq_len=8,
                             freeze_word_embeddings=freeze)
        train(model, split, cfg, device="cpu", log=lambda _: None)
        after = model.state_dict()
        table = "bert.embeddings.word_embeddings.weight"
        assert torch.equal(after[table], before[table]) is freeze
        learned = [k for k in before if k != table and not torch.equal(after[k], before[k])]
        assert len(learned) > 20  # the encoder, the pooler and the head still train
    keys = {freeze: training_key(TrialConfig(teacher_dir="t", data=DataConfig(path="d.csv"),
                                             training=TrainingConfig(freeze_word_embeddings=freeze)),
                                 teacher_fingerprint="t", data_fingerprint="d") for freeze in (False, True)}
    assert keys[False] != keys[True]
