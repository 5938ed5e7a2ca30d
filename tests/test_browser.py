"""What users look at, checked in a real browser: the Pareto page and `sweep ui`'s MLflow runs view.

A real MLflow sqlite store (a study's parent run and two trial runs, written by the project's own
Tracker), a real `sweep ui` server, and headless Chromium rendering the pages. Chromium comes from
Debian's `chromium` package (`.ci/run` installs it); without it the browser tests skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.plots import label, write_pareto_plots
from orchestrator.tracking import (EXPERIMENT_KIND, MODEL_TRAINING, RUNS_VIEW_TAG, Tracker, default_tracking_uri,
                                   runs_url)
from test_plots import OBJECTIVES, TEACHER, Bound, students
from trainers import metrics as vocab

STUDY = "tiny"
TRIALS = {"trial-0 ratio 0.0 fp32": (0.0, "fp32", 0.91, 3.2), "trial-1 ratio 0.5 int8": (0.5, "int8", 0.88, 1.9)}
BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="Chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")


# --- helpers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            return True
        except OSError:
            return False


def chromium(tmp: Path, url: str, *, budget_ms: int, screenshot: Path | None = None) -> str:
    """The DOM of `url` after `budget_ms` of virtual time (or a screenshot of it)."""
    args = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1400,1000",
            f"--virtual-time-budget={budget_ms}"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def render_until(tmp: Path, url: str, wanted: list[str], timeout: float = 90) -> str:
    """Dump the DOM with a growing time budget until every wanted text is on the page (React apps)."""
    deadline, budget, dom = time.monotonic() + timeout, 3000, ""
    while time.monotonic() < deadline:
        dom = chromium(tmp, url, budget_ms=budget)
        if all(w in dom for w in wanted):
            return dom
        budget = min(budget * 2, 30000)
    missing = [w for w in wanted if w not in dom]
    raise AssertionError(f"{url} never showed {missing} within {timeout} s; page text: {re.sub('<[^>]+>', ' ', dom)[:1500]}")


def start_ui(root: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "ui", "--root", str(root), "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while not port_answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"sweep ui did not answer on port {port}:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return proc


def still_running(p: psutil.Process, groups: set[int] | None = None) -> str | None:
    """`p` described (pid, command) if it still runs (in one of `groups`, when given), else None.
    A zombie has stopped: in a container without an init that reaps, an orphan's zombie stays
    listed (and signalable) until the container ends, so psutil and killpg still see its pid."""
    try:
        if p.status() == psutil.STATUS_ZOMBIE or (groups is not None and os.getpgid(p.pid) not in groups):
            return None
        return f"{p.pid} {' '.join(p.cmdline()[:4])}"
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def stop(proc: subprocess.Popen, family: list[psutil.Process] = ()) -> None:
    """Teardown: SIGTERM `sweep ui` (which stops its server group), SIGKILL what is left after 10 s,
    including `family` (its descendants as seen earlier, in case it died and left them orphaned)."""
    family = list(family)
    if proc.poll() is None:
        family += psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str]:
    """A finished tiny study in a real MLflow sqlite store: the parent run and two trial runs."""
    root = tmp_path_factory.mktemp("ui-store")
    tracker = Tracker(default_tracking_uri(root), root)
    experiment = tracker.experiment_id(STUDY)
    parent = tracker.parent_run(experiment, STUDY, params={"n_trials": 2}, tags={}, sweep_file=None)
    for name, (ratio, precision, accuracy, latency) in TRIALS.items():
        run = tracker.child_run(experiment, parent, STUDY, name=name, role="trial", tags={})
        tracker.log(run, params={"pruning_ratio": ratio, "precision": precision},
                    metrics={vocab.VAL_ACCURACY: accuracy, vocab.LATENCY_P50_BS1: latency})
        tracker.end(run, "FINISHED")
    tracker.end(parent, "FINISHED")
    return root, experiment


@pytest.fixture(scope="module")
def ui(store, tmp_path_factory):
    root, experiment = store
    port = free_port()
    log = tmp_path_factory.mktemp("ui-log") / "ui.log"
    proc = start_ui(root, port, log)
    family = psutil.Process(proc.pid).children(recursive=True)
    yield f"http://127.0.0.1:{port}", experiment, log
    stop(proc, family)


# --- tests ---------------------------------------------------------------------------------------
def test_experiment_is_a_model_training_experiment_with_the_sweep_view(store):
    root, experiment = store
    tags = MlflowClient(default_tracking_uri(root)).get_experiment(experiment).tags
    assert tags[EXPERIMENT_KIND] == MODEL_TRAINING
    view = json.loads(tags[RUNS_VIEW_TAG])
    assert f"metrics.`{vocab.VAL_ACCURACY}`" in view["selectedColumns"] and view["orderByAsc"] is False


def test_ui_prints_the_runs_view_link(ui):
    base, experiment, log = ui
    link = runs_url(base, experiment)
    assert link == f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning&viewStateShareKey=sweep"
    assert link in log.read_text()


@needs_browser
def test_runs_view_shows_the_trials_and_their_metrics(ui, tmp_path):
    base, experiment, _ = ui
    url = runs_url(base, experiment)
    dom = render_until(tmp_path, url, [*TRIALS, f"study:{STUDY}", vocab.VAL_ACCURACY, vocab.LATENCY_P50_BS1])
    assert "Model registry" in dom and "Judges" not in dom  # the model-training sidebar, not GenAI's
    for _, _, accuracy, latency in TRIALS.values():  # the metric columns hold the values, not just the headers
        assert f">{accuracy}<" in dom and f">{latency}<" in dom
    chromium(tmp_path, url, budget_ms=15000, screenshot=tmp_path / "runs.png")
    assert (tmp_path / "runs.png").stat().st_size > 20_000


@needs_browser
def test_pareto_page_draws_every_student_and_the_teacher(tmp_path):
    points = students(8)
    write_pareto_plots(points, TEACHER, OBJECTIVES, [Bound("accuracy", max_drop=0.05)], tmp_path, title="tiny")
    dom = render_until(tmp_path, (tmp_path / "pareto.html").as_uri(), ["teacher", "Pareto front"])
    students_drawn = re.findall(r'<path class="point plotly-customdata"', dom)  # students carry their label
    assert len(students_drawn) == len(points)
    assert len(re.findall(r'<path class="point"', dom)) == 1  # the teacher's star
    for point in points:
        assert label(point) in dom
    assert "constraint: val_accuracy ≥ teacher − 0.05 = 0.855" in dom
    chromium(tmp_path, (tmp_path / "pareto.html").as_uri(), budget_ms=3000, screenshot=tmp_path / "pareto-page.png")
    assert (tmp_path / "pareto-page.png").stat().st_size > 20_000


def test_sigterm_stops_the_server_and_all_its_workers(store, tmp_path):
    root, _ = store
    port = free_port()
    proc = start_ui(root, port, tmp_path / "ui.log")
    family: list[psutil.Process] = []
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 2, "expected the MLflow server and its workers under sweep ui"
        groups = {os.getpgid(p.pid) for p in family if p.is_running()}
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        while not port_is_free(port) and time.monotonic() - start < 5:
            time.sleep(0.1)
        assert port_is_free(port), f"port {port} still held 5 s after SIGTERM"
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(family, timeout=1)
        survivors = [described for p in alive if (described := still_running(p))]
        assert not survivors, f"survived SIGTERM: {survivors}"
        in_groups = [described for p in psutil.process_iter() if (described := still_running(p, groups))]
        assert not in_groups, f"still running in the server's process groups {groups}: {in_groups}"
        assert proc.returncode == 128 + signal.SIGTERM
    finally:
        stop(proc, family)
