"""`sweep`: launch compression sweeps, inspect them, and export the best student."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from orchestrator.terminal import (EXPORT_SUMMARY, console, finish, log as _log, print_measurement, run_with_progress,
                                   say)

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # table-creation chatter would drown the report
logging.getLogger("alembic").setLevel(logging.WARNING)

ROOT = typer.Option(Path("mlruns"), "--root", help="local store: Optuna journal, MLflow sqlite, caches, trial folders")
STORAGE = typer.Option(None, "--storage", help="Optuna storage URL (postgresql://..., sqlite:///..., journal:PATH); default a journal under --root")
TRACKING = typer.Option(None, "--tracking-uri", help="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite under --root")


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _load_spec(path: Path):
    from orchestrator.spec import SpecError, load_sweep

    try:
        return load_sweep(path)
    except SpecError as exc:
        _fail(str(exc))


def _study(study_name: str, storage: Optional[str], root: Path):
    """The study and its record, without MLflow (read-only commands answer before importing it)."""
    from orchestrator.record import study_record
    from orchestrator.spec import SpecError
    from orchestrator.study import default_storage_url, load_study, open_storage

    url = storage or default_storage_url(root)
    try:
        study = load_study(study_name, open_storage(url, root))
    except SpecError as exc:
        _fail(str(exc))
    return study, study_record(study)


def _tracker(record, tracking_uri: Optional[str], root: Path):
    from orchestrator.tracking import Tracker, resolve_tracking_uri
    return Tracker(resolve_tracking_uri(tracking_uri, None, root, stored=record.tracking_uri), root)


@app.command()
def launch(
    sweep_file: Path = typer.Argument(..., help="sweep YAML (see sweeps/grid.yaml)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="parallel trials on this machine (default: one per GPU, else 1)"),
    storage: Optional[str] = STORAGE,
    tracking_uri: Optional[str] = TRACKING,
    root: Path = ROOT,
    export: bool = typer.Option(True, help="export the picked trial when the sweep ends"),
    export_interrupted: bool = typer.Option(False, "--export-interrupted",
                                            help="also export when the sweep is interrupted (a pick from part of the grid)"),
) -> None:
    """Run (or resume) the sweep a file describes; ends with the Pareto table and an export.

    First the checks of `sweep check` (without calibration): nothing is created and no compute is
    spent on a file, data or hardware that cannot run."""
    from orchestrator.sweep import open_sweep
    from orchestrator.spec import SpecError
    from orchestrator.terminal import PreparationProgress
    from orchestrator.trial_queue import queue_grid

    spec = _load_spec(sweep_file)
    t0 = time.time()
    _log(f"sweep {spec.name}: {spec.n_trials} trials, sampler {spec.sampler.type}, objectives "
         + ", ".join(f"{o.direction} {o.key}" for o in spec.objectives)
         + (f", early stopping {spec.pruner.type}" if spec.pruner.enabled else ""))
    _run_checks(sweep_file, spec, calibrate=False, workers=workers or 1, root=root, data_report=False)
    try:
        with PreparationProgress() as show:  # the data report as soon as it is read, then the teacher's bars
            ctx = open_sweep(spec, storage_url=storage, tracking_uri=tracking_uri, root=root, launching=True,
                             log=_log, show=show)
    except SpecError as exc:
        _fail(str(exc))
    if spec.sampler.type == "grid":
        queue_grid(ctx, log=_log)
    finished = run_with_progress(ctx, workers, f"sweep {spec.name}")
    answered = finish(ctx, interrupted=not finished, export=export, export_interrupted=export_interrupted)
    _log(f"wall time {time.time() - t0:.0f} s")
    if not (finished and answered):  # interrupted, or no trial completed: a script must not go on to deploy
        raise typer.Exit(1 if finished else 130)


@app.command()
def worker(
    study_name: str = typer.Argument(..., help="the study to join"),
    storage: str = typer.Option(..., "--storage", help="the study's storage URL (e.g. postgresql://user@host/db)"),
    tracking_uri: Optional[str] = TRACKING,
    workers: Optional[int] = typer.Option(None, "--workers", "-w"),
    root: Path = ROOT,
    teacher_wait: float = typer.Option(60.0, "--teacher-wait", min=0,
                                       help="minutes to wait for the launching machine to publish the teacher"),
) -> None:
    """Join a running study from this machine and run its trials until the budget is used."""
    from orchestrator.sweep import open_sweep, spec_from_study
    from orchestrator.spec import SpecError

    try:
        spec = spec_from_study(study_name, storage, root)
        ctx = open_sweep(spec, storage_url=storage, tracking_uri=tracking_uri, root=root, launching=False, log=_log,
                         teacher_wait_s=teacher_wait * 60)
    except SpecError as exc:
        _fail(str(exc))
    if not run_with_progress(ctx, workers, f"worker on {study_name}"):
        raise typer.Exit(130)


@app.command()
def retry(
    study_name: str,
    storage: Optional[str] = STORAGE,
    tracking_uri: Optional[str] = TRACKING,
    workers: Optional[int] = typer.Option(None, "--workers", "-w"),
    root: Path = ROOT,
) -> None:
    """Queue every failed trial's parameters again, run them, and show the new front."""
    from orchestrator.sweep import open_sweep, spec_from_study
    from orchestrator.spec import SpecError
    from orchestrator.study import default_storage_url, storage_lock
    from orchestrator.trial_queue import retry_failed

    url = storage or default_storage_url(root)
    try:
        spec = spec_from_study(study_name, url, root)
        ctx = open_sweep(spec, storage_url=url, tracking_uri=tracking_uri, root=root, launching=True, log=_log)
    except SpecError as exc:
        _fail(str(exc))
    with storage_lock(url, root):
        queued = retry_failed(ctx.study)
    _log(f"{queued} failed trial(s) queued again")
    finished = run_with_progress(ctx, workers, f"retry {study_name}")
    finish(ctx, interrupted=not finished, export=False)


@app.command()
def trial(
    config: Path = typer.Argument(..., help="a trial config YAML (e.g. exports/NAME/trial_config.yaml)"),
    output_dir: Optional[Path] = typer.Option(None, help="override where the model and result.json go"),
) -> None:
    """Run one trial alone, without a study or MLflow, and print its metrics."""
    import yaml
    from pydantic import ValidationError

    from trainers.config import TrialConfig
    from trainers.trial import run_trial

    if not config.is_file():
        _fail(f"{config}: no such trial config")
    try:
        cfg = TrialConfig.model_validate(yaml.safe_load(config.read_text()))
    except ValidationError as exc:
        _fail("\n".join(f"{config}: field {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    cfg = cfg.model_copy(update={"await_verdict_s": 0.0, **({"output_dir": output_dir} if output_dir else {})})  # runs alone
    result = run_trial(cfg, log=_log)
    for key in sorted(result.metrics):
        console.print(f"{key:40s} {result.metrics[key]:.6g}", highlight=False)
    console.print(f"result: {cfg.output_dir / 'result.json'}; model: {result.model_dir}")


@app.command()
def status(
    study_name: Optional[str] = typer.Argument(None, help="omit to list every study"),
    storage: Optional[str] = STORAGE,
    root: Path = ROOT,
) -> None:
    """A table of a study's trials (or of all studies in the storage)."""
    from orchestrator.report import studies_table, trials_table
    from orchestrator.study import default_storage_url, open_storage

    if study_name is None:
        url = storage or default_storage_url(root)
        console.print(studies_table(open_storage(url, root), title=f"studies in {url}"))
        return
    study, _ = _study(study_name, storage, root)
    console.print(trials_table(study))


@app.command()
def pareto(
    study_name: str,
    storage: Optional[str] = STORAGE,
    tracking_uri: Optional[str] = TRACKING,
    root: Path = ROOT,
    open_plot: bool = typer.Option(False, "--open", help="open the interactive plot in a browser"),
) -> None:
    """The non-dominated trials with their deltas against the teacher, plus an offline plot."""
    from orchestrator.report import front_report, pareto_table, write_plots
    from orchestrator.spec import stored_spec
    from orchestrator.study import work_dir

    study, record = _study(study_name, storage, root)
    spec = stored_spec(record, study_name)
    report = front_report(study, spec)
    console.print(pareto_table(report.front, record.baseline_metrics, f"Pareto front of {study_name}", report=report))
    plots = write_plots(study, spec, work_dir(root, study_name), report.front)  # the slow steps come after the table
    if plots:
        console.print(f"interactive plot: {plots[0]}; images: {', '.join(str(p) for p in plots[1:])}")
    if parent := record.mlflow_parent_run_id:  # MLflow loads only now, after the table and the plots
        from orchestrator.tracking import runs_url

        tracker = _tracker(record, tracking_uri, root)
        for path in plots:
            tracker.log_artifacts(parent, path)
        experiment_id = tracker.client.get_run(parent).info.experiment_id
        console.print(f"runs: {runs_url('http://127.0.0.1:5000', experiment_id)}   (after `sweep ui`)", highlight=False,
                      soft_wrap=True)
    if plots and open_plot:
        import webbrowser

        webbrowser.open(plots[0].resolve().as_uri())


@app.command()
def export(
    study_name: str,
    pick: Optional[str] = typer.Option(None, "--pick", help="fastest | most_accurate | smallest | lightest | greenest | trial:N (default: the sweep's export.pick, 'fastest')"),
    out: Optional[Path] = typer.Option(None, "--out", help="default exports/STUDY"),
    storage: Optional[str] = STORAGE,
    tracking_uri: Optional[str] = TRACKING,
    root: Path = ROOT,
) -> None:
    """Write the picked trial's config, metrics, MLflow run id, reproduce command and model."""
    from orchestrator.export import export_trial
    from orchestrator.sweep import stored_spec

    study, record = _study(study_name, storage, root)
    tracker = _tracker(record, tracking_uri, root)
    spec = stored_spec(record, study_name)
    rule = pick or spec.export.pick
    out = out or Path(spec.export.dir or f"exports/{study_name}")
    try:
        doc = export_trial(study, spec, tracker, rule=rule, out_dir=out, root=root)
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"exported trial {doc['trial']} ({rule}) of {study_name} -> {out}/config.yaml, {out}/model/")
    for key, label in EXPORT_SUMMARY:
        if key in doc["metrics"]:
            console.print(f"  {label:28s} {doc['metrics'][key]:.6g}")
    console.print(f"  reproduce: {doc['reproduce']}")


@app.command()
def measure(
    model_dir: Path = typer.Argument(..., help="a saved model folder (teacher cache, export's model/)"),
    sweep_file: Path = typer.Option(..., "--sweep", help="the sweep whose data (test split) and measure settings to use"),
    precision: Optional[str] = typer.Option(None, help="default: the precision the model was exported with"),
    runtime: Optional[str] = typer.Option(None, help="torch | onnxruntime (default: the runtime it was exported for)"),
    output: Optional[Path] = typer.Option(None, "--output", help="also write metrics, tags and per-class F1 as JSON"),
    root: Path = ROOT,
) -> None:
    """Measure any saved model in a fresh process, the code path trials use, and print the same metrics."""
    from trainers.measuring import measure_in_fresh_process

    spec = _load_spec(sweep_file)
    if not model_dir.is_dir():
        _fail(f"{model_dir}: no such model folder")
    try:
        measured = measure_in_fresh_process(model_dir.resolve(), spec.data, spec.base_dir, spec.measure,
                                            max_seq_len=spec.training.max_seq_len, cache_dir=(root / "cache" / "data").resolve(),
                                            batch_size=spec.training.eval_batch_size, precision=precision,
                                            runtime=runtime)
    except RuntimeError as exc:
        _fail(str(exc), code=1)
    print_measurement(model_dir, measured, output)


@app.command()
def check(
    sweep_file: Path = typer.Argument(..., help="sweep YAML to check"),
    root: Path = ROOT,
    workers: int = typer.Option(1, "--workers", "-w", help="workers the estimate assumes"),
    calibrate: bool = typer.Option(True, help="time a few training steps to estimate wall time"),
) -> None:
    """Check a sweep before spending: file, hardware, data report, grid, distinct trainings, time estimate.

    Writes no study, no runs and no cache; exits non-zero on any error.
    """
    spec = _load_spec(sweep_file)
    _run_checks(sweep_file, spec, calibrate=calibrate, workers=workers, root=root)


def _run_checks(sweep_file: Path, spec, *, calibrate: bool, workers: int, root: Path, data_report: bool = True) -> None:
    """`sweep check`'s checks (also the first thing `sweep launch` does); exits non-zero on any error."""
    from orchestrator.check import check_sweep

    _log(f"sweep {spec.name}: file valid; every precision runs on this hardware")
    try:
        check_sweep(spec, say=say, calibrate=calibrate,
                    workers=workers, teacher_cache=root / "cache" / "teachers", data_report=data_report)
    except Exception as exc:  # noqa: BLE001 - any error here is the answer the user asked for
        _fail(f"{sweep_file}: {type(exc).__name__}: {exc}", code=1)
    _log("check passed")


@app.command()
def delete(
    study_name: str = typer.Argument(..., help="the study to remove"),
    storage: Optional[str] = STORAGE,
    tracking_uri: Optional[str] = TRACKING,
    root: Path = ROOT,
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Remove a study, its early-stopping companion, its MLflow runs and its trial folders (caches stay)."""
    from orchestrator.cleanup import plan_removal, remove
    from orchestrator.study import default_storage_url, open_storage

    study, record = _study(study_name, storage, root)
    tracker = _tracker(record, tracking_uri, root)
    store = open_storage(storage or default_storage_url(root), root)
    removal = plan_removal(study_name, store, tracker, record.mlflow_experiment, root)
    console.print(f"to remove: studies {removal.studies}, {len(removal.runs)} MLflow run(s), "
                  f"folders {[str(f) for f in removal.folders]}", highlight=False)
    if not yes and not typer.confirm("remove them?"):
        _fail("nothing removed", code=1)
    remove(removal, store, tracker)
    _log(f"removed study {study_name}")


@app.command()
def ui(
    root: Path = ROOT,
    tracking_uri: Optional[str] = TRACKING,
    host: str = typer.Option("127.0.0.1", help="bind address; only widen it on a trusted network"),
    port: int = typer.Option(5000),
) -> None:
    """Start the MLflow UI on the sweep's tracking store (127.0.0.1 unless told otherwise); Ctrl-C or
    SIGTERM stops the server and all its workers."""
    from orchestrator import ui_server
    from orchestrator.tracking import resolve_tracking_uri, runs_url

    uri = resolve_tracking_uri(tracking_uri, None, root)
    base = f"http://{host}:{port}"
    console.print(f"MLflow UI for {uri} at {base} (Ctrl-C to stop)")
    for name, experiment_id, has_view in ui_server.experiments_with_runs(
            uri, warn=lambda text: console.print(f"[yellow]{escape(text)}[/yellow]")):
        console.print(f"  {name}: {runs_url(base, experiment_id, view=has_view)}", highlight=False, soft_wrap=True)
    artifacts = root / "artifacts" if uri.startswith("sqlite:") else None
    raise typer.Exit(ui_server.serve(ui_server.command(uri, host, port, artifacts)))


app.command(name="compare")(__import__("orchestrator.compare").compare.compare_command)  # orchestrator/compare.py
if __name__ == "__main__":
    app()
