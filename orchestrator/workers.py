"""Running one job in a child process: CPU/GPU placement, heartbeats, timeouts, and the reason it died.

Each trial gets its own process so that a crash, an out-of-memory kill or a hung trial is that
trial's failure and never the sweep's. The child dies with its parent (PR_SET_PDEATHSIG), so a
killed worker leaves no orphan training in the background.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HOST = socket.gethostname()


@dataclass
class Placement:
    """Where a worker's jobs run: CPU cores (affinity + thread count) and at most one GPU."""

    cores: list[int]
    gpu: str | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(len(self.cores))
        env["MKL_NUM_THREADS"] = str(len(self.cores))
        env["TOKENIZERS_PARALLELISM"] = "false"
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        return env


def available_cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def visible_gpus() -> list[str]:
    """GPU ids from CUDA_VISIBLE_DEVICES, else counted with nvidia-smi (no torch import here)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]


def placements(n_workers: int) -> list[Placement]:
    """Split cores evenly between workers (wrapping when workers outnumber cores) and one GPU each."""
    cores, gpus = available_cores(), visible_gpus()
    per = max(1, len(cores) // n_workers)
    out = []
    for i in range(n_workers):
        chunk = [cores[(i * per + j) % len(cores)] for j in range(per)]
        out.append(Placement(cores=chunk, gpu=gpus[i % len(gpus)] if gpus else None))
    return out


def default_workers() -> int:
    return max(1, len(visible_gpus()))


def _die_with_parent(cores: list[int]) -> Callable[[], None]:
    def setup() -> None:
        # The child stays in the parent's process group, so Ctrl-C reaches it too.
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
        try:
            os.sched_setaffinity(0, cores)
        except (AttributeError, OSError):
            pass

    return setup


@dataclass
class Outcome:
    returncode: int | None
    seconds: float
    interrupted: bool = False
    timed_out: bool = False

    def reason(self, log_tail: str) -> str:
        if self.interrupted:
            return "interrupted (Ctrl-C or worker shutdown)"
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s (budget.trial_timeout_minutes)"
        rc = self.returncode
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            hint = " (the kernel's out-of-memory killer sends this)" if -rc == signal.SIGKILL else ""
            return f"worker process killed by {name}{hint}; last output: {log_tail[-500:]}"
        return f"worker process exited with code {rc}; last output: {log_tail[-1500:]}"


def run_job(
    kind: str,
    job: Path,
    result: Path,
    log: Path,
    placement: Placement,
    *,
    stop: threading.Event,
    timeout_s: float | None = None,
    heartbeat: Callable[[], None] | None = None,
    heartbeat_s: float = 10.0,
) -> Outcome:
    """Run `python -m trainers.worker KIND JOB RESULT`, beating the heartbeat while it runs."""
    cmd = [sys.executable, "-m", "trainers.worker", kind, str(job), str(result)]
    start = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=placement.env(), preexec_fn=_die_with_parent(placement.cores)
        )
        outcome = Outcome(returncode=None, seconds=0.0)
        last_beat = start
        while True:
            try:
                outcome.returncode = proc.wait(timeout=min(heartbeat_s, 1.0))
                break
            except subprocess.TimeoutExpired:
                pass
            if heartbeat is not None and time.monotonic() - last_beat >= heartbeat_s:
                heartbeat()
                last_beat = time.monotonic()
            if stop.is_set():
                outcome.interrupted = True
            elif timeout_s is not None and time.monotonic() - start > timeout_s:
                outcome.timed_out = True
            if outcome.interrupted or outcome.timed_out:
                proc.terminate()
                try:
                    outcome.returncode = proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    outcome.returncode = proc.wait()
                break
    outcome.seconds = time.monotonic() - start
    return outcome


def tail(path: Path, n: int = 4000) -> str:
    try:
        data = path.read_bytes()[-n:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
