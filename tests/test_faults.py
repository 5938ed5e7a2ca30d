"""Parallel workers and faults on the default local storage (Optuna journal + MLflow sqlite).

The first three tests run the real `sweep` CLI and kill real processes; they share one --root
(journal, MLflow db, teacher cache) under different study names, so the tiny teacher is
fine-tuned once. The last ones check the reaping and queueing rules directly, without trials.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from conftest import make_topics_csv, sweep_cli, sweep_doc, write_sweep
from orchestrator.study import default_storage_url
from procs import (assert_consistent, finish, grid_of, kill_group, load_study, mlflow_runs, output, pid_gone,
                   point, start_sweep, wait_for)

ENV = {"SWEEP_HEARTBEAT_SECONDS": "1"}


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_encoder):
    work = tmp_path_factory.mktemp("faults")
    data = make_topics_csv(work / "topics.csv")
    return work, tiny_encoder, data


def _doc(store, name: str, **overrides) -> dict:
    work, encoder, data = store
    return sweep_doc(encoder, data, name=name, **{"training.epochs": 1, **overrides})


def _study(work: Path, name: str):
    root = work / "mlruns"
    return load_study(default_storage_url(root), name, root)


def _running(work: Path, name: str) -> list:
    """RUNNING trials whose training process has started; none while the study does not exist yet."""
    try:
        study = _study(work, name)
    except (KeyError, FileNotFoundError):
        return []
    return [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "trial_pid" in t.user_attrs]


def _runs(work: Path, name: str):
    return mlflow_runs(f"sqlite:///{(work / 'mlruns' / 'mlflow.db').resolve()}", name)


def test_four_workers_share_the_local_store_without_lock_errors(store):
    work = store[0]
    doc = _doc(store, "par")
    sweep = write_sweep(work, doc, "par.yaml")
    proc = sweep_cli("launch", str(sweep), "--workers", "4", "--no-export", cwd=work, env=ENV)
    text = proc.stdout + proc.stderr
    assert "locked" not in text.lower() and "Traceback" not in text, text[-4000:]
    assert "4 executor(s)" in text
    study = _study(work, "par")
    _, runs = _runs(work, "par")
    assert len(study.trials) == 4
    assert_consistent(study, runs, grid_of(doc))
    trial_runs = [r for r in runs if r.data.tags["sweep.role"] == "trial"]
    # The cores were split between workers, and trials really ran side by side.
    assert len({r.data.tags["sweep.placement"] for r in trial_runs}) >= 2
    spans = [(t.datetime_start, t.datetime_complete) for t in study.trials]
    overlap = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert overlap >= 2, spans
    assert next(r for r in runs if r.data.tags["sweep.role"] == "study").info.status == "FINISHED"


def test_sigkilled_trial_is_recorded_failed_and_retry_reruns_it(store):
    """A trial process killed like the OOM killer does: FAILED with the reason, the sweep goes on."""
    work = store[0]
    doc = _doc(store, "oom", **{"search_space.distill_alpha": [0.0], "budget.max_retries": 0})
    sweep = write_sweep(work, doc, "oom.yaml")
    proc = start_sweep("launch", str(sweep), "--workers", "1", "--no-export", cwd=work, log_name="oom", env=ENV)
    try:
        victim = wait_for("a running trial process", lambda: (_running(work, "oom") or [None])[0], procs=(proc,))
        time.sleep(1.5)  # mid-run: past interpreter start, importing or training
        os.kill(victim.user_attrs["trial_pid"], signal.SIGKILL)
        assert finish(proc, work, "oom") == 0, output(work, "oom")[-4000:]
    finally:
        kill_group(proc)
    study = _study(work, "oom")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [victim.number]
    reason = failed[0].user_attrs["fail_reason"]
    assert "SIGKILL" in reason and "out-of-memory" in reason
    client, runs = _runs(work, "oom")
    run = client.get_run(failed[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["sweep.fail_reason"] == reason
    assert [t.state.name for t in study.trials].count("COMPLETE") == 1  # the other point; no retry with max_retries 0
    assert "not retried" in output(work, "oom")

    out = sweep_cli("retry", "oom", cwd=work, env=ENV).stdout
    assert "1 failed trial(s) queued again" in out
    study = _study(work, "oom")
    _, runs = _runs(work, "oom")
    assert_consistent(study, runs, grid_of(doc))
    rerun = next(t for t in study.trials if t.user_attrs.get("retry_of") == victim.number)
    assert rerun.state.name == "COMPLETE" and rerun.params == victim.params


def test_ctrl_c_leaves_nothing_running_and_relaunch_completes_the_grid(store):
    work = store[0]
    doc = _doc(store, "int")
    sweep = write_sweep(work, doc, "int.yaml")
    proc = start_sweep("launch", str(sweep), "--workers", "2", "--no-export", cwd=work, log_name="int", env=ENV)
    try:
        running = wait_for("two trials mid-run", lambda: r if len(r := _running(work, "int")) == 2 else None, procs=(proc,))
        time.sleep(1.5)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        code = finish(proc, work, "int", timeout=120)
    finally:
        kill_group(proc)
    text = output(work, "int")
    assert code == 130, text[-4000:]
    assert "relaunch" in text
    for t in running:
        assert pid_gone(t.user_attrs["trial_pid"]), "a trial process outlived the interrupted sweep"
    study = _study(work, "int")
    states = {t.number: t.state.name for t in study.trials}
    assert "RUNNING" not in states.values(), states
    for t in running:
        frozen = study.trials[t.number]
        assert frozen.state.name == "FAIL" and frozen.user_attrs["interrupted"] is True
    # Interrupted points are queued again at once (not counted as failures): every unfinished point waits once.
    waiting = sorted(point(t.system_attrs["fixed_params"]) for t in study.trials if t.state.name == "WAITING")
    done = {point(t.params) for t in study.trials if t.state.name == "COMPLETE"}
    assert waiting == sorted(point(g) for g in grid_of(doc) if point(g) not in done)
    assert {point(t.params) for t in running} <= set(waiting)
    _, runs = _runs(work, "int")
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    interrupted = {t.user_attrs["mlflow_run_id"] for t in running}
    assert {r.info.status for r in runs if r.info.run_id in interrupted} == {"KILLED"}
    assert next(r for r in runs if r.data.tags["sweep.role"] == "study").info.status == "KILLED"

    again = sweep_cli("launch", str(sweep), "--workers", "2", "--no-export", cwd=work, env=ENV)
    assert "locked" not in (again.stdout + again.stderr).lower()
    study = _study(work, "int")
    _, runs = _runs(work, "int")
    assert_consistent(study, runs, grid_of(doc))
    assert next(r for r in runs if r.data.tags["sweep.role"] == "study").info.status == "FINISHED"


# --- the bookkeeping alone, without trial processes (fast) ---------------------------------------


@pytest.fixture(scope="module")
def bookkeeping(tmp_path_factory, tiny_encoder):
    from orchestrator.tracking import Tracker, default_tracking_uri

    work = tmp_path_factory.mktemp("bookkeeping")
    root = work / "mlruns"
    return work, make_topics_csv(work / "topics.csv"), tiny_encoder, Tracker(default_tracking_uri(root), root)


def _context(bookkeeping, name: str, **overrides):
    from orchestrator.context import Context
    from orchestrator.spec import load_sweep
    from orchestrator.study import open_storage, open_study
    from orchestrator.trial_queue import enqueue_grid
    from trainers.jobs import PrepareResult

    work, data, encoder, tracker = bookkeeping
    spec = load_sweep(write_sweep(work, sweep_doc(encoder, data, name=name, **overrides), f"{name}.yaml"))
    root = work / "mlruns"
    url = default_storage_url(root)
    study = open_study(spec, open_storage(url, root))
    exp = tracker.experiment_id(spec.experiment)
    parent = tracker.parent_run(exp, spec.name, params={}, tags={}, sweep_file=None)
    enqueue_grid(study, spec)
    return Context(spec=spec, study=study, storage_url=url, tracker=tracker, experiment_id=exp, parent_run_id=parent,
                   root=root, prepared=PrepareResult(), heartbeat_s=0.5)


def _start(ctx, **attrs):
    """Ask for a trial the way a worker does, open its MLflow run, then pose as another worker."""
    from orchestrator.dispatch import suggest
    from orchestrator.trial_queue import next_trial

    trial = next_trial(ctx, None)
    params = suggest(trial, ctx.spec)
    run_id = ctx.tracker.child_run(ctx.experiment_id, ctx.parent_run_id, ctx.spec.name, name=f"trial-{trial.number}",
                                   role="trial", tags={"optuna.trial_number": trial.number})
    trial.set_user_attr("mlflow_run_id", run_id)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return trial, params, run_id


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_dead_local_worker_is_reaped_its_run_failed_and_its_point_retried_once(bookkeeping):
    from orchestrator.recovery import reap_stale

    ctx = _context(bookkeeping, "reap-local", **{"budget.max_retries": 1})
    logs: list[str] = []
    trial, params, run_id = _start(ctx, pid=_dead_pid(), pid_start=None)
    assert reap_stale(ctx, logs.append) == 1
    frozen = ctx.study.trials[trial.number]
    assert frozen.state == TrialState.FAIL and "worker process is gone" in frozen.user_attrs["fail_reason"]
    run = ctx.tracker.client.get_run(run_id)
    assert run.info.status == "FAILED" and "worker process is gone" in run.data.tags["sweep.fail_reason"]
    retry = [t for t in ctx.study.trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING and retry[0].user_attrs["attempt"] == 2
    assert retry[0].system_attrs["fixed_params"] == params
    assert reap_stale(ctx, logs.append) == 0  # nothing left to reap; reaping twice never queues twice

    # The retry dies too: max_retries (1) is used up, so it is not queued a third time.
    while True:
        again, again_params, _ = _start(ctx, pid=_dead_pid(), pid_start=None)
        if again_params == params:
            break
        ctx.study.tell(again, [0.5, 1.0])  # other grid points: complete them
    assert reap_stale(ctx, logs.append) == 1
    assert not [t for t in ctx.study.trials if t.user_attrs.get("retry_of") == again.number]
    assert any("not retried" in line for line in logs)


def test_a_dead_local_workers_zombie_counts_as_gone(bookkeeping):
    """Where PID 1 does not reap (a container without an init), a dead worker's zombie keeps its pid and
    answers kill(0): it is still reaped at once as gone, not after the heartbeat grace."""
    import subprocess
    import sys

    import psutil

    from orchestrator.recovery import reap_stale

    ctx = _context(bookkeeping, "reap-zombie")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, and stays a zombie until we wait for it
    try:
        zombie = psutil.Process(proc.pid)
        deadline = time.time() + 30
        while zombie.status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
            time.sleep(0.05)
        assert zombie.status() == psutil.STATUS_ZOMBIE
        trial, _, _ = _start(ctx, pid=proc.pid, pid_start=zombie.create_time())
        assert reap_stale(ctx, print) == 1  # on first sight: no heartbeat grace to wait out
        assert "worker process is gone" in ctx.study.trials[trial.number].user_attrs["fail_reason"]
    finally:
        proc.wait()


def test_an_executor_asking_while_a_dead_workers_trial_is_failed_finds_its_retry(bookkeeping, monkeypatch):
    """The sweep's last trial dies: an executor that asks for work at any moment of the reaping gets the
    retry (or waits), never 'sweep done' with the retry queued after it left (a race CI once hit)."""
    import optuna

    from orchestrator import recovery
    from orchestrator.trial_queue import next_trial

    ctx = _context(bookkeeping, "reap-race", **{"search_space.pruning_ratio": [0.0], "search_space.distill_alpha": [0.0],
                                                "budget.max_retries": 1})
    trial, params, _ = _start(ctx, pid=_dead_pid(), pid_start=None)
    asked: list = []
    close_run = recovery.close_run

    def ask_then_close(*args, **kwargs):  # another executor asks while the failure is being recorded
        asked.append(next_trial(ctx, None))
        return close_run(*args, **kwargs)

    monkeypatch.setattr(recovery, "close_run", ask_then_close)
    assert recovery.reap_stale(ctx, print) == 1
    assert len(asked) == 1 and isinstance(asked[0], optuna.Trial), f"the executor was told {asked[0]!r}"
    retry = ctx.study.trials[asked[0].number]
    assert retry.user_attrs["retry_of"] == trial.number and retry.system_attrs["fixed_params"] == params


def test_remote_worker_is_judged_by_its_heartbeat_on_this_machines_clock(bookkeeping):
    from orchestrator.recovery import reap_stale

    ctx = _context(bookkeeping, "reap-remote")
    # Another machine's worker: its pid means nothing here, and its clock is two hours behind ours.
    trial, _, run_id = _start(ctx, host_id="elsewhere", pid=os.getpid(), heartbeat=time.time() - 7200)
    assert reap_stale(ctx, print) == 0  # first sight: the clock starts now, skew does not matter
    ctx.study._storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time() - 7199)
    ctx.seen[trial._trial_id] = (ctx.seen[trial._trial_id][0], time.monotonic() - 3600)
    assert reap_stale(ctx, print) == 0  # the heartbeat moved: alive, however long ago it last moved
    ctx.seen[trial._trial_id] = (ctx.seen[trial._trial_id][0], time.monotonic() - ctx.grace_s - 1)
    assert reap_stale(ctx, print) == 1
    assert "no heartbeat for" in ctx.study.trials[trial.number].user_attrs["fail_reason"]
    assert ctx.tracker.client.get_run(run_id).info.status == "FAILED"


def test_a_point_queued_twice_runs_once_and_waiting_workers_outlive_running_trials(bookkeeping):
    from orchestrator.dispatch import suggest
    from orchestrator.trial_queue import Next, next_trial
    from orchestrator.trial_queue import counts_as_failure, enqueue_grid

    ctx = _context(bookkeeping, "dup", **{"search_space.pruning_ratio": [0.0], "search_space.distill_alpha": [0.0]})
    ctx.study.enqueue_trial(ctx.spec.search_space.grid()[0])  # the race a storage without a shared lock allows
    first = next_trial(ctx, None)
    suggest(first, ctx.spec)
    assert next_trial(ctx, None) is Next.AGAIN  # the copy: skipped, not run
    skipped = ctx.study.trials[-1]
    assert skipped.state == TrialState.FAIL and skipped.user_attrs["duplicate_of"] == first.number
    assert not counts_as_failure(skipped)
    assert next_trial(ctx, None) is Next.WAIT  # nothing queued, but trial `first` may still need a retry
    ctx.study.tell(first, [0.9, 1.0])
    assert next_trial(ctx, None) is None
    assert enqueue_grid(ctx.study, ctx.spec) == 0


def test_interrupted_trials_do_not_use_up_retries(bookkeeping):
    from orchestrator.trial_queue import enqueue_grid

    ctx = _context(bookkeeping, "intr", **{"budget.max_retries": 0, "search_space.pruning_ratio": [0.0],
                                          "search_space.distill_alpha": [0.0]})
    for _ in range(3):
        trial, _, _ = _start(ctx)
        trial.set_user_attr("interrupted", True)
        ctx.study.tell(trial, state=TrialState.FAIL)
        assert enqueue_grid(ctx.study, ctx.spec) == 1  # Ctrl-C three times: still queued on relaunch
    trial, _, _ = _start(ctx)
    ctx.study.tell(trial, state=TrialState.FAIL)  # a real failure, with max_retries 0: left for `sweep retry`
    assert enqueue_grid(ctx.study, ctx.spec) == 0
