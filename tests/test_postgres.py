"""Two machines' worth of workers on one study: PostgreSQL storage, an `mlflow server`, a worker SIGKILLed.

Needs a server: set SWEEP_TEST_POSTGRES_URL (`.ci/postgres.sh` starts one and prints the URL);
skipped otherwise. The joining worker gets another SWEEP_HOST_ID, so the launch can only tell it
died from its missing heartbeats, exactly as across machines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from conftest import make_topics_csv, sweep_doc, write_sweep
from procs import (assert_consistent, finish, grid_of, kill_group, load_study, mlflow_runs, output, pid_gone,
                   running_with_pid, start_sweep, wait_for)

pytestmark = pytest.mark.postgres
URL_ENV = "SWEEP_TEST_POSTGRES_URL"


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get(URL_ENV)
    if not url:
        pytest.skip(f"{URL_ENV} not set (run .ci/postgres.sh and export its last line)")
    import sqlalchemy

    from orchestrator.study import sqlalchemy_url

    try:
        engine = sqlalchemy.create_engine(sqlalchemy_url(url), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any reason it cannot be reached means skip
        pytest.skip(f"PostgreSQL at {URL_ENV} not reachable: {type(exc).__name__}: {str(exc)[:200]}")
    return url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback (sqlite backend, proxied artifacts), as the recipe runs it."""
    base = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
         "--artifacts-destination", str(base / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for("mlflow server", up, timeout=120, procs=(proc,))
        yield uri
    finally:
        kill_group(proc)


def test_launch_and_worker_share_a_study_and_survive_a_killed_worker(postgres_url, mlflow_server, tmp_path, tiny_encoder):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    data = make_topics_csv(tmp_path / "topics.csv")
    doc = sweep_doc(tiny_encoder, data, name=name, **{"training.epochs": 1, "budget.max_retries": 1})
    sweep = write_sweep(tmp_path, doc, "pg.yaml")
    common = ("--storage", postgres_url, "--tracking-uri", mlflow_server, "--workers", "1")
    launch = start_sweep("launch", str(sweep), *common, "--no-export", cwd=tmp_path, log_name="launch")
    worker = None
    try:
        def running(pid=None):
            try:
                return running_with_pid(load_study(postgres_url, name, tmp_path), pid)
            except KeyError:
                return None

        wait_for("the launch's first trial", running, procs=(launch,))
        worker = start_sweep("worker", name, *common, cwd=tmp_path, log_name="worker", env={"SWEEP_HOST_ID": "node-b"})
        victim = wait_for("a trial run by the joined worker", lambda: running(worker.pid), procs=(launch, worker))
        time.sleep(1.0)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        wait_for("the killed worker's trial process to die with it", lambda: pid_gone(victim.user_attrs["trial_pid"]), timeout=30)
        assert finish(launch, tmp_path, "launch") == 0, output(tmp_path, "launch")[-4000:]
    finally:
        kill_group(launch)
        if worker is not None:
            kill_group(worker)

    text = output(tmp_path, "launch")
    assert "locked" not in text.lower()
    study = load_study(postgres_url, name, tmp_path)
    _, runs = mlflow_runs(mlflow_server, name)
    assert_consistent(study, runs, grid_of(doc))
    dead = study.trials[victim.number]
    assert dead.state.name == "FAIL" and "no heartbeat" in dead.user_attrs["fail_reason"], dead.user_attrs
    assert f"trial {victim.number}: FAILED: worker" in text and "queued again" in text
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert [t.state.name for t in retried] == ["COMPLETE"] and retried[0].params == victim.params
    assert retried[0].user_attrs["attempt"] == 2
    # The joined worker really ran trials too, logged to the same tracking server under the same parent.
    assert {t.user_attrs["host_id"] for t in study.trials if "host_id" in t.user_attrs} >= {"node-b"}
    parent = next(r for r in runs if r.data.tags["sweep.role"] == "study")
    assert parent.info.status == "FINISHED"
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs if r.data.tags["sweep.role"] == "trial")


def test_storage_lock_excludes_across_connections(postgres_url):
    """The advisory lock that serialises ask/enqueue between machines: never held twice at once."""
    import threading

    from orchestrator.study import storage_lock

    spans: list[tuple[float, float]] = []

    def hold() -> None:
        with storage_lock(postgres_url):
            start = time.monotonic()
            time.sleep(0.3)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans.sort()
    assert len(spans) == 3
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
