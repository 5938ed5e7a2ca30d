"""PostgreSQL transactions per storage operation of a worker, counted by the server (pg_stat_database).

    SWEEP_TEST_POSTGRES_URL=postgresql://... python benchmarks/storage_ops.py [--trials 64] [--repeats 20]

Each operation the orchestrator repeats (a heartbeat, the reaper's scan, the progress display's poll, an
ask + tell) runs `--repeats` times against a study of `--trials` finished trials; the connections are closed
before the counters are read (a backend flushes its statistics when it exits), and the reads' own
transactions are subtracted. Run it while nothing else uses the database (its counters are per
database). The milliseconds are wall time per call on the machine it runs on, one client, for orientation
only. docs/distributed.md's scale table uses these figures.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

import optuna
import sqlalchemy

from orchestrator.record import set_trial
from orchestrator.study import counts, open_storage, sqlalchemy_url


def _xacts(url: str) -> tuple[int, int]:
    engine = sqlalchemy.create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            row = conn.execute(sqlalchemy.text(
                "select xact_commit + xact_rollback, tup_returned + tup_fetched from pg_stat_database "
                "where datname = current_database()")).one()
    finally:
        engine.dispose()
    return int(row[0]), int(row[1])


def _per_call(url: str, storage, fn, repeats: int, overhead: tuple[float, float]) -> tuple[float, float, float]:
    storage.engine.dispose()
    time.sleep(0.6)
    x0, r0 = _xacts(url)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    took = time.perf_counter() - start
    storage.engine.dispose()
    time.sleep(0.6)
    x1, r1 = _xacts(url)
    return (x1 - x0 - overhead[0]) / repeats, (r1 - r0 - overhead[1]) / repeats, 1000 * took / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    url = os.environ["SWEEP_TEST_POSTGRES_URL"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    study = optuna.create_study(study_name=f"ops-{uuid.uuid4().hex[:8]}", storage=storage, directions=["maximize", "minimize"])
    for i in range(args.trials):
        t = study.ask()
        t.suggest_float("pruning_ratio", 0.0, 0.9)
        t.set_user_attr("metrics", {"val_accuracy": 0.9, "latency_ms_p50_bs1": 3.0})
        study.tell(t, [0.9, 3.0])
    x0, r0 = _xacts(url)
    x1, r1 = _xacts(url)
    overhead = (x1 - x0, r1 - r0)  # one counter read, as seen by the next read
    running = study.ask()

    def ask_tell() -> None:
        t = study.ask()
        t.suggest_float("pruning_ratio", 0.0, 0.9)
        study.tell(t, [0.9, 3.0])

    ops = {
        "heartbeat (set one user attr)": lambda: set_trial(study, running, heartbeat=time.time()),
        "reaper scan (RUNNING trials)": lambda: study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)),
        "progress poll before (counts + all trials)": lambda: (counts(study), study.get_trials(deepcopy=False)),
        "progress poll now (all trials, once)": lambda: study.get_trials(deepcopy=False),
        "ask + tell (Optuna alone, NSGA-II)": ask_tell,
    }
    print(f"PostgreSQL transactions per call, study of {args.trials} finished trials, {args.repeats} calls each "
          f"(pg_stat_database xact_commit + xact_rollback; rows = tup_returned + tup_fetched)")
    for name, fn in ops.items():
        xacts, rows, ms = _per_call(url, storage, fn, args.repeats, overhead)
        print(f"  {name:44s} {xacts:6.1f} transactions  {rows:9.0f} rows read  {ms:7.1f} ms (this machine, loaded)")
    optuna.delete_study(study_name=study.study_name, storage=storage)


if __name__ == "__main__":
    main()
