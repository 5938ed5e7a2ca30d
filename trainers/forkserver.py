"""Start jobs without re-importing: a warm server that has imported torch, transformers and the trial
code once, and forks a fresh process for every job (`python -m trainers.forkserver SOCKET`).

Each job is still its own process: a fork of the server taken before the job touched anything, so a
crash, an out-of-memory kill or a hang is that job's failure only, and its memory starts where a
fresh interpreter's would after the same imports. The server never initialises CUDA (forking a
process that has would hand the child a broken CUDA context); every job initialises its own.

Per request (one JSON line on a fresh connection to the server's Unix socket), the server forks a
*monitor*, which forks the *job* and reports on the connection `{"pid": ...}` and then
`{"returncode": ...}` (negative: killed by that signal), like `subprocess.Popen`. Job, monitor and
server each die with their parent (PR_SET_PDEATHSIG), so nothing outlives the orchestrator. Any
process that knows the socket may ask (the trial asks for its fresh measuring process this way:
`SWEEP_FORKSERVER` in its environment).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ENV = "SWEEP_FORKSERVER"  # the socket path, in the environment of every job the server forks
# What a trial and its measuring process import anyway: imported once here, for every fork. None of
# it starts a thread or touches CUDA at import; a module that is not installed is skipped.
PRELOAD = ("torch", "transformers", "trainers.entry", "trainers.config", "trainers.jobs", "trainers.trial",
           "trainers.measuring", "trainers.measure.measure", "trainers.deploy.parity", "trainers.deploy.inference",
           "codecarbon", "codecarbon.core.emissions", "pandas", "transformers.models.bert.tokenization_bert",
           "onnx", "onnxruntime", "onnxruntime.quantization", "onnxscript", "torch.onnx")


def die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def take_cores() -> None:
    """Run on the cores SWEEP_CPU_AFFINITY names (the executor's), if any."""
    cores = os.environ.pop("SWEEP_CPU_AFFINITY", "")
    if cores and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, [int(c) for c in cores.split(",")])
        except OSError:
            pass


def _send(conn: socket.socket, doc: dict) -> None:
    conn.sendall((json.dumps(doc) + "\n").encode())


def _run_job(request: dict, started: float) -> int:
    """In the forked job process: the request's environment and log, then `trainers.entry.main`."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.update(request.get("env", {}))
    take_cores()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    argv = request["argv"]
    try:  # the overhead benchmark reads when the job started and when its imports were done (here: at once)
        Path(argv[2] + ".boot.json").write_text(json.dumps({"started_at": started, "imported_at": time.time(),
                                                            "forked": True}))
    except (OSError, IndexError):
        pass
    from trainers.entry import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the job's own failure, reported by its exit status
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _monitor(conn: socket.socket) -> None:
    """In the forked monitor: read the request, fork the job, report its pid and how it ended."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the job's to answer; the monitor reports it
    request = json.loads(conn.makefile("r").readline())
    started = time.time()
    pid = os.fork()
    if pid == 0:
        conn.close()
        os._exit(_run_job(request, started))
    _send(conn, {"pid": pid})
    _, status = os.waitpid(pid, 0)
    _send(conn, {"returncode": os.waitstatus_to_exitcode(status)})


def serve(path: str) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when the server ends
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    from trainers.measure.emissions import warm_hardware_probe

    warm_hardware_probe()  # CodeCarbon's 1-2 s hardware probe, once for every fork (CPU-only hosts)
    import torch

    if torch.cuda.is_initialized():  # pragma: no cover - a preload touched CUDA (is_available() itself would)
        raise SystemExit("forkserver: CUDA was initialised while preloading; refusing to fork from it")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    os.environ[ENV] = path
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        pid = os.fork()
        if pid == 0:
            listener.close()
            try:
                _monitor(conn)
            finally:
                os._exit(0)
        conn.close()
        while True:  # reap monitors that are done
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break


class ForkedJob:
    """A job forked by the server, with the parts of `subprocess.Popen` that `run_job` uses."""

    def __init__(self, path: str, argv: list[str], log: str | Path, env: dict[str, str] | None = None) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        _send(self._sock, {"argv": [str(a) for a in argv], "log": str(log), "env": env or {}})
        self._buf = b""
        line = self._readline(None)
        if not line:
            raise RuntimeError("forkserver: the monitor ended before starting the job")
        self.pid = int(json.loads(line)["pid"])
        self.returncode: int | None = None

    def _readline(self, timeout: float | None) -> bytes:
        """The next line from the monitor (b"" once it closed), or TimeoutExpired after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._sock], [], [], left)[0]:
                raise subprocess.TimeoutExpired("forked job", timeout or 0)
            data = self._sock.recv(4096)
            if not data:
                return b""
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            line = self._readline(timeout)
            # no line: the monitor died (its server went away) and the job died with it
            self.returncode = int(json.loads(line)["returncode"]) if line else -signal.SIGKILL
            self._sock.close()
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(timeout=0.001)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The server process, started once (it pays the imports once) and stopped with `close`."""

    def __init__(self, socket_path: str | Path, env: dict[str, str] | None = None, log: str | Path | None = None) -> None:
        self.path = str(socket_path)
        Path(self.path).unlink(missing_ok=True)
        out = open(log, "ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "trainers.forkserver", self.path], env=env,
                                     stdout=subprocess.PIPE, stderr=out)
        if out is not subprocess.DEVNULL:
            out.close()
        self._ready = False  # it imports in the background; the first `start` waits for it

    def wait_ready(self) -> None:
        if not self._ready:
            ready = self.proc.stdout.readline()
            if ready.strip() != b"ready":
                self.close()
                raise RuntimeError(f"forkserver did not start (exit code {self.proc.poll()})")
            self._ready = True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start(self, argv: list[str], log: str | Path, env: dict[str, str] | None = None) -> ForkedJob:
        self.wait_ready()
        return ForkedJob(self.path, argv, log, env)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        Path(self.path).unlink(missing_ok=True)


if __name__ == "__main__":
    serve(sys.argv[1])
