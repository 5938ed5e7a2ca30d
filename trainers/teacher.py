"""The teacher, prepared once per (model, data, settings) and shared by every trial and worker.

Fine-tuning the teacher or re-running it in every trial would waste most of a sweep's compute, so
the fine-tuned classifier and its fp32 logits on the training split are cached on disk, keyed by a
hash of everything that determines them, and built under a file lock so that two workers starting
at once build it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Literal

import torch
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from trainers import metrics as M
from trainers.config import TrainingConfig
from trainers.data.load import LoadedData
from trainers.models import model_fingerprint
from trainers.progress import TEACHER_FINE_TUNE, TEACHER_LOGITS, progress_hooks
from trainers.train import predict_logits, train
from trainers.teacher_config import TeacherConfig  # defined apart so the spec loads without torch
from trainers.vocab.config import VocabularyConfig

DONE = "DONE"


class TeacherArtifacts(BaseModel):
    key: str
    dir: Path
    model_dir: Path
    logits_path: Path
    fine_tuned: bool
    built_now: bool
    meta: dict


class TeacherNotBuilt(ValueError):
    """A worker found no (downloaded) teacher where it must not fine-tune one itself."""


def _norm(label: str) -> str:
    return " ".join(str(label).split()).casefold()


# TrainingConfig fields that do not change the teacher: its own `teacher:` section replaces the budget
# (epochs, batch_size, learning_rate), evaluation never touches the weights, `seeds` is how many STUDENT
# trainings, and `device` is hashed as the device the fine-tune actually ran on (`auto` resolved). Every other
# field is part of the key unless it is named here, so a forgotten field costs a rebuild, never a wrong teacher
# (the same rule as trainers.training_share.NOT_TRAINING_SETTINGS for the students).
NOT_TEACHER_SETTINGS = {"epochs", "batch_size", "learning_rate", "eval_batch_size", "eval_every_steps", "seeds",
                        "device"}


def teacher_key(model_ref: str, teacher: TeacherConfig, data_fingerprint: str, training: TrainingConfig, *,
                device: str) -> str:
    """Everything that changes the teacher or its logits, and nothing else (student settings excluded):
    the model, `teacher:`, the data, every `training:` field the fine-tune reads (weight decay, warm-up,
    max_seq_len, seed, ...) and the kind of device it trains on (`cpu`, `cuda`; the fine-tune is fp32)."""
    payload = {
        "model": model_fingerprint(model_ref),
        "fine_tune": teacher.model_dump(exclude={"model"}),
        "data": data_fingerprint,
        "training": training.model_dump(mode="json", exclude=NOT_TEACHER_SETTINGS),
        "device": torch.device(device).type,
        "precision": "fp32",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def check_published(published: dict[str, str], key: str, data_fingerprint: str, host: str) -> None:
    """Refuse to use a teacher published by another machine for other data or another model than this one's."""
    if data_fingerprint != published["data_fingerprint"]:
        raise TeacherNotBuilt(
            f"the data read on host {host} differs from the launching machine's (data fingerprint "
            f"{data_fingerprint[:12]} here, {published['data_fingerprint'][:12]} there): every machine needs the same "
            "data files at the path the sweep file names")
    if key != published["key"]:
        raise TeacherNotBuilt(
            f"teacher key {key} on host {host} differs from the published teacher {published['key']} for the same data: "
            "the model at teacher.model differs on this machine (its files, or the installed versions), or this machine "
            "trains on another kind of device (cpu/cuda) than the launching one (set training.device alike)")


def label_order(config, label_names: list[str], source: str) -> list[int] | None:
    """Indices of the model's classifier rows in the dataset's label order, or None if it is no match.

    Raises when the model is a classifier over other labels: silently mis-mapping labels would make
    every accuracy wrong.
    """
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    archs = getattr(config, "architectures", None) or []
    if not any("ForSequenceClassification" in a for a in archs) or not id2label:
        return None
    by_name = {_norm(v): k for k, v in id2label.items()}
    generic = all(_norm(v) == f"label_{k}" for k, v in id2label.items())
    if generic:
        return None
    missing = [n for n in label_names if _norm(n) not in by_name]
    if missing or len(by_name) != len(label_names):
        raise ValueError(
            f"teacher {source}: its id2label {sorted(id2label.values())} does not match the dataset's labels "
            f"{sorted(label_names)} (missing from the model: {missing}); set teacher.fine_tune: always to "
            f"train a new head"
        )
    return [by_name[_norm(n)] for n in label_names]


def _reorder_head(model, order: list[int], label_names: list[str]) -> None:
    """Permute the output layer's rows so that class i is the dataset's label i."""
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.copy_(head.weight[order].clone())
        if head.bias is not None:
            head.bias.copy_(head.bias[order].clone())
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {n: i for i, n in enumerate(label_names)}


def prepare_teacher(
    model_ref: str,
    teacher: TeacherConfig,
    *,
    label_names: list[str],
    encoded: dict[str, dict[str, torch.Tensor]],
    data_fingerprint: str,
    training: TrainingConfig,
    cache_root: Path,
    device: str,
    emissions: Callable | None = None,
    log: Callable[[str], None] = print,
    progress_dir: Path | None = None,
    build: bool = True,
) -> TeacherArtifacts:
    """Return the cached teacher for these settings, building it first if no worker has yet
    (progress events of the fine-tune and the logits go to `progress_dir`, see trainers.progress).
    `build=False` (a worker using the teacher another machine published): a missing entry is an error."""
    key = teacher_key(model_ref, teacher, data_fingerprint, training, device=device)

    def build_entry(tmp: Path) -> dict:
        log(f"teacher: building from {model_ref}")
        meta = _build(model_ref, teacher, label_names, encoded, training, tmp, device, emissions, log, progress_dir)
        # no path of this machine in the entry: it is published for other machines (orchestrator/teacher_share.py)
        meta.update(key=key, model_ref=Path(model_ref).name if Path(model_ref).is_absolute() else model_ref,
                    data_fingerprint=data_fingerprint)
        return meta

    meta, built_now = _cached(Path(cache_root) / key, build_entry if build else None, log, "teacher")
    return _artifacts(key, Path(cache_root) / key, meta, built_now=built_now)


def _cached(out: Path, build: Callable[[Path], dict] | None, log: Callable[[str], None], what: str) -> tuple[dict, bool]:
    """(meta, built_now) of the cache entry `out`: read when complete, else built once under a file lock
    by `build(tmp_folder) -> meta` and moved into place atomically, so readers never see half of it.
    `build=None`: the entry must already be there (downloaded), never built here."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / DONE).exists():
            log(f"{what}: cache hit {out}")
            return json.loads((out / "meta.json").read_text()), False
        if build is None:
            raise TeacherNotBuilt(f"{what} {out.name}: not in this machine's cache ({out.parent}) and this process "
                                  "may not build it: it uses the teacher the launching machine published")
        log(f"{what}: building {out}")
        tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        meta = build(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        (out / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        return meta, True


def _artifacts(key: str, out: Path, meta: dict, built_now: bool) -> TeacherArtifacts:
    return TeacherArtifacts(
        key=key,
        dir=out,
        model_dir=out / "model",
        logits_path=out / "train_logits.safetensors",
        fine_tuned=meta["fine_tuned"],
        built_now=built_now,
        meta=meta,
    )


def _build(model_ref, teacher, label_names, encoded, training, out: Path, device, emissions, log, progress_dir=None) -> dict:
    config = AutoConfig.from_pretrained(model_ref)
    order = label_order(config, label_names, model_ref) if teacher.fine_tune != "always" else None
    if order is None and teacher.fine_tune == "never":
        raise ValueError(
            f"teacher {model_ref}: is not a classifier over the dataset's labels, and teacher.fine_tune is 'never'"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_ref)
    meta: dict = {"fine_tuned": order is None, "labels": label_names}
    if order is not None:
        model = AutoModelForSequenceClassification.from_pretrained(model_ref)
        _reorder_head(model, order, label_names)
        log("teacher: already a classifier over the dataset's labels; no fine-tuning")
    else:
        torch.manual_seed(training.seed)  # the new classifier head's initialisation, or each process draws its own
        model = AutoModelForSequenceClassification.from_pretrained(
            model_ref,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            ignore_mismatched_sizes=True,
        )
        budget = training.model_copy(
            update={"epochs": teacher.epochs, "batch_size": teacher.batch_size, "learning_rate": teacher.learning_rate}
        )
        log(f"teacher: fine-tuning for {teacher.epochs} epochs on {len(encoded['train']['labels'])} rows")
        with (emissions("train") if emissions else contextlib.nullcontext()) as energy:
            stats = train(model, encoded["train"], budget, device=device, val_split=encoded.get("validation"), log=log,
                          **progress_hooks(progress_dir, TEACHER_FINE_TUNE))
        meta.update(
            train_seconds=stats.seconds,
            train_steps=stats.steps,
            val_accuracy=stats.val_accuracy,
            train_metrics=energy.metrics() if energy is not None else {},
            train_tags=energy.tags() if energy is not None else {},
        )
    model.to("cpu").eval()
    out.mkdir(parents=True)
    model.save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    with (emissions("logits") if emissions else contextlib.nullcontext()) as logits_energy:
        logits = predict_logits(model.to(device), encoded["train"], batch_size=training.eval_batch_size, device=device,
                                on_step=progress_hooks(progress_dir, TEACHER_LOGITS).get("on_step"))
    if logits_energy is not None:
        meta.update(logits_metrics=logits_energy.metrics(), logits_tags=logits_energy.tags())
    save_file({"logits": logits.contiguous()}, str(out / "train_logits.safetensors"))
    meta["train_rows"] = int(logits.shape[0])
    return meta


def oneoff_costs(meta: dict, *, built_now: bool) -> tuple[dict[str, float], dict[str, str]]:
    """The teacher's fine-tune and logits as the sweep's one-off costs (`oneoff_*` names of trainers.metrics):
    paid once per teacher, charged to no row of the table, neither the teacher's nor a student's."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    for phase, key, source in (("finetune", "train_metrics", "train_tags"), ("logits", "logits_metrics", "logits_tags")):
        for name, value in (meta.get(key) or {}).items():
            measured = name.rsplit("_", 1)[0]  # energy_kwh_train -> energy_kwh
            if (phase, measured) in M.ONEOFF_NAMES:
                metrics[M.ONEOFF_NAMES[(phase, measured)]] = float(value)
        tags.update({f"oneoff_teacher_{phase}_{k}": str(v) for k, v in (meta.get(source) or {}).items()})
    if metrics:
        tags["oneoff_paid_by"] = ("this sweep (the teacher was built now)" if built_now else
                                  "the sweep that first built this cached teacher (not spent again by this one)")
    return metrics, tags


def load_teacher_logits(path: Path, expected_rows: int) -> torch.Tensor:
    """Cached logits, refusing a cache that does not line up with the training split."""
    logits = load_file(str(path))["logits"]
    if logits.shape[0] != expected_rows:
        raise ValueError(
            f"teacher logits {path}: {logits.shape[0]} rows, but the training split has {expected_rows}; "
            "the cache is stale (delete it)"
        )
    return logits


# --- vocabulary trimming: the prepared teacher with its vocabulary cut to the task's tokens ----------


def prepare_trimmed_teacher(
    teacher: TeacherArtifacts,
    vocabulary: VocabularyConfig,
    *,
    loaded: LoadedData,
    base_dir: Path,
    training: TrainingConfig,
    data_cache_dir: Path,
    device: str,
    log: Callable[[str], None] = print,
    build: bool = True,
) -> TeacherArtifacts:
    """The teacher `teacher` with its vocabulary trimmed per `vocabulary`, cached next to it (`build` as in
    `prepare_teacher`).

    `teacher` itself when trim is 'none'. The kept tokens come from the training split (plus the
    extra corpus, relative to `base_dir`); validation and test texts are only read to report the
    share of their tokens that the trimmed vocabulary lost. The entry's meta carries the trim's
    metrics under meta["vocabulary"]["metrics"]. Train logits are copied when every training token
    was kept (then they are exactly the untrimmed teacher's), else recomputed with the trimmed model.
    """
    if vocabulary.trim == "none":
        return teacher
    payload = {"teacher": teacher.key, "vocabulary": vocabulary.cache_payload(base_dir)}
    key = f"{teacher.key}-vocab-{hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]}"
    out = teacher.dir.parent / key

    def build_entry(tmp: Path) -> dict:
        return _build_trimmed(teacher, vocabulary, loaded, base_dir, training, data_cache_dir, tmp, device, log)

    meta, built_now = _cached(out, build_entry if build else None, log, "trimmed teacher")
    return _artifacts(key, out, meta, built_now=built_now)


def _build_trimmed(teacher, vocabulary, loaded, base_dir, training, data_cache_dir, out: Path, device, log) -> dict:
    from trainers.data import encode_cached
    from trainers.metrics import TEST_VOCAB_LOST_RATE, TEST_VOCAB_UNK_RATE, VAL_VOCAB_LOST_RATE, VAL_VOCAB_UNK_RATE
    from trainers.vocab import trim_vocabulary, unk_rates

    tokenizer = AutoTokenizer.from_pretrained(teacher.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(teacher.model_dir).eval()
    train_texts = list(loaded.splits["train"].texts)
    model, trimmed, report = trim_vocabulary(model, tokenizer, train_texts + vocabulary.corpus_texts(base_dir), vocabulary)
    metrics = report.metrics()
    for split, lost_name, unk_name in (("validation", VAL_VOCAB_LOST_RATE, VAL_VOCAB_UNK_RATE),
                                       ("test", TEST_VOCAB_LOST_RATE, TEST_VOCAB_UNK_RATE)):
        metrics[lost_name], metrics[unk_name] = unk_rates(tokenizer, trimmed, loaded.splits[split].texts)
    train_lost, _ = unk_rates(tokenizer, trimmed, train_texts)
    log(f"trimmed teacher: vocabulary {report.vocab_size_before} -> {report.vocab_size_after} tokens, "
        f"{report.params_saved:,} parameters saved; validation tokens lost {metrics[VAL_VOCAB_LOST_RATE]:.2%}")
    out.mkdir(parents=True)
    model.save_pretrained(out / "model", safe_serialization=True)
    trimmed.save_pretrained(out / "model")
    if train_lost == 0.0:
        shutil.copyfile(teacher.logits_path, out / "train_logits.safetensors")
    else:
        encoded = encode_cached(loaded, trimmed, max_seq_len=training.max_seq_len, cache_dir=data_cache_dir)
        logits = predict_logits(model.to(device), encoded["train"], batch_size=training.eval_batch_size, device=device)
        save_file({"logits": logits.contiguous()}, str(out / "train_logits.safetensors"))
    return {**teacher.meta, "trimmed_from": teacher.key,
            "vocabulary": {**vocabulary.model_dump(mode="json"), "report": report.model_dump(), "metrics": metrics,
                           "train_lost_rate": train_lost}}
