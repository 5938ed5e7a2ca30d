"""Teacher once: cached per (model, data, settings), built once under concurrency, labels mapped by name."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from conftest import make_topics_csv
from trainers.config import TrainingConfig
from trainers.data import DataConfig, encode_cached, fingerprint, load_data
from trainers.teacher import TeacherConfig, label_order, load_teacher_logits, prepare_teacher

TRAINING = TrainingConfig(epochs=1, batch_size=16, max_seq_len=16, seed=0)
TEACHER = TeacherConfig(model="x", epochs=1, batch_size=16, learning_rate=1e-3)


def _data(csv: Path, tokenizer, cache: Path):
    loaded = load_data(DataConfig(path=csv), csv.parent)
    return loaded, encode_cached(loaded, tokenizer, max_seq_len=16, cache_dir=cache)


def _prepare(encoder: Path, csv: Path, cache: Path, logs: list | None = None):
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    loaded, encoded = _data(csv, tokenizer, cache / "data")
    return prepare_teacher(
        str(encoder), TEACHER, label_names=loaded.label_names, encoded=encoded, data_fingerprint=fingerprint(loaded),
        training=TRAINING, cache_root=cache / "teachers", device="cpu", log=(logs.append if logs is not None else print),
    )


def test_cache_hit_for_same_settings_and_miss_when_data_changes(tmp_path, tiny_encoder):
    csv = make_topics_csv(tmp_path / "a.csv")
    first = _prepare(tiny_encoder, csv, tmp_path / "cache")
    assert first.built_now and first.fine_tuned
    logs: list[str] = []
    second = _prepare(tiny_encoder, csv, tmp_path / "cache", logs)
    assert not second.built_now and second.key == first.key and any("cache hit" in l for l in logs)
    logits = load_teacher_logits(second.logits_path, expected_rows=first.meta["train_rows"])
    assert logits.dtype == torch.float32 and logits.shape[1] == 4
    changed = make_topics_csv(tmp_path / "b.csv", per_class=41)
    third = _prepare(tiny_encoder, changed, tmp_path / "cache")
    assert third.built_now and third.key != first.key
    with pytest.raises(ValueError, match="stale"):
        load_teacher_logits(first.logits_path, expected_rows=third.meta["train_rows"])


def test_the_fine_tuned_teacher_is_the_same_whatever_the_random_state_before_it(tmp_path, tiny_encoder):
    """The new classifier head is drawn from the training seed: two builds of one key give the same weights and
    logits, in whatever random state the process was (two fresh `make demo` runs once got different teachers)."""
    from safetensors.torch import load_file

    csv = make_topics_csv(tmp_path / "a.csv")
    torch.manual_seed(1)
    first = _prepare(tiny_encoder, csv, tmp_path / "one")
    torch.manual_seed(2)
    second = _prepare(tiny_encoder, csv, tmp_path / "two")
    assert first.built_now and second.built_now and first.key == second.key
    a, b = load_file(first.model_dir / "model.safetensors"), load_file(second.model_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = first.meta["train_rows"]
    assert torch.equal(load_teacher_logits(first.logits_path, rows), load_teacher_logits(second.logits_path, rows))


def _race(args):
    encoder, csv, cache = args
    art = _prepare(Path(encoder), Path(csv), Path(cache))
    return art.built_now


def test_concurrent_first_use_builds_the_teacher_once(tmp_path, tiny_encoder):
    csv = make_topics_csv(tmp_path / "a.csv")
    with mp.get_context("spawn").Pool(2) as pool:
        built = pool.map(_race, [(str(tiny_encoder), str(csv), str(tmp_path / "cache"))] * 2)
    assert sorted(built) == [False, True]
    assert len(list((tmp_path / "cache" / "teachers").glob("*/DONE"))) == 1


def test_a_fine_tuned_classifier_is_used_as_is_with_its_head_reordered_by_label_name(tmp_path, tiny_encoder):
    csv = make_topics_csv(tmp_path / "a.csv")
    names_in_model_order = ["sports", "health", "business", "science"]  # not the data's (sorted) order
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_encoder, num_labels=4, id2label=dict(enumerate(names_in_model_order)),
        label2id={n: i for i, n in enumerate(names_in_model_order)})
    clf = tmp_path / "classifier"
    model.save_pretrained(clf)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(clf)

    art = _prepare(clf, csv, tmp_path / "cache")
    assert not art.fine_tuned
    reordered = AutoModelForSequenceClassification.from_pretrained(art.model_dir).eval()
    assert [reordered.config.id2label[i] for i in range(4)] == ["business", "health", "science", "sports"]
    x = torch.randint(1000, 2000, (3, 8))
    with torch.no_grad():
        before = model.eval()(input_ids=x).logits
        after = reordered(input_ids=x).logits
    for new_i, name in enumerate(["business", "health", "science", "sports"]):
        assert torch.allclose(after[:, new_i], before[:, names_in_model_order.index(name)], atol=1e-5)


def test_a_classifier_over_other_labels_is_a_clear_error(tiny_encoder):
    config = AutoConfig.from_pretrained(tiny_encoder)
    config.architectures = ["BertForSequenceClassification"]
    config.id2label = {0: "Auto", 1: "Politics"}
    with pytest.raises(ValueError, match=r"does not match the dataset's labels.*missing from the model: \['sports'\]"):
        label_order(config, ["Auto", "sports"], "some/model")


def test_every_training_field_the_fine_tune_reads_is_in_the_teacher_key(tmp_path, tiny_encoder):
    """weight_decay, warmup_ratio and the training device decide the teacher's weights: changing one builds a
    new teacher; the student's own budget (epochs, seeds, evaluation) does not."""
    csv = make_topics_csv(tmp_path / "a.csv")
    first = _prepare(tiny_encoder, csv, tmp_path / "cache")
    global TRAINING
    saved = TRAINING
    try:
        TRAINING = saved.model_copy(update={"weight_decay": 0.1})
        decayed = _prepare(tiny_encoder, csv, tmp_path / "cache")
    finally:
        TRAINING = saved
    assert decayed.built_now and decayed.key != first.key
    from trainers.teacher import NOT_TEACHER_SETTINGS, teacher_key

    def key(device="cpu", **update):
        return teacher_key(str(tiny_encoder), TEACHER, "fp", TRAINING.model_copy(update=update), device=device)

    assert key(warmup_ratio=0.3) != key()
    assert key(device="cuda") != key() and key(device="cuda:0") == key(device="cuda:1")
    assert key(epochs=9, seeds=3, eval_batch_size=7, eval_every_steps=5, learning_rate=1.0) == key()
    # `training.device: auto` is keyed as the device it resolves to, not as the word
    assert key(device="cpu") == teacher_key(str(tiny_encoder), TEACHER, "fp", TRAINING.model_copy(update={"device": "auto"}), device="cpu")
    # a field added to TrainingConfig later is keyed unless it is named as not deciding the teacher
    assert set(TrainingConfig.model_fields) - NOT_TEACHER_SETTINGS >= {"weight_decay", "warmup_ratio", "seed",
                                                                       "max_seq_len"}
