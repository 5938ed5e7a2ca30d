"""Block Movement Pruning (Lagunas et al. 2021) on every encoder family with an adapter (trainers/families).

Each attention matrix (Q, K, V, O) gets one learned score per block of weights (32x32 by default,
blocks never straddle two heads), each FFN neuron one score for its intermediate row / output column
pair. The forward pass multiplies each block of weights (each neuron's activation) by a binary mask
computed from the scores; the backward pass treats the binarisation as identity (straight-through),
so dL/dS = sum over the block of dL/dW' * W: scores grow for weights that move away from zero
("movement"). Masks are independent per block, so a masked block of a head that still has other
blocks keeps receiving gradient and can come back, also with zero biases. The FFN mask acts on the
neuron's activation, so a masked neuron's score still sees its would-be contribution
(dL/dS = activation * dL/d(masked activation)) and can come back too. Attention masks are torch
parametrizations (a fused Linear, such as ModernBERT's Wqkv, gets one whose mask concatenates its
roles' block masks in row order) and the FFN masks forward pre-hooks on the FFN-out Linear (its input
columns are the neurons, also for a GLU), so state-dict keys change only while training; `finalize`
removes them and physically prunes. Where the layers are is the family adapter's Layout; a layer that
several depths share (ALBERT) has one mask set.

granularity 'block' (default)
  topk       one global TopK over all attention blocks and FFN neurons, ranked by score, each unit
             counting its own weights, masks the schedule's fraction of the encoder's weights: how much
             attention and FFN lose follows from the scores. During the final phase (and at finalize)
             the masks are the final structure: the hybrid-filled selection below, at the target.
  threshold  the paper's: keep blocks and neurons with sigmoid(S) > threshold, L1 on sigmoid(S); at
             finalize the same final selection as topk on the final scores, so the target ratio is
             removed and different targets give different plans (`plan.refilled`: retrain).
  finalize   hybrid filled: heads with no surviving block are removed, heads with any are kept whole
             (their masked blocks restored: `plan.refilled`, the trial retrains once), masked FFN
             neurons removed. Filling keeps more weights than the blocks did, so more heads/neurons go
             until the physical ratio is on target (lowest surviving score margin per weight freed
             first). With hybrid_filled=False the masked blocks of kept heads stay zero instead.
granularity 'head' (earlier behaviour, for comparison): whole heads from their mean block score, and
  attention / FFN lose the same fraction (`select_plan`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from trainers.pruning.config import PruningConfig
from trainers.families.base import Layout, linear_at, slice_bounds
from trainers.pruning.plan import (
    PruningPlan,
    _plan,
    apply_plan,
    encoder_dims,
    family,
    remove_to_budget,
    round_up_kept,
    select_plan,
)

ATTENTION = ("query", "key", "value", "attn_out")  # score names of a Layout's q, k, v, o (O's blocks transposed)


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
        self.blocks_per_head = d.head_size // self.bh
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
        self._hooks: list = []
        self._masked: list[tuple[nn.Module, str]] = []  # (layer, path) of each parametrized Linear

    # ---- the Pruner protocol -------------------------------------------------------------------

    def prepare(self, model: nn.Module, calib_batches: Iterable[dict] | None = None) -> None:
        if self.model is not None:
            raise RuntimeError("prepare() was already called; one pruner masks one model once")
        self.model = model
        self._refresh()
        adapter = family(model)
        for i, layer in enumerate(adapter.layers(model)):
            layout = adapter.layout(layer)
            for path, parts in self._row_parts(layer, layout).items():
                mask = partial(self._mask, i, parts[0]) if parts == [parts[0]] and isinstance(parts[0], str) \
                    else partial(self._fused_mask, i, parts)
                parametrize.register_parametrization(linear_at(layer, path), "weight", _BlockMask(mask))
                self._masked.append((layer, path))
            parametrize.register_parametrization(linear_at(layer, layout.o), "weight",
                                                 _BlockMask(partial(self._mask, i, "attn_out")))
            self._masked.append((layer, layout.o))
            out = linear_at(layer, layout.ffn_out)
            self._hooks.append(out.register_forward_pre_hook(partial(self._mask_neurons, i)))

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
        """Final masks at the target ratio, baked into the weights (or filled), then physically pruned."""
        if self.model is None:
            raise RuntimeError("finalize() called before prepare()")
        self.progress = 1.0  # always prune to the final target, even if training stopped early
        self._refresh()
        trained_masks = self.keep
        plan = self._final_plan()
        changed = any(not torch.equal(a[n], b[n]) for a, b in zip(trained_masks, self.keep) for n in a)
        fill = self.cfg.granularity == "block" and self.cfg.hybrid_filled
        with torch.no_grad():
            for layer, path in self._masked:
                linear = linear_at(layer, path)
                masked = linear.weight.detach().clone()  # W * mask
                parametrize.remove_parametrizations(linear, "weight", leave_parametrized=False)
                if not fill:
                    linear.weight.copy_(masked)
        for hook in self._hooks:
            hook.remove()
        self._hooks, self._masked, self.model = [], [], None
        refilled = fill and self._kept_heads_lost_blocks(plan)
        plan = plan.model_copy(update={"refilled": refilled or changed})
        apply_plan(model, plan)
        return plan

    # ---- masks ---------------------------------------------------------------------------------

    def _mask(self, layer: int, name: str) -> torch.Tensor:
        """Binary mask forward, identity backward: keep + S - S.detach()."""
        s = self.scores[layer][name]
        return self.keep[layer][name].to(s.device, s.dtype) + s - s.detach()

    def _fused_mask(self, layer: int, parts: list) -> torch.Tensor:
        """One Linear's row-block mask from its roles' masks in row order (an int: that many block rows no
        role owns, kept)."""
        ref = self.scores[layer]["query"]
        return torch.cat([self._mask(layer, p) if isinstance(p, str)
                          else torch.ones(p, ref.shape[1], device=ref.device, dtype=ref.dtype) for p in parts])

    def _row_parts(self, layer: nn.Module, layout: Layout) -> dict[str, list]:
        """Per Linear holding Q, K or V rows: its roles (and unowned block-row counts) in row order."""
        roles: dict[str, list[tuple[int, int, str]]] = {}
        for role, rows in zip(ATTENTION, (layout.q, layout.k, layout.v)):
            start, stop = slice_bounds(layer, rows)
            roles.setdefault(rows.path, []).append((start, stop, role))
        parts: dict[str, list] = {}
        for path, spans in roles.items():
            out, at, total = [], 0, linear_at(layer, path).out_features
            for start, stop, role in sorted(spans):
                if start > at:
                    out.append((start - at) // self.bh)
                out.append(role)
                at = stop
            if at < total:
                out.append((total - at) // self.bh)
            parts[path] = out
        return parts

    def _mask_neurons(self, layer: int, module: nn.Module, args: tuple) -> tuple:
        """The FFN-out Linear's input (the neuron activations) times the neuron mask (same straight-through
        estimator)."""
        x = args[0]
        return (x * self._mask(layer, "ffn").to(x.dtype), *args[1:])

    def _threshold(self) -> float:
        c = self.cfg
        return c.initial_threshold + (c.final_threshold - c.initial_threshold) * self.progress

    def _per_head(self, t: torch.Tensor, name: str) -> torch.Tensor:
        """[H, blocks] view of one matrix's block tensor (rows of Q/K/V, columns of O belong to a head)."""
        h = self.dims.num_heads
        if name == "attn_out":
            return t.reshape(t.shape[0], h, -1).transpose(0, 1).reshape(h, -1)
        return t.reshape(h, -1)

    def _head_blocks(self, layer: dict[str, torch.Tensor]) -> torch.Tensor:
        """[H, all blocks of the head over Q, K, V, O] of a per-layer dict of block tensors."""
        return torch.cat([self._per_head(layer[n].detach(), n) for n in ATTENTION], dim=1)

    def _head_scores(self) -> torch.Tensor:
        """[L, H] mean block score of each head: its score per weight (all blocks have the same size)."""
        return torch.stack([self._head_blocks(s).mean(1) for s in self.scores]).cpu()

    def _neuron_scores(self) -> torch.Tensor:
        return torch.stack([s["ffn"].detach() for s in self.scores]).cpu()

    def _refresh(self) -> None:
        """Recompute the binary masks from the scores and the schedule (after every optimizer step)."""
        if self.cfg.granularity == "head":
            plan = select_plan(self._head_scores(), self._neuron_scores(), self.ratio * self.progress, self.dims,
                               ffn_round_to=self.cfg.ffn_round_to)
            self.keep = self._head_masks([lp.heads for lp in plan.layers], [lp.ffn for lp in plan.layers])
        elif self.cfg.mode == "threshold":
            t = self._threshold()
            self.keep = [{n: torch.sigmoid(p.detach()) > t for n, p in s.items()} for s in self.scores]
        elif self.progress < 1.0:
            self.keep = self._block_topk(self.ratio * self.progress)
        else:  # the final phase trains the final structure (before filling)
            self.keep = self._final_masks()[0]

    def _block_topk(self, ratio: float) -> list[dict[str, torch.Tensor]]:
        """One global TopK over all attention blocks and FFN neurons, each counting its own weights, so that
        `ratio` of the encoder's weights are masked; each layer keeps its best block and its best neuron."""
        names = (*ATTENTION, "ffn")
        flat = [s[n].detach().flatten().cpu() for s in self.scores for n in names]
        block, neuron = self.bh * self.bd, self.dims.neuron_weights
        costs = torch.cat([torch.full_like(f, neuron if i % 5 == 4 else block) for i, f in enumerate(flat)])
        removable = torch.ones(costs.numel(), dtype=torch.bool)
        offset = 0
        for i in range(len(self.scores)):
            sizes = [flat[i * 5 + j].numel() for j in range(5)]
            attention = torch.cat(flat[i * 5 : i * 5 + 4])
            removable[offset + int(attention.argmax())] = False
            removable[offset + sum(sizes[:4]) + int(flat[i * 5 + 4].argmax())] = False
            offset += sum(sizes)
        keep = ~remove_to_budget(torch.cat(flat), costs, removable, ratio * self.dims.total_weights)
        masks, parts = [], iter(keep.split([f.numel() for f in flat]))
        for s in self.scores:
            masks.append({n: next(parts).view_as(s[n]).to(s[n].device) for n in names})
        return masks

    def _final_masks(self) -> tuple[list[dict[str, torch.Tensor]], list[torch.Tensor], list[torch.Tensor]]:
        """Masks, kept heads and kept neurons after hybrid filling, calibrated to the target ratio.

        From the block TopK at the target: heads with no surviving block go, heads with any stay whole;
        filling keeps more weights than the blocks did, so more heads and neurons go until the physical
        ratio is on target, lowest score per weight removed first: a unit's value is the margin above the
        TopK threshold of what survives in it (a neuron: its score; a head: its surviving blocks, each
        weighted by its size), divided by the weights that removing it frees.
        """
        blocks = self._block_topk(self.ratio)
        d = self.dims
        heads = torch.stack([self._head_blocks(m).any(1) for m in blocks]).cpu()
        ffn = torch.stack([m["ffn"] for m in blocks]).cpu()
        head_keys, neuron_keys = self._margins(blocks)
        for i in range(d.num_layers):  # the plan keeps at least one head and one neuron per layer
            if not heads[i].any():
                heads[i, head_keys[i].argmax()] = True
            if not ffn[i].any():
                ffn[i, neuron_keys[i].argmax()] = True
        kept = int(heads.sum()) * d.head_weights + int(ffn.sum()) * d.neuron_weights
        still = kept - (1.0 - self.ratio) * d.total_weights
        if still > 0:
            removable = torch.cat([heads.flatten(), ffn.flatten()])
            rows = torch.arange(d.num_layers)
            best_head = torch.where(heads, head_keys, -torch.inf).argmax(1)
            best_neuron = torch.where(ffn, neuron_keys, -torch.inf).argmax(1)
            removable[rows * d.num_heads + best_head] = False
            removable[heads.numel() + rows * d.intermediate_size + best_neuron] = False
            costs = torch.cat([torch.full((heads.numel(),), float(d.head_weights)),
                               torch.full((ffn.numel(),), float(d.neuron_weights))])
            gone = remove_to_budget(torch.cat([head_keys.flatten(), neuron_keys.flatten()]), costs, removable, still)
            heads &= ~gone[: heads.numel()].view_as(heads)
            ffn &= ~gone[heads.numel():].view_as(ffn)
        ffn = round_up_kept(ffn, self._neuron_scores(), self.cfg.ffn_round_to)  # margins are 0 for all masked
        masks = []
        for s, m, h, f in zip(self.scores, blocks, heads, ffn):
            best = self._head_blocks(s).max(1).values  # a kept head keeps at least its best block
            layer = {}
            for name in ATTENTION:
                owner = torch.arange(d.num_heads).repeat_interleave(self.blocks_per_head).to(s[name].device)
                kept_head, head_best = h.to(owner.device)[owner], best[owner]
                if name == "attn_out":
                    kept_head, head_best = kept_head[None, :], head_best[None, :]
                else:
                    kept_head, head_best = kept_head[:, None], head_best[:, None]
                layer[name] = kept_head & (m[name] | (s[name].detach() >= head_best))
            layer["ffn"] = f.to(s["ffn"].device)
            masks.append(layer)
        return masks, list(heads), list(ffn)

    def _margins(self, blocks: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """[L, H] and [L, F] value per weight of each head and neuron under the block masks `blocks`."""
        masked = [s[n].detach()[~m[n]] for s, m in zip(self.scores, blocks) for n in m]
        masked = torch.cat([t.flatten() for t in masked])
        threshold = masked.max() if masked.numel() else min(s[n].detach().min() for s in self.scores for n in s)
        heads, neurons = [], []
        for s, m in zip(self.scores, blocks):
            margin = {n: (s[n].detach() - threshold).clamp(min=0) * m[n] for n in m}
            heads.append(self._head_blocks(margin).sum(1) * (self.bh * self.bd) / self.dims.head_weights)
            neurons.append(margin["ffn"])
        return torch.stack(heads).cpu(), torch.stack(neurons).cpu()

    def _head_masks(self, heads: list, ffn: list) -> list[dict[str, torch.Tensor]]:
        masks = []
        for s, kept_heads, kept_ffn in zip(self.scores, heads, ffn):
            h = torch.zeros(self.dims.num_heads, dtype=torch.bool)
            h[kept_heads] = True
            rows = h.repeat_interleave(self.blocks_per_head).to(s["query"].device)
            f = torch.zeros(self.dims.intermediate_size, dtype=torch.bool, device=s["ffn"].device)
            f[kept_ffn] = True
            block = rows[:, None].expand_as(s["query"])
            masks.append({"query": block, "key": block, "value": block, "attn_out": block.T, "ffn": f})
        return masks

    def _final_plan(self) -> PruningPlan:
        """Sets self.keep to the final masks and returns the plan they imply."""
        method = f"block_movement/{self.cfg.mode}/{self.cfg.granularity}"
        if self.cfg.granularity == "head":
            return select_plan(self._head_scores(), self._neuron_scores(), self.ratio, self.dims,
                               ffn_round_to=self.cfg.ffn_round_to, method=method)
        # topk: what the final phase trained; threshold: the same selection on the final scores
        self.keep, heads, ffn = self._final_masks()
        return _plan(self.dims, heads, ffn, target_ratio=self.ratio, method=method)

    def _kept_heads_lost_blocks(self, plan: PruningPlan) -> bool:
        """Did hybrid filling restore any block (a kept head with a masked block)?"""
        for keep, lp in zip(self.keep, plan.layers):
            blocks = torch.cat([self._per_head(keep[n], n) for n in ATTENTION], dim=1).cpu()
            if not bool(blocks[lp.heads].all()):
                return True
        return False

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
