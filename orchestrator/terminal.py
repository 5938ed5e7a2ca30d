"""What the terminal shows while a sweep runs and when it ends: the log, the progress bar, the report.

Side effects at the rim: `cli.py` parses flags and calls these; nothing here decides what runs.
"""

from __future__ import annotations

import json

import sys
import threading
import time
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from trainers import metrics as M

# Piped output (CI logs, `| tee`) gets room for the wide tables instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 180)

# What `sweep export` prints: validation decides, test is reported beside it.
EXPORT_SUMMARY = (
    (M.VAL_ACCURACY, "val accuracy"), (M.VAL_MACRO_F1, "val macro F1"),
    (M.TEST_ACCURACY, "test accuracy (reported)"), (M.TEST_MACRO_F1, "test macro F1 (reported)"),
    (M.LATENCY_P50_BS1, "latency p50 bs1 (ms)"), (M.MEMORY_MODEL, "model memory (MiB)"),
    (M.PARAMS_TOTAL, "params"), (M.MODEL_DISK, "disk (MiB)"),
)


def log(message: str) -> None:
    """One timestamped line; the message is text, never markup (`[full, trimmed]`, `layer[i]` survive)."""
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {escape(message)}", highlight=False)


def say(text: str) -> None:
    """Print text as it is (data reports, error messages): no rich markup is read from it."""
    console.print(text, markup=False, highlight=False)


PHASE_LABELS = {"teacher_fine_tune": "teacher fine-tune", "teacher_logits": "teacher logits",
                "baseline": "baseline measurement", "training": "training"}


def _bars() -> Progress:
    """Steps done of total, elapsed and the ETA at the rate so far."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False)


def _describe(phase: str, event) -> str:
    acc = f", val acc {event.val_accuracy:.3f}" if event.val_accuracy is not None else ""
    epoch = f" (epoch {event.epoch:.1f})" if event.epoch is not None else ""
    return f"{PHASE_LABELS.get(phase, phase)}{epoch}{acc}"


class PreparationProgress:
    """What `sweep launch` shows while the sweep is prepared: the data report as soon as the child
    writes it, then one bar per phase (teacher fine-tune, logits, baseline) with its ETA."""

    def __init__(self):
        self.progress = _bars()
        self.tasks: dict[str, object] = {}
        self.last_acc: dict[str, str] = {}

    def __enter__(self) -> "PreparationProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def report(self, text: str) -> None:
        say(text)

    def event(self, event) -> None:
        if event.phase not in self.tasks:
            self.tasks[event.phase] = self.progress.add_task(PHASE_LABELS.get(event.phase, event.phase),
                                                             total=max(event.total_steps, 1))
        self.progress.update(self.tasks[event.phase], completed=event.step, total=max(event.total_steps, 1),
                             description=_describe(event.phase, event))


class RunningTrials:
    """One bar per running trial, fed by the progress events its child process writes (step/total, val acc)."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[int, object] = {}
        self.offsets: dict[int, int] = {}
        self.acc: dict[int, float] = {}

    def update(self, running: dict[int, str]) -> None:
        from trainers.progress import PROGRESS_FILE, read_events

        for number in [n for n in self.tasks if n not in running]:
            self.progress.remove_task(self.tasks.pop(number))
        for number, folder in running.items():
            try:
                events, self.offsets[number] = read_events(Path(folder) / PROGRESS_FILE, self.offsets.get(number, 0))
            except (OSError, ValueError):
                continue
            for e in events:
                if e.val_accuracy is not None:
                    self.acc[number] = e.val_accuracy
                if number not in self.tasks:
                    self.tasks[number] = self.progress.add_task(f"  trial {number}", total=max(e.total_steps, 1))
                acc = f", val acc {self.acc[number]:.3f}" if number in self.acc else ""
                self.progress.update(self.tasks[number], completed=e.step, total=max(e.total_steps, 1),
                                     description=f"  trial {number}: {PHASE_LABELS.get(e.phase, e.phase)}{acc}")


STUDY_POLL_S = 5.0  # how often the progress display reads the study


def _progress_updater(ctx, progress: Progress, task) -> callable:
    from orchestrator.record import trial_record

    running_bars = RunningTrials(progress)
    polled = {"at": -STUDY_POLL_S, "running": {}}

    def update(force: bool = False) -> None:
        # The study is read at most every STUDY_POLL_S, once (a whole-study load per process is what grows
        # with the cluster, docs/distributed.md); between reads the running trials' bars follow their local files.
        if force or time.monotonic() - polled["at"] >= STUDY_POLL_S:
            trials = ctx.study.get_trials(deepcopy=False)
            polled["at"] = time.monotonic()
            c = {s: sum(t.state.name.lower() == s for t in trials) for s in ("complete", "running", "pruned", "fail", "waiting")}
            best = ""
            done = [trial_record(t).metrics for t in trials if t.state.name == "COMPLETE"]
            if done:
                acc = max(m.get(M.VAL_ACCURACY, 0.0) for m in done)
                fast = min(m.get(M.LATENCY_P50_BS1, float("inf")) for m in done)
                best = f" | best val accuracy {acc:.4f}, fastest {fast:.2f} ms"
            progress.update(task, completed=c["complete"] + c["fail"] + c["pruned"],
                            description=f"trials: {c['complete']} done, {c['running']} running, {c['pruned']} pruned, "
                                        f"{c['fail']} failed, {c['waiting']} queued{best}")
            polled["running"] = {t.number: out for t in trials if t.state.name == "RUNNING"
                                 and (out := trial_record(t).output_dir)}
        running_bars.update(polled["running"])

    return update


def run_with_progress(ctx, workers: Optional[int], title: str) -> bool:
    """Run the sweep's executor threads with a progress bar; False when interrupted."""
    from orchestrator.child_process import default_workers, placements
    from orchestrator.sweep import run_sweep

    n = workers or default_workers()
    places = placements(n)
    log(f"{n} executor(s): " + "; ".join(f"cores {p.cores}" + (f", GPU {p.gpu}" if p.gpu else "") for p in places))
    stop = threading.Event()
    with _bars() as progress:
        task = progress.add_task(title, total=ctx.spec.n_trials)
        try:
            update = _progress_updater(ctx, progress, task)
            run_sweep(ctx, places, stop=stop, log=log, progress=update)
            update(force=True)
        except KeyboardInterrupt:
            return False
    return True


def finish(ctx, *, interrupted: bool, export: bool, export_interrupted: bool = False) -> bool:
    """Close the sweep (`sweep.close_sweep`), then print the front and export the pick; False when no trial completed.

    An interrupted sweep shows its partial front and leaves the export folder alone (a pick from part of the
    grid must not replace an export), unless `export_interrupted`."""
    from orchestrator.export import export_trial
    from orchestrator.report import pareto_table
    from orchestrator.sweep import close_sweep
    from orchestrator.tracking import runs_url

    closed = close_sweep(ctx, interrupted=interrupted)
    front, c, plot = closed.front, closed.counts, closed.plot
    title = f"Pareto front of {ctx.spec.name} ({len(front)} of {c['complete']} completed trials)"
    if interrupted:
        title = f"Partial {title[0].lower()}{title[1:]}: interrupted with {c['waiting']} trial(s) still to run"
    console.print(pareto_table(front, ctx.baseline, title, report=closed.report))
    console.print(f"trials: {c['complete']} completed, {c['pruned']} pruned (early stopping), {c['fail']} failed, "
                  f"{c['waiting']} queued")
    exported = None
    if export and front and interrupted and not export_interrupted:
        out = Path(ctx.spec.export.dir or f"exports/{ctx.spec.name}")
        log(f"not exported: the sweep was interrupted, and a pick from part of the grid would replace {out}/; "
            f"relaunch to finish, or `sweep export {ctx.spec.name}` (or `sweep launch --export-interrupted`) to export "
            f"from what completed")
    elif export and front:
        out = Path(ctx.spec.export.dir or f"exports/{ctx.spec.name}")
        try:
            doc = export_trial(ctx.study, ctx.spec, ctx.tracker, rule=ctx.spec.export.pick, out_dir=out,
                              root=ctx.root)
            exported = out
            log(f"exported trial {doc['trial']} (pick: {ctx.spec.export.pick}) to {out}/ (config.yaml, model/)")
        except ValueError as exc:
            log(f"not exported: {exc}")
    console.print("\n[bold]Where to look[/bold]")
    root_flag = f" --root {ctx.root}" if ctx.root != Path("mlruns") else ""
    console.print(f"  MLflow UI:    sweep ui{root_flag}   (then open http://127.0.0.1:5000, experiment '{ctx.spec.experiment}')")
    console.print(f"  runs:         {runs_url('http://127.0.0.1:5000', ctx.experiment_id)}", highlight=False, soft_wrap=True)
    console.print(f"  Pareto front: sweep pareto {ctx.spec.name}{root_flag}   "
                  + (f"(plot: {plot})" if plot else "(no plot: no completed trial)"))
    console.print(f"  trials:       sweep status {ctx.spec.name}{root_flag}")
    if exported:
        console.print(f"  exported:     {exported}/config.yaml and {exported}/model/")
    if interrupted:
        console.print("[yellow]interrupted: relaunch the same command to resume[/yellow]")
    elif not c["complete"]:
        why = []
        if c["pruned"]:
            why.append(f"early stopping stopped all {c['pruned']} trial(s) it judged: loosen `pruner:` "
                       f"(n_warmup_steps, n_startup_trials, lower) or set `pruner: {{type: none}}`")
        if c["fail"]:
            why.append(f"{c['fail']} trial(s) failed: their logs are under {ctx.root}/trials/{ctx.spec.name}/")
        console.print(f"[red]no trial of {ctx.spec.name} completed: no front, nothing exported. "
                      + "; ".join(why) + "[/red]", highlight=False)
    return bool(c["complete"])


def print_measurement(model_dir: Path, measured, output: Path | None) -> None:
    """`sweep measure`'s report: every metric (names carry units), how it was measured, optionally as JSON."""
    console.print(f"{model_dir} measured in {measured.precision} ({measured.tags.get('runtime', 'torch')}):")
    for key in sorted(measured.metrics):
        console.print(f"  {key:40s} {measured.metrics[key]:.6g}", highlight=False)
    for key in ("measure_device", "measure_threads", "hw_cpu_model", "val_accuracy_scope", "accuracy_scope", "measure_process"):
        if key in measured.tags:
            console.print(f"  [dim]{key}: {measured.tags[key]}[/dim]", highlight=False)
    if output:
        output.write_text(json.dumps({"precision": measured.precision, "metrics": measured.metrics, "tags": measured.tags,
                                      "per_class_f1": measured.per_class_f1, "val_per_class_f1": measured.val_per_class_f1},
                                     indent=2))
        console.print(f"written to {output}")
