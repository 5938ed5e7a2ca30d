"""Do the sweep's verdicts survive a change of seeds? Fixed 1 seed, fixed 2 seeds, adaptive seeds.

    python benchmarks/front_stability.py [--sweep sweeps/demo.yaml] [--bases 0 100] [--work DIR]
                                         [--full-grid] [--doc docs/front-stability.md]

Each seed setting runs the same grid twice, with seed bases `training.seed` = 0 and 100 (so no student
training is shared between the two runs), each in its own folder, with one fine-tuned teacher for all
(fine-tuned by the first launch, then given to the others as a classifier folder: the teacher is the
same model in every run, only the students' seeds differ). For every grid point it compares the two
runs' verdicts:

- front: on the Pareto front the table shows (ties within noise broken), or not;
- front, shared latencies: the same, with every point's latency replaced by its pruning ratio's median p50
  over all runs (same architecture, same true latency), so that only the students' seeds move it;
- teacher: "~teacher" (the paired 95 % interval of student - teacher contains 0), or not.

and prints the fraction of points with the same verdict in both runs, per verdict and for both at once.
Settings (the issue's): fixed 1 seed; fixed 2 seeds; adaptive `{min: 1, max: 3, max_trainings: T}` with
T = the student trainings fixed 2 seeds ran (the same cost). Every run's trainings are counted from its
trials (`student_trainings_run`).

By default the grid is the demo's distinct trainings: its pruning ratios x temperatures x alphas at fp32 in
PyTorch (6 points after folding; the int8 / ONNX Runtime variants share those trainings, so their accuracy
verdicts follow them). `--full-grid` runs the demo grid as it is (32 points, 24 after folding). Latency is
measured briefly (5-15 repeats, at most 2 s), as in the cost benchmark's early-stopping runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from sweep_cost import sweep, sweep_copy  # noqa: E402  (the same launch helpers as the cost benchmark)

SETTINGS = ("fixed-1", "fixed-2", "adaptive")


def verdicts(store: Path, name: str) -> tuple[dict[str, tuple[bool, bool]], float, dict[str, int]]:
    """{point: (on the front, ~teacher)}, the student trainings run, and {point: seeds} of one finished sweep."""
    import optuna

    from orchestrator import pareto
    from trainers import metrics as M
    from orchestrator.record import study_record, trial_point, trial_record
    from orchestrator.report import front_report
    from orchestrator.seed_rounds import current, seeds_of, trainings_spent
    from orchestrator.spec import stored_spec
    from orchestrator.study import default_storage_url, open_storage
    from orchestrator.trial_queue import point_key

    study = optuna.load_study(study_name=name, storage=open_storage(default_storage_url(store), store))
    spec = stored_spec(study_record(study), name)
    front = {t.number for t in front_report(study, spec).front}
    trials = study.get_trials(deepcopy=False)
    baseline = study_record(study).baseline_metrics
    out, seeds, measured = {}, {}, {}
    for t in current(trials):
        key = point_key(trial_point(t))
        metrics = trial_record(t).metrics
        out[key] = (t.number in front, pareto.versus_teacher(metrics, baseline) == "~teacher")
        seeds[key] = seeds_of(t, spec)
        measured[key] = {"ratio": float(trial_point(t)["pruning_ratio"]), "val_accuracy": metrics.get(M.VAL_ACCURACY),
                         "latency_ms": metrics.get(M.LATENCY_P50_BS1), "feasible": pareto.feasible(t)}
    return out, trainings_spent(trials), seeds, measured


def shared_latency_front(measured: dict[str, dict], latency_by_ratio: dict[float, float]) -> dict[str, bool]:
    """{point: on the front} when every point's latency is its pruning ratio's shared latency (the median of every
    p50 this benchmark measured at that ratio: the same architecture, so the same true latency). Only the
    students' seeds then move the verdict: non-dominated (accuracy max, latency min) among the feasible points."""
    pts = {k: (m["val_accuracy"], latency_by_ratio[m["ratio"]]) for k, m in measured.items() if m["feasible"]}

    def dominated(a: float, lat: float) -> bool:
        return any(a2 >= a and l2 <= lat and (a2, l2) != (a, lat) for a2, l2 in pts.values())

    return {k: k in pts and not dominated(*pts[k]) for k in measured}


def latency_by_ratio(results: dict) -> dict[float, float]:
    import statistics

    by: dict[float, list[float]] = {}
    for r in results.values():
        for run in r["measured"]:
            for m in run.values():
                if m["latency_ms"] is not None:
                    by.setdefault(m["ratio"], []).append(m["latency_ms"])
    return {ratio: statistics.median(v) for ratio, v in by.items()}


def shared_front_agreement(results: dict) -> None:
    """Adds `front_shared` (same front verdict with the shared latencies) to every setting of `results`."""
    lat = latency_by_ratio(results)
    for r in results.values():
        a, b = (shared_latency_front(m, lat) for m in r["measured"])
        common = sorted(set(a) & set(b))
        r["front_shared"] = sum(a[k] == b[k] for k in common) / len(common)


def agreement(a: dict[str, tuple[bool, bool]], b: dict[str, tuple[bool, bool]]) -> dict[str, float]:
    common = sorted(set(a) & set(b))
    n = len(common)
    return {"points": n,
            "front": sum(a[k][0] == b[k][0] for k in common) / n,
            "teacher": sum(a[k][1] == b[k][1] for k in common) / n,
            "both": sum(a[k] == b[k] for k in common) / n}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", type=Path, default=REPO / "sweeps" / "demo.yaml")
    ap.add_argument("--bases", type=int, nargs=2, default=[0, 100])
    ap.add_argument("--work", type=Path, default=Path("/tmp/front_stability"))
    ap.add_argument("--full-grid", action="store_true")
    ap.add_argument("--max-seeds", type=int, default=3)
    ap.add_argument("--doc", type=Path)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    grid = {} if args.full_grid else {"search_space.precision": ["fp32"], "search_space.runtime": ["torch"]}
    # latency and energy measured briefly (as the cost benchmark's early-stopping runs): the verdicts read
    # accuracy and latency p50; the stable-latency loop's full budget would triple each run's measuring
    grid.update({"measure.min_repeats": 5, "measure.max_repeats": 15, "measure.max_seconds": 2})
    teacher_model = args.work / "teacher-model"
    results: dict[str, dict] = {}
    t_all = time.perf_counter()
    for setting in SETTINGS:
        runs = []
        for base in args.bases:
            name = f"stab-{setting}-s{base}"
            root = args.work / name
            root.mkdir(parents=True, exist_ok=True)
            if setting == "adaptive":
                budget = results["fixed-2"]["trainings"][len(runs)]
                seeds = {"min": 1, "max": args.max_seeds, "max_trainings": int(budget)}
            else:
                seeds = int(setting.split("-")[1])
            teacher = ({"teacher.model": str(teacher_model), "teacher.fine_tune": "never"}
                       if teacher_model.exists() else {})
            path = sweep_copy(args.sweep, root, name, **grid, **teacher, **{"training.seed": base, "training.seeds": seeds})
            store = root / "mlruns"
            if not (store / "optuna").exists() or not _finished(store, name):
                secs, _ = sweep("launch", str(path), "--no-export", root=root)
            else:
                secs = float("nan")  # finished by an earlier call: its verdicts are read again
            if not teacher_model.exists():  # the first launch fine-tuned the teacher: every later run uses it as is
                cached = next(p for p in (store / "cache" / "teachers").iterdir() if (p / "DONE").exists())
                shutil.copytree(cached / "model", teacher_model)
            v, spent, per_point, measured = verdicts(store, name)
            runs.append({"base": base, "verdicts": v, "trainings": spent, "seeds": per_point, "wall_s": secs,
                         "measured": measured})
            print(f"{setting} seed base {base}: {len(v)} points, {spent:g} student trainings, wall {secs:.0f} s; seeds "
                  f"per point {sorted(per_point.values())}", flush=True)
        a = agreement(runs[0]["verdicts"], runs[1]["verdicts"])
        results[setting] = {**a, "trainings": [r["trainings"] for r in runs], "seeds": [r["seeds"] for r in runs],
                            "wall_s": [r["wall_s"] for r in runs], "measured": [r["measured"] for r in runs]}
        shared_front_agreement(results)
        print(f"{setting}: same verdict in both runs: front {a['front']:.0%}, ~teacher {a['teacher']:.0%}, both "
              f"{a['both']:.0%} of {a['points']} points; front with shared latencies "
              f"{results[setting]['front_shared']:.0%}", flush=True)
        (args.work / "results.json").write_text(json.dumps(results, indent=2, default=str))
        if args.doc:  # after every setting: a run cut short still leaves the settings it finished
            write_doc(args, results)
    print(f"all settings: {time.perf_counter() - t_all:.0f} s")


def _finished(store: Path, name: str) -> bool:
    import optuna

    from orchestrator.study import default_storage_url, open_storage

    try:
        study = optuna.load_study(study_name=name, storage=open_storage(default_storage_url(store), store))
    except KeyError:
        return False
    return bool(study.get_trials(deepcopy=False)) and all(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def write_doc(args, results: dict) -> None:
    import torch

    rows = ["| seeds | points | student trainings (run 1 / run 2) | same front verdict | same ~teacher verdict | "
            "same both | same front verdict, shared latencies | seeds per point (run 1; run 2) |",
            "|---|---|---|---|---|---|---|---|"]
    for setting, r in results.items():
        per = "; ".join(",".join(str(s) for s in sorted(d.values())) for d in r["seeds"])
        label = {"fixed-1": "fixed 1", "fixed-2": "fixed 2",
                 "adaptive": f"adaptive {{min 1, max {args.max_seeds}}}, max_trainings = fixed 2's"}[setting]
        rows.append(f"| {label} | {r['points']} | {r['trainings'][0]:g} / {r['trainings'][1]:g} | {r['front']:.0%} | "
                    f"{r['teacher']:.0%} | {r['both']:.0%} | {r['front_shared']:.0%} | {per} |")
    cmd = "python benchmarks/front_stability.py" + (" --full-grid" if args.full_grid else "") + \
        f" --bases {args.bases[0]} {args.bases[1]} --doc {args.doc}"
    block = "\n".join([
        "<!-- front_stability -->",
        f"Command: `{cmd}`  ",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; hardware: {platform.machine()} "
        f"{platform.processor() or 'CPU'}, torch {torch.__version__}, {torch.get_num_threads()} threads.  ",
        f"Grid: {'the demo grid' if args.full_grid else 'the demo grid at fp32 in PyTorch (its distinct trainings)'}; "
        f"seed bases {args.bases[0]} and {args.bases[1]}; one teacher for every run.",
        "", *rows, "",
        "Shared latencies (ms, batch 1, median of every p50 measured at that ratio in this benchmark): "
        + ", ".join(f"ratio {k:g}: {v:.1f}" for k, v in sorted(latency_by_ratio(results).items())) + ".",
        "<!-- /front_stability -->"])
    text = args.doc.read_text() if args.doc.exists() else "# Front stability\n\n<!-- front_stability -->\n<!-- /front_stability -->\n"
    start, end = text.index("<!-- front_stability -->"), text.index("<!-- /front_stability -->") + len("<!-- /front_stability -->")
    args.doc.write_text(text[:start] + block + text[end:])
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
