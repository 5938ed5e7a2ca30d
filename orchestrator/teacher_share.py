"""One teacher for the whole cluster: the launching machine publishes what preparation built, the others download it.

On the sweep's parent run (any MLflow artifact backend behind the tracking server):

    teacher/<key>/<entry>/...      each teacher cache folder (cache/teachers/<entry>): <key> itself, the
                                   fine-tuned model + its training-split logits; <key>-vocab-<hash> as well
                                   when vocabulary trimming is on
    teacher/<key>/manifest.json    uploaded last: teacher key, tokenised-data fingerprint, sha256 + bytes per file

and, once the manifest is up, the parent run's tag `sweep.teacher_artifacts = teacher/<key>`. A machine whose
root lacks the entries downloads them, checks every file against the manifest and only then moves them into its
cache (with a `fetched.json` saying where they came from), so preparation finds a cache hit and never fine-tunes.
Nothing published names a path: entries are cache-relative, the manifest holds names, hashes and sizes.

A local tracking store (sqlite, a folder) is one machine: nothing is published or downloaded; processes on
it share the teacher through their `--root` cache, built once under its file lock (docs/distributed.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from filelock import FileLock

from orchestrator.child_process import HOST
from orchestrator.context import Log
from orchestrator.spec import SpecError
from orchestrator.tracking import Tracker
from trainers.jobs import PrepareResult

PUBLISHED_TAG = "sweep.teacher_artifacts"
MANIFEST = "manifest.json"
FETCHED = "fetched.json"  # in a downloaded cache entry: which run and manifest it came from
DONE = "DONE"  # trainers.teacher's mark of a complete cache entry
_SKIPPED = {DONE, FETCHED}


def teacher_cache(root: Path) -> Path:
    return (root / "cache" / "teachers").resolve()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _entries(prepared: PrepareResult) -> list[Path]:
    """The cache folders preparation produced: the teacher's and, with vocabulary trimming, the trimmed one's."""
    dirs = [Path(prepared.teacher_dir).parent]
    if prepared.trimmed_teacher_dir:
        dirs.append(Path(prepared.trimmed_teacher_dir).parent)
    return dirs


def manifest_of(prepared: PrepareResult) -> dict:
    files = {}
    for entry in _entries(prepared):
        for file in sorted(p for p in entry.rglob("*") if p.is_file()):
            rel = file.relative_to(entry)
            if str(rel) not in _SKIPPED:
                files[f"{entry.name}/{rel.as_posix()}"] = {"sha256": _sha256(file), "bytes": file.stat().st_size}
    return {"teacher_key": prepared.teacher_key, "data_fingerprint": prepared.data_fingerprint,
            "entries": [e.name for e in _entries(prepared)], "files": files, "published_by_host": HOST}


def published(tracker: Tracker, parent_run_id: str) -> str | None:
    """The artifact path of the teacher published on the parent run (`teacher/<key>`), or None yet."""
    return tracker.run_tags(parent_run_id).get(PUBLISHED_TAG)


def publish(tracker: Tracker, parent_run_id: str, prepared: PrepareResult, log: Log) -> int:
    """Upload the prepared teacher (once per key; a relaunch finds it there) and return the bytes uploaded."""
    path = f"teacher/{prepared.teacher_key}"
    if published(tracker, parent_run_id) == path:
        log(f"teacher: already published on the parent run ({path})")
        return 0
    manifest = manifest_of(prepared)
    for entry in _entries(prepared):
        for file in sorted(p for p in entry.iterdir()):
            if file.name not in _SKIPPED:  # a folder's files go under its own name
                tracker.log_artifacts(parent_run_id, file, f"{path}/{entry.name}" + (f"/{file.name}" if file.is_dir() else ""))
    tracker.log_dict(parent_run_id, manifest, f"{path}/{MANIFEST}")  # last: its presence means complete
    tracker.log(parent_run_id, tags={PUBLISHED_TAG: path})
    size = sum(f["bytes"] for f in manifest["files"].values())
    log(f"teacher: published {len(manifest['files'])} files ({size / 1e6:.1f} MB) on the parent run as {path}, "
        "for workers on other machines")
    return size


def wait_published(tracker: Tracker, parent_run_id: str, *, bound_s: float, log: Log, poll_s: float = 2.0) -> str:
    """The published teacher's artifact path, waiting up to `bound_s` while the launching machine prepares it."""
    start = time.monotonic()
    said = -1.0
    while True:
        try:
            path = published(tracker, parent_run_id)
        except Exception as exc:  # noqa: BLE001 - the parent run removed (the launch's preparation failed)
            raise SpecError(f"the sweep's parent run {parent_run_id} cannot be read ({type(exc).__name__}: "
                            f"{str(exc)[:200]}): the launch may have failed while preparing; relaunch it") from None
        if path:
            return path
        waited = time.monotonic() - start
        if waited >= bound_s:
            raise SpecError(f"no teacher published on the sweep's parent run {parent_run_id} after {waited:.0f} s "
                            "(--teacher-wait): the launching machine is still preparing or its launch failed (see "
                            "its log); this worker does not build a second teacher. Rerun it later or with a longer wait")
        if said < 0 or waited - said >= 30:
            log(f"waiting for the launching machine to publish the teacher on the parent run ({waited:.0f} s of at "
                f"most {bound_s:.0f} s, --teacher-wait); no second teacher is built here")
            said = waited
        time.sleep(poll_s)


def fetch(tracker: Tracker, parent_run_id: str, path: str, root: Path, log: Log) -> dict[str, str]:
    """Download the published teacher into this root's cache unless it is already there, verifying every
    file against the manifest; returns {key, data_fingerprint} for the preparation job."""
    cache = teacher_cache(root)
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".fetch-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        manifest = json.loads(tracker.download(parent_run_id, f"{path}/{MANIFEST}", staging).read_text())
        key = manifest["teacher_key"]
        if path != f"teacher/{key}":
            raise SpecError(f"teacher manifest at {path} names teacher {key}: the published teacher is inconsistent")
        for name in manifest["entries"]:
            _fetch_entry(tracker, parent_run_id, path, name, manifest, cache, staging, log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"key": key, "data_fingerprint": manifest["data_fingerprint"]}


def _fetch_entry(tracker: Tracker, run_id: str, path: str, name: str, manifest: dict, cache: Path, staging: Path,
                 log: Log) -> None:
    out = cache / name
    with FileLock(str(out) + ".lock"):  # the lock trainers.teacher builds under: one fetch per entry and root
        if (out / DONE).exists():
            log(f"teacher: {name} already in this machine's cache")
            return
        started = time.monotonic()
        got = tracker.download(run_id, f"{path}/{name}", staging / "entries")
        wanted = {k.split("/", 1)[1]: v for k, v in manifest["files"].items() if k.split("/", 1)[0] == name}
        for rel, expected in wanted.items():
            file = got / rel
            digest = _sha256(file) if file.is_file() else "missing"
            if digest != expected["sha256"]:
                raise SpecError(f"downloaded teacher file {path}/{name}/{rel}: sha256 {digest[:16]}, the manifest says "
                                f"{expected['sha256'][:16]}; nothing was used (rerun the worker to download it again)")
        size = sum(v["bytes"] for v in wanted.values())
        (got / FETCHED).write_text(json.dumps({"parent_run_id": run_id, "artifact_path": f"{path}/{name}",
                                               "files": len(wanted), "bytes": size,
                                               "published_by_host": manifest.get("published_by_host"),
                                               "seconds": round(time.monotonic() - started, 3)}, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(got, out)
        (out / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        log(f"teacher: downloaded {name} ({len(wanted)} files, {size / 1e6:.1f} MB, sha256 verified) from the parent run")
