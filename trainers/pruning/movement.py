"""Block Movement Pruning (Lagunas et al. 2021) on BERT-like encoders.

Each attention matrix (Q, K, V, O) gets one learned score per block of weights, each FFN neuron one
score shared by its intermediate row and its output column. The forward pass multiplies weights by a
binary mask computed from the scores; the backward pass treats the binarisation as identity
(straight-through), so dL/dS = sum over the block of dL/dW' * W: scores grow for weights that move
away from zero ("movement"). The masks are torch parametrizations, so state-dict keys change only
while training; `finalize` removes them and physically prunes.

topk mode      masks whole heads (all their blocks) and FFN neurons chosen from the block scores
               averaged per head, so the physical ratio after finalize equals the schedule's target.
threshold mode the paper's: keep blocks with sigmoid(S) > threshold, L1 on sigmoid(S); a head is
               removed when all its V blocks or all its O blocks are pruned, others stay (zero
               blocks inside, or restored with `hybrid_filled`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from trainers.pruning.config import PruningConfig
from trainers.pruning.plan import (
    PruningPlan,
    _head_rows,
    _plan,
    apply_plan,
    encoder_dims,
    encoder_layers,
    layer_linears,
    round_up_kept,
    select_plan,
)

ATTENTION = ("query", "key", "value", "attn_out")


def cubic_progress(step: int, total_steps: int, warmup_fraction: float, final_fraction: float) -> float:
    """0 during warm-up, 1 during the final phase, cubic in between (Zhu & Gupta 2017; the paper's schedule)."""
    warm, final = warmup_fraction * total_steps, final_fraction * total_steps
    if step <= warm:
        return 0.0
    if step >= total_steps - final:
        return 1.0
    x = (step - warm) / (total_steps - final - warm)
    return 1.0 - (1.0 - x) ** 3


class _BlockMask(nn.Module):
    """Parametrization W -> W * expand(mask), the mask given as [R, C] blocks tiling W.

    The mask comes from a callable so the scores stay outside the model: the training loop's
    model-parameter group and its gradient clipping must not see them.
    """

    def __init__(self, mask: Callable[[], torch.Tensor]):
        super().__init__()
        self.mask = mask

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        m = self.mask().to(weight.device, weight.dtype)
        r, c = m.shape
        blocks = weight.view(r, weight.shape[0] // r, c, weight.shape[1] // c)
        return (blocks * m[:, None, :, None]).view_as(weight)


def _block_sides(cfg: PruningConfig, head_size: int, hidden: int) -> tuple[int, int]:
    """Block side along the head axis and along the hidden axis (blocks never straddle two heads)."""
    if cfg.block_size == "head":
        return head_size, hidden
    return math.gcd(cfg.block_size, head_size), math.gcd(cfg.block_size, hidden)


class BlockMovementPruner:
    def __init__(self, model: nn.Module, ratio: float, cfg: PruningConfig):
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"pruning ratio must be in [0, 1), got {ratio}")
        self.ratio, self.cfg, self.dims = ratio, cfg, encoder_dims(model)
        d = self.dims
        self.bh, self.bd = _block_sides(cfg, d.head_size, d.hidden_size)
        rows, cols = d.num_heads * d.head_size // self.bh, d.hidden_size // self.bd
        device = next(model.parameters()).device

        def zeros(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(*shape, device=device))

        # scores[layer][name]: [R, C] blocks for attention (O is transposed), [F] neurons for the FFN
        self.scores: list[dict[str, nn.Parameter]] = [
            {"query": zeros(rows, cols), "key": zeros(rows, cols), "value": zeros(rows, cols),
             "attn_out": zeros(cols, rows), "ffn": zeros(d.intermediate_size)}
            for _ in range(d.num_layers)
        ]
        self.progress = 0.0  # position on the cubic schedule, 0..1
        self.keep: list[dict[str, torch.Tensor]] = []  # current binary masks, same shapes as scores
        self.model: nn.Module | None = None

    # ---- the Pruner protocol -------------------------------------------------------------------

    def prepare(self, model: nn.Module, calib_batches: Iterable[dict] | None = None) -> None:
        if self.model is not None:
            raise RuntimeError("prepare() was already called; one pruner masks one model once")
        self.model = model
        self._refresh()
        for i, layer in enumerate(encoder_layers(model)):
            for name, lin in layer_linears(layer).items():
                parametrize.register_parametrization(lin, "weight", _BlockMask(partial(self._mask, i, name)))

    def score_parameters(self) -> list[nn.Parameter]:
        self._follow_device()
        return [p for layer in self.scores for p in layer.values()]

    def on_step(self, step: int, total_steps: int) -> None:
        self.progress = cubic_progress(step, total_steps, self.cfg.warmup_fraction, self.cfg.final_fraction)
        self._refresh()

    def penalty(self) -> torch.Tensor:
        """lambda_t * expected density, density = weight-weighted mean of sigmoid(S) (threshold mode only)."""
        first = self.scores[0]["ffn"]
        if self.cfg.mode != "threshold" or self.cfg.l1_lambda == 0.0:
            return torch.zeros((), device=first.device)
        lam = self.cfg.l1_lambda * self._threshold() / self.cfg.final_threshold  # ramps with the threshold
        block, neuron = self.bh * self.bd, self.dims.neuron_weights
        kept = sum(
            block * sum(torch.sigmoid(s[n]).sum() for n in ATTENTION) + neuron * torch.sigmoid(s["ffn"]).sum()
            for s in self.scores
        )
        return lam * kept / self.dims.total_weights

    def finalize(self, model: nn.Module) -> PruningPlan:
        """Bake the final masks into the weights, drop the parametrizations, physically prune."""
        if self.model is None:
            raise RuntimeError("finalize() called before prepare()")
        self.progress = 1.0  # always prune to the final target, even if training stopped early
        self._refresh()
        plan = self._final_plan()
        keep_heads = [set(lp.heads) for lp in plan.layers]
        with torch.no_grad():
            for i, layer in enumerate(encoder_layers(model)):
                lin = layer_linears(layer)
                masked = {name: lin[name].weight.detach().clone() for name in lin}  # W * mask
                for name in lin:
                    parametrize.remove_parametrizations(lin[name], "weight", leave_parametrized=False)
                self._fold_value_bias(lin, masked, keep_heads[i])
                for name in lin:
                    if name in ATTENTION and self.cfg.hybrid_filled:
                        continue  # kept heads get their pruned blocks back
                    lin[name].weight.copy_(masked[name])
        self.model = None
        apply_plan(model, plan)
        return plan

    # ---- masks ---------------------------------------------------------------------------------

    def _mask(self, layer: int, name: str) -> torch.Tensor:
        """Binary mask forward, identity backward: keep + S - S.detach()."""
        s = self.scores[layer]["ffn" if name in ("intermediate", "output") else name]
        keep = self.keep[layer]["ffn" if name in ("intermediate", "output") else name].to(s.device, s.dtype)
        m = keep + s - s.detach()
        if name == "intermediate":
            return m[:, None]
        if name == "output":
            return m[None, :]
        return m

    def _threshold(self) -> float:
        c = self.cfg
        return c.initial_threshold + (c.final_threshold - c.initial_threshold) * self.progress

    def _per_head(self, t: torch.Tensor, name: str) -> torch.Tensor:
        """[H, blocks] view of one matrix's block tensor (rows of Q/K/V, columns of O belong to a head)."""
        h = self.dims.num_heads
        if name == "attn_out":
            return t.reshape(t.shape[0], h, -1).transpose(0, 1).reshape(h, -1)
        return t.reshape(h, -1)

    def _head_scores(self) -> torch.Tensor:
        """[L, H] mean block score of each head over its Q, K, V rows and O columns."""
        return torch.stack(
            [torch.stack([self._per_head(s[n].detach(), n).mean(1) for n in ATTENTION]).mean(0) for s in self.scores]
        )

    def _neuron_scores(self) -> torch.Tensor:
        return torch.stack([s["ffn"].detach() for s in self.scores])

    def _refresh(self) -> None:
        """Recompute the binary masks from the scores and the schedule (after every optimizer step)."""
        if self.cfg.mode == "threshold":
            t = self._threshold()
            self.keep = [{n: torch.sigmoid(p.detach()) > t for n, p in s.items()} for s in self.scores]
            return
        ratio = self.ratio * self.progress
        plan = select_plan(self._head_scores(), self._neuron_scores(), ratio, self.dims,
                           ffn_round_to=self.cfg.ffn_round_to)
        per_head = self.dims.head_size // self.bh
        self.keep = []
        for s, lp in zip(self.scores, plan.layers):
            heads = torch.zeros(self.dims.num_heads, dtype=torch.bool)
            heads[lp.heads] = True
            rows = heads.repeat_interleave(per_head).to(s["query"].device)
            ffn = torch.zeros(self.dims.intermediate_size, dtype=torch.bool, device=s["ffn"].device)
            ffn[lp.ffn] = True
            block = rows[:, None].expand_as(s["query"])
            self.keep.append({"query": block, "key": block, "value": block, "attn_out": block.T, "ffn": ffn})

    def _final_plan(self) -> PruningPlan:
        method = f"block_movement/{self.cfg.mode}"
        if self.cfg.mode == "topk":
            return select_plan(self._head_scores(), self._neuron_scores(), self.ratio, self.dims,
                               ffn_round_to=self.cfg.ffn_round_to, method=method)
        head_keep, ffn_keep, partial_heads = [], [], False
        for keep, head_score, s in zip(self.keep, self._head_scores(), self.scores):
            blocks = {n: self._per_head(keep[n], n).cpu() for n in ATTENTION}
            heads = blocks["value"].any(1) & blocks["attn_out"].any(1)  # else the head adds at most a constant
            if not heads.any():
                heads[head_score.argmax()] = True
            whole = torch.stack([b.all(1) for b in blocks.values()]).all(0)
            partial_heads |= bool((heads & ~whole).any())
            ffn = keep["ffn"].cpu().clone()
            if not ffn.any():
                ffn[s["ffn"].detach().argmax()] = True
            head_keep.append(heads)
            ffn_keep.append(ffn)
        ffn_keep = round_up_kept(torch.stack(ffn_keep), self._neuron_scores().cpu(), self.cfg.ffn_round_to)
        return _plan(self.dims, head_keep, list(ffn_keep), target_ratio=self.ratio, method=method,
                     refilled=self.cfg.hybrid_filled and partial_heads)

    def _fold_value_bias(self, lin: dict[str, nn.Linear], masked: dict[str, torch.Tensor], kept: set[int]) -> None:
        """A removed head with all of V masked still adds O_h @ b_v,h (softmax rows sum to 1): into O's bias."""
        v_bias, o_bias, d = lin["value"].bias, lin["attn_out"].bias, self.dims.head_size
        if v_bias is None:
            return
        gone = [h for h in range(self.dims.num_heads) if h not in kept]
        if not gone:
            return
        rows = _head_rows(gone, d).to(v_bias.device)
        shift = masked["attn_out"][:, rows] @ v_bias[rows]
        if o_bias is None:
            raise ValueError("cannot fold a removed head's value bias: attention output layer has no bias")
        o_bias.add_(shift)

    def _follow_device(self) -> None:
        """Scores live on the model's device (the loop may move the model after prepare())."""
        if self.model is None:
            return
        device = next(self.model.parameters()).device
        for s in self.scores:
            for p in s.values():
                if p.device != device:
                    p.data = p.data.to(device)
        self._refresh()
