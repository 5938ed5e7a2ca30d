"""How much of a trial's wall time is orchestration rather than training? Target: <= 5%.

    python benchmarks/orchestration_overhead.py [--sweep sweeps/demo.yaml] [--trials 3] [--workers 1] [--root DIR]

Runs the real `sweep launch` on a copy of the sweep (own study name, n_trials = --trials) and reads
the timings.json each trial leaves in its folder (written by orchestrator.dispatch), then splits
every trial's wall time (asked -> recorded in Optuna and MLflow) into:

  work        the worker's load + train + measure phases (TrialResult.timings)
  before      asking Optuna, creating the MLflow run, logging params/config   (parent, pre-spawn)
  start       process start: interpreter + imports of torch/transformers/trainers (child)
  in-worker   the rest inside the child: pruner setup, saving the model, writing the result, exit
  after       telling Optuna, logging metrics and artifacts (incl. the model) to MLflow (parent)

overhead = before + start + in-worker + after; `orchestration` counts only what the orchestrator
adds by design (before + start + after); in-worker time is trial work the phases do not time.
The teacher is fine-tuned once per --root (cached); pass a --root that has it to skip that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def sweep_copy(src: Path, dst_dir: Path, trials: int) -> tuple[Path, str]:
    doc = yaml.safe_load(src.read_text())
    name = f"{doc['name']}-overhead-{time.strftime('%H%M%S')}"
    doc["name"] = name
    doc.setdefault("budget", {})["n_trials"] = trials
    for key in ("path", "train", "validation", "test"):
        value = doc.get("data", {}).get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            doc["data"][key] = str((src.parent / value).resolve())
    teacher = doc["teacher"]["model"]
    if not teacher.startswith("pkg:") and (src.parent / teacher).exists():
        doc["teacher"]["model"] = str((src.parent / teacher).resolve())
    path = dst_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, name


def import_seconds(repeats: int = 3) -> float:
    """A bare child doing only the imports a trial needs: the floor of per-process start cost."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import trainers.config, trainers.jobs, trainers.trial"], check=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=Path, default=REPO / "sweeps" / "demo.yaml")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--root", type=Path, default=None, help="store to use (default: a fresh temporary folder)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    root = (args.root or tmp / "mlruns").resolve()
    sweep, name = sweep_copy(args.sweep.resolve(), tmp, args.trials)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(sweep), "--root", str(root),
                           "--workers", str(args.workers), "--no-export"], cwd=tmp, env=env, capture_output=True, text=True)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        return proc.returncode

    rows = []
    for path in sorted((root / "trials" / name).glob("trial-*/timings.json")):
        t = json.loads(path.read_text())
        if t["state"] != "COMPLETE":
            continue
        w = t["worker"]
        work = w.get("load_s", 0.0) + w.get("train_s", 0.0) + w.get("measure_s", 0.0)
        start = t.get("interpreter_start_s", 0.0) + t.get("imports_s", 0.0)
        rows.append({"trial": path.parent.name, "wall": t["wall_s"], "work": work, "before": t["before_spawn_s"],
                     "start": start, "in_worker": t["process_s"] - start - work, "after": t["after_exit_s"]})
    if not rows:
        print("no completed trials", proc.stdout[-3000:], sep="\n")
        return 1

    cols = ("wall", "work", "before", "start", "in_worker", "after")
    print(f"{name}: {len(rows)} trials, {args.workers} worker(s), launch wall {total:.0f} s (incl. preparation); "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'trial':12s}" + "".join(f"{c:>11s}" for c in cols) + f"{'overhead':>10s}{'orch.':>8s}")
    for r in rows:
        over = r["before"] + r["start"] + r["in_worker"] + r["after"]
        orch = r["before"] + r["start"] + r["after"]
        print(f"{r['trial']:12s}" + "".join(f"{r[c]:10.2f}s" for c in cols) + f"{over / r['wall']:9.1%}{orch / r['wall']:8.1%}")
    s = {c: sum(r[c] for r in rows) for c in cols}
    over = s["before"] + s["start"] + s["in_worker"] + s["after"]
    orch = s["before"] + s["start"] + s["after"]
    print(f"{'total':12s}" + "".join(f"{s[c]:10.2f}s" for c in cols) + f"{over / s['wall']:9.1%}{orch / s['wall']:8.1%}")
    print(f"\nper trial (mean): before {s['before'] / len(rows):.2f} s, process start + imports {s['start'] / len(rows):.2f} s "
          f"(a bare import-only child: {import_seconds():.2f} s), after {s['after'] / len(rows):.2f} s")
    print(f"orchestration overhead: {orch / s['wall']:.1%} of trial wall time (target <= 5%); "
          f"all time outside load/train/measure: {over / s['wall']:.1%}")
    print(f"store kept in {root}" if args.root else f"temporary store: {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
