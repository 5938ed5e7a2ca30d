"""The Optuna side: storages and their cross-process lock, samplers, creating/resuming a study.

The queue of trials lives in `trial_queue.py`; what is stored on the study and its trials in `record.py`.
"""

from __future__ import annotations

import contextlib
import math
import threading
import zlib
from pathlib import Path
from typing import Iterator

import optuna
from filelock import FileLock
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from orchestrator.record import set_study, study_record
from orchestrator.spec import DIMENSIONS, SpecError, SweepSpec

DEFAULT_ROOT = Path("mlruns")
JOURNAL_NAME = "optuna/studies.journal"

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
    Other databases get none: with them two workers may race, and `trial_queue.next_trial` then skips
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
    stored = study_record(study).objectives
    if stored is None:
        set_study(study, objectives=keys, directions=directions)
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


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] += 1
    return out


def finite(values) -> bool:
    return values is not None and all(v is not None and math.isfinite(v) for v in values)


def work_dir(root: Path, study: str) -> Path:
    """Where a study's trial folders live under the local store."""
    return root / "trials" / study
