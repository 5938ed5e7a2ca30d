"""Export the picked trial for deployment: a portable folder with its config, metrics, model card and model.

The metrics are read back from the trial's MLflow run (not recomputed), so the exported numbers
are exactly those the user browsed; the model comes from the run's artifacts, so export works from
any machine that can reach the tracking server. Nothing in the export names a path of the machine
that ran the sweep: paths are relative to the export folder, commands are run from it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from orchestrator import pareto
from orchestrator import stats
from orchestrator.contexts import main_front
from orchestrator.model_card import model_card
from orchestrator.prediction_files import paired_accuracy, trial_predictions
from orchestrator.record import study_record, trial_record
from orchestrator.spec import SweepSpec
from orchestrator.tracking import Tracker
from trainers import metrics
from trainers.measure.predictions import PREDICTIONS_FILE, save as save_predictions

MEASURED_ON_PREFIXES = ("hw_", "measure_", "unit_", "latency_bs", "memory_scope", "emissions_scope", "accuracy_scope",
                        "cpu_", "precision_", "runtime")


def relative_to(value: Any, base: Path) -> Any:
    """`value` with every absolute path (plain, or inside a sqlite:/// or file:// URI) made relative to `base`."""
    if isinstance(value, dict):
        return {k: relative_to(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_to(v, base) for v in value]
    if not isinstance(value, str):
        return value
    for scheme in ("sqlite:///", "file://", ""):
        rest = value[len(scheme):]
        if value.startswith(scheme) and rest.startswith("/"):
            return scheme + os.path.relpath(rest, base)
    return value


def _ensure_onnx(model_dir: Path, spec: SweepSpec, cache_dir: Path) -> None:
    """model.onnx, model.int8.onnx and onnx_parity.json beside the weights, made now (on the validation split)
    for a trial that did not write them."""
    from trainers.deploy.parity import PARITY_FILE, export_with_parity
    from trainers.pruning import load_pruned
    from trainers.train import batches
    from trainers.inputs import load_and_encode

    if (model_dir / PARITY_FILE).exists():
        return
    model, tokenizer = load_pruned(model_dir)
    _, encoded = load_and_encode(spec.data, spec.base_dir, tokenizer, max_seq_len=spec.training.max_seq_len,
                                 cache_dir=cache_dir)
    rows = batches(encoded["validation"], spec.training.eval_batch_size, shuffle=False)
    export_with_parity(model, model_dir, rows, threads=spec.measure.resolved_threads())


def _ship_tokenizer(model_dir: Path, out: Path) -> None:
    """The tokenizer in a folder of its own: model/config.json names the shipped modeling file (auto_map), so
    AutoTokenizer on model/ would ask whether to run it; tokenizer/ loads with a plain from_pretrained."""
    from transformers import AutoTokenizer

    if (model_dir / "tokenizer_config.json").exists():
        AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False).save_pretrained(out)


def accuracy_summary(metrics_: dict[str, float], predictions, trial_cfg: dict) -> dict:
    """Both accuracies, labelled: the configuration's (mean over seeds, pooled interval) and the exported model's own
    (the kept seed's, in its runtime at its precision, from predictions.npz: reproducible from this folder)."""
    seeds = trial_cfg.get("training", {}).get("seeds", 1)
    runtime, precision = trial_cfg.get("runtime", "torch"), trial_cfg.get("precision", "fp32")
    config = {"what": f"this configuration: mean over {seeds} seed(s), 95 % interval over rows and seeds ({stats.METHOD})"}
    for prefix, label in (("val", "val"), ("test", "test_reported")):
        name = f"{prefix}_accuracy"
        if name in metrics_:
            config[label] = metrics_[name]
            low, high = metrics_.get(f"{name}_ci_low"), metrics_.get(f"{name}_ci_high")
            if low is not None and high is not None:
                config[f"{label}_interval_95"] = [low, high]
    served = "model/" if runtime == "torch" else "model/model.int8.onnx" if precision == "int8" else "model/model.onnx"
    shipped: dict = {"what": f"the exported model itself ({served}, {runtime} at {precision}): re-measure it on the "
                             "split to get exactly these"}
    if predictions is not None:
        shipped["seed"] = predictions.seeds[predictions.kept]
        for prefix, label in (("val", "val"), ("test", "test_reported")):
            if prefix in predictions.splits:
                correct = predictions.splits[prefix].correct[predictions.kept]
                shipped[label] = float(correct.mean())
                shipped[f"{label}_rows"] = f"{int(correct.sum())}/{correct.size}"
        shipped["predictions"] = PREDICTIONS_FILE
    return {"configuration": config, "exported_model": shipped}


def _shapes(model_dir: Path) -> dict:
    """Per-layer head counts and FFN widths as the exported model's config.json records them."""
    config = json.loads((model_dir / "config.json").read_text())
    kept = config.get("kept_heads_per_layer")
    return {"heads_per_layer": [len(h) for h in kept] if kept else config.get("num_attention_heads_per_layer"),
            "ffn_per_layer": config.get("intermediate_size_per_layer")}


def export_trial(study: optuna.Study, spec: SweepSpec, tracker: Tracker, *, rule: str, out_dir: Path,
                 root: Path | None = None) -> dict:
    """`root`: this machine's store, whose data cache the export tokenises into (the picked trial may have run
    on another machine: the cache path in its trial_config.yaml is that machine's)."""
    from orchestrator.contexts import pick_candidates

    completed = pick_candidates(study)  # one measurement context: a pick never compares two devices or hosts
    if not completed:
        raise ValueError(f"study {study.study_name!r} has no completed trial to export")
    chosen, why = pareto.pick_with_reason(completed, rule, rel_tol=spec.measure.rel_tol, paired=paired_accuracy(tracker))
    record = trial_record(chosen)
    run_id = record.mlflow_run_id
    run = tracker.client.get_run(run_id)

    out_dir = Path(out_dir)
    base = out_dir.resolve()
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tracker.download(run_id, "model", staging)
    trial_cfg_path = Path(tracker.download(run_id, "trial_config.yaml", staging))
    trial_cfg = yaml.safe_load(trial_cfg_path.read_text())
    cache = (root / "cache" / "data" if root is not None
             else Path(trial_cfg.get("cache_dir", "mlruns/cache/data"))).resolve()  # <root>/cache/data
    _ensure_onnx(staging / "model", spec, cache)
    _ship_tokenizer(staging / "model", staging / "tokenizer")
    predictions = trial_predictions(chosen, tracker)
    if predictions is not None:
        save_predictions(staging / PREDICTIONS_FILE, predictions)
    root_flag = f" --root {os.path.relpath(cache.parent.parent, base)}" if cache.parent.name == "cache" else ""
    if root is not None:  # the teacher by its key in this machine's cache, not where the trial's machine had it
        for key in ("teacher_dir", "teacher_logits"):
            if trial_cfg.get(key) and "/cache/teachers/" in str(trial_cfg[key]):
                trial_cfg[key] = str(root.resolve() / "cache" / "teachers" / str(trial_cfg[key]).rpartition("/cache/teachers/")[2])
        trial_cfg["cache_dir"] = str(cache)
    trial_cfg["output_dir"] = "reproduced"
    trial_cfg["name"] = f"{study.study_name}/trial-{chosen.number}/reproduced"
    trial_cfg["measure_lock"] = None  # a lock of the sweep's machine; a reproduction runs alone
    trial_cfg["trainings_dir"] = None  # a reproduction trains the student itself, never reuses the sweep's training
    trial_cfg["await_verdict_s"] = 0.0  # and runs alone: no orchestrator judges its evaluations
    data_base = Path(trial_cfg.get("data_base_dir", ".")).resolve()
    trial_cfg["data"] = relative_to(trial_cfg.get("data", {}), data_base)  # data paths resolve against data_base_dir
    trial_cfg_path.write_text(yaml.safe_dump(relative_to(trial_cfg, base), sort_keys=False))

    study_rec = study_record(study)
    baselines = {int(k): v for k, v in study_rec.baselines_by_threads.items()}
    compared_threads, baseline = pareto.baseline_for(baselines, record.baseline_threads, study_rec.baseline_metrics)
    sweep_file = os.path.relpath(Path(spec.source).resolve(), base) if spec.source else "SWEEP.yaml"
    parity_file = staging / "model" / "onnx_parity.json"
    document = {
        "study": study.study_name,
        "trial": chosen.number,
        "pick": rule,
        "pick_reason": why,
        "accuracy": accuracy_summary(run.data.metrics, predictions, trial_cfg),
        "mlflow": {"run_id": run_id, "tracking_uri": relative_to(tracker.uri, base),
                   "experiment_id": run.info.experiment_id},
        "hyperparameters": dict(chosen.params),
        "pruning": {"method": spec.pruning.method, **_shapes(staging / "model"), **record.pruning},
        "max_seq_len": trial_cfg.get("training", {}).get("max_seq_len"),
        "chosen_on": "validation metrics (val_*); test_* are reported, never used to choose",
        "validation": {k: v for k, v in sorted(run.data.metrics.items()) if k.startswith("val_")},
        "test_reported": {k: v for k, v in sorted(run.data.metrics.items()) if metrics.is_test_metric(k)},
        "metrics": dict(sorted(run.data.metrics.items())),
        "baseline_metrics": dict(sorted(baseline.items())),
        "vs_teacher": pareto.deltas(run.data.metrics, baseline),
        "teacher_measured_on_threads": compared_threads if compared_threads is not None else "all cores (default baseline)",
        "one_off_costs": dict(sorted(study_rec.oneoff_metrics.items())),
        "meets_constraints": pareto.feasible(chosen),
        "on_pareto_front": chosen.number in {t.number for t in main_front(study)[1]},
        "measured_on": {k: v for k, v in run.data.tags.items() if k.startswith(MEASURED_ON_PREFIXES)},
        "model": "model/",
        "onnx": {"fp32": "model/model.onnx", "int8": "model/model.int8.onnx"},
        "tokenizer": "tokenizer/ (AutoTokenizer.from_pretrained('tokenizer'): plain transformers, no remote code)",
        "onnx_parity": json.loads(parity_file.read_text()),
        "run_from": "this folder (the commands below use paths relative to it)",
        "reproduce": "sweep trial trial_config.yaml",
        "measure": f"sweep measure model --sweep {sweep_file}{root_flag}",
    }
    document = relative_to(document, base)
    (staging / "config.yaml").write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    (staging / "README.md").write_text(model_card(document))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return document
