"""Running one job in a child process: CPU/GPU placement, heartbeats, timeouts, and the reason it died.

(A *worker* is the orchestrator process running a study's trials; each job it runs gets a *child
process*, `python -m trainers.entry KIND JOB RESULT`.)

Each trial gets its own process so that a crash, an out-of-memory kill or a hung trial is that
trial's failure and never the sweep's. The child arms PR_SET_PDEATHSIG itself, first thing (a
preexec_fn would run between fork and exec of a multi-threaded parent, where it can deadlock), so
a killed worker leaves no orphan training in the background.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from orchestrator.placement import Placement, available_cores, default_workers, placements, visible_gpus  # noqa: F401
from trainers.forkserver import ForkServer

HOST = socket.gethostname()


def _host_id() -> str:
    """Where a pid means something: host, boot and PID namespace (containers may share a hostname).

    SWEEP_HOST_ID overrides it; workers then only judge each other by heartbeats, as across machines.
    """
    if os.environ.get("SWEEP_HOST_ID"):
        return os.environ["SWEEP_HOST_ID"]
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = "?"
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = "?"
    return f"{HOST}/{boot}/{ns}"


HOST_ID = _host_id()
PROCESS_STARTED = psutil.Process().create_time()

# Runs in the child before anything else: die with the parent, take the executor's cores, import
# the trial code (timed, for the overhead benchmark), then run the job module exactly as
# `python -m trainers.entry` would.
_BOOT = """\
import time
started = time.time()
import json, os, runpy, sys
from trainers.forkserver import die_with_parent, take_cores
parent = int(sys.argv.pop(1))
die_with_parent()  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(75)  # the parent died before the signal was armed
take_cores()
if sys.argv[1] == "trial":
    import trainers.config, trainers.jobs, trainers.trial
try:
    with open(sys.argv[3] + ".boot.json", "w") as f:
        json.dump({"started_at": started, "imported_at": time.time()}, f)
except OSError:
    pass
runpy.run_module("trainers.entry", run_name="__main__", alter_sys=True)
"""


@dataclass
class Outcome:
    returncode: int | None
    seconds: float
    interrupted: bool = False
    timed_out: bool = False
    abandoned: bool = False  # the heartbeat said the trial was given away (failed by another worker)
    spawned_at: float = 0.0  # wall clock, for the orchestration overhead benchmark
    exited_at: float = 0.0

    @property
    def died(self) -> bool:
        """The process ended abnormally on its own (signal, crash): worth one more try elsewhere."""
        return not (self.interrupted or self.timed_out or self.abandoned) and self.returncode not in (0, 1)

    def reason(self, log_tail: str) -> str:
        if self.interrupted:
            return "interrupted (Ctrl-C, SIGTERM or worker shutdown)"
        if self.abandoned:
            return "abandoned: another worker marked this trial failed (its heartbeats were late) and queued it again"
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s (budget.trial_timeout_minutes)"
        rc = self.returncode
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            hint = " (the kernel's out-of-memory killer sends this)" if -rc == signal.SIGKILL else ""
            return f"trial process killed by {name}{hint}; last output: {log_tail[-500:]}"
        return f"trial process exited with code {rc}; last output: {log_tail[-1500:]}"


_STOP_CODES = {130, 143, -signal.SIGINT, -signal.SIGTERM}


def run_job(
    kind: str,
    job: Path,
    result: Path,
    log: Path,
    placement: Placement,
    *,
    stop: threading.Event,
    timeout_s: float | None = None,
    heartbeat: Callable[[], bool | None] | None = None,
    heartbeat_s: float = 10.0,
    on_start: Callable[[int], None] | None = None,
    on_poll: Callable[[], None] | None = None,
    poll_s: float = 1.0,
) -> Outcome:
    """Run `python -m trainers.entry KIND JOB RESULT`, beating the heartbeat while it runs.

    `on_poll` is called every `poll_s` seconds while the child runs (progress display, early stopping);
    an error in it is said on stderr once and never ends the job. `heartbeat` returning False abandons the job (terminated). A job that ends while `stop` is set,
    or of SIGINT/SIGTERM while the worker is being stopped, counts as interrupted, not failed.
    """
    outcome = Outcome(returncode=None, seconds=0.0, spawned_at=time.time())
    if stop.is_set():
        outcome.interrupted = True
        outcome.exited_at = outcome.spawned_at
        return outcome
    start = time.monotonic()
    with open(log, "ab") as out:
        proc = _beating(lambda: _start(kind, job, result, log, out, placement), heartbeat, heartbeat_s)
        try:
            if on_start is not None:
                on_start(proc.pid)
            last_beat = start
            poll_error = None
            while True:
                try:
                    outcome.returncode = proc.wait(timeout=min(heartbeat_s, poll_s))
                    break
                except subprocess.TimeoutExpired:
                    pass
                if on_poll is not None:
                    try:
                        on_poll()
                    except Exception as exc:  # a progress hiccup must not cost the trial
                        if repr(exc) != poll_error:
                            print(f"{kind} {job}: progress polling: {exc!r}", file=sys.stderr)
                        poll_error = repr(exc)
                if heartbeat is not None and time.monotonic() - last_beat >= heartbeat_s:
                    last_beat = time.monotonic()
                    if heartbeat() is False:
                        outcome.abandoned = True
                if stop.is_set():
                    outcome.interrupted = True
                elif timeout_s is not None and time.monotonic() - start > timeout_s:
                    outcome.timed_out = True
                if outcome.interrupted or outcome.timed_out or outcome.abandoned:
                    outcome.returncode = _terminate(proc)
                    break
        except BaseException:  # Ctrl-C in the thread that waits (e.g. preparation): take the child along
            _terminate(proc)
            raise
    if outcome.returncode in _STOP_CODES and not stop.is_set():
        stop.wait(2.0)  # Ctrl-C reached the child first; the worker's own stop follows in a moment
    if stop.is_set() and not (outcome.timed_out or outcome.abandoned) and outcome.returncode != 0:
        outcome.interrupted = True
    outcome.seconds = time.monotonic() - start
    outcome.exited_at = time.time()
    return outcome


# Trials start as forks of a warm server per placement (trainers/forkserver.py) that imported torch,
# transformers and the trial code once; SWEEP_WARM_START=0 (or a server that fails to start) falls
# back to a new interpreter per trial. See docs/architecture.md, "Starting a trial".
WARM_KINDS = {"trial"}
_servers: dict[tuple, ForkServer] = {}
_servers_lock = threading.Lock()


def _beating(start: Callable[[], subprocess.Popen], heartbeat: Callable[[], bool | None] | None,
             heartbeat_s: float) -> subprocess.Popen:
    """`start()`, beating the heartbeat meanwhile: a warm server still importing (prewarmed a moment ago)
    makes the first start wait, and a silent trial would be reaped by another worker as dead."""
    if heartbeat is None:
        return start()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat_s):
            try:
                heartbeat()
            except Exception:  # noqa: BLE001 - the loop after the start reports heartbeat trouble
                pass

    beater = threading.Thread(target=beat, name="heartbeat-while-starting", daemon=True)
    beater.start()
    try:
        return start()
    finally:
        done.set()
        beater.join()


def _start(kind: str, job: Path, result: Path, log: Path, out, placement: Placement):
    argv = [kind, str(job), str(result)]
    server = _warm_server(placement) if kind in WARM_KINDS else None
    if server is not None:
        try:
            return server.start(argv, log, placement.env())
        except (OSError, RuntimeError) as exc:
            print(f"forkserver: {exc!r}; starting a new interpreter instead", file=sys.stderr)
    cmd = [sys.executable, "-c", _BOOT, str(os.getpid()), *argv]
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=placement.env())


def _warm_server(placement: Placement) -> ForkServer | None:
    if os.environ.get("SWEEP_WARM_START", "1") == "0":
        return None
    key = (tuple(placement.cores), placement.gpu)
    with _servers_lock:
        server = _servers.get(key)
        if server is not None and server.alive():
            return server
        try:
            sock = Path(tempfile.mkdtemp(prefix="sweep-fork-")) / "server.sock"
            server = _servers[key] = ForkServer(sock, env=placement.env())
        except (OSError, RuntimeError) as exc:
            print(f"forkserver: could not start ({exc!r}); trials start a new interpreter each", file=sys.stderr)
            _servers.pop(key, None)
            return None
        return server


def prewarm(placements: list[Placement]) -> None:
    """Start each placement's server now (it imports while the sweep sets up), from the calling thread:
    the server dies with that thread (PR_SET_PDEATHSIG), so call it from the thread that runs the sweep."""
    for placement in placements:
        _warm_server(placement)


def close_servers() -> None:
    """Stop the warm servers (at exit, or between tests)."""
    with _servers_lock:
        for server in _servers.values():
            server.close()
            shutil.rmtree(Path(server.path).parent, ignore_errors=True)
        _servers.clear()


atexit.register(close_servers)


def _terminate(proc: subprocess.Popen, grace_s: float = 10.0) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def tail(path: Path, n: int = 4000) -> str:
    try:
        data = path.read_bytes()[-n:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def pid_alive(pid: int) -> bool:
    """`pid` runs. A zombie does not: it still answers kill(0) until reaped, and in a container whose
    PID 1 does not reap, a dead worker's zombie stays until the container ends."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # gone (ZombieProcess is one too)
        return False
    except psutil.Error:  # not ours to read: it exists
        return True


def process_alive(pid: int, started: float | None = None) -> bool:
    """`pid` runs and, when its start time is known, is the same process (pids get reused)."""
    if not pid_alive(pid):
        return False
    if started is None:
        return True
    try:
        return abs(psutil.Process(pid).create_time() - float(started)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
