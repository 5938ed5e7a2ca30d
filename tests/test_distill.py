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
