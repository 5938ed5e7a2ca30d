"""Dispatching one trial: its config, its MLflow run, its child process, and what Optuna is told.

`dispatch_trial` takes an asked trial to a terminal state in Optuna and in MLflow; the trial itself
(`trainers.trial.run_trial`) runs in a child process (`child_process.run_job`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from orchestrator import pareto
from orchestrator.baselines import (baseline_tags, compared_baseline, context_tags, measured_threads,
                                    placement_threads, speedup_tags)
from orchestrator.child_process import HOST, Outcome, Placement, run_job, tail
from orchestrator.context import Context, Log, work_dir
from orchestrator.early_stopping import JUDGED_SEEDS
from orchestrator.record import beat, frozen, mark_pruned, set_trial, set_trial_quietly, tell, trial_record
from orchestrator.prediction_files import teacher_predictions
from orchestrator.recovery import close_lost_run, record_failure
from orchestrator.trial_watch import TrialWatch
from orchestrator.spec import DIMENSIONS, SweepSpec
from orchestrator.study import finite
from orchestrator.stats import decision_metrics
from orchestrator.tracking import FINISHED, KILLED, flatten
from trainers import metrics as M
from trainers.config import TrialConfig
from trainers.jobs import TrialResult
from trainers.measure.predictions import load as load_predictions
from trainers.measure.context import context_of


def trial_config(ctx: Context, params: dict, number: int, placement: Placement | None = None,
                 seeds: int | None = None) -> TrialConfig:
    spec, prep = ctx.spec, ctx.prepared
    # CPU executors of one machine take turns to measure, or parallel trials would slow each other's timings.
    lock = (ctx.root / "cache" / "measure.lock").resolve() if placement is not None and placement.gpu is None else None
    out = (work_dir(ctx.root, spec.name) / f"trial-{number:04d}").resolve()
    trimmed = params.get("vocabulary") == "trimmed"  # the student starts from the vocabulary-trimmed teacher
    teacher_dir = prep.trimmed_teacher_dir if trimmed else prep.teacher_dir
    teacher_logits = prep.trimmed_teacher_logits if trimmed else prep.teacher_logits
    return TrialConfig(
        name=f"{spec.name}/trial-{number}",
        teacher_dir=teacher_dir,
        teacher_logits=Path(teacher_logits) if teacher_logits else None,
        data=spec.data,
        data_base_dir=spec.base_dir,
        cache_dir=(ctx.root / "cache" / "data").resolve(),
        training=spec.training.for_trial(seeds),  # adaptive seeds: a top-up trial runs more than the min
        pruning=spec.pruning,
        measure=spec.measure,
        pruning_ratio=float(params["pruning_ratio"]),
        distill_temperature=float(params["distill_temperature"]),
        distill_alpha=float(params["distill_alpha"]),
        precision=params["precision"],
        output_dir=out,
        measure_lock=lock,
        runtime=params.get("runtime", "torch"),
        await_verdict_s=30.0 if spec.pruner.enabled else 0.0,  # pruning never depends on when we polled
        export_onnx=params.get("runtime") == "onnxruntime",  # the others get theirs at export time, if picked
        onnx_variants="onnxruntime" in spec.search_space.runtime,  # whoever trains exports, once
        # Train once, measure many: trials whose training is identical (fp32/int8 twins) share one.
        trainings_dir=trainings_dir(ctx.root),
    )


def trainings_dir(root: Path) -> Path:
    return (root / "cache" / "trainings").resolve()


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict:
    """The compression parameters (spec.DIMENSIONS); queued (grid/retry) trials get their fixed values back."""
    params = {}
    for name in DIMENSIONS:
        space = getattr(spec.search_space, name)
        if isinstance(space, list):
            params[name] = trial.suggest_categorical(name, list(space))
        else:
            params[name] = trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)
    return params


def dispatch_trial(ctx: Context, trial: optuna.Trial, placement: Placement, stop: threading.Event, log: Log,
                   asked_at: float | None = None) -> TrialState:
    """Run one asked trial to a terminal state in Optuna and in MLflow."""
    asked_at = asked_at or time.time()
    spec, study = ctx.spec, ctx.study
    params = suggest(trial, spec)
    number = trial.number
    topup = trial_record(frozen(study, trial))  # an adaptive-seeds top-up carries its seed count and why
    cfg = trial_config(ctx, params, number, placement, seeds=topup.seeds)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    cfg_path, result_path, log_path = cfg.output_dir / "trial_config.yaml", cfg.output_dir / "result.json", cfg.output_dir / "worker.log"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    result_path.unlink(missing_ok=True)

    attempt = trial_record(trial).attempt
    run_id = ctx.tracker.child_run(
        ctx.experiment_id, ctx.parent_run_id, spec.name, name=f"trial-{number}", role="trial",
        tags={"optuna.trial_number": number, "sweep.attempt": attempt, "sweep.worker": f"{HOST}:{os.getpid()}",
              "sweep.placement": f"cores={placement.cores} gpu={placement.gpu}",
              "sweep.teacher_key": ctx.prepared.teacher_key},  # the teacher it distilled from, on every machine
    )
    set_trial(study, trial, mlflow_run_id=run_id, output_dir=str(cfg.output_dir))
    ctx.tracker.log(run_id, params={**params, **flatten("", {"pruning": spec.pruning.model_dump(mode="json"),
                                                               "training": cfg.training.model_dump(mode="json")})})
    ctx.tracker.log_artifacts(run_id, cfg_path)
    if topup.supersedes is not None:
        ctx.tracker.log(run_id, tags={"sweep.seeds": str(topup.seeds), "sweep.supersedes_trial": str(topup.supersedes),
                                      "sweep.seeds_reason": (topup.seeds_reason or "")[:5000]})
    log(f"trial {number}: {params}" + (f" (attempt {attempt})" if attempt > 1 else "")
        + (f" - {topup.seeds} seeds, replaces trial {topup.supersedes}: {topup.seeds_reason}" if topup.supersedes is not None
           else ""))

    with ctx.lock:  # the twin in the early-stopping companion study
        watch = TrialWatch(cfg.output_dir, ctx.early_stopping, number)
    outcome = run_job(
        "trial", cfg_path, result_path, log_path, placement, stop=stop,
        timeout_s=spec.budget.trial_timeout_minutes * 60 if spec.budget.trial_timeout_minutes else None,
        heartbeat=lambda: beat(study, trial), heartbeat_s=ctx.heartbeat_s,
        on_start=lambda pid: set_trial_quietly(study, trial, trial_pid=pid), on_poll=watch.poll,
        poll_s=0.1 if ctx.early_stopping is not None else 1.0,  # the trial waits for each verdict: answer quickly
    )
    watch.finished()
    result = TrialResult.model_validate_json(result_path.read_text()) if result_path.exists() else None
    reason = None
    if outcome.interrupted or outcome.abandoned or outcome.timed_out or outcome.returncode != 0 or result is None or not result.ok:
        reason = (result.error if result is not None and result.error and not outcome.interrupted else None) or outcome.reason(tail(log_path))
    elif result.pruned:
        return _pruned(ctx, trial, run_id, result, outcome, watch, asked_at, log_path, log)
    else:
        threads = measured_threads(result.tags) or placement_threads(placement, spec.measure.threads)
        trial_context = context_of(result.tags)  # where it was measured: it is divided by the teacher measured there
        baseline_context, baseline_threads, baseline = compared_baseline(ctx.baselines_by_context, trial_context,
                                                                         ctx.baselines, threads, ctx.baseline)
        metrics = {**result.metrics, **pareto.deltas(result.metrics, baseline)}
        if result.predictions and Path(result.predictions).is_file():  # pooled and paired intervals, from the rows
            metrics.update(decision_metrics(load_predictions(result.predictions), teacher_rows(ctx)))
        if params.get("vocabulary") == "trimmed":
            metrics.update(ctx.prepared.vocabulary_metrics)  # vocab size before/after, tokens lost, params saved
        missing = [o.key for o in spec.objectives if o.key not in metrics or not finite([metrics[o.key]])]
        if missing:
            reason = f"objective metric(s) {missing} were not measured; measured: {sorted(result.metrics)}"
    if reason is not None:
        recorded = record_failure(ctx, trial, reason, log=log, run_id=run_id, interrupted=outcome.interrupted,
                                  retry=outcome.died and result is None, log_path=log_path)
        if not recorded:
            close_lost_run(ctx, run_id, number, log)
        watch.failed()
        _write_timings(cfg.output_dir, asked_at, outcome, result, TrialState.FAIL)
        return TrialState.FAIL
    result.tags.update({**baseline_tags(baseline_threads, threads), **context_tags(trial_context, baseline_context),
                        **speedup_tags(result.metrics, baseline, baseline_context)})
    if ctx.early_stopping is not None:
        es = ctx.early_stopping
        result.tags["sweep.early_stopping_judged"] = (
            f"{JUDGED_SEEDS}; evaluations from {1 - es.final_fraction if es.movement else 0:.0%} of its steps on "
            "(the pruning schedule at its final fraction)" if result.reused_training_of is None else
            f"not judged: reused the training of {result.reused_training_of} (no curve, no startup trial)")
    watch.complete(metrics.get(M.VAL_ACCURACY), result.reused_training_of)
    return _complete(ctx, trial, run_id, metrics, result, outcome, asked_at, log_path, result_path, log,
                     baseline=baseline, baseline_threads=baseline_threads,
                     contexts={"measurement_context": trial_context, "baseline_context": baseline_context})


def teacher_rows(ctx: Context):
    """The teacher's per-row predictions (read once per process), None when the baseline logged none."""
    if "teacher" not in ctx.cache:
        ctx.cache["teacher"] = teacher_predictions(ctx.study, ctx.tracker)
    return ctx.cache["teacher"]


def _shared(result: TrialResult) -> dict:
    """The training this trial's student is (train once, measure many), as record fields and MLflow tags."""
    return {"training_key": result.training_key, "reused_training_of": result.reused_training_of}


def _shared_tags(result: TrialResult) -> dict:
    return {f"sweep.{k}": v for k, v in _shared(result).items() if v is not None}


# What a pruned trial spent before it was stopped: logged on its run, so the cost of a sweep adds up.
PARTIAL_COST = (M.TRAIN_STEPS, M.TRAIN_STEPS_PLANNED, M.TRAIN_SECONDS, M.ENERGY_TRAIN, M.EMISSIONS_TRAIN)


def _pruned(ctx: Context, trial: optuna.Trial, run_id: str, result: TrialResult, outcome: Outcome,
            watch: TrialWatch, asked_at: float, log_path: Path, log: Log) -> TrialState:
    """Early stopping ended the training: PRUNED in Optuna, KILLED + sweep.pruned in MLflow, partial cost logged."""
    reason = watch.stop_reason or "stopped early on request (STOP file)"
    spent = {k: v for k, v in result.metrics.items() if k in PARTIAL_COST}
    if not mark_pruned(ctx.study, trial, reason, metrics=spent, **_shared(result)):
        return close_lost_run(ctx, run_id, trial.number, log)
    watch.pruned()
    ctx.tracker.log(run_id, metrics=spent, tags={"sweep.pruned": "true", "sweep.stop_reason": reason, **_shared_tags(result)})
    ctx.tracker.log_artifacts(run_id, log_path)
    ctx.tracker.end(run_id, KILLED)
    _write_timings(log_path.parent, asked_at, outcome, result, TrialState.PRUNED)
    log(f"trial {trial.number}: PRUNED ({reason}; {spent.get(M.TRAIN_STEPS, 0):.0f} of "
        f"{spent.get(M.TRAIN_STEPS_PLANNED, 0):.0f} steps spent)")
    return TrialState.PRUNED


def _complete(ctx: Context, trial: optuna.Trial, run_id: str, metrics: dict, result: TrialResult, outcome: Outcome,
              asked_at: float, log_path: Path, result_path: Path, log: Log, *, baseline: dict | None = None,
              baseline_threads: int | None = None, contexts: dict | None = None) -> TrialState:
    """Tell Optuna the objective values and constraints, then log everything to the MLflow run."""
    spec, study, number = ctx.spec, ctx.study, trial.number
    baseline = ctx.baseline if baseline is None else baseline
    values = [metrics[o.key] for o in spec.objectives]
    try:
        for c in spec.constraints:
            trial.set_constraint(c.label, pareto.constraint_value(c, metrics, baseline))
        set_trial(study, trial, metrics=metrics, baseline_threads=baseline_threads, **(contexts or {}), **_shared(result),
                  pruning={k: v for k, v in result.pruning.items() if isinstance(v, (int, float, str))})
        told = tell(study, trial, values)
    except optuna.exceptions.UpdateFinishedTrialError:
        told = False
    if not told:
        # Another worker took this trial for dead while it ran and queued it again: that run counts.
        return close_lost_run(ctx, run_id, number, log)
    ctx.tracker.log(run_id, metrics=metrics, tags={**result.tags, **_shared_tags(result),
                                                   "sweep.feasible": str(pareto.feasible(frozen(study, trial)))})
    ctx.tracker.log_dict(run_id, result.per_class_f1, "per_class_f1.json")
    if result.val_per_class_f1:
        ctx.tracker.log_dict(run_id, result.val_per_class_f1, "val_per_class_f1.json")
    ctx.tracker.log_dict(run_id, result.pruning, "pruning.json")
    ctx.tracker.log_artifacts(run_id, result_path)
    ctx.tracker.log_artifacts(run_id, log_path)
    if result.predictions:
        ctx.tracker.log_artifacts(run_id, Path(result.predictions))
    if result.model_dir and Path(result.model_dir).is_dir():
        ctx.tracker.log_artifacts(run_id, Path(result.model_dir), "model")
    ctx.tracker.end(run_id, FINISHED)
    took = _write_timings(result_path.parent, asked_at, outcome, result, TrialState.COMPLETE)
    log(f"trial {number}: " + ", ".join(f"{o.key}={metrics[o.key]:.4g}" for o in spec.objectives)
        + f" ({took['wall_s']:.0f} s, {took['overhead_s']:.1f} s outside training)")
    return TrialState.COMPLETE


def _write_timings(out: Path, asked_at: float, outcome: Outcome, result: TrialResult | None, state: TrialState) -> dict:
    """Where a trial's wall time went, inside the child process and around it (benchmarks/orchestration_overhead.py).

    Training proper is the child's load/train/measure phases; everything else (asking, MLflow
    before and after, interpreter start and imports, saving) is overhead of running it this way.
    """
    inner = dict(result.timings) if result is not None else {}
    now = time.time()
    doc = {
        "state": state.name, "asked_at": asked_at, "spawned_at": outcome.spawned_at, "exited_at": outcome.exited_at,
        "recorded_at": now, "wall_s": now - asked_at, "before_spawn_s": outcome.spawned_at - asked_at,
        "process_s": outcome.exited_at - outcome.spawned_at, "after_exit_s": now - outcome.exited_at,
        "worker": inner,
    }
    try:
        boot = json.loads((out / "result.json.boot.json").read_text())
        doc["interpreter_start_s"] = boot["started_at"] - outcome.spawned_at
        doc["imports_s"] = boot["imported_at"] - boot["started_at"]
    except (OSError, ValueError, KeyError):
        pass
    doc["overhead_s"] = doc["wall_s"] - sum(inner.get(k, 0.0) for k in ("load_s", "train_s", "measure_s"))
    try:
        (out / "timings.json").write_text(json.dumps(doc, indent=2))
    except OSError:
        pass
    return doc
