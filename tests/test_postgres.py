"""Two machines' worth of workers on one study: PostgreSQL storage, an `mlflow server`, a worker SIGKILLed.

Needs a server: set SWEEP_TEST_POSTGRES_URL (`.ci/postgres.sh` starts one and prints the URL);
skipped otherwise. The joining worker gets another SWEEP_HOST_ID, so the launch can only tell it
died from its missing heartbeats, exactly as across machines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

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


@dataclass
class Server:
    uri: str
    base: Path  # server.log (its access log) and artifacts/ (what it stored)

    def requests(self) -> int:
        """REST calls the server has answered so far (its uvicorn access log lines)."""
        return len(re.findall(r'"(?:GET|POST|PUT|PATCH|DELETE) /', (self.base / "server.log").read_text()))

    def run_bytes(self, run_id: str) -> int:
        return sum(f.stat().st_size for d in (self.base / "artifacts").glob(f"*/{run_id}") for f in d.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback (sqlite backend, proxied artifacts), as the recipe runs it."""
    base = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
         "--serve-artifacts", "--artifacts-destination", str(base / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
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
        yield Server(uri, base)
    finally:
        kill_group(proc)


def test_launch_and_worker_share_a_study_and_survive_a_killed_worker(postgres_url, mlflow_server, tmp_path, tiny_encoder):
    mlflow_server = mlflow_server.uri
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


def _pg_counts(url: str) -> dict[str, int]:
    """PostgreSQL's own statistics for the test database: transactions and rows touched (pg_stat_database)."""
    import sqlalchemy

    from orchestrator.study import sqlalchemy_url

    engine = sqlalchemy.create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select pg_stat_clear_snapshot()"))
            row = conn.execute(sqlalchemy.text(
                "select xact_commit + xact_rollback, tup_returned, tup_fetched, tup_inserted + tup_updated + tup_deleted "
                "from pg_stat_database where datname = current_database()")).one()
    finally:
        engine.dispose()
    return dict(zip(("transactions", "rows_returned", "rows_fetched", "rows_written"), map(int, row)))


def _phases(root: Path, name: str) -> set[str]:
    path = root / "trials" / name / "prepare" / "progress.jsonl"
    return {json.loads(line)["phase"] for line in path.read_text().splitlines() if line.strip()} if path.exists() else set()


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_machines_one_teacher_and_a_killed_launcher(postgres_url, mlflow_server, tmp_path, tiny_encoder):
    """Two roots with separate caches share only the PostgreSQL study and the tracking server: the launcher
    fine-tunes and publishes the teacher, the joining worker downloads it (never fine-tunes), the launcher is
    SIGKILLed mid-sweep, the worker finishes the study, and a relaunch shows the whole front once."""
    name = f"pg2-{uuid.uuid4().hex[:8]}"
    data = make_topics_csv(tmp_path / "topics.csv")
    # four grid points: the launcher cannot run them all before the worker (downloading the teacher) has one
    doc = sweep_doc(tiny_encoder, data, name=name, **{"training.epochs": 1, "budget.max_retries": 1})
    sweep = write_sweep(tmp_path, doc, "two.yaml")
    root_a, root_b = tmp_path / "machine-a", tmp_path / "machine-b"
    common = ("--storage", postgres_url, "--tracking-uri", mlflow_server.uri, "--workers", "1")
    pg0, http0, t0 = _pg_counts(postgres_url), mlflow_server.requests(), time.time()
    launch = start_sweep("launch", str(sweep), *common, "--root", str(root_a), "--no-export", cwd=tmp_path,
                         log_name="launch")
    worker = None
    try:
        def study():
            try:
                return load_study(postgres_url, name, tmp_path)
            except KeyError:
                return None

        wait_for("the launch to create the study", study, procs=(launch,))
        # joins while the launcher still fine-tunes: it waits for the published teacher, it does not build one
        worker = start_sweep("worker", name, *common, "--root", str(root_b), "--teacher-wait", "10", cwd=tmp_path,
                             log_name="worker", env={"SWEEP_HOST_ID": "node-b"})
        wait_for("a trial of the launcher and one of the worker running at once",
                 lambda: running_with_pid(study(), launch.pid) and running_with_pid(study(), worker.pid),
                 procs=(launch, worker), timeout=900)  # the fine-tune comes first
        victim = running_with_pid(study(), launch.pid)
        os.killpg(launch.pid, signal.SIGKILL)  # the launching machine is lost mid-sweep, its trial with it
        launch.wait()
        # The steady load of one process running one trial (heartbeats, reaper, progress display), in a quiet window
        # of the retried trial's training (no ask/tell inside it).
        wait_for("the worker rerunning the launcher's trial", lambda: [
            t for t in study().trials if t.user_attrs.get("retry_of") == victim.number and "trial_pid" in t.user_attrs
            and t.state.name == "RUNNING"], procs=(worker,), timeout=300)
        time.sleep(2.0)
        quiet0, quiet_t0 = _pg_counts(postgres_url), time.time()
        time.sleep(8.0)
        quiet1, quiet_s = _pg_counts(postgres_url), time.time() - quiet_t0
        still = [t for t in study().trials if t.user_attrs.get("retry_of") == victim.number and t.state.name == "RUNNING"]
        assert finish(worker, tmp_path, "worker", timeout=900) == 0, output(tmp_path, "worker")[-4000:]
        swept_s = time.time() - t0
        pg1, http1 = _pg_counts(postgres_url), mlflow_server.requests()
        phases_a = _phases(root_a, name)  # the relaunch's own preparation (a cache hit) replaces them
        relaunch = start_sweep("launch", str(sweep), *common, "--root", str(root_a), "--no-export", cwd=tmp_path,
                               log_name="relaunch")
        assert finish(relaunch, tmp_path, "relaunch") == 0, output(tmp_path, "relaunch")[-4000:]
    finally:
        kill_group(launch)
        if worker is not None:
            kill_group(worker)

    done = load_study(postgres_url, name, tmp_path)
    client, runs = mlflow_runs(mlflow_server.uri, name)
    assert_consistent(done, runs, grid_of(doc))  # nothing lost, nothing run twice
    assert f"of {len(grid_of(doc))} completed trials" in output(tmp_path, "relaunch")  # the complete front
    dead = done.trials[victim.number]
    assert dead.state.name == "FAIL" and "no heartbeat" in dead.user_attrs["fail_reason"], dead.user_attrs

    # One teacher: fine-tuned on machine a only, downloaded and verified on machine b.
    parent = next(r for r in runs if r.data.tags["sweep.role"] == "study")
    key = parent.data.tags["sweep.teacher_key"]
    assert parent.data.tags["sweep.teacher_artifacts"] == f"teacher/{key}"
    assert "teacher_fine_tune" in phases_a
    assert (root_b / "trials" / name / "prepare" / "result.json").exists()  # b prepared (a cache hit: no phase ran)
    assert "teacher_fine_tune" not in _phases(root_b, name), _phases(root_b, name)
    entry_a, entry_b = root_a / "cache" / "teachers" / key, root_b / "cache" / "teachers" / key
    fetched = json.loads((entry_b / "fetched.json").read_text())
    assert fetched["artifact_path"] == f"teacher/{key}/{key}" and not (entry_a / "fetched.json").exists()
    assert _sha(entry_b / "train_logits.safetensors") == _sha(entry_a / "train_logits.safetensors")
    assert "teacher: downloaded" in output(tmp_path, "worker")
    by_b = [t for t in done.trials if t.user_attrs.get("host_id") == "node-b" and t.state.name == "COMPLETE"]
    assert by_b and any(t.user_attrs.get("retry_of") == victim.number for t in by_b)
    run_of = {r.info.run_id: r for r in runs}
    for t in by_b:
        assert run_of[t.user_attrs["mlflow_run_id"]].data.tags["sweep.teacher_key"] == key
        used = Path(yaml.safe_load((Path(t.user_attrs["output_dir"]) / "trial_config.yaml").read_text())["teacher_logits"])
        assert used == entry_b / "train_logits.safetensors"  # the students of b distilled from the download

    # No machine's path in what the other reads: the study's attributes, the runs' params and tags.
    shared = json.dumps([done.user_attrs, [(r.data.params, r.data.tags) for r in runs if r.data.tags["sweep.role"] != "trial"]])
    for root in (root_a, root_b):
        assert str(root) not in shared
    for r in runs:
        if r.data.tags["sweep.role"] == "trial":
            assert not [v for v in {**r.data.params, **r.data.tags}.values() if "/cache/" in v], r.data.tags

    # Figures for docs/distributed.md (printed with -s): storage and tracking-server work per trial.
    trials = len(done.trials)
    per_trial = {k: (pg1[k] - pg0[k]) / trials for k in pg0}
    trial_bytes = [mlflow_server.run_bytes(t.user_attrs["mlflow_run_id"]) for t in done.trials if t.state.name == "COMPLETE"]
    manifest = json.loads(Path(client.download_artifacts(parent.info.run_id, f"teacher/{key}/manifest.json",
                                                         str(tmp_path))).read_text())
    quiet = {k: round((quiet1[k] - quiet0[k]) / quiet_s, 2) for k in quiet0} if still else "window not quiet"
    print("\nSCALE", json.dumps({"trials": trials, "wall_s": round(swept_s, 1), "heartbeat_s": 1,
                                 "postgres_per_second_one_process_one_trial": quiet,
                                 "postgres_per_trial": per_trial, "mlflow_requests_per_trial": (http1 - http0) / trials,
                                 "trial_artifact_bytes_mean": sum(trial_bytes) / len(trial_bytes),
                                 "teacher_bytes": sum(f["bytes"] for f in manifest["files"].values()),
                                 "teacher_files": len(manifest["files"])}))


def test_worker_waits_for_the_published_teacher_within_its_bound(mlflow_server, tmp_path):
    """The wait of a worker that joins while the launcher still prepares: a message, then the teacher once the
    tag is set; with nothing published, a clear error after the bound (never a second build)."""
    import threading

    from orchestrator import teacher_share
    from orchestrator.spec import SpecError
    from orchestrator.tracking import Tracker

    tracker = Tracker(mlflow_server.uri, tmp_path)
    experiment = tracker.experiment_id(f"wait-{uuid.uuid4().hex[:8]}")
    run_id = tracker.client.create_run(experiment).info.run_id
    said: list[str] = []
    with pytest.raises(SpecError, match=r"no teacher published .* after 1 s .*does not build a second teacher"):
        teacher_share.wait_published(tracker, run_id, bound_s=1.0, log=said.append, poll_s=0.2)
    assert said and "waiting for the launching machine to publish the teacher" in said[0]
    later = threading.Timer(1.0, lambda: tracker.log(run_id, tags={teacher_share.PUBLISHED_TAG: "teacher/abc"}))
    later.start()
    try:
        assert teacher_share.wait_published(tracker, run_id, bound_s=60.0, log=said.append, poll_s=0.2) == "teacher/abc"
    finally:
        later.join()
    tracker.client.delete_run(run_id)
    with pytest.raises(SpecError, match="launch may have failed"):
        teacher_share.wait_published(tracker, run_id, bound_s=60.0, log=said.append, poll_s=0.2)


def test_published_teacher_is_verified_before_use(mlflow_server, tmp_path):
    """Publish a teacher cache entry through the server, fetch it into another root (identical bytes, where it
    came from), then corrupt one stored artifact: a third root refuses it and keeps nothing."""
    from orchestrator import teacher_share
    from orchestrator.spec import SpecError
    from orchestrator.tracking import Tracker
    from trainers.jobs import PrepareResult

    entry = tmp_path / "a" / "cache" / "teachers" / "k123"
    (entry / "model").mkdir(parents=True)
    (entry / "model" / "model.safetensors").write_bytes(os.urandom(4096))
    (entry / "model" / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    (entry / "train_logits.safetensors").write_bytes(os.urandom(1024))
    (entry / "meta.json").write_text("{}")
    (entry / "DONE").write_text("now")
    prepared = PrepareResult(teacher_dir=str(entry / "model"), teacher_logits=str(entry / "train_logits.safetensors"),
                             teacher_key="k123", data_fingerprint="f" * 64)
    tracker = Tracker(mlflow_server.uri, tmp_path)
    run_id = tracker.client.create_run(tracker.experiment_id(f"share-{uuid.uuid4().hex[:8]}")).info.run_id
    said: list[str] = []
    assert teacher_share.publish(tracker, run_id, prepared, said.append) == 4096 + 1024 + len('{"architectures": ["BertForSequenceClassification"]}') + 2
    assert teacher_share.publish(tracker, run_id, prepared, said.append) == 0  # once per key
    path = teacher_share.published(tracker, run_id)
    assert path == "teacher/k123"

    got = teacher_share.fetch(tracker, run_id, path, tmp_path / "b", said.append)
    assert got == {"key": "k123", "data_fingerprint": "f" * 64}
    fetched = tmp_path / "b" / "cache" / "teachers" / "k123"
    for rel in ("model/model.safetensors", "model/config.json", "train_logits.safetensors", "meta.json"):
        assert (fetched / rel).read_bytes() == (entry / rel).read_bytes(), rel
    assert (fetched / "DONE").exists() and json.loads((fetched / "fetched.json").read_text())["parent_run_id"] == run_id

    stored = next((mlflow_server.base / "artifacts").glob(f"*/{run_id}/artifacts/teacher/k123/k123/train_logits.safetensors"))
    stored.write_bytes(os.urandom(1024))
    with pytest.raises(SpecError, match="train_logits.safetensors: sha256"):
        teacher_share.fetch(tracker, run_id, path, tmp_path / "c", said.append)
    assert not (tmp_path / "c" / "cache" / "teachers" / "k123").exists()
