"""The pool of executors: one thread per placement (cores/GPU), each dispatching trials in turn.

An executor thread asks for the next trial (`trial_queue.next_trial`), dispatches it to a child process
(`dispatch.dispatch_trial`) and records any orchestration error; a reaper thread meanwhile fails
trials whose worker died (`recovery.reap_stale`). Ctrl-C and SIGTERM stop them cleanly.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable

from orchestrator.child_process import Placement
from orchestrator.context import Context, Log, heartbeat_seconds
from orchestrator.dispatch import dispatch_trial
from orchestrator.trial_queue import Next, next_trial
from orchestrator.recovery import close_orphan_runs, reap_stale, record_orchestrator_error


def executor_loop(ctx: Context, placement: Placement, stop: threading.Event, deadline: float | None, log: Log) -> None:
    """Ask for trials and dispatch them one after another until the sweep is done or stopped."""
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
            dispatch_trial(ctx, trial, placement, stop, log, asked_at=asked_at)
            errors = 0
        except Exception as exc:  # an orchestration error (storage, tracking) must not leave the trial RUNNING
            errors += 1
            record_orchestrator_error(ctx, trial, exc, log)
            if errors >= 3:
                raise


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


def run_executors(ctx: Context, placements: list[Placement], *, stop: threading.Event, log: Log, progress: Callable[[], None] | None = None) -> None:
    """Run one executor thread per placement until the sweep is done; KeyboardInterrupt (after recording everything) when stopped."""
    ctx.heartbeat_s = heartbeat_seconds(ctx)
    deadline = time.time() + ctx.spec.budget.timeout_minutes * 60 if ctx.spec.budget.timeout_minutes else None
    errors: list[BaseException] = []
    reap_stale(ctx, log)  # a relaunch first fails what the previous, dead run left RUNNING
    close_orphan_runs(ctx)

    def target(p: Placement, finished: threading.Event) -> None:
        try:
            executor_loop(ctx, p, stop, deadline, log)
        except BaseException as exc:  # surfaced after the others finish
            log(f"{threading.current_thread().name} stopped by {type(exc).__name__}: {exc}")
            errors.append(exc)
        finally:
            finished.set()

    done = threading.Event()
    finished = [threading.Event() for _ in placements]
    reaper = threading.Thread(target=_reap_loop, args=(ctx, done, log), name="reaper", daemon=True)
    threads = [threading.Thread(target=target, args=(p, e), name=f"executor-{i}", daemon=True)
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
