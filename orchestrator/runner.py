"""The sweep loop: prepare once, then workers ask Optuna for trials, run each in a child process,
and tell Optuna and MLflow what happened.

Optuna is the source of truth for what ran; MLflow mirrors it. Every state change goes to Optuna
first, and `reap_stale` repairs anything a dead worker left half-done (RUNNING trials whose
heartbeat stopped, MLflow runs still RUNNING), so a crash or a SIGKILL never leaves the study or
the tracking store inconsistent for long.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from orchestrator import pareto
from orchestrator.spec import DIMENSIONS, SpecError, SweepSpec
from orchestrator.study import ACTIVE, counts, enqueue_grid, finite, storage_lock
from orchestrator.tracking import FAILED, FINISHED, KILLED, Tracker, flatten
from orchestrator.workers import HOST, Placement, pid_alive, run_job, tail
from trainers.jobs import PrepareJob, PrepareResult, TrialResult
from trainers.config import TrialConfig

Log = Callable[[str], None]


@dataclass
class Context:
    """Everything a worker needs; built by `launch` or, for `sweep worker`, from the study itself."""

    spec: SweepSpec
    study: optuna.Study
    storage_url: str | None
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    root: Path
    prepared: PrepareResult
    baseline: dict[str, float] = field(default_factory=dict)
    heartbeat_s: float = 10.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def grace_s(self) -> float:
        return max(4 * self.heartbeat_s, 30.0)


def work_dir(root: Path, study: str) -> Path:
    return root / "trials" / study


# --- preparation -----------------------------------------------------------------------------


def prepare(spec: SweepSpec, root: Path, *, measure_baseline: bool, log: Log, stop: threading.Event | None = None) -> PrepareResult:
    """Data report, tokenisation, teacher and baseline, in a child process like any trial."""
    from trainers.models import resolve_model_ref

    try:
        teacher_ref = resolve_model_ref(spec.teacher.model, spec.base_dir)
    except ValueError as exc:
        raise SpecError(f"{spec.source}: field teacher.model: {exc}") from None
    out = work_dir(root, spec.name) / "prepare"
    out.mkdir(parents=True, exist_ok=True)
    job = PrepareJob(
        teacher=spec.teacher,
        teacher_ref=teacher_ref,
        data=spec.data,
        data_base_dir=spec.base_dir,
        training=spec.training,
        measure=spec.measure,
        cache_dir=(root / "cache").resolve(),
        measure_baseline=measure_baseline,
        output_dir=out.resolve(),
    )
    job_path, result_path, log_path = out / "job.json", out / "result.json", out / "worker.log"
    job_path.write_text(job.model_dump_json(indent=2))
    result_path.unlink(missing_ok=True)
    log_path.write_text("")
    log("preparing: data report, tokenisation, teacher" + (" and baseline measurement" if measure_baseline else ""))
    outcome = run_job("prepare", job_path, result_path, log_path, Placement(cores=_all_cores()), stop=stop or threading.Event())
    if result_path.exists():
        result = PrepareResult.model_validate_json(result_path.read_text())
        if not result.ok:
            raise SpecError(result.error or "preparation failed")
        if outcome.returncode == 0:
            return result
    raise RuntimeError(f"preparation failed: {outcome.reason(tail(log_path))} (log: {log_path})")


def _all_cores() -> list[int]:
    from orchestrator.workers import available_cores

    return available_cores()


# --- one trial -------------------------------------------------------------------------------


def trial_config(ctx: Context, params: dict, number: int) -> TrialConfig:
    spec, prep = ctx.spec, ctx.prepared
    out = (work_dir(ctx.root, spec.name) / f"trial-{number:04d}").resolve()
    return TrialConfig(
        name=f"{spec.name}/trial-{number}",
        teacher_dir=prep.teacher_dir,
        teacher_logits=Path(prep.teacher_logits) if prep.teacher_logits else None,
        data=spec.data,
        data_base_dir=spec.base_dir,
        cache_dir=(ctx.root / "cache" / "data").resolve(),
        training=spec.training,
        pruning=spec.pruning,
        measure=spec.measure,
        pruning_ratio=float(params["pruning_ratio"]),
        distill_temperature=float(params["distill_temperature"]),
        distill_alpha=float(params["distill_alpha"]),
        precision=params["precision"],
        output_dir=out,
    )


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict:
    """The four compression parameters; queued (grid/retry) trials get their fixed values back."""
    params = {}
    for name in DIMENSIONS:
        space = getattr(spec.search_space, name)
        if isinstance(space, list):
            params[name] = trial.suggest_categorical(name, list(space))
        else:
            params[name] = trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)
    return params


def _set_attr(study: optuna.Study, trial_id: int, key: str, value) -> None:
    try:
        study._storage.set_trial_user_attr(trial_id, key, value)
    except Exception:  # the trial finished meanwhile (reaped); the attribute no longer matters
        pass


def run_trial(ctx: Context, trial: optuna.Trial, placement: Placement, stop: threading.Event, log: Log) -> TrialState:
    """Run one asked trial to a terminal state in Optuna and in MLflow."""
    spec, study = ctx.spec, ctx.study
    params = suggest(trial, spec)
    number = trial.number
    cfg = trial_config(ctx, params, number)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    cfg_path, result_path, log_path = cfg.output_dir / "trial_config.yaml", cfg.output_dir / "result.json", cfg.output_dir / "worker.log"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    result_path.unlink(missing_ok=True)

    attempt = int(trial.user_attrs.get("attempt", 1))
    run_id = ctx.tracker.child_run(
        ctx.experiment_id, ctx.parent_run_id, spec.name, name=f"trial-{number}", role="trial",
        tags={"optuna.trial_number": number, "sweep.attempt": attempt, "sweep.worker": f"{HOST}:{os.getpid()}",
              "sweep.placement": f"cores={placement.cores} gpu={placement.gpu}"},
    )
    for key, value in {"mlflow_run_id": run_id, "host": HOST, "pid": os.getpid(), "heartbeat": time.time(),
                       "output_dir": str(cfg.output_dir)}.items():
        trial.set_user_attr(key, value)
    ctx.tracker.log(run_id, params={**params, **flatten("", {"pruning": spec.pruning.model_dump(mode="json"),
                                                               "training": spec.training.model_dump(mode="json")})})
    ctx.tracker.log_artifacts(run_id, cfg_path)
    log(f"trial {number}: {params}")

    outcome = run_job(
        "trial", cfg_path, result_path, log_path, placement, stop=stop,
        timeout_s=spec.budget.trial_timeout_minutes * 60 if spec.budget.trial_timeout_minutes else None,
        heartbeat=lambda: _set_attr(study, trial._trial_id, "heartbeat", time.time()), heartbeat_s=ctx.heartbeat_s,
    )
    result = TrialResult.model_validate_json(result_path.read_text()) if result_path.exists() else None
    reason = None
    if outcome.interrupted or outcome.timed_out or outcome.returncode != 0 or result is None or not result.ok:
        reason = (result.error if result is not None and result.error and not outcome.interrupted else None) or outcome.reason(tail(log_path))
    else:
        metrics = {**result.metrics, **pareto.deltas(result.metrics, ctx.baseline)}
        missing = [o.key for o in spec.objectives if o.key not in metrics or not finite([metrics[o.key]])]
        if missing:
            reason = f"objective metric(s) {missing} were not measured; measured: {sorted(result.metrics)}"
    if reason is not None:
        return _fail(ctx, trial, run_id, reason, interrupted=outcome.interrupted, log_path=log_path, log=log)

    values = [metrics[o.key] for o in spec.objectives]
    for c in spec.constraints:
        trial.set_constraint(c.label, pareto.constraint_value(c, metrics, ctx.baseline))
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr("pruning", {k: v for k, v in result.pruning.items() if isinstance(v, (int, float, str))})
    study.tell(trial, values)
    ctx.tracker.log(run_id, metrics=metrics, tags={**result.tags, "sweep.feasible": str(all(v <= 0 for v in study._storage.get_trial(trial._trial_id).constraints.values()))})
    ctx.tracker.log_dict(run_id, result.per_class_f1, "per_class_f1.json")
    ctx.tracker.log_dict(run_id, result.pruning, "pruning.json")
    ctx.tracker.log_artifacts(run_id, result_path)
    ctx.tracker.log_artifacts(run_id, log_path)
    if result.model_dir and Path(result.model_dir).is_dir():
        ctx.tracker.log_artifacts(run_id, Path(result.model_dir), "model")
    ctx.tracker.end(run_id, FINISHED)
    log(f"trial {number}: " + ", ".join(f"{o.key}={metrics[o.key]:.4g}" for o in spec.objectives))
    return TrialState.COMPLETE


def _fail(ctx: Context, trial: optuna.Trial, run_id: str, reason: str, *, interrupted: bool, log_path: Path, log: Log) -> TrialState:
    trial.set_user_attr("fail_reason", reason[:2000])
    if interrupted:
        trial.set_user_attr("interrupted", True)
    ctx.study.tell(trial, state=TrialState.FAIL)
    ctx.tracker.log(run_id, tags={"sweep.fail_reason": reason})
    ctx.tracker.log_artifacts(run_id, log_path)
    ctx.tracker.end(run_id, KILLED if interrupted else FAILED)
    log(f"trial {trial.number}: {'interrupted' if interrupted else 'FAILED'}: {reason.splitlines()[0][:300]}")
    return TrialState.FAIL


# --- asking, reaping, looping ----------------------------------------------------------------


def _waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def next_trial(ctx: Context, deadline: float | None) -> optuna.Trial | None:
    """Ask for the next trial, or None when the budget or the grid is used up."""
    spec, study = ctx.spec, ctx.study
    if deadline is not None and time.time() > deadline:
        return None
    with ctx.lock, storage_lock(ctx.storage_url, ctx.root):
        if _waiting(study) == 0:
            if spec.sampler.type == "grid":
                return None
            started = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
            if len(started) >= spec.n_trials:
                return None
        trial = study.ask()
        # Claim it at once, so that a crash from here on is seen as this worker's and reaped.
        for key, value in {"host": HOST, "pid": os.getpid(), "heartbeat": time.time()}.items():
            trial.set_user_attr(key, value)
    if spec.sampler.type == "grid" and "fixed_params" not in study._storage.get_trial(trial._trial_id).system_attrs:
        # Another worker popped the last queued point between our check and ask: give this one back.
        trial.set_user_attr("duplicate_of", "queue empty")
        trial.set_user_attr("fail_reason", "no grid point left to run (raced with another worker); skipped")
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def reap_stale(ctx: Context, log: Log) -> int:
    """Fail RUNNING trials whose worker is gone, close their MLflow runs, and queue retries."""
    study, now, reaped = ctx.study, time.time(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
        beat = t.user_attrs.get("heartbeat") or (t.datetime_start.timestamp() if t.datetime_start else now)
        local_dead = host == HOST and isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid)
        if not (local_dead or now - beat > ctx.grace_s):
            continue
        why = "worker process is gone" if local_dead else f"no heartbeat for {now - beat:.0f} s"
        reason = f"worker {host}:{pid} died ({why}); marked failed by {HOST}:{os.getpid()}"
        try:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            study.tell(t.number, state=TrialState.FAIL)
        except Exception:
            continue  # another worker reaped it first
        reaped += 1
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id:
            ctx.tracker.log(run_id, tags={"sweep.fail_reason": reason})
            ctx.tracker.end(run_id, FAILED)
        attempt = int(t.user_attrs.get("attempt", 1))
        if attempt <= ctx.spec.budget.max_retries and t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"attempt": attempt + 1, "retry_of": t.number})
            log(f"trial {t.number}: {reason}; queued again (attempt {attempt + 1})")
        else:
            log(f"trial {t.number}: {reason}")
    _close_orphan_runs(ctx)
    return reaped


def _close_orphan_runs(ctx: Context) -> None:
    """MLflow runs left RUNNING by a worker that died between telling Optuna and closing the run."""
    finished = {t.user_attrs.get("mlflow_run_id"): t for t in ctx.study.get_trials(deepcopy=False)
                if t.state in (TrialState.COMPLETE, TrialState.FAIL) and t.user_attrs.get("mlflow_run_id")}
    for run in ctx.tracker.find_runs(ctx.experiment_id, ctx.spec.name, "trial"):
        t = finished.get(run.info.run_id)
        if run.info.status == "RUNNING" and t is not None:
            ctx.tracker.end(run.info.run_id, FINISHED if t.state == TrialState.COMPLETE else FAILED)


def worker_loop(ctx: Context, placement: Placement, stop: threading.Event, deadline: float | None, log: Log) -> None:
    while not stop.is_set():
        reap_stale(ctx, log)
        trial = next_trial(ctx, deadline)
        if trial is None:
            return
        try:
            run_trial(ctx, trial, placement, stop, log)
        except Exception as exc:  # an orchestration error must not leave the trial RUNNING
            if study_state(ctx.study, trial) == TrialState.RUNNING:
                trial.set_user_attr("fail_reason", f"orchestrator error: {type(exc).__name__}: {exc}")
                ctx.study.tell(trial, state=TrialState.FAIL)
            run_id = trial.user_attrs.get("mlflow_run_id") if hasattr(trial, "user_attrs") else None
            if run_id:
                ctx.tracker.end(run_id, FAILED)
            raise


def study_state(study: optuna.Study, trial: optuna.Trial) -> TrialState:
    return study._storage.get_trial(trial._trial_id).state


def run_workers(ctx: Context, placements: list[Placement], *, stop: threading.Event, log: Log, progress: Callable[[], None] | None = None) -> None:
    deadline = time.time() + ctx.spec.budget.timeout_minutes * 60 if ctx.spec.budget.timeout_minutes else None
    errors: list[BaseException] = []

    def target(p: Placement) -> None:
        try:
            worker_loop(ctx, p, stop, deadline, log)
        except BaseException as exc:  # surfaced after the others finish
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(p,), name=f"worker-{i}", daemon=True) for i, p in enumerate(placements)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            if progress:
                progress()
            for t in threads:
                t.join(timeout=0.5)
    except KeyboardInterrupt:
        stop.set()
        log("interrupted: stopping running trials (they are recorded as failed/KILLED; relaunch resumes)")
        for t in threads:
            t.join()
        raise
    if progress:
        progress()
    if errors:
        raise errors[0]


# --- baseline and Pareto bookkeeping ---------------------------------------------------------


def record_baseline(ctx: Context, log: Log) -> None:
    """The teacher, measured like a trial, as a child run: once per study."""
    study, prep = ctx.study, ctx.prepared
    if "baseline_run_id" in study.user_attrs:
        ctx.baseline = study.user_attrs.get("baseline_metrics", {})
        return
    run_id = ctx.tracker.child_run(ctx.experiment_id, ctx.parent_run_id, ctx.spec.name, name="baseline-teacher",
                                   role="baseline", tags={"sweep.teacher_key": prep.teacher_key})
    ctx.tracker.log(run_id, params={"teacher.model": ctx.spec.teacher.model, "pruning_ratio": 0.0, "distill_alpha": 0.0,
                                    "precision": "fp32", "teacher.fine_tuned": prep.teacher_meta.get("fine_tuned")},
                    metrics=prep.baseline_metrics, tags=prep.baseline_tags)
    ctx.tracker.log_dict(run_id, prep.baseline_per_class_f1, "per_class_f1.json")
    ctx.tracker.log_dict(run_id, prep.teacher_meta, "teacher_meta.json")
    ctx.tracker.end(run_id, FINISHED)
    study.set_user_attr("baseline_metrics", prep.baseline_metrics)
    study.set_user_attr("baseline_run_id", run_id)
    ctx.baseline = dict(prep.baseline_metrics)
    log(f"baseline (teacher): accuracy {prep.baseline_metrics.get('accuracy', math.nan):.4f}, "
        f"latency {prep.baseline_metrics.get('latency_ms', math.nan):.2f} ms (batch 1)")


def tag_pareto(ctx: Context) -> list[FrozenTrial]:
    front = ctx.study.best_trials
    on_front = {t.user_attrs.get("mlflow_run_id") for t in front}
    for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id:
            ctx.tracker.set_tags([run_id], "sweep.pareto_front", str(run_id in on_front).lower())
    return front
