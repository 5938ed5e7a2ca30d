"""The MLflow UI server behind `sweep ui`: started in its own process group, stopped as a whole.

`mlflow ui` forks a web server with several workers; stopping only the process we started would
leave the workers running and holding the port. The server therefore gets its own session (its
own process group), and Ctrl-C or SIGTERM to `sweep ui` ends that whole group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def command(uri: str, host: str, port: int, artifact_root: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if artifact_root is not None:
        cmd += ["--default-artifact-root", artifact_root.resolve().as_uri()]
    return cmd


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies left for init to reap do not count)."""
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def stop_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGTERM to the server's whole process group, SIGKILL to whatever is left after `grace` s.

    The grace is short on purpose: a UI server holds nothing to flush, and uvicorn's supervisor
    respawns workers that die of the group-wide SIGTERM before it sees its own, which would hold
    the port for many seconds more."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):  # gone, or only zombies that init has not reaped
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, or its zombie keeps the group alive
            if not _group_alive(pgid):
                break
            time.sleep(0.05)
        if not _group_alive(pgid):
            break
    proc.wait()


class _Stop(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def serve(cmd: list[str]) -> int:
    """Run the server until it exits or this process gets Ctrl-C/SIGTERM; then stop its whole group.
    Returns the server's exit code, or 128 + the signal number when stopped by a signal."""

    def on_signal(signum, _frame):
        raise _Stop(signum)

    proc: subprocess.Popen | None = None
    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        proc = subprocess.Popen(cmd, start_new_session=True)
        code = proc.wait()
    except _Stop as stop:
        code = 128 + stop.signum
    finally:
        for s in STOP_SIGNALS:  # a second Ctrl-C while stopping must not leave the group half-stopped
            signal.signal(s, signal.SIG_IGN)
        if proc is not None:
            stop_group(proc)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


def experiments_with_runs(uri: str, warn=print) -> list[tuple[str, str, bool]]:
    """(name, id, has the sweep's runs view) of the store's experiments that hold runs; none for a
    store that does not exist yet."""
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import RUNS_VIEW_TAG

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.search_experiments(max_results=200)
        return [(e.name, e.experiment_id, RUNS_VIEW_TAG in e.tags) for e in found
                if client.search_runs([e.experiment_id], max_results=1)]
    except Exception as exc:  # an unreachable server must not keep the UI from starting
        warn(f"could not list experiments in {uri}: {exc}")
        return []
