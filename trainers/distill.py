"""Knowledge-distillation loss (Hinton et al., 2015)."""

from __future__ import annotations

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
