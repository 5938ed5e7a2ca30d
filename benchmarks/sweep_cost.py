"""What a compression study costs with `sweep` versus the script a user writes without it.

    python benchmarks/sweep_cost.py [--sweep sweeps/demo.yaml] [--trials 8] [--root DIR]
                                    [--skip-plain] [--early-stopping-trials 12]

Side by side in one run, on the same machine, the same data split and the same grid points:

  (a) plain   a plain Optuna + transformers script: every trial fine-tunes the teacher (MiniLM) from
              the pretrained encoder, then prunes attention heads by weight magnitude
              (`model.prune_heads`), distils from the live teacher, trains the student and measures
              validation accuracy and batch-1 latency. What one writes without a teacher cache,
              shared trainings or a logits cache.
  (b) sweep   `sweep launch` on a copy of the sweep file with the same points (n_trials = --trials).

Printed: trainings run (teacher fine-tunes + student trainings), wall time of each, the ratio (a)/(b),
the demo grid's points / folded points / distinct trainings (from `sweep check`), and, with
--early-stopping-trials N, a random-sampler study of N trials run with `pruner: none` and with
`pruner: median` (fp32 points, each in its own folder sharing only the teacher, measuring cut short):
total training steps, the ratio, and the best trial's validation accuracy in each. `--trials 0` skips
(a) vs (b).
The data split is the project's loader (the same rows in (a) and (b)); everything else in (a) is
plain torch/transformers/Optuna.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


# --- (a) the plain script ----------------------------------------------------------------------

def plain_study(spec_path: Path, points: list[dict]) -> dict:
    """Run `points` the way a user would without `sweep`: one Optuna trial = fine-tune + compress + measure."""
    import optuna
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainers.data import DataConfig, load_data
    from trainers.models import resolve_model_ref

    doc = yaml.safe_load(spec_path.read_text())
    model_ref = resolve_model_ref(doc["teacher"]["model"], spec_path.parent)
    loaded = load_data(DataConfig.model_validate(doc["data"]), spec_path.parent)
    tok = AutoTokenizer.from_pretrained(model_ref)
    max_len = doc["training"].get("max_seq_len", 128)

    def encode(split):
        enc = tok(list(split.texts), truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"], torch.tensor(split.labels)

    train_x, val_x = encode(loaded.splits["train"]), encode(loaded.splits["validation"])
    n_labels = len(loaded.label_names)
    counts = {"teacher_fine_tunes": 0, "student_trainings": 0, "train_steps": 0}
    seconds = {"teacher_s": 0.0, "student_s": 0.0, "measure_s": 0.0}

    def fit(model, epochs, batch, lr, teacher=None, alpha=0.0, temperature=1.0, dtype=None):
        ids, mask, labels = train_x
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for epoch in range(int(math.ceil(epochs))):
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(epoch))
            for i in range(0, len(labels), batch):
                idx = order[i:i + batch]
                with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                    logits = model(input_ids=ids[idx], attention_mask=mask[idx]).logits.float()
                loss = F.cross_entropy(logits, labels[idx])
                if teacher is not None and alpha > 0:
                    with torch.no_grad():
                        soft = teacher(input_ids=ids[idx], attention_mask=mask[idx]).logits
                    kl = F.kl_div(F.log_softmax(logits / temperature, -1), F.log_softmax(soft / temperature, -1),
                                  log_target=True, reduction="batchmean")
                    loss = alpha * temperature ** 2 * kl + (1 - alpha) * loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                counts["train_steps"] += 1
        model.eval()

    @torch.no_grad()
    def val_accuracy(model, dtype=None):
        ids, mask, labels = val_x
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            pred = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
        return float((pred == labels).float().mean())

    @torch.no_grad()
    def latency_ms(model, dtype=None):
        ids, mask, _ = val_x
        times = []
        for i in range(25):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                model(input_ids=ids[i:i + 1], attention_mask=mask[i:i + 1])
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times[5:])

    def prune_heads(model, drop: dict[int, list[int]], size: int) -> None:
        """Physically remove attention heads (transformers 5 has no `prune_heads`): slice Q/K/V rows, O columns."""
        from transformers.pytorch_utils import prune_linear_layer

        for li, heads in drop.items():
            attn = model.base_model.encoder.layer[li].attention
            n = attn.self.num_attention_heads
            heads = sorted(heads)[: n - 1]  # keep at least one head per layer
            keep = torch.tensor([h * size + i for h in range(n) if h not in heads for i in range(size)])
            for name in ("query", "key", "value"):
                setattr(attn.self, name, prune_linear_layer(getattr(attn.self, name), keep, dim=0))
            attn.output.dense = prune_linear_layer(attn.output.dense, keep, dim=1)
            attn.self.num_attention_heads = n - len(heads)
            attn.self.all_head_size = attn.self.num_attention_heads * size

    def objective(trial: optuna.Trial):
        ratio = trial.suggest_categorical("pruning_ratio", sorted({p["pruning_ratio"] for p in points}))
        temperature = trial.suggest_categorical("distill_temperature", sorted({p["distill_temperature"] for p in points}))
        alpha = trial.suggest_categorical("distill_alpha", sorted({p["distill_alpha"] for p in points}))
        precision = trial.suggest_categorical("precision", sorted({p["precision"] for p in points}))
        torch.manual_seed(0)
        t0 = time.perf_counter()
        teacher = AutoModelForSequenceClassification.from_pretrained(model_ref, num_labels=n_labels)
        t = doc["teacher"]
        fit(teacher, t["epochs"], t["batch_size"], t["learning_rate"])
        counts["teacher_fine_tunes"] += 1
        seconds["teacher_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        student = copy.deepcopy(teacher)
        if ratio > 0:  # drop the lowest-magnitude heads, ratio of all heads
            cfg = student.config
            size = cfg.hidden_size // cfg.num_attention_heads
            norms = []
            for li, layer in enumerate(student.base_model.encoder.layer):
                w = layer.attention.self.query.weight.view(cfg.num_attention_heads, size, -1)
                norms += [(float(w[h].abs().sum()), li, h) for h in range(cfg.num_attention_heads)]
            drop: dict[int, list[int]] = {}
            for _, li, h in sorted(norms)[: int(round(ratio * len(norms)))]:
                drop.setdefault(li, []).append(h)
            prune_heads(student, drop, size)
        dtype = torch.bfloat16 if precision == "bf16" else None
        tr = doc["training"]
        fit(student, tr["epochs"], tr["batch_size"], tr["learning_rate"], teacher=teacher, alpha=alpha,
            temperature=temperature, dtype=dtype)
        counts["student_trainings"] += 1
        seconds["student_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if precision == "int8":
            student = torch.ao.quantization.quantize_dynamic(student, {torch.nn.Linear}, dtype=torch.qint8)
        measured = val_accuracy(student, dtype), latency_ms(student, dtype)
        seconds["measure_s"] += time.perf_counter() - t0
        return measured

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for point in points:
        study.enqueue_trial(point)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=len(points))
    return {"wall_s": time.perf_counter() - t0, **counts, **seconds,
            "best_val_accuracy": max(t.values[0] for t in study.trials if t.values)}


# --- (b) sweep ---------------------------------------------------------------------------------

def sweep_copy(src: Path, dst_dir: Path, name: str, **overrides) -> Path:
    doc = yaml.safe_load(src.read_text())
    doc["name"] = name
    for key in ("path", "train", "validation", "test"):
        value = doc.get("data", {}).get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            doc["data"][key] = str((src.parent / value).resolve())
    for dotted, value in overrides.items():
        node = doc
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = dst_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def sweep(*args: str, root: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=root, capture_output=True, text=True,
                          env=env)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took, proc.stdout


def study_trials(root: Path, name: str):
    import optuna

    from orchestrator.study import default_storage_url, open_storage

    store = root / "mlruns"
    return optuna.load_study(study_name=name, storage=open_storage(default_storage_url(store), store)).get_trials(deepcopy=False)


def sweep_trainings(root: Path, name: str) -> dict:
    """Trainings and steps a sweep ran, from its trials' results (reused trainings are not counted twice)."""
    trained, steps, seconds, reused = 0, 0.0, 0.0, 0
    for result in (root / "mlruns" / "trials" / name).glob("trial-*/result.json"):
        doc = json.loads(result.read_text())
        if doc.get("tags", {}).get("sweep.reused_training_of") or doc.get("reused_training_of") is not None:
            reused += 1
            continue
        trained += 1
        steps += doc.get("metrics", {}).get("train_steps", 0.0)  # all seeds of the point
        seconds += doc.get("metrics", {}).get("train_seconds", 0.0)
    return {"student_trainings": trained, "reused": reused, "train_steps": steps, "train_seconds": seconds}


def sweep_breakdown(root: Path, name: str) -> dict:
    """Where (b)'s wall time went: the preparation (teacher fine-tune, logits, baseline), each trial's training
    and measuring (from its timings.json), and the per-trial process overhead (interpreter, imports, I/O)."""
    folder = root / "mlruns" / "trials" / name
    out = {"train_s": 0.0, "measure_s": 0.0, "process_overhead_s": 0.0, "trials_s": 0.0}
    for path in folder.glob("trial-*/timings.json"):
        doc = json.loads(path.read_text())
        worker = doc.get("worker", {})
        out["train_s"] += worker.get("train_s", 0.0)
        out["measure_s"] += worker.get("measure_s", 0.0)
        out["process_overhead_s"] += doc.get("overhead_s", 0.0)
        out["trials_s"] += doc.get("wall_s", 0.0)
    prepare = folder / "prepare"
    stamps = [p.stat().st_mtime for p in prepare.iterdir()] if prepare.exists() else []
    job = prepare / "job.json"
    out["prepare_s"] = max(stamps) - job.stat().st_mtime if stamps and job.exists() else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", type=Path, default=REPO / "sweeps" / "demo.yaml")
    ap.add_argument("--trials", type=int, default=8, help="points for (a) vs (b); 0 skips that part")
    ap.add_argument("--root", type=Path, default=None, help="working folder (default: a fresh temporary one)")
    ap.add_argument("--skip-plain", action="store_true", help="only the sweep side (no plain-script comparison)")
    ap.add_argument("--early-stopping-trials", type=int, default=0, help="N > 0: pruner none vs median on N random trials")
    ap.add_argument("--epochs-scale", type=float, default=1.0,
                    help="multiply the teacher's and the students' epochs (both sides): how the ratio moves as "
                         "training, not measuring, dominates a trial")
    args = ap.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="sweep-cost-"))
    root.mkdir(parents=True, exist_ok=True)
    src = args.sweep.resolve()
    print(f"working folder {root}; sweep file {src}; {os.cpu_count()} CPU cores visible")

    # The demo grid's cost structure, from `sweep check` (writes nothing).
    _, out = sweep("check", "--no-calibrate", str(sweep_copy(src, root, "cost-check", **{"budget.n_trials": None})),
                   root=root)
    print(f"{src.name}: the grid without vs with sharing (from sweep check):")
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "grid:" in line)
    print(" ".join(line.strip() for line in lines[at:at + 2]))  # the line, and its wrapped tail

    name = f"cost-{time.strftime('%H%M%S')}"
    if args.trials > 0:
        plain_vs_sweep(src, root, name, args)
    if args.early_stopping_trials:
        early_stopping(src, root, name, args.early_stopping_trials)


# The points of (a) vs (b): what the plain script can express (pruning ratio x precision, PyTorch, the full
# vocabulary), one seed each as the plain script trains, 8 of them by default.
def comparable_points(n: int) -> dict:
    ratios = [round(0.25 * i, 2) for i in range(max(1, (n + 1) // 2))]
    return {"search_space.pruning_ratio": ratios, "search_space.precision": ["fp32", "int8"],
            "search_space.runtime": ["torch"], "search_space.vocabulary": ["full"], "vocabulary.trim": "none",
            "search_space.distill_temperature": [2.0], "search_space.distill_alpha": [0.7],
            "sampler": {"type": "grid", "seed": 0}, "budget.n_trials": n, "training.seeds": 1}


def plain_vs_sweep(src: Path, root: Path, name: str, args) -> None:
    overrides = comparable_points(args.trials)
    if args.epochs_scale != 1.0:
        doc = yaml.safe_load(src.read_text())
        overrides["teacher.epochs"] = doc["teacher"]["epochs"] * args.epochs_scale
        overrides["training.epochs"] = doc["training"]["epochs"] * args.epochs_scale
    path = sweep_copy(src, root, name, **overrides)
    doc = yaml.safe_load(path.read_text())
    print(f"(a) vs (b): {args.trials} points, one seed each, teacher {doc['teacher']['epochs']:g} epochs, students "
          f"{doc['training']['epochs']:g} epochs (epochs x {args.epochs_scale:g})")
    sweep_s, _ = sweep("launch", str(path), "--no-export", root=root)  # (a) exports nothing either
    ours = sweep_trainings(root, name)
    parts = sweep_breakdown(root, name)
    points = [dict(t.params) for t in study_trials(root, name) if t.params]
    print(f"(b) sweep launch: {len(points)} trials, 1 teacher fine-tune (cached after the first launch), "
          f"{ours['student_trainings']} student trainings ({ours['reused']} reused), wall {sweep_s:.0f} s = preparation "
          f"(teacher fine-tune, logits, baseline) {parts['prepare_s']:.0f} s + student training {parts['train_s']:.0f} s "
          f"+ measuring {parts['measure_s']:.0f} s + trial processes' start-up {parts['process_overhead_s']:.0f} s "
          f"+ the rest {sweep_s - parts['prepare_s'] - parts['trials_s']:.0f} s")
    if not args.skip_plain:
        plain = plain_study(path, points)
        print(f"(a) plain script: {len(points)} trials, {plain['teacher_fine_tunes']} teacher fine-tunes, "
              f"{plain['student_trainings']} student trainings, wall {plain['wall_s']:.0f} s = teacher fine-tunes "
              f"{plain['teacher_s']:.0f} s + student training {plain['student_s']:.0f} s + measuring "
              f"{plain['measure_s']:.0f} s (validation accuracy and batch-1 latency only)")
        print(f"ratio (a)/(b) wall time: {plain['wall_s'] / sweep_s:.2f}x; trainings "
              f"{plain['teacher_fine_tunes'] + plain['student_trainings']} vs {1 + ours['student_trainings']}; "
              f"training seconds {plain['teacher_s'] + plain['student_s']:.0f} vs "
              f"{parts['prepare_s'] + parts['train_s']:.0f} (preparation counted whole) = "
              f"{(plain['teacher_s'] + plain['student_s']) / (parts['prepare_s'] + parts['train_s']):.2f}x")


def early_stopping(src: Path, root: Path, name: str, n_trials: int) -> None:
    from orchestrator.record import trial_record

    # The same points with and without early stopping, each in its own folder (else the second would
    # reuse the first's trainings); the fine-tuned teacher is shared, so only the students differ.
    # Measuring is cut short (it does not change the training steps compared here).
    results, picks = {}, {}
    for pruner in ("none", "median"):
        es_name = f"{name}-es-{pruner}"
        es_root = root / f"es-{pruner}"
        (es_root / "mlruns" / "cache").mkdir(parents=True, exist_ok=True)
        for shared in ("teachers", "data"):
            link = es_root / "mlruns" / "cache" / shared
            (root / "mlruns" / "cache" / shared).mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(root / "mlruns" / "cache" / shared, target_is_directory=True)
        p = sweep_copy(src, es_root, es_name, **{"budget.n_trials": n_trials,
                                              "sampler": {"type": "random", "seed": 0},
                                              "search_space.distill_temperature": {"low": 1.0, "high": 6.0},
                                              "search_space.distill_alpha": {"low": 0.0, "high": 0.9},
                                              "search_space.pruning_ratio": {"low": 0.0, "high": 0.7},
                                              "search_space.precision": ["fp32"],
                                              "search_space.runtime": ["torch"],
                                              "pruner": {"type": pruner, "n_startup_trials": 4},
                                              "training.eval_every_steps": 10,
                                              "measure.min_repeats": 3, "measure.max_repeats": 10,
                                              "measure.max_seconds": 2})
        secs, _ = sweep("launch", str(p), root=es_root)  # exported with the sweep's own pick rule
        trials = study_trials(es_root, es_name)
        spent = sweep_trainings(es_root, es_name)
        steps = spent["train_steps"]
        done = [t for t in trials if t.state.name == "COMPLETE"]
        best = max(done, key=lambda t: t.values[0]) if done else None
        results[pruner] = steps
        ci = trial_record(best).metrics.get("val_accuracy_ci95", float("nan")) if best else float("nan")
        exported = yaml.safe_load((es_root / "exports" / es_name / "config.yaml").read_text())
        picks[pruner] = (exported["trial"], exported["metrics"]["val_accuracy"],
                         exported["metrics"].get("val_accuracy_ci95", float("nan")))
        print(f"pruner {pruner}: exported trial {picks[pruner][0]} ({exported.get('pick', '?')}), val_accuracy "
              f"{picks[pruner][1]:.4f} ± {picks[pruner][2]:.4f}")
        print(f"pruner {pruner}: {len(trials)} trials ({sum(t.state.name == 'PRUNED' for t in trials)} pruned), "
              f"{steps:.0f} training steps (all seeds), {spent['train_seconds']:.0f} s training, wall {secs:.0f} s, "
              f"best val_accuracy "
              f"{best.values[0] if best else float('nan'):.4f} ± {ci:.4f} (95 % over seeds; trial "
              f"{best.number if best else '-'}: {dict(best.params) if best else '-'})")
    if results.get("none"):
        print(f"early stopping: training steps cut by {100 * (1 - results['median'] / results['none']):.0f} %")
        (_, acc, ci), (_, acc_es, _) = picks["none"], picks["median"]
        print(f"exported student's val_accuracy with early stopping {acc_es:.4f} vs without {acc:.4f} ± {ci:.4f}: "
              + ("within" if abs(acc_es - acc) <= ci else "outside") + " the interval")


if __name__ == "__main__":
    main()
