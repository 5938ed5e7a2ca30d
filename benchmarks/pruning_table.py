"""The markdown tables and verdict of benchmarks/compare_pruning.py, from its results.jsonl rows (pure text)."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from scipy import stats


def _acc(pred: list[int], gold: list[int]) -> float:
    return sum(p == g for p, g in zip(pred, gold)) / len(gold)


def t_half(xs: list[float]) -> float:
    """Half-width of the 95 % t-interval of the mean over `xs` (nan for one value)."""
    if len(xs) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs)))


def _pm(xs: list[float]) -> str:
    h = t_half(xs)
    return f"{100 * statistics.mean(xs):.1f} ± {100 * h:.1f}" if not math.isnan(h) else f"{100 * xs[0]:.1f} (1 seed)"


def setting_label(r: dict) -> str:
    if r["alpha"] == 0 and r["hidden"] == 0:
        return "no KD"
    out = f"KD a{r['alpha']:g} T{r['T']:g}" if r["alpha"] else "no logit KD"
    return out + (f" + hidden w{r['hidden']:g}" if r["hidden"] else "")


class Cells:
    """Rows grouped by (method, ratio, alpha, T, hidden), each with its per-seed accuracies."""

    def __init__(self, rows: list[dict], labels: dict[str, list[int]]):
        self.groups: dict[tuple, list[dict]] = {}
        for r in rows:
            r = {**r, "val": _acc(r["val_pred"], labels["validation"]), "test": _acc(r["test_pred"], labels["test"])}
            self.groups.setdefault((r["method"], r["ratio"], r["alpha"], r["T"], r["hidden"]), []).append(r)

    def get(self, method: str, ratio: float, alpha: float, T: float | None, hidden: float = 0.0) -> list[dict]:
        return sorted(self.groups.get((method, ratio, alpha, None if alpha == 0 else T, hidden), []), key=lambda r: r["seed"])


def _row(name: str, g: list[dict], teacher: dict[str, float]) -> str:
    val, test = [r["val"] for r in g], [r["test"] for r in g]
    speed = statistics.median(r["latency_ms_dense"] / r["latency_ms_pruned"] for r in g)
    sd = statistics.stdev(val) if len(val) > 1 else math.nan
    return (f"| {name} | {g[0]['ratio']:.2f} | {setting_label(g[0])} | {len(g)} | {_pm(val)} | {'-' if math.isnan(sd) else f'{100 * sd:.1f}'} "
            f"| {100 * statistics.mean(test):.1f} | {100 * (statistics.mean(val) - teacher['val']):+.1f} "
            f"| {100 * (statistics.mean(test) - teacher['test']):+.1f} | {statistics.mean(r['achieved_ratio'] for r in g):.3f} "
            f"| {statistics.mean(r['heads_removed'] for r in g):.2f} / {statistics.mean(r['ffn_removed'] for r in g):.2f} "
            f"| {speed:.2f}x | {statistics.mean(r['train_seconds'] for r in g):.0f} |")


def paired(a: list[dict], b: list[dict]) -> str:
    """a - b in validation points, paired by seed (same rows, same seed), mean ± 95 % t half-width."""
    common = sorted({r["seed"] for r in a} & {r["seed"] for r in b})
    if not common:
        return "-"
    va, vb = ({r["seed"]: r["val"] for r in x} for x in (a, b))
    d = [va[s] - vb[s] for s in common]
    h = t_half(d)
    return f"{100 * statistics.mean(d):+.1f}" + (f" ± {100 * h:.1f}" if not math.isnan(h) else " (1 seed)")


def verdict(c: Cells, args, teacher: dict[str, float], names: dict[str, str]) -> list[str]:
    kd = (args.kd_alpha, args.kd_temperature)
    out = []
    for hidden, label in ((0.0, "block movement + KD"), (args.hidden_weight, f"block movement + KD + hidden w{args.hidden_weight:g}")):
        if hidden == 0 and "main" not in args.parts or hidden and "hidden" not in args.parts:
            continue
        for ratio, tol in ((0.25, 0.5), (0.5, 1.5)):
            g = c.get("block", ratio, *kd, hidden)
            if not g:
                out.append(f"- {label} at {ratio:.0%}: not run.")
                continue
            gap = 100 * (teacher["val"] - statistics.mean(r["val"] for r in g))
            where = f"{gap:.1f} points below" if gap >= 0 else f"{-gap:.1f} points above"
            state = f"**met** ({where} the teacher)" if gap <= tol else \
                f"**missed by {gap - tol:.1f} points** ({gap:.1f} below the teacher, target {tol})"
            few = "" if len(g) >= 3 else " Fewer than the 3 seeds the target reads: not a verdict."
            out.append(f"- {label} within {tol} point of the teacher at {ratio:.0%} ({len(g)} seed(s)): {state}.{few}")
        for ratio in (0.5, 0.75):
            g, base = c.get("block", ratio, *kd, hidden), c.get("taylor", ratio, *kd)
            if not g or not base:
                out.append(f"- {label} vs {names['taylor']} + KD at {ratio:.0%}: not run.")
                continue
            diff = 100 * (statistics.mean(r["val"] for r in g) - statistics.mean(r["val"] for r in base))
            sds = [statistics.stdev([r["val"] for r in x]) for x in (g, base) if len(x) > 1]
            if not sds:
                out.append(f"- {label} vs {names['taylor']} + KD at {ratio:.0%}: {diff:+.1f} points; one seed, no std: "
                           "not decidable.")
                continue
            sd = 100 * max(sds)
            state = "**met**" if diff > sd else f"**missed by {sd - diff:.1f} points**"
            out.append(f"- {label} beats {names['taylor']} + KD by more than one std at {ratio:.0%}: {state} "
                       f"({diff:+.1f} points vs std {sd:.1f}, the larger of the two cells' sample std over seeds; "
                       f"paired by seed {paired(g, base)}).")
    return out


def write_doc(path: Path, name: str, args, rows: list[dict], teacher_info: dict, labels: dict[str, list[int]],
              n_train: int, names: dict[str, str], *, command: str) -> None:
    c = Cells(rows, labels)
    teacher = {"val": _acc(teacher_info["validation_pred"], labels["validation"]),
               "test": _acc(teacher_info["test_pred"], labels["test"])}
    seeds = sorted({r["seed"] for r in rows})
    smoke = args.smoke
    partial = not smoke and min((len(g) for g in c.groups.values()), default=0) < 3
    # the cells the verdict's targets read: block movement and one-shot Taylor with logit KD, no hidden term
    target_cells = [g for (m, _r, a, T, h), g in c.groups.items()
                    if m in ("block", "taylor") and (a, T) == (args.kd_alpha, args.kd_temperature) and not h]
    targets_short = not target_cells or min(len(g) for g in target_cells) < 3
    head = "| method | ratio | distillation | seeds | val acc % (mean ± 95 % t) | val std | test acc % | Δ val pt | Δ test pt " \
           "| achieved ratio | heads / FFN removed | speed-up | train s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    main = [_row(names[m], g, teacher) for (m, ratio, a, T, h), g in sorted(c.groups.items(), key=lambda kv: (
        kv[0][1], kv[0][4], kv[0][2] > 0, list(names).index(kv[0][0]))) if (a, T) in ((0.0, None), (args.kd_alpha, args.kd_temperature))]
    control = c.get("block", 0.5, 0.0, None)
    grid = []
    for a in args.grid_alphas:
        for t in ([None] if a == 0 else args.grid_temperatures):
            g = c.get("block", 0.5, a, t)
            if g:
                val = [r["val"] for r in g]
                grid.append(f"| {a:g} | {'-' if t is None else f'{t:g}'} | {len(g)} | {_pm(val)} "
                            f"| {100 * statistics.mean(r['test'] for r in g):.1f} | {'control' if a == 0 else paired(g, control)} |")
    from trainers.measure.hardware import hardware_context

    cpu = hardware_context().get("cpu_model") or platform.processor() or "unknown"
    hardware = (f"{platform.machine()} {cpu} CPU, {os.cpu_count()} cores visible, "
                f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), device {args.device}")
    lines = [
        f"<!-- compare_pruning:{name} -->",
        f"### {name}" + (": SMOKE RUN, not evidence (a check that the pipeline runs end to end)" if smoke else
                         ": PARTIAL RUN, fewer than 3 seeds in some cells (not yet a verdict)" if partial and targets_short
                         else ": 3 seeds in every cell the targets read; fewer where the seeds column says so" if partial
                         else ""),
        "",
        f"Command: `{command}`  ",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; hardware: {hardware}.  ",
        f"Rows: train {n_train} (stratified), validation {len(labels['validation'])} (decides), test "
        f"{len(labels['test'])} (reported only). Seeds {', '.join(map(str, seeds)) or '-'}; students {args.epochs:g} "
        f"epoch(s) with the pruner + {args.refill_epochs:g} after finalize, lr {args.lr:g}, batch {args.batch_size}, "
        f"{args.max_seq_len} tokens.  ",
        f"Teacher (MiniLM-L6, all 6 layers, {args.teacher_epochs:g} epochs, word embeddings frozen): validation "
        f"**{100 * teacher['val']:.1f} %**, test **{100 * teacher['test']:.1f} %** ({teacher_info['train_seconds']:.0f} s "
        "to fine-tune).",
        "",
        "Val: mean over seeds ± half-width of the 95 % t-interval over seeds (seed noise only; the per-row predictions "
        "of every run are in results.jsonl for paired, row-level statistics). Δ: points vs the teacher. Speed-up: "
        f"median over the cell's runs of dense teacher / pruned student forward latency, {args.latency_batch} x "
        f"{args.max_seq_len} tokens, median of {args.latency_repeats} alternated repeats in one process. Train s: "
        "seconds per run (pruner + post-finalize epochs).",
        "",
        head, *main, "",
    ]
    if grid:
        lines += [f"Distillation grid, {names['block']} at ratio 0.50 (alpha 0 = the no-KD control; Δ vs control: "
                  "validation points paired by seed, mean ± 95 % t half-width):", "",
                  "| alpha | T | seeds | val acc % (mean ± 95 % t) | test acc % | Δ val vs control pt |",
                  "|---|---|---|---|---|---|", *grid, ""]
    lines += ["Verdict against the issue's targets (validation, mean over seeds):", "", *verdict(c, args, teacher, names),
              f"<!-- /compare_pruning:{name} -->"]
    block = "\n".join(lines) + "\n"
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- compare_pruning:{name} -->", f"<!-- /compare_pruning:{name} -->\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text + ("\n" if text else "") + block
    path.write_text(text)
