"""Every supported family as the teacher of a real 4-point sweep: trials completed, export loads anywhere.

    python benchmarks/families_sweep.py [--families bert,albert] [--root DIR]

For each family: a tiny random model (the test matrix's row in tests/test_families.py: hidden 64,
2 layers, 4 heads) saved with save_pretrained beside MiniLM's WordPiece tokenizer, then `sweep launch`
of sweeps/demo.yaml's data with the points pruning ratio 0.5 x fp32/int8 x torch/onnxruntime (full
vocabulary, one seed, `pruning: {method: block_movement, block_size: 16}`, short teacher and student
training). Printed per family: trials completed of 4, the exported pick, and whether the export loads
with `AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)` in a `python -I`
process outside the repository and its model.onnx runs in ONNX Runtime there (logits within 1e-4 of
torch's for an fp32 export; for an int8 export the difference to torch's int8 kernels, which quantise
activations while model.onnx is the fp32 graph of the int8 weights, is printed), plus the launch's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "benchmarks")]

from sweep_cost import study_trials, sweep_copy  # noqa: E402
from test_families import FAMILIES, save_tiny_folder  # noqa: E402

POINTS = {"search_space.pruning_ratio": [0.5], "search_space.precision": ["fp32", "int8"],
          "search_space.runtime": ["torch", "onnxruntime"], "search_space.vocabulary": ["full"],
          "search_space.distill_temperature": [2.0], "search_space.distill_alpha": [0.7],
          "vocabulary.trim": "none", "pruning": {"method": "block_movement", "block_size": 16, "refill_epochs": 1},
          "training.seeds": 1, "training.epochs": 2, "teacher.epochs": 2,
          "measure": {"batch_size": 8, "seq_len": 32, "min_repeats": 3, "max_repeats": 6, "max_seconds": 1},
          "sampler": {"type": "grid", "seed": 0},
          "constraints": []}  # a random tiny teacher: the evidence is the structure, not the accuracy

CLEAN = textwrap.dedent("""
    import json, os, sys
    import numpy as np, onnxruntime as ort, torch
    from transformers import AutoModelForSequenceClassification
    folder = sys.argv[1]
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    ids = torch.randint(1000, 2000, (3, 12)); mask = torch.ones_like(ids)
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask).logits.float()
    out = {"torch": True, "weight_dtype": model.config.weight_dtype}
    onnx = os.path.join(folder, "model.onnx")
    if os.path.exists(onnx):
        s = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
        got = s.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        out["onnx_max_diff"] = float(np.abs(got - ref.numpy()).max())
    assert not any(m.split(".")[0] in ("trainers", "orchestrator") for m in sys.modules)
    print(json.dumps(out))
""")


def clean_load(folder: Path, work: Path) -> str:
    (work / "load.py").write_text(CLEAN)
    proc = subprocess.run([sys.executable, "-I", "load.py", str(folder)], cwd=work, capture_output=True, text=True,
                          timeout=600, env={"PATH": "/usr/bin:/bin", "HOME": str(work)})
    if proc.returncode != 0:
        return "fails: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:160]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    diff = doc.get("onnx_max_diff")
    if diff is None:
        return "loads (no model.onnx)"
    if doc["weight_dtype"] == "int8":  # torch's int8 kernels quantise activations; model.onnx is the fp32 graph
        return f"loads (int8), model.onnx runs in ONNX Runtime, max |diff| to the int8 torch kernels {diff:.1e}"
    return f"loads, ONNX Runtime max |diff| {diff:.1e}" + ("" if diff <= 1e-4 else " (too large)")


def run_family(family: str, kwargs: dict, root: Path) -> dict:
    work = root / family
    work.mkdir(parents=True, exist_ok=True)
    teacher = save_tiny_folder(family, kwargs, work / "teacher")
    name = f"fam-{family}"
    path = sweep_copy(REPO / "sweeps" / "demo.yaml", work, name, **{"teacher.model": str(teacher), **POINTS})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "launch", str(path)], cwd=work,
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    try:
        trials = study_trials(work, name)
        done = sum(t.state.name == "COMPLETE" for t in trials)
    except Exception as exc:  # no study: refused before it was created
        trials, done = [], 0
    model_dir = work / "exports" / name / "model"
    export = clean_load(model_dir, work) if model_dir.exists() else "no export"
    error = "" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip().splitlines()[-1][:200]
    return {"family": family, "completed": done, "trials": len(trials), "export": export, "wall_s": wall,
            "rc": proc.returncode, "error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(f for f, _ in FAMILIES))
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    rows = dict(FAMILIES)
    root = args.root or Path(tempfile.mkdtemp(prefix="families-sweep-"))
    print(f"work folder {root}; CPU {os.cpu_count()} cores (shared); torch threads per process: default")
    for family in args.families.split(","):
        r = run_family(family, rows[family], root)
        print(f"{family:12s} trials completed {r['completed']}/4 (study has {r['trials']}), export: {r['export']}, "
              f"launch wall {r['wall_s']:.0f} s" + (f", exit {r['rc']}: {r['error']}" if r["rc"] else ""), flush=True)


if __name__ == "__main__":
    main()
