"""How much of a trial's wall time is orchestration rather than training? Target: <= 5%.

    python benchmarks/orchestration_overhead.py [--sweep sweeps/demo.yaml] [--trials 3] [--workers 1] [--root DIR]
                                                [--before REV]

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

Per trial kind (trained here; reused training served by torch; reused training served by ONNX
Runtime) it prints the median wall time and the seconds outside training and measuring (wall minus
the child's train_s and measure_s; the ONNX export counts as outside, and is also shown on its own,
since a sweep with ONNX Runtime variants exports in the trial that trains) as a fraction of trial wall
time. Targets at demo scale: outside <= 10 %, a reused variant <= 8 s wall. `--before REV` runs the
same sweep first with the code of REV (a temporary `git worktree`), then with this checkout, and
prints both side by side: one run, the same machine, minutes apart.
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


def launch(code: Path, sweep: Path, root: Path, workers: int, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """`sweep launch` with the code at `code` (PYTHONPATH, so its child processes use it too)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160", "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(sweep), "--root", str(root),
                           "--workers", str(workers), "--no-export"], cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def trial_rows(root: Path, name: str) -> list[dict]:
    rows = []
    for path in sorted((root / "trials" / name).glob("trial-*/timings.json")):
        t = json.loads(path.read_text())
        if t["state"] != "COMPLETE":
            continue
        w = t["worker"]
        work = w.get("load_s", 0.0) + w.get("train_s", 0.0) + w.get("measure_s", 0.0)
        start = t.get("interpreter_start_s", 0.0) + t.get("imports_s", 0.0)
        result = json.loads((path.parent / "result.json").read_text())
        runtime = result.get("params", {}).get("runtime", "torch")
        kind = "trained" if not result.get("reused_training_of") else f"reused {'ONNX Runtime' if runtime == 'onnxruntime' else 'torch'}"
        rows.append({"trial": path.parent.name, "kind": kind, "wall": t["wall_s"], "work": work,
                     "before": t["before_spawn_s"], "start": start, "in_worker": t["process_s"] - start - work,
                     "after": t["after_exit_s"],
                     "outside": t["wall_s"] - w.get("train_s", 0.0) - w.get("measure_s", 0.0),
                     "export": w.get("onnx_export_s", 0.0),
                     "phases": {k: v for k, v in w.items() if k.startswith("measure_") and k != "measure_s"}})
    return rows


def print_trials(rows: list[dict]) -> None:
    cols = ("wall", "work", "before", "start", "in_worker", "after")
    print(f"{'trial':12s}{'kind':>20s}" + "".join(f"{c:>11s}" for c in cols) + f"{'overhead':>10s}{'orch.':>8s}")
    for r in rows:
        over = r["before"] + r["start"] + r["in_worker"] + r["after"]
        orch = r["before"] + r["start"] + r["after"]
        print(f"{r['trial']:12s}{r['kind']:>20s}" + "".join(f"{r[c]:10.2f}s" for c in cols)
              + f"{over / r['wall']:9.1%}{orch / r['wall']:8.1%}")


KINDS = ("trained", "reused torch", "reused ONNX Runtime")


def kind_summary(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        if mine:
            wall = sum(r["wall"] for r in mine)
            out[kind] = {"n": len(mine), "median_wall": statistics.median(r["wall"] for r in mine),
                         "median_outside": statistics.median(r["outside"] for r in mine),
                         "outside_fraction": sum(r["outside"] for r in mine) / wall,
                         "median_export": statistics.median(r["export"] for r in mine),
                         "outside_fraction_less_export": sum(r["outside"] - r["export"] for r in mine) / wall}
    return out


def print_kinds(sides: dict[str, dict[str, dict]]) -> None:
    """Per trial kind, side by side: median wall s, median s outside training+measuring, that as % of wall."""
    names = list(sides)
    print(f"{'trial kind':22s}" + "".join(f"{n + ': n, wall, outside (% of wall), of it ONNX export':>66s}"
                                          for n in names))
    for kind in KINDS:
        cells = []
        for n in names:
            k = sides[n].get(kind)
            cells.append(f"{k['n']:>3d}, {k['median_wall']:6.1f} s, {k['median_outside']:5.1f} s ({k['outside_fraction']:5.1%}), "
                         f"{k['median_export']:4.1f} s (less it: {k['outside_fraction_less_export']:5.1%})" if k else "-")
        print(f"{kind:22s}" + "".join(f"{c:>66s}" for c in cells))
    print("targets at demo scale: outside training and measuring <= 10 % of trial wall; a reused variant <= 8 s wall "
          "(medians over the trials of a kind; the fraction is summed seconds over summed wall)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=Path, default=REPO / "sweeps" / "demo.yaml")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--root", type=Path, default=None, help="store to use (default: a fresh temporary folder)")
    ap.add_argument("--before", default=None, help="git revision to run first, side by side (e.g. 5c11a1b)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    sides: dict[str, dict[str, dict]] = {}
    codes = [("after", REPO)]
    if args.before:
        base = tmp / "before-code"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.before], check=True,
                       capture_output=True)
        codes.insert(0, (f"before ({args.before})", base))
    try:
        for label, code in codes:
            root = (args.root or tmp / f"mlruns-{label.split()[0]}").resolve()
            sweep, name = sweep_copy(args.sweep.resolve(), tmp, args.trials)
            load0 = os.getloadavg()[0]
            total, proc = launch(code, sweep, root, args.workers, tmp)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
                return proc.returncode
            rows = trial_rows(root, name)
            if not rows:
                print("no completed trials", proc.stdout[-3000:], sep="\n")
                return 1
            print(f"\n== {label}: {name}: {len(rows)} trials, {args.workers} worker(s), launch wall {total:.0f} s "
                  f"(incl. preparation); load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
            print_trials(rows)
            s = {c: sum(r[c] for r in rows) for c in ("wall", "before", "start", "in_worker", "after")}
            orch = s["before"] + s["start"] + s["after"]
            over = orch + s["in_worker"]
            print(f"orchestration overhead: {orch / s['wall']:.1%} of trial wall time (target <= 5%); "
                  f"all time outside load/train/measure: {over / s['wall']:.1%}")
            phases: dict[str, list[float]] = {}
            for r in rows:
                for k, v in r["phases"].items():
                    phases.setdefault(k, []).append(v)
            if phases:
                print("measuring phases (median s): " + ", ".join(f"{k[8:]} {statistics.median(v):.2f}"
                                                                  for k, v in sorted(phases.items())))
            sides[label] = kind_summary(rows)
        print(f"\nper trial kind ({args.sweep.name}, {args.trials} trials per side, a bare import-only child: "
              f"{import_seconds():.2f} s)")
        print_kinds(sides)
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "before-code")],
                           capture_output=True)
    print(f"store kept in {args.root}" if args.root else f"temporary stores under {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
