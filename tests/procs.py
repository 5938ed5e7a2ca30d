"""Helpers for the fault tests: `sweep` processes in the background, and reading back what they left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import optuna
from mlflow.tracking import MlflowClient

from orchestrator.study import open_storage


def start_sweep(*args: str, cwd: Path, log_name: str, env: dict | None = None) -> subprocess.Popen:
    """`sweep ARGS` in its own process group (so a test can Ctrl-C it like a terminal would)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "SWEEP_HEARTBEAT_SECONDS": "3", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    out = open(cwd / f"{log_name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, stdout=out,
                            stderr=subprocess.STDOUT, env=full_env, start_new_session=True)


def output(cwd: Path, log_name: str) -> str:
    return (cwd / f"{log_name}.log").read_text()


def finish(proc: subprocess.Popen, cwd: Path, log_name: str, timeout: float = 400) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"sweep did not finish in {timeout} s:\n{output(cwd, log_name)[-4000:]}")


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def wait_for(what: str, check: Callable[[], object], *, timeout: float = 240, procs: tuple = ()) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"waiting for {what}: a sweep process exited early with {p.returncode}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def load_study(url: str, name: str, root: Path) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url, root))


def running_with_pid(study: optuna.Study, worker_pid: int | None = None):
    """A RUNNING trial whose training process has started (optionally: run by that worker process)."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if "trial_pid" in t.user_attrs and (worker_pid is None or t.user_attrs.get("pid") == worker_pid):
            return t
    return None


def point(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def mlflow_runs(tracking_uri: str, experiment: str) -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} in {tracking_uri}"
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def assert_consistent(study: optuna.Study, runs: list, grid: list[dict]) -> None:
    """Every grid point completed exactly once; nothing RUNNING anywhere; each trial's run matches its state."""
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and "WAITING" not in states, states
    complete = [point(t.params) for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(complete) == sorted(point(g) for g in grid), (complete, grid)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    by_id = {r.info.run_id: r for r in runs}
    for t in study.trials:
        run = by_id.get(t.user_attrs.get("mlflow_run_id"))
        if run is None:
            assert t.user_attrs.get("duplicate_of") is not None, f"trial {t.number} has no MLflow run"
            continue
        assert run.data.tags["optuna.trial_number"] == str(t.number)
        if t.state.name == "COMPLETE":
            assert run.info.status == "FINISHED", (t.number, run.info.status)
        else:
            assert run.info.status in ("FAILED", "KILLED"), (t.number, run.info.status)
            assert run.data.tags.get("sweep.fail_reason"), t.number


def grid_of(doc: dict) -> list[dict]:
    space = doc["search_space"]
    return [{"pruning_ratio": p, "distill_temperature": t, "distill_alpha": a, "precision": q,
             "runtime": "torch", "vocabulary": "full"}  # the dimensions these tests leave at their defaults
            for p in space["pruning_ratio"] for t in space["distill_temperature"]
            for a in space["distill_alpha"] for q in space["precision"]]


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie still answers kill(0) until reaped
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
