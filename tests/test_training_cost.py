"""Spending less per sweep: early stopping in the training loop, progress across the process boundary,
one training shared by trials that train the same student, and the calibration `sweep check` reads."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import TOPICS, make_tiny_classifier, make_topics_csv
from trainers.calibrate import time_training_steps
from trainers.config import TrainingConfig, TrialConfig
from trainers.data import DataConfig, encode_cached, load_data
from trainers.progress import ProgressReporter, read_events, request_stop
from trainers.pruning import PruningConfig, load_pruned, save_pruned
from trainers.train import planned_steps, train
from trainers.training_share import find_training, train_once, training_key

LABELS = sorted(TOPICS)
TRAINING = TrainingConfig(epochs=3, batch_size=16, learning_rate=2e-3, max_seq_len=16, seed=0)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_encoder) -> Path:
    """A tiny real BERT classifier over the topic labels (randomly initialised; enough to train and prune)."""
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-classifier"), tiny_encoder, LABELS)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, teacher_dir):
    folder = tmp_path_factory.mktemp("data")
    csv = make_topics_csv(folder / "topics.csv")
    loaded = load_data(DataConfig(path=csv), folder)
    return encode_cached(loaded, AutoTokenizer.from_pretrained(teacher_dir), max_seq_len=16, cache_dir=folder / "cache")


# --- early stopping ----------------------------------------------------------------------------

def test_on_eval_stops_training_at_the_requested_evaluation(teacher_dir, encoded):
    model, _ = load_pruned(teacher_dir)
    seen: list[tuple[int, float, float]] = []

    def on_eval(step, epoch, acc):
        seen.append((step, epoch, acc))
        return len(seen) == 2  # stop at the second evaluation

    stats = train(model, encoded["train"], TRAINING.model_copy(update={"epochs": 5}), device="cpu",
                  val_split=encoded["validation"], eval_every_steps=3, on_eval=on_eval, log=lambda _: None)
    assert [s for s, _, _ in seen] == [3, 6]
    assert stats.stopped_early and stats.stopped_at_step == 6 and stats.steps == 6
    assert stats.eval_steps == [3, 6] and stats.val_accuracy == [a for _, _, a in seen]
    assert stats.total_steps == planned_steps(encoded["train"]["labels"].shape[0], TRAINING.model_copy(update={"epochs": 5}))
    assert stats.total_steps > 6


def test_without_a_stop_every_epoch_is_evaluated_and_nothing_says_stopped(teacher_dir, encoded):
    model, _ = load_pruned(teacher_dir)
    steps_per_epoch = math.ceil(encoded["train"]["labels"].shape[0] / TRAINING.batch_size)
    stats = train(model, encoded["train"], TRAINING, device="cpu", val_split=encoded["validation"],
                  on_eval=lambda *a: False, log=lambda _: None)
    assert not stats.stopped_early and stats.stopped_at_step is None
    assert stats.eval_steps == [steps_per_epoch * (i + 1) for i in range(3)]


def test_a_stop_request_file_stops_a_running_training_and_progress_is_readable(tmp_path, teacher_dir, encoded):
    model, _ = load_pruned(teacher_dir)
    reporter = ProgressReporter(tmp_path, "training", stoppable=True, min_interval_s=0.0)

    def on_step(step, total, epoch):
        if step == 4:  # the orchestrator decides, from another process in real life
            request_stop(tmp_path, "pruned by the median rule")
        return reporter.on_step(step, total, epoch)

    stats = train(model, encoded["train"], TRAINING, device="cpu", val_split=encoded["validation"],
                  eval_every_steps=2, on_step=on_step, on_eval=reporter.on_eval, log=lambda _: None)
    assert stats.stopped_early and stats.stopped_at_step == 4
    events, offset = read_events(tmp_path / "progress.jsonl")
    assert [e.step for e in events if e.kind == "step"] == [1, 2, 3, 4]
    evals = [e for e in events if e.kind == "eval"]
    assert [e.step for e in evals] == [2] and evals[0].val_accuracy == stats.val_accuracy[0]
    assert all(e.total_steps == stats.total_steps for e in events) and events[-1].eta_s is not None
    assert read_events(tmp_path / "progress.jsonl", offset) == ([], offset)
    with open(tmp_path / "progress.jsonl", "a") as fh:  # a half-written line is left for the next read
        fh.write('{"kind": "step"')
    assert read_events(tmp_path / "progress.jsonl", offset) == ([], offset)


def test_a_reporter_that_is_not_stoppable_ignores_stop_requests(tmp_path):
    request_stop(tmp_path, "x")
    assert not ProgressReporter(tmp_path, "teacher_fine_tune").on_step(1, 10, 0.1)
    assert ProgressReporter(tmp_path, "training", stoppable=True).on_step(1, 10, 0.1)


# --- train once, measure many ------------------------------------------------------------------

def _trial(**update) -> TrialConfig:
    base = TrialConfig(teacher_dir="t", data=DataConfig(path="d.csv"), training=TRAINING, pruning_ratio=0.5,
                       distill_alpha=0.7, distill_temperature=2.0, precision="fp32", output_dir=Path("a"))
    return base.model_copy(update=update)


def _key(cfg: TrialConfig) -> str:
    return training_key(cfg, teacher_fingerprint="teacher", data_fingerprint="data")


def test_training_key_shares_exactly_what_trains_the_same_weights():
    base = _key(_trial())
    # run differently, trained the same: share
    assert _key(_trial(precision="int8", output_dir=Path("b"), name="other")) == base
    assert _key(_trial(measure=_trial().measure.model_copy(update={"batch_size": 3}))) == base
    assert _key(_trial(training=TRAINING.model_copy(update={"eval_batch_size": 7, "eval_every_steps": 3}))) == base
    assert _key(_trial(distill_alpha=0.0, distill_temperature=2.0)) == _key(_trial(distill_alpha=0.0, distill_temperature=4.0))
    assert _key(_trial(pruning_ratio=0.0)) == _key(_trial(pruning_ratio=0.0, pruning=PruningConfig(method="one_shot")))
    # trained differently: never share
    for other in (_trial(precision="bf16"), _trial(distill_temperature=4.0), _trial(distill_alpha=0.3),
                  _trial(pruning_ratio=0.25), _trial(training=TRAINING.model_copy(update={"seed": 1})),
                  _trial(pruning=PruningConfig(method="one_shot"))):
        assert _key(other) != base
    assert training_key(_trial(), teacher_fingerprint="other", data_fingerprint="data") != base
    assert training_key(_trial(), teacher_fingerprint="teacher", data_fingerprint="other") != base


def _train_or_reuse(args) -> tuple[bool, str]:
    """One worker process: a real (tiny) training that saves the model, or the reuse of another's."""
    teacher, root, counter, pause = args

    def build(model_dir: Path) -> dict:
        with open(counter, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        model, tokenizer = load_pruned(teacher)
        csv = make_topics_csv(Path(root).parent / f"data-{os.getpid()}.csv")
        loaded = load_data(DataConfig(path=csv), csv.parent)
        enc = encode_cached(loaded, tokenizer, max_seq_len=16, cache_dir=Path(root).parent / f"c-{os.getpid()}")
        stats = train(model, enc["train"], TRAINING.model_copy(update={"epochs": 1}), device="cpu", log=lambda _: None)
        import time

        time.sleep(pause)  # keep the lock long enough for the other worker to arrive while training runs
        save_pruned(model, tokenizer, None, model_dir)
        return {"trained_by": os.getpid(), "train_steps": stats.steps}

    shared = train_once(root, "k1", build, log=lambda _: None)
    load_pruned(shared.model_dir)  # the shared model loads
    return shared.trained_now, str(shared.meta["trained_by"])


def test_two_workers_asking_for_one_training_train_it_once(tmp_path, teacher_dir):
    counter = tmp_path / "trainings.txt"
    args = (str(teacher_dir), str(tmp_path / "trainings"), str(counter), 2.0)
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_train_or_reuse, [args, args], chunksize=1)
    assert len(counter.read_text().split()) == 1  # exactly one training ran
    assert sorted(now for now, _ in results) == [False, True]
    assert len({by for _, by in results}) == 1  # the reuser names the trainer
    assert find_training(tmp_path / "trainings", "k1").meta["train_steps"] > 0


def _crash_mid_training(args) -> None:
    root = args

    def build(model_dir: Path) -> dict:
        model_dir.mkdir(parents=True)
        (model_dir / "model.safetensors").write_bytes(b"half a model")
        os._exit(3)  # killed mid-way: no exception handler, no cleanup runs

    train_once(root, "k2", build)


def test_a_crashed_trainer_leaves_no_completed_looking_training(tmp_path):
    root = tmp_path / "trainings"
    proc = mp.get_context("spawn").Process(target=_crash_mid_training, args=(str(root),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 3
    assert find_training(root, "k2") is None and not (root / "k2").exists()
    built = []

    def build(model_dir: Path) -> dict:
        built.append(model_dir)
        model_dir.mkdir(parents=True)
        (model_dir / "model.safetensors").write_bytes(b"whole")
        return {"trained_by": "second"}

    shared = train_once(root, "k2", build)  # the lock died with its process: no wait, and it trains again
    assert shared.trained_now and len(built) == 1
    assert (shared.model_dir / "model.safetensors").read_bytes() == b"whole"
    assert sorted(p.name for p in root.iterdir()) == ["k2", "k2.lock"]  # the crashed claimant's leftovers are gone


def test_a_stopped_training_is_not_shared_and_the_next_trial_trains(tmp_path):
    root = tmp_path / "trainings"
    assert train_once(root, "k3", lambda model_dir: None) is None
    assert find_training(root, "k3") is None
    with pytest.raises(RuntimeError):
        train_once(root, "k3", lambda model_dir: (_ for _ in ()).throw(RuntimeError("out of memory")))
    assert find_training(root, "k3") is None and [p.name for p in root.iterdir()] == ["k3.lock"]


# --- calibration -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["one_shot", "block_movement"])
def test_calibration_times_real_steps_of_the_teacher_and_the_pruned_students(teacher_dir, encoded, method):
    pruning = PruningConfig(method=method, block_size="head")
    timings = time_training_steps(teacher_dir, encoded["train"], TRAINING, pruning, [0.0, 0.25, 0.5], steps=3)
    assert [t.pruning_ratio for t in timings] == [0.0, 0.25, 0.5]
    for t in timings:
        assert math.isfinite(t.seconds_per_step) and t.seconds_per_step > 0 and t.steps_timed == 3
    weights = [t.trained_weights for t in timings]
    if method == "one_shot":  # physically smaller before training: fewer weights per step
        assert weights[0] > weights[1] > weights[2]
    else:  # movement pruning trains the full shapes under masks and removes weights at the end
        assert weights[0] == weights[1] == weights[2]


# --- a whole trial -----------------------------------------------------------------------------

def _trial_config(tmp_path: Path, teacher: Path, name: str, **update) -> TrialConfig:
    csv = make_topics_csv(tmp_path / "topics.csv")
    return TrialConfig(
        name=name, teacher_dir=str(teacher), data=DataConfig(path=csv), data_base_dir=tmp_path,
        cache_dir=tmp_path / "cache", training=TRAINING.model_copy(update={"epochs": 1}),
        pruning=PruningConfig(method="block_movement", block_size="head"), pruning_ratio=0.5,
        measure={"batch_size": 8, "seq_len": 16, "warmup": 1, "min_repeats": 2, "max_repeats": 3, "max_seconds": 1,
                 "measure_power_secs": 1},
        output_dir=tmp_path / name, trainings_dir=tmp_path / "trainings", **update)


def test_fp32_and_int8_trials_share_one_training_and_each_is_measured(tmp_path, teacher_dir):
    from trainers.trial import run_trial

    first = run_trial(_trial_config(tmp_path, teacher_dir, "t0", precision="fp32"), log=lambda _: None)
    second = run_trial(_trial_config(tmp_path, teacher_dir, "t1", precision="int8"), log=lambda _: None)
    assert first.training_key == second.training_key and first.reused_training_of is None
    assert second.reused_training_of == "t0"
    assert second.metrics["train_steps"] == first.metrics["train_steps"]  # the training it embodies
    assert second.tags["precision_measured"] == "int8" and first.tags["precision_measured"] == "fp32"
    assert (tmp_path / "t1" / "model").is_dir()  # each trial still saves the student it measured
    assert not (tmp_path / "t1" / "progress.jsonl").exists()  # nothing trained in the reusing trial


def test_a_trial_asked_to_stop_ends_pruned_with_its_partial_cost_and_shares_nothing(tmp_path, teacher_dir):
    from trainers.trial import run_trial

    cfg = _trial_config(tmp_path, teacher_dir, "t0")
    request_stop(cfg.output_dir, "pruned")  # already there when training starts: stops after step 1
    result = run_trial(cfg, log=lambda _: None)
    assert result.ok and result.pruned and result.metrics["train_steps"] == 1.0
    assert result.model_dir is None and "latency_ms_p50_bs1" not in result.metrics
    assert find_training(tmp_path / "trainings", result.training_key) is None


def test_the_hybrid_filled_retraining_is_counted_in_steps_seconds_and_the_plan(tmp_path, teacher_dir):
    """The retraining after a hybrid-filled finalize is training: in train_steps, train_steps_planned, train_seconds."""
    from trainers.trial import run_trial

    logs: list[str] = []
    cfg = _trial_config(tmp_path, teacher_dir, "t0").model_copy(
        update={"pruning": PruningConfig(method="block_movement", block_size=4, refill_epochs=2)})
    result = run_trial(cfg, log=logs.append)
    assert any("hybrid filled: retraining 2 epoch(s)" in line for line in logs), "no block was restored"
    main = next(int(line.split("/")[1].split()[0]) for line in logs if line.startswith("step "))  # "step i/N (epoch"
    # main: 1 epoch = N steps; the retraining: 2 epochs of the same rows = 2N steps
    assert result.metrics["train_steps"] == result.metrics["train_steps_planned"] == 3 * main
    stats = find_training(tmp_path / "trainings", result.training_key).meta["stats"]
    assert stats["refill_steps"] == 2 * main and stats["refill_seconds"] > 0
    assert result.metrics["train_seconds"] == pytest.approx(stats["seconds"] + stats["refill_seconds"])
    # and a trial that reuses the training reports the same cost
    again = run_trial(cfg.model_copy(update={"name": "t1", "output_dir": tmp_path / "t1", "precision": "int8"}),
                      log=lambda _: None)
    assert again.reused_training_of == "t0" and again.metrics["train_steps"] == result.metrics["train_steps"]
    assert again.metrics["train_seconds"] == result.metrics["train_seconds"]
