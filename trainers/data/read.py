"""Reading raw rows from local files and Hugging Face datasets, without judging them.

Every row keeps where it came from ("line 210" for text formats, "row 5" otherwise) so that later
checks can point the user at the exact place in their file. Faults that make a whole file unusable
(missing, empty, not UTF-8, missing column, unparseable) raise DataError here; faults of single rows
are left to the validation step, which applies the user's policy.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trainers.data.errors import DataError

csv.field_size_limit(1 << 30)  # long documents in one cell are data, not an attack


@dataclass(frozen=True)
class RawRow:
    text: object
    label: object
    where: str
    malformed: str | None = None  # why the row could not be read as one record


@dataclass
class RawTable:
    source: str  # the file (or dataset split) as shown in messages
    rows: list[RawRow]
    text_column: str  # the column actually used (may differ in case from the configured one)
    label_column: str
    notes: list[str]
    label_names: list[str] | None = None  # from a dataset's ClassLabel feature


def _pick_column(found: list[str], wanted: str, option: str, source: str, notes: list[str]) -> str:
    """Exact name, else the unique case-insensitive match (so `text` finds `Text`), else DataError."""
    if wanted in found:
        return wanted
    folded = [c for c in found if c.strip().casefold() == wanted.strip().casefold()]
    if len(folded) == 1:
        notes.append(f"{source}: data.{option} {wanted!r} matched column {folded[0]!r}")
        return folded[0]
    raise DataError(f"{source}: no column {wanted!r} (data.{option}); columns found: {found}")


def _refuse_other_delimiter(header: list[str], delimiter: str, source: str) -> None:
    """A one-column header holding tabs (or commas) is a file with the other delimiter: name the setting."""
    if len(header) != 1:
        return
    other = {",": ("\t", "tab", "tsv"), "\t": (",", "comma", "csv")}.get(delimiter)
    if other and other[0] in header[0]:
        sep, word, fmt = other
        raise DataError(f"{source}: the header line {header[0]!r} is {word}-separated, but the file is read as "
                        f"{'tab' if delimiter == chr(9) else 'comma'}-separated; set data.format: {fmt}")


def clip(value: object, n: int = 40) -> str:
    s = str(value)
    return repr(s if len(s) <= n else s[: n - 1] + "…")


def _decode(file: Path) -> str:
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{file}: file not found; expected an existing data file") from None
    except IsADirectoryError:
        raise DataError(f"{file}: is a folder; expected a data file") from None
    if not raw.strip():
        raise DataError(f"{file}: empty file; expected a header line and data rows")
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start
        line = raw[:at].count(b"\n") + 1
        raise DataError(
            f"{file}: not UTF-8 at byte offset {at} (line {line}, byte 0x{raw[at]:02x}); "
            "expected UTF-8 text (re-save the file as UTF-8)"
        ) from None


def read_delimited(file: Path, delimiter: str, text_column: str, label_column: str) -> RawTable:
    reader = csv.reader(io.StringIO(_decode(file), newline=""), delimiter=delimiter)
    source, notes, rows = str(file), [], []
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if header is None:
                header = [h.strip() for h in fields]
                _refuse_other_delimiter(header, delimiter, source)
                ti = header.index(_pick_column(header, text_column, "text_column", source, notes))
                li = header.index(_pick_column(header, label_column, "label_column", source, notes))
                continue
            extra = fields[len(header):]
            malformed = None
            if len(fields) < len(header) or any(f.strip() for f in extra):
                malformed = f"{len(fields)} fields, header has {len(header)}"
            text = fields[ti] if ti < len(fields) else None
            label = fields[li] if li < len(fields) else None
            rows.append(RawRow(text, label, f"line {start}", malformed))
    except csv.Error as e:
        raise DataError(f"{file} line {reader.line_num}: unreadable {delimiter!r}-separated row ({e})") from None
    assert header is not None  # _decode rejected blank files
    if not rows:
        raise DataError(f"{file}: no data rows (only the header {header}); expected at least one row")
    return RawTable(source, rows, header[ti], header[li], notes)


def _from_records(file: Path, records: list[tuple[str, object]], text_column: str, label_column: str) -> RawTable:
    """Rows from (where, JSON value) pairs; non-objects become malformed rows."""
    source, notes = str(file), []
    found: dict[str, None] = {}
    for _, rec in records:
        if isinstance(rec, dict):
            found.update(dict.fromkeys(rec))
    cols = list(found)
    tc = _pick_column(cols, text_column, "text_column", source, notes)
    lc = _pick_column(cols, label_column, "label_column", source, notes)
    rows = [
        RawRow(rec.get(tc), rec.get(lc), where)
        if isinstance(rec, dict)
        else RawRow(None, None, where, f"expected a JSON object, got {type(rec).__name__} {clip(rec)}")
        for where, rec in records
    ]
    if not rows:
        raise DataError(f"{file}: no data rows; expected at least one JSON object")
    return RawTable(source, rows, tc, lc, notes)


def read_jsonl(file: Path, text_column: str, label_column: str) -> RawTable:
    records: list[tuple[str, object]] = []
    bad: list[RawRow] = []
    for n, line in enumerate(_decode(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"line {n}", json.loads(line)))
        except json.JSONDecodeError as e:
            bad.append(RawRow(None, None, f"line {n}", f"invalid JSON ({e.msg} at column {e.colno})"))
    if not records:
        raise DataError(f"{file}: no JSON object on any line; expected JSON Lines (one object per line)")
    table = _from_records(file, records, text_column, label_column)
    table.rows = sorted(table.rows + bad, key=lambda r: int(r.where.split()[1]))
    return table


def read_json(file: Path, text_column: str, label_column: str) -> RawTable:
    """A JSON array of objects, a column-wise object {"text": [...], "label": [...]}, or JSON Lines."""
    text = _decode(file)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("["):
            raise DataError(
                f"{file} line {e.lineno} column {e.colno}: invalid JSON ({e.msg}); expected an array of objects"
            ) from None
        return read_jsonl(file, text_column, label_column)
    if isinstance(doc, list):
        return _from_records(file, [(f"row {i}", r) for i, r in enumerate(doc, start=1)], text_column, label_column)
    if isinstance(doc, dict) and doc and all(isinstance(v, list) for v in doc.values()):
        n = max(len(v) for v in doc.values())
        recs = [(f"row {i + 1}", {k: (v[i] if i < len(v) else None) for k, v in doc.items()}) for i in range(n)]
        return _from_records(file, recs, text_column, label_column)
    if isinstance(doc, dict):
        return _from_records(file, [("line 1", doc)], text_column, label_column)
    raise DataError(f"{file}: top-level JSON {type(doc).__name__}; expected an array of objects or JSON Lines")


def read_parquet(file: Path, text_column: str, label_column: str) -> RawTable:
    import pyarrow.parquet as pq

    if not file.exists():
        raise DataError(f"{file}: file not found; expected an existing data file")
    try:
        pf = pq.ParquetFile(file)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError with long messages
        raise DataError(f"{file}: not a readable Parquet file ({str(e).splitlines()[0]}); expected Parquet") from None
    source, notes = str(file), []
    cols = list(pf.schema_arrow.names)
    tc = _pick_column(cols, text_column, "text_column", source, notes)
    lc = _pick_column(cols, label_column, "label_column", source, notes)
    table = pf.read(columns=list(dict.fromkeys([tc, lc])))
    if table.num_rows == 0:
        raise DataError(f"{file}: empty file (0 rows); expected at least one row")
    texts, labels = table.column(tc).to_pylist(), table.column(lc).to_pylist()
    rows = [RawRow(t, lab, f"row {i}") for i, (t, lab) in enumerate(zip(texts, labels), start=1)]
    return RawTable(source, rows, tc, lc, notes)


def read_file(file: Path, fmt: str, text_column: str, label_column: str) -> RawTable:
    if fmt in ("csv", "tsv"):
        return read_delimited(file, "," if fmt == "csv" else "\t", text_column, label_column)
    if fmt == "jsonl":
        return read_jsonl(file, text_column, label_column)
    if fmt == "json":
        return read_json(file, text_column, label_column)
    if fmt == "parquet":
        return read_parquet(file, text_column, label_column)
    raise DataError(f"{file}: unknown format {fmt!r}; expected csv, tsv, jsonl, json or parquet")


def read_hf(
    dataset: str, config: str | None, splits: dict[str, str] | None,
    text_column: Callable[[str], str], label_column: Callable[[str], str],
) -> dict[str, RawTable]:
    """Our split name -> rows of the dataset's split; uses the local HF cache when offline.

    `text_column(split)` / `label_column(split)` name the columns of our split `split`.
    """
    import datasets

    what = f"hf_dataset {dataset!r}" + (f" (config {config!r})" if config else "")

    def fail(e: Exception, split: str | None = None) -> DataError:
        first = (str(e).strip().splitlines() or [""])[0]
        where = f" split {split!r}" if split else ""
        return DataError(
            f"{what}{where}: could not load ({type(e).__name__}: {first}); expected a dataset id in the local HF "
            "cache (offline) or a local dataset folder"
        )

    loaded: dict[str, object] = {}
    if splits:
        for ours, theirs in splits.items():
            try:
                loaded[ours] = datasets.load_dataset(dataset, config, split=theirs)
            except Exception as e:
                raise fail(e, theirs) from e
    else:
        try:
            dd = datasets.load_dataset(dataset, config)
        except Exception as e:
            raise fail(e) from e
        aliases = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
        for ours, names in aliases.items():
            hit = next((n for n in names if n in dd), None)
            if hit is not None:
                loaded[ours] = dd[hit]
        if "train" not in loaded:
            raise DataError(f"{what}: no 'train' split (splits found: {list(dd)}); set data.hf_splits")
    tables = {}
    for ours, ds in loaded.items():
        source, notes = f"{dataset}[{splits[ours] if splits else ours}]", []
        cols = list(ds.column_names)
        tc = _pick_column(cols, text_column(ours), "text_column", source, notes)
        lc = _pick_column(cols, label_column(ours), "label_column", source, notes)
        feature = ds.features[lc]
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
        texts, labels = list(ds[tc]), list(ds[lc])
        if len(texts) == 0:
            raise DataError(f"{source}: empty split (0 rows); expected at least one row")
        rows = [RawRow(t, lab, f"row {i}") for i, (t, lab) in enumerate(zip(texts, labels), start=1)]
        tables[ours] = RawTable(source, rows, tc, lc, notes, names)
    return tables


def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
