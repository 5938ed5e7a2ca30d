"""Knowledge-distillation losses: logits (Hinton et al., 2015) and hidden states (TinyBERT / MiniLM style)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(p_teacher || p_student) at temperature T + (1 - alpha) * CE(labels).

    T^2 keeps the soft term's gradient scale independent of T, so alpha means the same mix at every
    temperature. Computed in fp32 whatever the autocast dtype: KL of low-precision softmaxes is noisy.
    """
    student_logits = student_logits.float()
    ce = F.cross_entropy(student_logits, labels)
    if alpha == 0.0:
        return ce
    if teacher_logits is None:
        raise ValueError("distill_alpha > 0 needs teacher logits")
    t = float(temperature)
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits.float() / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * (t * t) * kl + (1.0 - alpha) * ce


def hidden_state_loss(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean over layers of the MSE between the student's and the teacher's hidden states (TinyBERT, Jiao et al.
    2020, without its projection: structured pruning keeps the hidden size and the layer count).

    `*_hidden` are the models' `hidden_states` (embedding output, then one per layer: [batch, tokens, hidden]).
    Per layer: the squared difference averaged over the real tokens (attention_mask 1) and the hidden size, so
    padding never counts and the weight means the same at every depth and batch width. Computed in fp32.
    """
    if len(student_hidden) != len(teacher_hidden):
        raise ValueError(
            f"hidden-state distillation pairs layers one to one: the student has {len(student_hidden)} hidden states, "
            f"the teacher {len(teacher_hidden)} (a student with fewer layers needs a layer map, not supported)"
        )
    mask = attention_mask.unsqueeze(-1).float()
    per_layer = []
    for i, (s, t) in enumerate(zip(student_hidden, teacher_hidden)):
        if s.shape != t.shape:
            raise ValueError(f"hidden state {i}: student shape {tuple(s.shape)} differs from the teacher's {tuple(t.shape)}")
        sq = (s.float() - t.float().detach()) ** 2 * mask
        per_layer.append(sq.sum() / (mask.sum() * s.shape[-1]).clamp_min(1.0))
    return torch.stack(per_layer).mean()
