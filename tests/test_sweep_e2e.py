"""The whole path on a tiny real model: launch -> trials -> MLflow -> pareto -> export -> re-run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import sweep_cli, sweep_doc, write_sweep
from orchestrator.prediction_files import paired_accuracy
from orchestrator.study import default_storage_url, open_storage
from orchestrator.tracking import Tracker, default_tracking_uri


def _runs(root: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').resolve()}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _study(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(default_storage_url(root), root))


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_encoder):
    from conftest import make_topics_csv

    work = tmp_path_factory.mktemp("e2e")
    data = make_topics_csv(work / "topics.csv")
    sweep = write_sweep(work, sweep_doc(tiny_encoder, data))
    proc = sweep_cli("launch", str(sweep), cwd=work)
    return work, sweep, proc


def test_launch_logs_parent_baseline_and_one_child_per_trial(launched):
    work, _, proc = launched
    client, runs = _runs(work / "mlruns", "tiny")
    roles = [r.data.tags["sweep.role"] for r in runs]
    assert sorted(roles) == ["baseline", "study", "trial", "trial", "trial", "trial"]
    parent = next(r for r in runs if r.data.tags["sweep.role"] == "study")
    assert parent.info.status == "FINISHED"
    assert "sweep.git_commit" in parent.data.tags and "sw.torch" in parent.data.tags
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep", "data_report.json", "pareto.html", "pareto.png"} <= artifacts
    # The sweep's one-off costs are on the parent run, and in no row: not the teacher's, not a student's.
    assert parent.data.metrics["oneoff_teacher_finetune_energy_kwh"] > 0
    assert "oneoff_teacher_logits_energy_kwh" in parent.data.metrics and "oneoff_paid_by" in parent.data.tags
    baseline = next(r for r in runs if r.data.tags["sweep.role"] == "baseline")
    assert not any(k.startswith(("energy_kwh_train", "emissions_kg_co2e_train", "oneoff_")) for k in baseline.data.metrics)
    study = _study(work / "mlruns", "tiny")
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in study.trials}
    for run in runs:
        if run.data.tags["sweep.role"] == "study":
            continue
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        m = run.data.metrics
        # Validation decides, test reports: every run (teacher included) carries both splits' scores.
        for key in ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "latency_ms_p50_bs1",
                    "latency_ms_p50_bs8", "memory_process_peak_mb_infer", "memory_model_mb", "params_total", "energy_kwh_per_1k_predictions", "emissions_kg_co2e_per_1k_predictions"):
            assert key in m, key
        assert "accuracy" not in m and "macro_f1" not in m  # no split-less quality metric
        assert m["latency_ms_p50_bs1"] > 0 and m["memory_model_mb"] > 0 and m["energy_kwh_per_1k_predictions"] > 0
        if run.data.tags["sweep.role"] == "trial":
            trial = by_run[run.info.run_id]
            assert run.info.status == "FINISHED" and trial.state.name == "COMPLETE"
            assert float(run.data.params["pruning_ratio"]) == trial.params["pruning_ratio"]
            # The objective Optuna was told is the validation accuracy, never the test one.
            assert m["val_accuracy"] == trial.values[0] and m["latency_ms_p50_bs1"] == trial.values[1]
            assert "speedup_p50_bs1" in m and "delta_val_accuracy_points" in m and "delta_test_accuracy_points" in m
            assert "emissions_kg_co2e_train" in m and "energy_kwh_train" in m
            assert run.data.tags["sweep.baseline_threads"] and run.data.tags["seed_kept"] == "0"
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"trial_config.yaml", "result.json", "per_class_f1.json", "model"} <= names
    # Pruning really removed weights: the 0.5 students are smaller than the 0.0 ones.
    sizes = {(t.params["pruning_ratio"]): t.user_attrs["metrics"]["params_encoder"] for t in study.trials}
    assert sizes[0.5] < 0.6 * sizes[0.0]
    assert "Pareto front of tiny" in proc.stdout and "sweep ui" in proc.stdout and "exports/tiny" in proc.stdout


def test_pareto_tags_and_command(launched):
    work, _, _ = launched
    study = _study(work / "mlruns", "tiny")
    front = {t.user_attrs["mlflow_run_id"]: t.number for t in study.best_trials}
    _, runs = _runs(work / "mlruns", "tiny")
    trials = [r for r in runs if r.data.tags["sweep.role"] == "trial"]
    tagged = {r.info.run_id for r in trials if r.data.tags.get("sweep.pareto_front") == "true"}
    parent = next(r for r in runs if r.data.tags["sweep.role"] == "study")
    ties = parent.data.tags.get("sweep.pareto_ties", "")
    # Optuna's front, less the points tied within noise with a kept one (each said so on the parent run)
    assert tagged <= set(front)
    for run_id in set(front) - tagged:
        assert f"trial {front[run_id]} ~ trial" in ties
    out = sweep_cli("pareto", "tiny", cwd=work).stdout
    assert "teacher" in out and "pareto.html" in out and "pareto.png" in out and "#/experiments/" in out
    assert "val acc" in out and "test acc*" in out and "validation decides, test reports" in out
    assert "energy (CodeCarbon, country" in out and "one-off costs of the sweep" in out
    for run_id, number in front.items():
        if run_id in tagged:
            assert f"\n {number} " in out or f" {number}  " in out


def test_export_metrics_equal_the_mlflow_run_and_the_config_reproduces(launched):
    work, _, _ = launched
    out = work / "exported"
    sweep_cli("export", "tiny", "--pick", "most_accurate", "--out", str(out), cwd=work)
    doc = yaml.safe_load((out / "config.yaml").read_text())
    client, _ = _runs(work / "mlruns", "tiny")
    run = client.get_run(doc["mlflow"]["run_id"])
    assert doc["metrics"] == run.data.metrics
    assert doc["validation"]["val_accuracy"] == run.data.metrics["val_accuracy"]
    assert doc["test_reported"]["test_accuracy"] == run.data.metrics["test_accuracy"]
    completed = [t for t in _study(work / "mlruns", "tiny").trials if t.state.name == "COMPLETE"]
    acc = lambda t: t.user_attrs["metrics"]["val_accuracy"]  # noqa: E731
    best = max(completed, key=lambda t: (acc(t), -t.number))
    chosen = next(t for t in completed if t.number == doc["trial"])
    low, high = paired_accuracy(Tracker(default_tracking_uri(work / "mlruns"), work / "mlruns"))(chosen, best)
    if acc(chosen) < acc(best):
        # most_accurate keeps the noise it measured: a less accurate trial is picked only when it is tied with
        # the best within the paired 95 % interval on the same validation rows, and has fewer parameters; the
        # reason says so
        assert f"trial {best.number} has the best val_accuracy" in doc["pick_reason"], doc["pick_reason"]
        assert f"wins: trial {chosen.number}" in doc["pick_reason"], doc["pick_reason"]
        assert low <= 0.0 <= high
        assert chosen.user_attrs["metrics"]["params_total"] < best.user_attrs["metrics"]["params_total"]
    else:
        assert acc(chosen) == acc(best)
    assert set(doc["hyperparameters"]) == {"pruning_ratio", "distill_temperature", "distill_alpha", "precision", "runtime",
                                           "vocabulary"}
    assert (out / "model" / "config.json").exists() and (out / "model" / "model.safetensors").exists()
    assert doc["reproduce"].startswith("sweep trial ")
    rerun = sweep_cli(*doc["reproduce"].split()[1:], cwd=out)  # commands run from the export folder
    result = json.loads((out / "reproduced" / "result.json").read_text())
    assert result["metrics"]["test_accuracy"] == doc["metrics"]["test_accuracy"], rerun.stdout[-2000:]
    assert result["metrics"]["val_accuracy"] == doc["metrics"]["val_accuracy"]
    assert result["metrics"]["params_total"] == doc["metrics"]["params_total"]


def test_export_is_portable_with_a_model_card_and_runs_without_this_project(launched, tmp_path):
    import torch

    from test_deploy import load_in_clean_process
    from trainers.config import TrialConfig
    from trainers.pruning import load_pruned
    from trainers.train import batches
    from trainers.trial import load_and_encode

    work, _, _ = launched
    out = work / "portable"
    sweep_cli("export", "tiny", "--pick", "most_accurate", "--out", str(out), cwd=work)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"README.md", "config.yaml", "trial_config.yaml", "model/model.onnx", "model/model.int8.onnx",
            "model/modeling_pruned.py", "model/onnx_parity.json"} <= {str(p.relative_to(out)) for p in files}
    machine_paths = {str(work.resolve()), str(Path(__file__).resolve().parents[1]), str(Path.home())}
    for path in files:
        data = path.read_bytes()
        for root in machine_paths:
            assert root.encode() not in data, f"{path.relative_to(out)} names {root}"
    doc = yaml.safe_load((out / "config.yaml").read_text())
    card = (out / "README.md").read_text()
    for needle in ("trust_remote_code=True", "onnxruntime", "## Hyperparameters", "## Pruning plan",
                   "`latency_ms_p50_bs1`", "hw_", doc["reproduce"], doc["measure"]):
        assert needle in card, needle
    parity = doc["onnx_parity"]
    assert parity["fp32"]["ok"] and parity["rows"] > 0  # int8 on a few dozen rows: one flip is > 0.5 points
    assert {"torch_int8_accuracy", "onnxruntime_int8_accuracy", "agreement", "ok"} <= set(parity["int8"])

    # the test split, tokenised exactly as measurement does, from the export's own (relative) trial config
    cfg = TrialConfig.model_validate(yaml.safe_load((out / "trial_config.yaml").read_text()))
    here = Path.cwd()
    try:
        import os
        os.chdir(out)
        ours, tokenizer = load_pruned("model")
        _, encoded = load_and_encode(cfg.data, cfg.data_base_dir, tokenizer, max_seq_len=cfg.training.max_seq_len,
                                     cache_dir=cfg.cache_dir)
    finally:
        os.chdir(here)
    test = next(batches(encoded["test"], 10_000, shuffle=False))
    plain = load_in_clean_process(out / "model", test, tmp_path / "elsewhere")
    with torch.inference_mode():
        expected = ours(input_ids=test["input_ids"], attention_mask=test["attention_mask"]).logits
    torch.testing.assert_close(torch.tensor(plain["logits"]), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(plain["onnx_logits"]), expected, atol=1e-4, rtol=0)
    accuracy = float((torch.tensor(plain["logits"]).argmax(-1) == test["labels"]).double().mean())
    assert accuracy == pytest.approx(doc["metrics"]["test_accuracy"], abs=1e-9)  # the exported (fp32) test accuracy
    # and the validation accuracy the pick was made on, from the exported folder alone
    val = next(batches(encoded["validation"], 10_000, shuffle=False))
    plain_val = load_in_clean_process(out / "model", val, tmp_path / "elsewhere-val")
    val_accuracy = float((torch.tensor(plain_val["logits"]).argmax(-1) == val["labels"]).double().mean())
    assert val_accuracy == pytest.approx(doc["metrics"]["val_accuracy"], abs=1e-9)


def test_relaunch_resumes_without_running_any_grid_point_twice(launched):
    work, sweep, _ = launched
    before = len(_study(work / "mlruns", "tiny").trials)
    proc = sweep_cli("launch", str(sweep), "--no-export", cwd=work)
    assert "0 point(s) queued" in proc.stdout
    study = _study(work / "mlruns", "tiny")
    assert len(study.trials) == before
    points = [json.dumps(t.params, sort_keys=True) for t in study.trials if t.state.name == "COMPLETE"]
    assert len(points) == len(set(points)) == 4
    _, runs = _runs(work / "mlruns", "tiny")
    assert sum(r.data.tags["sweep.role"] == "study" for r in runs) == 1
    assert sum(r.data.tags["sweep.role"] == "baseline" for r in runs) == 1


def test_status_lists_trials(launched):
    work, _, _ = launched
    out = sweep_cli("status", "tiny", cwd=work).stdout
    assert out.count("COMPLETE") == 4
    assert "val acc" in out and "test acc" in out
    assert "tiny" in sweep_cli("status", cwd=work).stdout


def test_changed_sweep_file_is_refused_for_an_existing_study(launched):
    work, sweep, _ = launched
    doc = yaml.safe_load(sweep.read_text())
    doc["training"]["epochs"] = 5
    changed = write_sweep(work, doc, "changed.yaml")
    proc = sweep_cli("launch", str(changed), cwd=work, check=False)
    assert proc.returncode == 2
    assert "changes ['training']" in proc.stdout


def test_sweep_measure_on_an_export_reproduces_its_accuracy_exactly(launched):
    work, sweep, _ = launched
    out = work / "exported-fast"
    sweep_cli("export", "tiny", "--out", str(out), cwd=work)
    doc = yaml.safe_load((out / "config.yaml").read_text())
    printed = sweep_cli("measure", str(out / "model"), "--sweep", str(sweep), "--output", str(work / "m.json"), cwd=work).stdout
    assert "latency_ms_p50_bs1" in printed
    measured = json.loads((work / "m.json").read_text())["metrics"]
    assert measured["test_accuracy"] == doc["metrics"]["test_accuracy"]
    assert measured["val_accuracy"] == doc["metrics"]["val_accuracy"]
    assert measured["params_total"] == doc["metrics"]["params_total"]
    assert measured["latency_ms_p50_bs1"] > 0 and measured["memory_model_mb"] > 0
    assert "fresh process" in json.loads((work / "m.json").read_text())["tags"]["measure_process"]


def test_per_row_predictions_are_logged_and_every_interval_is_recomputed_from_them(launched, tmp_path):
    import numpy as np

    from orchestrator import stats
    from trainers.measure import predictions as P

    work, _, _ = launched
    client, runs = _runs(work / "mlruns", "tiny")
    teacher_run = next(r for r in runs if r.data.tags["sweep.role"] == "baseline")
    teacher = P.load(client.download_artifacts(teacher_run.info.run_id, P.PREDICTIONS_FILE, str(tmp_path)))
    assert teacher.splits["val"].correct.mean() == teacher_run.data.metrics["val_accuracy"]
    for run in [r for r in runs if r.data.tags["sweep.role"] == "trial"]:
        dst = tmp_path / run.info.run_id
        dst.mkdir()
        rows = P.load(client.download_artifacts(run.info.run_id, P.PREDICTIONS_FILE, str(dst)))
        m = run.data.metrics
        for prefix in ("val", "test"):  # the logged accuracy is the mean of the logged rows, exactly
            assert rows.splits[prefix].correct.mean() == m[f"{prefix}_accuracy"]
            np.testing.assert_array_equal(rows.splits[prefix].pred[0], rows.splits[prefix].logits[0].argmax(-1))
        # the pooled interval, and the paired one against the teacher, recomputed from the artifacts
        _, low, high = stats.accuracy_interval(rows.splits["val"].correct)
        assert (m["val_accuracy_ci_low"], m["val_accuracy_ci_high"]) == (low, high) and high - low > 0
        paired = stats.paired_delta(rows.splits["val"], teacher.splits["val"], kept_a=rows.kept, kept_b=teacher.kept)
        assert paired.high > paired.low  # never zero-width, even where the two agree on every row
        assert m["delta_val_accuracy_points_ci_low"] == pytest.approx(100 * paired.low)
        assert m["delta_val_accuracy_points_ci_high"] == pytest.approx(100 * paired.high)
    table = sweep_cli("pareto", "tiny", cwd=work).stdout
    assert "two-level bootstrap" in table and "paired 95 % interval of student - teacher" in table
    assert "±0.000" not in table and "sweep export picks: trials within the measured noise" in table
    compared = sweep_cli("compare", "tiny", "0", "teacher", cwd=work).stdout
    assert "trial 0 (A) vs teacher (B)" in compared and "validation (decides)" in compared and "McNemar" in compared
    assert "test (reported only)" in sweep_cli("compare", "tiny", "0", "1", cwd=work).stdout
    refused = sweep_cli("compare", "tiny", "0", "99", cwd=work, check=False)
    assert refused.returncode == 2 and "no completed trial 99" in refused.stdout


CLEAN_TOKENIZER = "from transformers import AutoTokenizer; import sys; " \
                  "print(AutoTokenizer.from_pretrained(sys.argv[1])('a short text')['input_ids'])"


def test_the_export_reports_the_shipped_models_own_accuracy_and_a_plain_tokenizer(launched, tmp_path):
    import subprocess
    import sys

    from trainers.measure import predictions as P

    work, _, _ = launched
    out = work / "exported-numbers"
    sweep_cli("export", "tiny", "--pick", "fastest", "--out", str(out), cwd=work)
    doc = yaml.safe_load((out / "config.yaml").read_text())
    assert "within" in doc["pick_reason"] or "no other trial" in doc["pick_reason"]
    config, shipped = doc["accuracy"]["configuration"], doc["accuracy"]["exported_model"]
    assert config["val"] == doc["metrics"]["val_accuracy"] and len(config["val_interval_95"]) == 2
    rows = P.load(out / shipped["predictions"])
    kept = rows.splits["val"].correct[rows.kept]
    assert shipped["val"] == kept.mean() and shipped["val_rows"] == f"{kept.sum()}/{kept.size}"
    assert "test_reported" in shipped and "seed" in shipped
    card = (out / "README.md").read_text()
    assert "## Accuracy" in card and "this exported model" in card and 'from_pretrained("tokenizer")' in card
    # plain transformers, outside this project, stdin closed: no "run the custom code?" prompt, no waiting
    proc = subprocess.run([sys.executable, "-I", "-c", CLEAN_TOKENIZER, str(out / "tokenizer")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "custom code" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.strip().startswith("[101")
