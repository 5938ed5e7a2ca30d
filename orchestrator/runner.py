"""The sweep loop: prepare once, then workers ask Optuna for trials, run each in a child process,
and tell Optuna and MLflow what happened.

Optuna is the source of truth for what ran; MLflow mirrors it. Every state change goes to Optuna
first, and `reap_stale` repairs anything a dead worker left half-done (RUNNING trials whose
process is gone or whose heartbeat stopped, MLflow runs still RUNNING), so a crash or a SIGKILL
never leaves the study or the tracking store inconsistent for long. A trial that lost its worker,
or whose process died of a signal (out of memory), is queued again up to `budget.max_retries`.
"""

from __future__ import annotations

import enum
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import yaml
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from orchestrator import pareto
from orchestrator.spec import DIMENSIONS, SpecError, SweepSpec
from orchestrator.study import finite, point_key, requeue, storage_lock, trial_point
from orchestrator.tracking import FAILED, FINISHED, KILLED, Tracker, flatten
from orchestrator.workers import HOST, HOST_ID, available_cores, PROCESS_STARTED, Placement, Outcome, process_alive, run_job, tail
from trainers.jobs import PrepareJob, PrepareResult, TrialResult
from trainers.config import TrialConfig

Log = Callable[[str], None]
HEARTBEAT_ENV = "SWEEP_HEARTBEAT_SECONDS"


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
    # trial id -> (last heartbeat value seen, local monotonic time it was first seen): staleness is
    # judged by this process's own clock, so clock skew between machines cannot reap a live trial.
    seen: dict[int, tuple[object, float]] = field(default_factory=dict)

    @property
    def grace_s(self) -> float:
        """Silence after which a trial's worker counts as dead: three missed heartbeats, at least 5 s more than one."""
        return max(3 * self.heartbeat_s, self.heartbeat_s + 5.0)

    def locked(self):
        """This process's threads, then every process on the storage: always taken in this order."""
        return _Both(self.lock, storage_lock(self.storage_url, self.root))


class _Both:
    def __init__(self, first, second):
        self.first, self.second = first, second

    def __enter__(self):
        self.first.__enter__()
        try:
            self.second.__enter__()
        except BaseException:
            self.first.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        try:
            self.second.__exit__(*exc)
        finally:
            self.first.__exit__(*exc)


def heartbeat_seconds(ctx: Context) -> float:
    """$SWEEP_HEARTBEAT_SECONDS, else the sweep's budget.heartbeat_seconds (when the spec has it), else the context's."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise SpecError(f"{HEARTBEAT_ENV}={raw!r}: expected a number of seconds > 0")
        return value
    return float(getattr(ctx.spec.budget, "heartbeat_seconds", None) or ctx.heartbeat_s)


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
    outcome = run_job("prepare", job_path, result_path, log_path, Placement(cores=available_cores()), stop=stop or threading.Event())
    if result_path.exists():
        result = PrepareResult.model_validate_json(result_path.read_text())
        if not result.ok:
            raise SpecError(result.error or "preparation failed")
        if outcome.returncode == 0:
            return result
    raise RuntimeError(f"preparation failed: {outcome.reason(tail(log_path))} (log: {log_path})")


# --- one trial -------------------------------------------------------------------------------


def trial_config(ctx: Context, params: dict, number: int, placement: Placement | None = None) -> TrialConfig:
    spec, prep = ctx.spec, ctx.prepared
    # CPU workers of one machine take turns to measure, or parallel trials would slow each other's timings.
    lock = (ctx.root / "cache" / "measure.lock").resolve() if placement is not None and placement.gpu is None else None
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
        measure_lock=lock,
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


def _beat(study: optuna.Study, trial_id: int) -> bool | None:
    """Stamp the heartbeat; False once the trial is no longer ours (another worker failed it)."""
    try:
        study._storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
    except UpdateFinishedTrialError:
        return False
    except Exception:  # a storage hiccup: the next beat tries again
        return None
    return True


def _claim(trial: optuna.Trial) -> None:
    """Mark the trial as this process's, so that a crash from here on is seen and reaped."""
    for key, value in {"host": HOST, "host_id": HOST_ID, "pid": os.getpid(), "pid_start": PROCESS_STARTED,
                       "heartbeat": time.time()}.items():
        trial.set_user_attr(key, value)


def run_trial(ctx: Context, trial: optuna.Trial, placement: Placement, stop: threading.Event, log: Log,
              asked_at: float | None = None) -> TrialState:
    """Run one asked trial to a terminal state in Optuna and in MLflow."""
    asked_at = asked_at or time.time()
    spec, study = ctx.spec, ctx.study
    params = suggest(trial, spec)
    number = trial.number
    cfg = trial_config(ctx, params, number, placement)
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
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr("output_dir", str(cfg.output_dir))
    ctx.tracker.log(run_id, params={**params, **flatten("", {"pruning": spec.pruning.model_dump(mode="json"),
                                                               "training": spec.training.model_dump(mode="json")})})
    ctx.tracker.log_artifacts(run_id, cfg_path)
    log(f"trial {number}: {params}" + (f" (attempt {attempt})" if attempt > 1 else ""))

    outcome = run_job(
        "trial", cfg_path, result_path, log_path, placement, stop=stop,
        timeout_s=spec.budget.trial_timeout_minutes * 60 if spec.budget.trial_timeout_minutes else None,
        heartbeat=lambda: _beat(study, trial._trial_id), heartbeat_s=ctx.heartbeat_s,
        on_start=lambda pid: _set_attr(study, trial._trial_id, "trial_pid", pid),
    )
    result = TrialResult.model_validate_json(result_path.read_text()) if result_path.exists() else None
    reason = None
    if outcome.interrupted or outcome.abandoned or outcome.timed_out or outcome.returncode != 0 or result is None or not result.ok:
        reason = (result.error if result is not None and result.error and not outcome.interrupted else None) or outcome.reason(tail(log_path))
    else:
        metrics = {**result.metrics, **pareto.deltas(result.metrics, ctx.baseline)}
        missing = [o.key for o in spec.objectives if o.key not in metrics or not finite([metrics[o.key]])]
        if missing:
            reason = f"objective metric(s) {missing} were not measured; measured: {sorted(result.metrics)}"
    if reason is not None:
        state = _fail(ctx, trial, run_id, reason, interrupted=outcome.interrupted,
                      retry=outcome.died and result is None, log_path=log_path, log=log)
        _write_timings(cfg.output_dir, asked_at, outcome, result, state)
        return state

    values = [metrics[o.key] for o in spec.objectives]
    try:
        for c in spec.constraints:
            trial.set_constraint(c.label, pareto.constraint_value(c, metrics, ctx.baseline))
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("pruning", {k: v for k, v in result.pruning.items() if isinstance(v, (int, float, str))})
        told = _tell(study, trial, values)
    except UpdateFinishedTrialError:
        told = False
    if not told:
        # Another worker took this trial for dead while it ran and queued it again: that run counts.
        return _lost(ctx, run_id, number, log)
    ctx.tracker.log(run_id, metrics=metrics, tags={**result.tags, "sweep.feasible": str(all(v <= 0 for v in study._storage.get_trial(trial._trial_id).constraints.values()))})
    ctx.tracker.log_dict(run_id, result.per_class_f1, "per_class_f1.json")
    ctx.tracker.log_dict(run_id, result.pruning, "pruning.json")
    ctx.tracker.log_artifacts(run_id, result_path)
    ctx.tracker.log_artifacts(run_id, log_path)
    if result.model_dir and Path(result.model_dir).is_dir():
        ctx.tracker.log_artifacts(run_id, Path(result.model_dir), "model")
    ctx.tracker.end(run_id, FINISHED)
    took = _write_timings(cfg.output_dir, asked_at, outcome, result, TrialState.COMPLETE)
    log(f"trial {number}: " + ", ".join(f"{o.key}={metrics[o.key]:.4g}" for o in spec.objectives)
        + f" ({took['wall_s']:.0f} s, {took['overhead_s']:.1f} s outside training)")
    return TrialState.COMPLETE


def _tell(study: optuna.Study, trial: optuna.Trial, values: list[float] | None = None,
          state: TrialState | None = None) -> bool:
    """Tell Optuna; False when the trial had already been finished by another worker (reaped)."""
    try:
        study.tell(trial, values, state=state)
    except UpdateFinishedTrialError:
        return False
    except ValueError:  # "Cannot tell a FAIL trial": finished between our check and the write
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            return False
        raise
    return True


def _write_timings(out: Path, asked_at: float, outcome: Outcome, result: TrialResult | None, state: TrialState) -> dict:
    """Where a trial's wall time went, inside the worker and around it (benchmarks/orchestration_overhead.py).

    Training proper is the worker's load/train/measure phases; everything else (asking, MLflow
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


def _lost(ctx: Context, run_id: str, number: int, log: Log) -> TrialState:
    reason = "another worker marked this trial failed while it ran (late heartbeats) and queued it again"
    ctx.tracker.log(run_id, tags={"sweep.fail_reason": reason})
    ctx.tracker.end(run_id, FAILED)
    log(f"trial {number}: {reason}")
    return TrialState.FAIL


def _fail(ctx: Context, trial: optuna.Trial, run_id: str, reason: str, *, interrupted: bool, retry: bool,
          log_path: Path, log: Log) -> TrialState:
    """FAIL in Optuna (with the reason), then the MLflow run, then queue it again when that is due.

    An interrupted trial is queued again at once without using up an attempt (it was not its
    fault), so another worker, or the relaunch, picks it up; a trial whose process died of a
    signal (out of memory, segfault) is retried up to budget.max_retries; an error the trial
    reported itself would only repeat, and is left to `sweep retry`.
    """
    try:
        trial.set_user_attr("fail_reason", reason[:2000])
        if interrupted:
            trial.set_user_attr("interrupted", True)
        told = _tell(ctx.study, trial, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        told = False
    if not told:
        return _lost(ctx, run_id, trial.number, log)
    ctx.tracker.log(run_id, tags={"sweep.fail_reason": reason})
    ctx.tracker.log_artifacts(run_id, log_path)
    ctx.tracker.end(run_id, KILLED if interrupted else FAILED)
    log(f"trial {trial.number}: {'interrupted' if interrupted else 'FAILED'}: {reason.splitlines()[0][:300]}")
    frozen = ctx.study._storage.get_trial(trial._trial_id)
    attempt = int(frozen.user_attrs.get("attempt", 1))
    if interrupted:
        _retry(ctx, frozen, attempt, log)
    elif retry:
        _retry(ctx, frozen, attempt + 1, log)
    return TrialState.FAIL


def _retry(ctx: Context, t: FrozenTrial, attempt: int, log: Log) -> bool:
    if attempt > ctx.spec.budget.max_retries + 1:
        log(f"trial {t.number}: not retried (budget.max_retries = {ctx.spec.budget.max_retries} used up; `sweep retry` reruns it)")
        return False
    with ctx.locked():
        queued = requeue(ctx.study, trial_point(t), {"attempt": attempt, "retry_of": t.number})
    if queued:
        log(f"trial {t.number}: queued again (attempt {attempt})")
    return queued


# --- asking, reaping, looping ----------------------------------------------------------------


class Next(enum.Enum):
    WAIT = "others still run trials that may need retrying: wait and look again"
    AGAIN = "the popped trial was a duplicate and was skipped: ask again"


def next_trial(ctx: Context, deadline: float | None) -> optuna.Trial | Next | None:
    """The next trial to run, Next.* when there is none yet, or None when the sweep is done.

    A worker with nothing to do waits while other trials still run: if one's worker dies, its
    retry must find a worker to run it.
    """
    spec, study = ctx.spec, ctx.study
    if deadline is not None and time.time() > deadline:
        return None
    with ctx.locked():
        trials = study.get_trials(deepcopy=False)
        if not any(t.state == TrialState.WAITING for t in trials):
            # Retries and re-queued interruptions do not use up the budget: the point was counted once.
            started = sum(t.state != TrialState.WAITING and "retry_of" not in t.user_attrs for t in trials)
            if spec.sampler.type == "grid" or started >= spec.n_trials:
                return Next.WAIT if any(t.state == TrialState.RUNNING for t in trials) else None
        trial = study.ask()
        _claim(trial)
    frozen = study._storage.get_trial(trial._trial_id)
    fixed = frozen.system_attrs.get("fixed_params")
    if spec.sampler.type == "grid" and not fixed:
        # Only without a shared lock (an RDB other than PostgreSQL/SQLite): another worker popped the last point.
        _skip(study, trial, "queue empty", "no grid point left to run (raced with another worker); skipped")
        return Next.AGAIN
    if fixed:
        dup = _duplicate_of(study, frozen, fixed)
        if dup is not None:
            _skip(study, trial, dup, f"grid point already completed or taken by trial {dup}; skipped")
            return Next.AGAIN
    return trial


def _skip(study: optuna.Study, trial: optuna.Trial, dup, reason: str) -> None:
    trial.set_user_attr("duplicate_of", dup)
    trial.set_user_attr("fail_reason", reason)
    _tell(study, trial, state=TrialState.FAIL)


def _duplicate_of(study: optuna.Study, mine: FrozenTrial, params: dict) -> int | None:
    """Another trial of the same point that completed, or runs/waits with a lower number.

    The last guard against a point completing twice (e.g. queued twice by a race with a storage
    that has no shared lock): of two live copies the lower-numbered one runs, the other is skipped.
    """
    key = point_key(params)
    for t in study.get_trials(deepcopy=False):
        if t._trial_id == mine._trial_id or point_key(trial_point(t)) != key:
            continue
        if t.state == TrialState.COMPLETE or (t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number < mine.number):
            return t.number
    return None


def _stale(ctx: Context, t: FrozenTrial, now: float) -> str | None:
    """Why `t`'s worker counts as dead, or None while it may be alive."""
    attrs = t.user_attrs
    pid, pid_start = attrs.get("pid"), attrs.get("pid_start")
    if attrs.get("host_id") == HOST_ID and isinstance(pid, int):
        if pid == os.getpid() and (pid_start is None or abs(pid_start - PROCESS_STARTED) < 1.0):
            return None  # one of this process's own threads runs it
        if not process_alive(pid, pid_start):
            return "worker process is gone"
    beat = attrs.get("heartbeat")
    seen = ctx.seen.get(t._trial_id)
    if seen is None or seen[0] != beat:
        ctx.seen[t._trial_id] = (beat, now)
        return None
    if now - seen[1] > ctx.grace_s:
        return f"no heartbeat for {now - seen[1]:.0f} s"
    return None


def reap_stale(ctx: Context, log: Log) -> int:
    """Fail RUNNING trials whose worker is gone, close their MLflow runs, and queue retries."""
    study, now, reaped = ctx.study, time.monotonic(), 0
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        why = _stale(ctx, t, now)
        if why is None:
            continue
        host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
        reason = f"worker {host}:{pid} died ({why}); marked failed by {HOST}:{os.getpid()}"
        try:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # it finished, or another worker reaped it first
        reaped += 1
        ctx.seen.pop(t._trial_id, None)
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id:
            ctx.tracker.log(run_id, tags={"sweep.fail_reason": reason})
            ctx.tracker.end(run_id, FAILED)
        log(f"trial {t.number}: {reason}")
        _retry(ctx, t, int(t.user_attrs.get("attempt", 1)) + 1, log)
    alive = {t._trial_id for t in running}
    for trial_id in [k for k in ctx.seen if k not in alive]:
        ctx.seen.pop(trial_id, None)
    if reaped:
        close_orphan_runs(ctx)
    return reaped


def close_orphan_runs(ctx: Context) -> int:
    """End MLflow trial runs left RUNNING whose Optuna trial is over (a worker died between the two)."""
    trials = {t.number: t for t in ctx.study.get_trials(deepcopy=False)}
    closed = 0
    for run in ctx.tracker.find_runs(ctx.experiment_id, ctx.spec.name, "trial"):
        if run.info.status != "RUNNING":
            continue
        try:
            t = trials.get(int(run.data.tags.get("optuna.trial_number", "")))
        except ValueError:
            continue
        if t is None or not t.state.is_finished():
            continue
        if t.state == TrialState.COMPLETE and t.user_attrs.get("mlflow_run_id") == run.info.run_id:
            status = FINISHED
        else:
            status = KILLED if t.user_attrs.get("interrupted") else FAILED
        ctx.tracker.end(run.info.run_id, status)
        closed += 1
    return closed


def worker_loop(ctx: Context, placement: Placement, stop: threading.Event, deadline: float | None, log: Log) -> None:
    errors = 0
    while not stop.is_set():
        asked_at = time.time()
        trial = next_trial(ctx, deadline)
        if trial is None:
            return
        if trial is Next.AGAIN:
            continue
        if trial is Next.WAIT:
            stop.wait(min(ctx.heartbeat_s, 5.0))
            continue
        try:
            run_trial(ctx, trial, placement, stop, log, asked_at=asked_at)
            errors = 0
        except Exception as exc:  # an orchestration error (storage, tracking) must not leave the trial RUNNING
            errors += 1
            _orchestrator_error(ctx, trial, exc, log)
            if errors >= 3:
                raise


def _orchestrator_error(ctx: Context, trial: optuna.Trial, exc: Exception, log: Log) -> None:
    reason = f"orchestrator error: {type(exc).__name__}: {exc}"
    log(f"trial {trial.number}: {reason}")
    try:
        frozen = ctx.study._storage.get_trial(trial._trial_id)
        if frozen.state == TrialState.RUNNING:
            ctx.study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason[:2000])
            ctx.study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            _retry(ctx, frozen, int(frozen.user_attrs.get("attempt", 1)) + 1, log)
        run_id = frozen.user_attrs.get("mlflow_run_id")
        if run_id and ctx.tracker.status(run_id) == "RUNNING":
            ctx.tracker.log(run_id, tags={"sweep.fail_reason": reason})
            ctx.tracker.end(run_id, FAILED)
    except Exception as again:  # storage or tracking still down: the reaper repairs it later
        log(f"trial {trial.number}: could not record the failure ({type(again).__name__}: {again}); "
            "a later worker or relaunch will")


def study_state(study: optuna.Study, trial: optuna.Trial) -> TrialState:
    return study._storage.get_trial(trial._trial_id).state


def _reap_loop(ctx: Context, done: threading.Event, log: Log) -> None:
    last_error = ""
    while not done.wait(ctx.heartbeat_s):
        try:
            reap_stale(ctx, log)
            last_error = ""
        except Exception as exc:  # a storage hiccup: say so once, keep trying
            if str(exc) != last_error:
                log(f"reaper: {type(exc).__name__}: {exc}")
            last_error = str(exc)


def _signals_set_stop(stop: threading.Event) -> Callable[[], None]:
    """Ctrl-C and SIGTERM (scancel, pod eviction) set `stop` instead of raising in the main thread.

    A KeyboardInterrupt raised wherever the main thread happens to be can land mid-way through a
    storage read, or inside `Thread.join(timeout)`, which CPython 3.11 then records as the thread
    having ended while it still runs (so the process exits under it, trials left RUNNING). A
    second Ctrl-C raises at once, for when stopping takes too long.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def run_workers(ctx: Context, placements: list[Placement], *, stop: threading.Event, log: Log, progress: Callable[[], None] | None = None) -> None:
    """Run the worker threads until the sweep is done; KeyboardInterrupt (after recording everything) when stopped."""
    ctx.heartbeat_s = heartbeat_seconds(ctx)
    deadline = time.time() + ctx.spec.budget.timeout_minutes * 60 if ctx.spec.budget.timeout_minutes else None
    errors: list[BaseException] = []
    reap_stale(ctx, log)  # a relaunch first fails what the previous, dead run left RUNNING
    close_orphan_runs(ctx)

    def target(p: Placement, finished: threading.Event) -> None:
        try:
            worker_loop(ctx, p, stop, deadline, log)
        except BaseException as exc:  # surfaced after the others finish
            log(f"{threading.current_thread().name} stopped by {type(exc).__name__}: {exc}")
            errors.append(exc)
        finally:
            finished.set()

    done = threading.Event()
    finished = [threading.Event() for _ in placements]
    reaper = threading.Thread(target=_reap_loop, args=(ctx, done, log), name="reaper", daemon=True)
    threads = [threading.Thread(target=target, args=(p, e), name=f"worker-{i}", daemon=True)
               for i, (p, e) in enumerate(zip(placements, finished))]
    restore = _signals_set_stop(stop)
    announced = False
    try:
        reaper.start()
        for t in threads:
            t.start()
        while pending := [e for e in finished if not e.is_set()]:
            if stop.is_set() and not announced:
                announced = True
                log("interrupted: stopping running trials (recorded as failed/KILLED and queued again; "
                    "relaunch resumes; Ctrl-C again to quit at once)")
            if progress:
                progress()
            pending[0].wait(0.2 if stop.is_set() else 0.5)
    finally:
        restore()
        done.set()
        reaper.join(timeout=30)
        try:
            close_orphan_runs(ctx)
        except Exception as exc:  # the next run repairs it
            log(f"could not close orphaned MLflow runs: {exc}")
    if progress:
        progress()
    if errors:
        raise errors[0]
    if stop.is_set():
        raise KeyboardInterrupt


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
