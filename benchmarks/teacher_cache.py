"""Teacher once: count teacher fine-tunes in a 6-trial sweep (and a second study on the same teacher),
and time a trial with cached teacher logits against the same trial with a live teacher forward.

    python benchmarks/teacher_cache.py [--workdir DIR]

Uses the offline demo (MiniLM-L6 teacher, sweeps/data/demo_topics.csv). Prints the numbers side by side.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def sweep(args: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sweep {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def count_builds(root: Path) -> int:
    """Teacher fine-tunes recorded in every worker log of every study under root."""
    return sum(len(re.findall(r"^teacher: fine-tuning", p.read_text(), flags=re.M)) for p in root.rglob("worker.log"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="teacher-bench-"))
    (work / "sweeps").mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load((REPO / "sweeps" / "demo.yaml").read_text())
    doc["data"]["path"] = str(REPO / "sweeps" / "data" / "demo_topics.csv")
    doc["budget"]["n_trials"] = 6
    doc["name"] = "bench-a"
    (work / "sweeps" / "a.yaml").write_text(yaml.safe_dump(doc))
    doc["name"] = "bench-b"
    (work / "sweeps" / "b.yaml").write_text(yaml.safe_dump(doc))

    t0 = time.perf_counter()
    sweep(["launch", "sweeps/a.yaml", "--no-export"], work)
    t_a = time.perf_counter() - t0
    builds_a = count_builds(work / "mlruns" / "trials" / "bench-a")
    t0 = time.perf_counter()
    sweep(["launch", "sweeps/b.yaml", "--no-export"], work)
    t_b = time.perf_counter() - t0
    builds_b = count_builds(work / "mlruns" / "trials" / "bench-b")
    trials_a = len(list((work / "mlruns" / "trials" / "bench-a").glob("trial-*/result.json")))

    # Same trial twice: cached logits vs. live teacher forward on every batch.
    cfg_path = sorted((work / "mlruns" / "trials" / "bench-a").glob("trial-*/trial_config.yaml"))[0]
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg.update(distill_alpha=0.7, distill_temperature=2.0, precision="fp32", pruning_ratio=0.25)
    timings = {}
    for label, logits in (("cached logits", cfg["teacher_logits"]), ("live teacher", None)):
        run = dict(cfg, teacher_logits=logits, output_dir=str(work / f"trial-{label.split()[0]}"))
        path = work / f"{label.split()[0]}.yaml"
        path.write_text(yaml.safe_dump(run))
        t0 = time.perf_counter()
        sweep(["trial", str(path)], work)
        wall = time.perf_counter() - t0
        result = yaml.safe_load((Path(run["output_dir"]) / "result.json").read_text())
        timings[label] = (wall, result["timings"]["train_s"], result["metrics"]["val_accuracy"])

    print(f"\nworkdir: {work}")
    print(f"study bench-a: {trials_a} trials, teacher fine-tunes counted in its logs: {builds_a}   (wall {t_a:.0f} s)")
    print(f"study bench-b (same teacher settings): teacher fine-tunes: {builds_b}   (wall {t_b:.0f} s)")
    print("\nper-trial time, pruning 0.25 + distillation (alpha 0.7, T 2), MiniLM student, CPU:")
    print(f"{'':16s} {'trial wall s':>12s} {'train s':>9s} {'val acc':>9s}")
    for label, (wall, train_s, acc) in timings.items():
        print(f"{label:16s} {wall:12.1f} {train_s:9.1f} {acc:9.4f}")
    c, l = timings["cached logits"], timings["live teacher"]
    print(f"live / cached: trial wall {l[0] / c[0]:.2f}x, training {l[1] / c[1]:.2f}x")


if __name__ == "__main__":
    main()
