"""Seeds and uncertainty: a point trained with N seeds logs the mean, std, 95 % interval and each seed's
value, measures the representative (median) seed's model once, and shares each seed's training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import TOPICS, make_tiny_classifier, make_topics_csv
from trainers import metrics as M
from trainers.config import TrainingConfig, TrialConfig
from trainers.data import DataConfig
from trainers.pruning import PruningConfig
from trainers.seeds import mean_std_ci95, median_index, seed_metrics, t975

LABELS = sorted(TOPICS)


def test_t_interval_matches_the_textbook_values():
    mean, std, ci = mean_std_ci95([0.80, 0.84])
    assert mean == pytest.approx(0.82) and std == pytest.approx(math.sqrt(0.0008))
    assert ci == pytest.approx(12.706 * std / math.sqrt(2))
    assert mean_std_ci95([0.9]) == (0.9, 0.0, 0.0)
    assert t975(35) == 2.042  # between table rows: the lower df, a wider interval
    assert median_index([0.9, 0.7, 0.8]) == 2 and median_index([0.9, 0.7]) == 1 and median_index([0.5, 0.5]) == 0


def test_seed_metrics_name_every_value():
    out = seed_metrics([{M.VAL_ACCURACY: 0.8, M.TEST_ACCURACY: 0.7}, {M.VAL_ACCURACY: 0.9, M.TEST_ACCURACY: 0.75}])
    assert out[M.VAL_ACCURACY] == pytest.approx(0.85) and out["val_accuracy_seed1"] == 0.9
    assert out["test_accuracy_std"] > 0 and out["test_accuracy_ci95"] > out["test_accuracy_std"]
    assert M.VAL_MACRO_F1 not in out  # not measured by every seed: nothing invented


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_encoder) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-classifier"), tiny_encoder, LABELS)


def _config(tmp_path: Path, teacher: Path, name: str, **training) -> TrialConfig:
    csv = tmp_path / "topics.csv"
    if not csv.exists():
        make_topics_csv(csv)
    budget = TrainingConfig(epochs=1, batch_size=16, learning_rate=2e-3, max_seq_len=16, seed=0).model_copy(update=training)
    return TrialConfig(
        name=name, teacher_dir=str(teacher), data=DataConfig(path=csv), data_base_dir=tmp_path,
        cache_dir=tmp_path / "cache", training=budget,
        pruning=PruningConfig(method="block_movement", block_size="head"), pruning_ratio=0.5,
        measure={"batch_size": 8, "seq_len": 16, "warmup": 1, "min_repeats": 2, "max_repeats": 3, "max_seconds": 1,
                 "measure_power_secs": 1},
        output_dir=tmp_path / name, trainings_dir=tmp_path / "trainings")


def test_two_seeds_log_mean_std_interval_and_each_seed_and_share_each_training(tmp_path, teacher_dir):
    from trainers.trial import run_trial

    result = run_trial(_config(tmp_path, teacher_dir, "t0", seeds=2), log=lambda _: None)
    m = result.metrics
    for name in M.SEEDED:
        values = [m[M.seed_name(name, 0)], m[M.seed_name(name, 1)]]
        assert m[name] == pytest.approx(sum(values) / 2)
        assert m[M.std_name(name)] == pytest.approx(mean_std_ci95(values)[1])
        assert m[M.ci95_name(name)] == pytest.approx(mean_std_ci95(values)[2])
    # the kept model is the median-val seed; latency etc. were measured on it, once
    kept = int(result.tags["seed_kept_index"])
    assert kept == median_index([m["val_accuracy_seed0"], m["val_accuracy_seed1"]])
    assert "median validation accuracy" in result.tags["seed_kept_reason"] and result.tags["seeds"] == "0,1"
    assert m[M.LATENCY_P50_BS1] > 0 and (tmp_path / "t0" / "model").is_dir()
    assert m[M.VAL_EXAMPLES] > 0
    # each seed is its own shared training: seed 1 alone reuses the second training of t0
    again = run_trial(_config(tmp_path, teacher_dir, "t1", seed=1), log=lambda _: None)
    assert again.reused_training_of == "t0"
    assert again.metrics[M.VAL_ACCURACY] == pytest.approx(m["val_accuracy_seed1"], abs=1e-6)


def test_an_onnx_runtime_point_scores_every_seed_in_onnx_runtime_and_its_onnx_reproduces_the_logged_accuracy(
        tmp_path, teacher_dir):
    """Every seed in ONNX Runtime at int8 (not torch's int8 kernel); the saved model.int8.onnx, re-run on the
    validation split, gives the kept seed's logged val accuracy exactly, and its per-row predictions."""
    import numpy as np

    from trainers.deploy.session import OrtClassifier
    from trainers.measure import predictions as P
    from trainers.measure.accuracy import predict
    from trainers.pruning import load_pruned
    from trainers.train import batches
    from trainers.trial import load_and_encode, run_trial

    cfg = _config(tmp_path, teacher_dir, "ort", seeds=2).model_copy(
        update={"runtime": "onnxruntime", "precision": "int8", "export_onnx": True})
    result = run_trial(cfg, log=lambda _: None)
    kept = int(result.tags["seed_kept_index"])
    rows = P.load(result.predictions)
    assert rows.seeds == [0, 1] and rows.kept == kept and rows.splits["val"].correct.shape[0] == 2
    for i in (0, 1):  # each seed's logged accuracy is its rows' accuracy
        assert result.metrics[M.seed_name(M.VAL_ACCURACY, i)] == rows.splits["val"].accuracies()[i]
    model_dir = Path(result.model_dir)
    _, tokenizer = load_pruned(model_dir)
    _, encoded = load_and_encode(cfg.data, cfg.data_base_dir, tokenizer, max_seq_len=cfg.training.max_seq_len,
                                 cache_dir=cfg.cache_dir)
    session = OrtClassifier(model_dir / "model.int8.onnx", None)
    # in the split's order, in batches of eval_batch_size (dynamic int8 quantises activations per batch)
    gold, logits = predict(session, batches(encoded["validation"], cfg.training.eval_batch_size, shuffle=False),
                           num_labels=len(LABELS), device="cpu")
    accuracy = float((logits.argmax(-1) == gold).double().mean())
    assert accuracy == result.metrics[M.seed_name(M.VAL_ACCURACY, kept)]  # exactly, from the file alone
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), rows.splits["val"].pred[kept])
    # the other seed was scored in ONNX Runtime too: its rows are ONNX Runtime int8 logits, not torch's
    assert "deployed runtime" in result.tags["seeds_scope"]
