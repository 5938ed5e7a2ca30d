"""The Optuna side: storages, samplers, creating/resuming a study, and the grid queue.

Grid points are enqueued as WAITING trials and popped atomically by `study.ask()`, so with any
number of workers every grid point is handed out once; relaunching enqueues only the points that
have neither completed nor are running. Everything that enqueues runs under `storage_lock`, which
spans processes and machines (a file lock beside a local store, an advisory lock in PostgreSQL),
so two workers never queue the same point twice.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import threading
import zlib
from pathlib import Path
from typing import Iterator

import optuna
from filelock import FileLock
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from orchestrator.cost import fold_points
from orchestrator.spec import DIMENSIONS, Range, SpecError, SweepSpec

DEFAULT_ROOT = Path("mlruns")
JOURNAL_NAME = "optuna/studies.journal"
ACTIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def default_storage_url(root: Path = DEFAULT_ROOT) -> str:
    return f"journal:{(root / JOURNAL_NAME).resolve()}"


def open_storage(url: str | None, root: Path = DEFAULT_ROOT) -> BaseStorage:
    """`journal:PATH` (or a *.journal path) is Optuna's journal file; anything else an RDB URL.

    The journal file is the default: Optuna recommends it over SQLite for several local workers.
    """
    url = url or default_storage_url(root)
    if url.startswith("journal:") or url.endswith(".journal"):
        path = Path(url.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    url = sqlalchemy_url(url)
    engine_kwargs = {"pool_pre_ping": True} if url.startswith(("postgresql", "mysql")) else {}
    return RDBStorage(url, engine_kwargs=engine_kwargs)


def sqlalchemy_url(url: str) -> str:
    """`postgresql://` with the driver that is installed: SQLAlchemy 2.1 means psycopg 3 by it, the project ships psycopg2."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def storage_lock(url: str | None, root: Path = DEFAULT_ROOT) -> contextlib.AbstractContextManager:
    """A lock around check-then-enqueue and check-then-ask, held across processes and machines.

    A local journal or SQLite file gets a file lock beside it; PostgreSQL a session advisory lock
    (released by the server if the holder dies), one per storage so that every caller agrees on it.
    Other databases get none: with them two workers may race, and `runner.next_trial` then skips
    the duplicate it popped.
    """
    url = url or default_storage_url(root)
    if url.startswith("journal:") or url.endswith(".journal"):
        return FileLock(url.removeprefix("journal:") + ".enqueue.lock")
    if url.startswith("sqlite:///"):
        return FileLock(url.removeprefix("sqlite:///") + ".enqueue.lock")
    if url.startswith(("postgresql", "postgres:")):
        return _pg_advisory_lock(url, zlib.crc32(b"compression-sweep:enqueue"))
    return contextlib.nullcontext()


_ENGINES: dict[str, object] = {}
_ENGINES_LOCK = threading.Lock()


@contextlib.contextmanager
def _pg_advisory_lock(url: str, key: int) -> Iterator[None]:
    import sqlalchemy

    with _ENGINES_LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = sqlalchemy.create_engine(sqlalchemy_url(url), pool_pre_ping=True)
        engine = _ENGINES[url]
    with engine.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


def distributions(spec: SweepSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    out = {}
    for name in DIMENSIONS:
        value = getattr(spec.search_space, name)
        if isinstance(value, Range):
            out[name] = FloatDistribution(value.low, value.high, step=value.step, log=value.log)
        else:
            out[name] = CategoricalDistribution(list(value))
    return out


class QueuedGridSampler(optuna.samplers.GridSampler):
    """A GridSampler whose points the sweep enqueues itself (`enqueue_grid`), so it decides when the grid is done.

    Optuna's own end-of-grid logic runs on every tell: it calls `study.stop()`, which raises outside
    `optimize()`, and with one point left reads a `grid_id` that queued trials never get (KeyError).
    """

    def after_trial(self, study, trial, state, values) -> None:
        return None


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    s = spec.sampler
    if s.type == "grid":
        return QueuedGridSampler({d: list(getattr(spec.search_space, d)) for d in DIMENSIONS}, seed=s.seed)
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.type == "tpe":
        return optuna.samplers.TPESampler(seed=s.seed, multivariate=True)
    return optuna.samplers.NSGAIISampler(seed=s.seed, population_size=s.population_size or 8)


def open_study(spec: SweepSpec, storage: BaseStorage) -> optuna.Study:
    """Create the study, or resume it after checking it is the same experiment."""
    directions = [o.direction for o in spec.objectives]
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=make_sampler(spec),
        directions=directions,
        load_if_exists=True,
    )
    keys = [o.key for o in spec.objectives]
    stored = study.user_attrs.get("objectives")
    if stored is None:
        study.set_user_attr("objectives", keys)
        study.set_user_attr("directions", directions)
    elif stored != keys or [d.name.lower() for d in study.directions] != directions:
        raise SpecError(
            f"study {spec.name!r} already exists with objectives {stored} "
            f"({[d.name.lower() for d in study.directions]}); this sweep file asks for {keys} ({directions}). "
            "Give the sweep a new name to start a new study."
        )
    return study


def load_study(name: str, storage: BaseStorage) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise SpecError(f"no study named {name!r} in this storage; studies here: {names or 'none'}") from None


def _point_key(params: dict) -> str:
    return json.dumps({k: params[k] for k in DIMENSIONS if k in params}, sort_keys=True)


point_key = _point_key


def trial_point(t: FrozenTrial) -> dict:
    """The parameters a trial runs: sampled ones, or the fixed ones of a queued (WAITING) trial."""
    return dict(t.params) or dict(t.system_attrs.get("fixed_params", {}))


def counts_as_failure(t: FrozenTrial) -> bool:
    """A failure that uses up a retry: not an interruption (Ctrl-C) and not a skipped duplicate."""
    return t.state == TrialState.FAIL and not t.user_attrs.get("interrupted") and "duplicate_of" not in t.user_attrs


def active_points(trials: list[FrozenTrial]) -> set[str]:
    return {_point_key(trial_point(t)) for t in trials if t.state in ACTIVE}


def requeue(study: optuna.Study, params: dict, user_attrs: dict) -> bool:
    """Queue `params` again unless a trial of that point completed, runs or waits (call under storage_lock)."""
    if not params or _point_key(params) in active_points(study.get_trials(deepcopy=False)):
        return False
    study.enqueue_trial(dict(params), user_attrs=user_attrs)
    return True


def grid_points(spec: SweepSpec) -> list[dict]:
    """The grid points a sweep runs (temperature folded away at alpha 0): all of them, or a seeded random
    subset when n_trials is smaller.

    A subset drawn without repetition spans every dimension's values far better than the first
    n_trials of the product order would (Optuna's GridSampler also visits points in random order).
    """
    grid, _ = fold_points(spec.search_space.grid())  # T at alpha 0 trains the same student: one point
    if spec.n_trials >= len(grid):
        return grid
    rng = random.Random(spec.sampler.seed)
    keep = sorted(rng.sample(range(len(grid)), spec.n_trials))
    return [grid[i] for i in keep]


def enqueue_grid(study: optuna.Study, spec: SweepSpec, *, retry_failed: bool = False) -> int:
    """Queue the grid points that still need running; returns how many were queued.

    A point needs running when no trial of it completed, runs or waits, and it has failed at most
    `budget.max_retries` times (or always, with retry_failed).
    """
    trials = study.get_trials(deepcopy=False)
    active = active_points(trials)
    failures: dict[str, int] = {}
    for t in trials:
        if counts_as_failure(t):
            key = _point_key(trial_point(t))
            failures[key] = failures.get(key, 0) + 1
    queued = 0
    for point in grid_points(spec):
        key = _point_key(point)
        if key in active:
            continue
        if not retry_failed and failures.get(key, 0) > spec.budget.max_retries:
            continue
        study.enqueue_trial(point, user_attrs={"attempt": failures.get(key, 0) + 1})
        active.add(key)
        queued += 1
    return queued


def retry_failed(study: optuna.Study) -> int:
    """Queue again every failed point that has not completed since (any sampler)."""
    trials = study.get_trials(deepcopy=False)
    active = active_points(trials)
    queued = 0
    for t in trials:
        if t.state != TrialState.FAIL or "duplicate_of" in t.user_attrs or not trial_point(t):
            continue
        key = _point_key(trial_point(t))
        if key in active:
            continue
        study.enqueue_trial(trial_point(t), user_attrs={"retry_of": t.number})
        active.add(key)
        queued += 1
    return queued


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] += 1
    return out


def finite(values) -> bool:
    return values is not None and all(v is not None and math.isfinite(v) for v in values)
