"""Training one trial's student, or reusing the identical training another trial already did.

`train_student` prunes and distils the student (reporting progress and obeying stop requests through
`trainers.progress`), and, when the trial names a `trainings_dir`, shares the result by training key
(`trainers.training_share`): the first trial with a key trains and saves it, the others load it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from trainers.config import TrialConfig
from trainers.data import fingerprint
from trainers.measure import track_emissions, track_memory
from trainers.models import model_fingerprint
from trainers.precision import train_precision
from trainers.progress import STUDENT_TRAINING, ProgressReporter
from trainers.pruning import PruningPlan, identity_plan, load_pruned, make_pruner, pruning_summary, save_pruned
from trainers.pruning.io import read_plan
from trainers.teacher import load_teacher_logits
from trainers.train import batches, planned_steps, train
from trainers.training_share import train_once, training_key

Log = Callable[[str], None]


@dataclass
class StudentTraining:
    student: nn.Module | None  # the trained, physically pruned student (None when stopped early)
    plan: PruningPlan | None
    stats: dict[str, Any]  # steps, seconds, final_loss, val_accuracy per evaluation, eval_steps, stopped_early...
    metrics: dict[str, float] = field(default_factory=dict)  # the training's memory and energy
    tags: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # pruning_summary of the student
    key: str | None = None  # the training key, when trainings are shared
    reused_from: str | None = None  # the trial (config name) whose training this is, when not trained here

    @property
    def stopped_early(self) -> bool:
        return bool(self.stats.get("stopped_early"))


def train_student(cfg: TrialConfig, student: nn.Module, tokenizer, loaded, encoded, *, device: str,
                  log: Log = print) -> StudentTraining:
    if cfg.trainings_dir is None:
        return _train(cfg, student, loaded, encoded, device=device, log=log)
    key = training_key(cfg, teacher_fingerprint=model_fingerprint(cfg.teacher_dir), data_fingerprint=fingerprint(loaded))
    done: list[StudentTraining] = []

    def build(model_dir: Path) -> dict | None:
        trained = _train(cfg, student, loaded, encoded, device=device, log=log)
        done.append(trained)
        if trained.stopped_early:
            return None  # a partial training is nobody's to reuse
        save_pruned(trained.student, tokenizer, trained.plan, model_dir)
        return {"trained_by": cfg.name, "stats": trained.stats, "metrics": trained.metrics, "tags": trained.tags,
                "summary": trained.summary}

    shared = train_once(cfg.trainings_dir, key, build, log=log)
    if shared is None or shared.trained_now:
        done[0].key = key
        return done[0]
    log(f"training {key}: reusing the training of {shared.meta['trained_by']} (same student, same settings)")
    reused, _ = load_pruned(shared.model_dir)
    meta = shared.meta
    return StudentTraining(student=reused.eval(), plan=read_plan(shared.model_dir, reused.config) or identity_plan(reused), stats=meta["stats"],
                           metrics=meta["metrics"], tags=meta["tags"], summary=meta["summary"], key=key,
                           reused_from=meta["trained_by"])


def refill_budget(cfg: TrialConfig):
    """The training settings of the hybrid-filled retraining (the student's, for `refill_epochs`)."""
    return cfg.training.model_copy(update={"epochs": cfg.pruning.refill_epochs})


def _refill_planned(cfg: TrialConfig, plan: PruningPlan | None, n_rows: int) -> int:
    """Steps of the retraining after finalize: planned when the settings call for it (before finalize, when
    stopped early), none when finalize restored no block."""
    if not cfg.pruning.refills(cfg.pruning_ratio) or (plan is not None and not plan.refilled):
        return 0
    return planned_steps(n_rows, refill_budget(cfg))


def _train(cfg: TrialConfig, student: nn.Module, loaded, encoded, *, device: str, log: Log) -> StudentTraining:
    teacher_logits, live_teacher = None, None
    if cfg.distill_alpha > 0:
        if cfg.teacher_logits is not None:
            teacher_logits = load_teacher_logits(cfg.teacher_logits, len(loaded.splits["train"]))
        else:
            live_teacher, _ = load_pruned(cfg.teacher_dir)
            log("distillation: no cached teacher logits given; running the teacher forward on every batch")
    if cfg.training.distill_hidden_weight > 0 and live_teacher is None:
        live_teacher, _ = load_pruned(cfg.teacher_dir)
        log(f"hidden-state distillation (weight {cfg.training.distill_hidden_weight:g}): the teacher runs on every batch")

    pruner = make_pruner(student, cfg.pruning_ratio, cfg.pruning)
    calib = list(itertools.islice(batches(encoded["train"], cfg.training.batch_size, shuffle=True, seed=cfg.training.seed), 8))
    pruner.prepare(student, calib)
    precision = train_precision(cfg.precision)
    progress = ProgressReporter(cfg.output_dir, STUDENT_TRAINING, stoppable=True, await_verdict_s=cfg.await_verdict_s)
    plan, refill = None, None
    with track_memory("train", device, sample_interval_s=0.05) as mem_train, \
            track_emissions("train", cfg.measure) as em_train:
        stats = train(
            student, encoded["train"], cfg.training, device=device, precision=precision,
            alpha=cfg.distill_alpha, temperature=cfg.distill_temperature,
            teacher_logits=teacher_logits, teacher=live_teacher, pruner=pruner,
            score_lr=cfg.pruning.scores_lr, val_split=encoded["validation"] if len(loaded.splits["validation"]) else None,
            eval_every_steps=cfg.training.eval_every_steps, log=log, **progress.hooks(),
        )
        if not stats.stopped_early:
            plan = pruner.finalize(student)
            if plan.refilled and cfg.pruning.refill_epochs > 0:
                # Hybrid filled: the restored blocks change the function, so the kept heads retrain briefly.
                log(f"hybrid filled: retraining {cfg.pruning.refill_epochs:g} epoch(s) after restoring pruned blocks")
                refill = train(student, encoded["train"], refill_budget(cfg), device=device,
                               precision=precision, alpha=cfg.distill_alpha, temperature=cfg.distill_temperature,
                               teacher_logits=teacher_logits, teacher=live_teacher, log=log)
    progress.end(stats.steps, stats.total_steps)
    student.to("cpu").eval()
    stats_doc = {"steps": stats.steps, "total_steps": stats.total_steps, "seconds": stats.seconds,
                 "final_loss": stats.final_loss, "val_accuracy": stats.val_accuracy, "eval_steps": stats.eval_steps,
                 "stopped_early": stats.stopped_early, "stopped_at_step": stats.stopped_at_step,
                 # the hybrid-filled retraining: its own steps and seconds, counted in the trial's train_* metrics
                 "refill_steps": refill.steps if refill else 0, "refill_seconds": refill.seconds if refill else 0.0,
                 "refill_steps_planned": _refill_planned(cfg, plan, len(loaded.splits["train"]))}
    return StudentTraining(
        student=None if stats.stopped_early else student, plan=plan, stats=stats_doc,
        metrics={**mem_train.metrics(), **em_train.metrics()}, tags={**mem_train.tags(), **em_train.tags()},
        summary=pruning_summary(student, plan) if plan is not None else {},
    )
