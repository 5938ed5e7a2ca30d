"""Load the user's data, find what is wrong with it, apply the policy, and hand back clean splits + a report.

Order of checks (each applies `on_problem` before the next looks at the rows):
malformed rows -> empty texts -> invalid labels -> label conflicts -> duplicates within a split ->
duplicates across splits -> automatic split of what is missing -> labels unseen in train -> `max_rows` cap.
Texts are compared after Unicode NFC and whitespace collapsing (case is kept), so a copy that differs only
in spacing is still a copy. Texts are stored with outer whitespace trimmed.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from trainers.data.config import SPLITS, DataConfig
from trainers.data.errors import DataError
from trainers.data.read import RawTable, clip, is_missing, read_file, read_hf
from trainers.data.report import PROBLEMS, DataReport, LabelVariant, Problem
from trainers.data.split import stratified_cap, stratified_split

log = logging.getLogger(__name__)
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: list[int]  # ids into LoadedData.label_names

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class LoadedData:
    splits: dict[str, Split]  # always "train", "validation", "test" (an evaluation split may be empty)
    label_names: list[str]
    report: DataReport

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass
class _Row:
    text: str
    label: object  # raw value, then the label name once resolved
    where: str
    key: str = ""


@dataclass
class _Part:
    name: str
    source: str
    rows: list[_Row]


def _text_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _label_key(label: str) -> str:
    return " ".join(label.split()).casefold()


def _norm_label(v: object) -> object:
    """None for a missing label; ints stay ints; everything else becomes the string as written."""
    if is_missing(v):
        return None
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, int):
        return v
    s = str(v)
    return s if s.strip() else None


def _is_int(v: object) -> bool:
    return isinstance(v, int) or (isinstance(v, str) and _INT.fullmatch(v.strip()) is not None)


def _names_preview(names: list[str], n: int = 12) -> str:
    return str(names[:n])[:-1] + (", …]" if len(names) > n else "]")


class _Cleaner:
    def __init__(self, cfg: DataConfig, report: DataReport):
        self.cfg, self.report = cfg, report

    def apply(self, kind: str, part: _Part, bad: list[tuple[_Row, str, str]], expected: str) -> None:
        """Drop the `bad` (row, reason, where-detail) of `part`, reported; raise when the policy says "error"."""
        if not bad:
            return
        reasons = Counter(reason for _, reason, _ in bad if reason)
        detail = ", ".join(f"{r}: {n}" for r, n in reasons.most_common(4)) + (", …" if len(reasons) > 4 else "")
        examples = [
            f"{row.where}: {clip(row.text)} / {clip(row.label, 24)} ({' '.join(filter(None, (why, more)))})"
            for row, why, more in bad[:3]
        ]
        if getattr(self.cfg.on_problem, kind) == "error":
            raise DataError(
                f"{part.source}: {len(bad)} {PROBLEMS[kind]} in the {part.name} split "
                f"(data.on_problem.{kind}=error); first: {'; '.join(examples)}; expected {expected}"
            )
        problem = Problem(kind, part.name, part.source, len(bad), examples, detail)
        self.report.problems.append(problem)
        log.warning(problem.line())
        drop = {id(row) for row, _, _ in bad}
        part.rows = [r for r in part.rows if id(r) not in drop]


def _resolve_labels(
    values: Counter, label_names: list[str] | None, report: DataReport
) -> tuple[dict[object, str], dict[object, str], bool]:
    """Map each raw label value to a label name; also the unresolvable values with why, and "integer labels?".

    Spellings differing only in case/whitespace ("Sports" vs "sports ") are one label, written the way most
    rows write it, unless `label_names` lists both spellings (then they are different labels). Every merge is
    reported as a LabelVariant.
    """
    mapping: dict[object, str] = {}
    invalid: dict[object, str] = {}
    if label_names is not None:
        by_key: dict[str, list[str]] = {}
        for n in label_names:
            by_key.setdefault(_label_key(n), []).append(n)

        def by_name(v: object) -> str | None:
            s = str(v)
            if s.strip() in label_names:
                return s.strip()
            hits = by_key.get(_label_key(s), [])
            return hits[0] if len(hits) == 1 else None

        named = {v: by_name(v) for v in values}
        if all(n is not None for n in named.values()) or not all(_is_int(v) for v in values):
            for v, n in named.items():
                if n is None:
                    invalid[v] = f"not one of label_names {_names_preview(label_names)}"
                else:
                    mapping[v] = n
            integer = False
        else:
            for v in values:
                i = int(str(v).strip())
                if 0 <= i < len(label_names):
                    mapping[v] = label_names[i]
                else:
                    invalid[v] = f"integer label {i} outside 0..{len(label_names) - 1} of label_names"
            integer = True
    elif values and all(_is_int(v) for v in values):
        mapping = {v: str(int(str(v).strip())) for v in values}
        integer = True
    else:
        groups: dict[str, Counter] = {}
        for v, n in values.items():
            groups.setdefault(_label_key(str(v)), Counter())[str(v)] += n
        for spellings in groups.values():
            best = sorted(spellings.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
            name = " ".join(best.split())
            for s in spellings:
                mapping[s] = name
        mapping = {v: mapping[str(v)] for v in values}
        integer = False
    for v, name in mapping.items():
        if str(v) != name and not integer:
            report.label_variants.append(LabelVariant(str(v), name, values[v]))
    return mapping, invalid, integer


def _read_all(cfg: DataConfig, base_dir: Path) -> dict[str, RawTable]:
    if cfg.hf_dataset is not None:
        local = base_dir / cfg.hf_dataset
        dataset = str(local) if not Path(cfg.hf_dataset).is_absolute() and local.exists() else cfg.hf_dataset
        return read_hf(dataset, cfg.hf_config, cfg.hf_splits, lambda split: cfg.column("text_column", split),
                       lambda split: cfg.column("label_column", split))
    return {
        name: read_file(file, cfg.file_format(file), cfg.column("text_column", name), cfg.column("label_column", name))
        for name, file in cfg.files(base_dir).items()
    }


def load_data(
    cfg: DataConfig, base_dir: Path | str, *, max_seq_len: int | None = None, tokenizer=None
) -> LoadedData:
    """Read, validate and clean the data named by `cfg`; DataError when it cannot be used.

    Pass `tokenizer` (and `max_seq_len`) to have the report count texts that training will truncate.
    """
    report = DataReport()
    tables = _read_all(cfg, Path(base_dir))
    if "pool" in tables:  # the single `path`: cleaned as train, then split
        tables = {"train": tables.pop("pool")}
    cleaner = _Cleaner(cfg, report)
    parts = _screen_rows(tables, cleaner, report)
    label_names = cfg.label_names or next((t.label_names for t in tables.values() if t.label_names), None)
    integer = _check_labels(parts, tables, label_names, cleaner, report)
    _drop_duplicates(parts, cleaner)
    _drop_leakage(parts, cleaner)
    _auto_split(cfg, parts, report)
    train = parts["train"]
    in_train = {r.label for r in train.rows}
    if len(in_train) < 2:
        raise DataError(
            f"{train.source}: {len(train.rows)} training rows with labels {sorted(in_train)} left after cleaning; "
            f"expected at least 2 labels in column {tables['train'].label_column!r}"
        )
    if label_names:
        names = list(label_names)
    else:
        names = sorted(in_train, key=int) if integer else sorted(in_train)
    for name in ("validation", "test"):
        part = parts[name]
        unseen = [(r, f"label {r.label!r} not in train", "") for r in part.rows if r.label not in in_train]
        cleaner.apply("unseen_label", part, unseen, f"labels that occur in train ({_names_preview(sorted(in_train))})")
    report.extra_warnings += [
        f"train: label {n!r} (from label_names) has no training rows" for n in names if n not in in_train
    ]
    cleaned = Counter(r.label for part in parts.values() for r in part.rows)  # per label, before any sampling
    if cfg.max_rows is not None:
        _cap(parts, cfg.max_rows, cfg.split.seed, report)
    index = {n: i for i, n in enumerate(names)}
    splits = {n: Split([r.text for r in parts[n].rows], [index[r.label] for r in parts[n].rows]) for n in SPLITS}
    _summarise(splits, names, report, cleaned=cleaned, max_rows=cfg.max_rows if report.capped else None)
    if tokenizer is not None:
        report.tokens = token_stats(splits, tokenizer, max_seq_len)
    elif max_seq_len is not None:
        report.notes.append("no tokenizer given: texts longer than max_seq_len were not counted")
    for w in report.warnings[len(report.problems):]:
        log.warning(w)
    return LoadedData(splits, names, report)


def _screen_rows(tables: dict[str, RawTable], cleaner: _Cleaner, report: DataReport) -> dict[str, _Part]:
    """Rows that parse and carry a text; outer whitespace trimmed."""
    parts: dict[str, _Part] = {}
    trimmed = 0
    for name, table in tables.items():
        report.sources[name] = table.source
        report.rows_read[name] = len(table.rows)
        report.notes += table.notes
        part = _Part(name, table.source, [])
        malformed, empty = [], []
        for raw in table.rows:
            text = "" if is_missing(raw.text) else str(raw.text)
            row = _Row(text.strip(), _norm_label(raw.label), raw.where, _text_key(text))
            trimmed += row.text != text
            part.rows.append(row)
            if raw.malformed:
                malformed.append((row, raw.malformed, ""))
            elif not row.text:
                empty.append((row, "missing text" if is_missing(raw.text) else "blank text", ""))
        cleaner.apply("malformed_row", part, malformed, "one record per row, with the header's fields")
        cleaner.apply("empty_text", part, empty, f"a non-empty text in column {table.text_column!r}")
        parts[name] = part
    if trimmed:
        report.notes.append(f"{trimmed} texts had leading/trailing whitespace (trimmed)")
    return parts


def _check_labels(
    parts: dict[str, _Part],
    tables: dict[str, RawTable],
    label_names: list[str] | None,
    cleaner: _Cleaner,
    report: DataReport,
) -> bool:
    """Drop rows without a real label (missing, a repeated header, not a listed name); set row.label to the name.

    Returns whether the labels are integers (so that inferred names sort numerically).
    """
    label_bad: dict[str, list[tuple[_Row, str, str]]] = {n: [] for n in parts}
    values: Counter = Counter()
    for part in parts.values():
        text_h, label_h = _label_key(tables[part.name].text_column), _label_key(tables[part.name].label_column)
        for r in part.rows:
            if r.label is None:
                label_bad[part.name].append((r, "missing label", ""))
            elif isinstance(r.label, str) and _label_key(r.label) == label_h:
                why = "repeated header row" if _label_key(r.text) == text_h else "label is the column name"
                label_bad[part.name].append((r, why, ""))
            else:
                values[r.label] += 1
    mapping, invalid, integer = _resolve_labels(values, label_names, report)
    for part in parts.values():
        flagged = {id(r): why for r, why, _ in label_bad[part.name]}
        bad = [
            (r, flagged.get(id(r)) or invalid[r.label], "")
            for r in part.rows
            if id(r) in flagged or r.label in invalid
        ]
        column = tables[part.name].label_column
        expect = f"a label in column {column!r}" + (f" among {_names_preview(label_names)}" if label_names else "")
        cleaner.apply("invalid_label", part, bad, expect)
        for r in part.rows:
            r.label = mapping[r.label]
    report.label_rows_read = dict(sorted(Counter(r.label for p in parts.values() for r in p.rows).items()))
    return integer


def _drop_duplicates(parts: dict[str, _Part], cleaner: _Cleaner) -> None:
    """Within each split: texts carrying two labels go entirely, then later copies of a text go."""
    for part in parts.values():
        labels_of: dict[str, set] = {}
        for r in part.rows:
            labels_of.setdefault(r.key, set()).add(r.label)
        conflict = [
            (r, f"text labelled {sorted(labels_of[r.key])}", "") for r in part.rows if len(labels_of[r.key]) > 1
        ]
        cleaner.apply("label_conflict", part, conflict, "one label per distinct text")
        firsts: dict[str, _Row] = {}
        dup = []
        for r in part.rows:
            f = firsts.setdefault(r.key, r)
            if f is not r:
                dup.append((r, "", f"repeats {f.where}"))
        cleaner.apply("duplicate_within_split", part, dup, "each text once per split")


def _drop_leakage(parts: dict[str, _Part], cleaner: _Cleaner) -> None:
    """A text in two splits stays in the one nearer to being the reference: test > validation > train."""
    order = [n for n in ("test", "validation", "train") if n in parts]
    for i, loser in enumerate(order[1:], start=1):
        owners: dict[str, tuple[str, _Row]] = {}
        for winner in order[:i]:
            for r in parts[winner].rows:
                owners.setdefault(r.key, (winner, r))
        leak = [
            (r, f"also in {owners[r.key][0]}", f"at {owners[r.key][1].where}")
            for r in parts[loser].rows
            if r.key in owners
        ]
        cleaner.apply("cross_split_duplicate", parts[loser], leak, f"no text of the {loser} split in {order[:i]}")


def _cap(parts: dict[str, _Part], max_rows: int, seed: int, report: DataReport) -> None:
    for name, part in parts.items():
        if len(part.rows) > max_rows:
            report.capped[name] = len(part.rows)
            keep = stratified_cap([r.label for r in part.rows], max_rows, f"{seed}/{name}")
            part.rows = [part.rows[i] for i in keep]
    if report.capped:
        report.notes.append(f"max_rows={max_rows}: stratified sample of {report.capped} rows")


def _summarise(splits: dict[str, Split], names: list[str], report: DataReport, *, cleaned: Counter,
               max_rows: int | None) -> None:
    """`cleaned`: rows per label that survived cleaning; `max_rows`: the cap, when it sampled a split."""
    kept = Counter(names[k] for s in splits.values() for k in s.labels)
    for n, read in report.label_rows_read.items():
        if kept[n] >= read / 2:
            continue
        sampled = f"max_rows={max_rows} sampled them down to {kept[n]} (a stratified sample per split)"
        if cleaned[n] >= read / 2:  # cleaning kept most of them: the sampling is the cause
            report.extra_warnings.append(f"label {n!r}: {kept[n]} of its {read} valid rows are used because "
                                         f"{sampled}; cleaning kept {cleaned[n]}")
        else:
            report.extra_warnings.append(
                f"label {n!r}: only {cleaned[n]} of its {read} valid rows survive cleaning (see the problems above)"
                + (f"; then {sampled}" if max_rows is not None else ""))
    report.extra_warnings += [f"{n}: split is empty after cleaning" for n in SPLITS if not splits[n].texts]
    report.label_names = names
    report.rows = {n: len(s) for n, s in splits.items()}
    report.label_counts = {n: {names[k]: c for k, c in sorted(Counter(s.labels).items())} for n, s in splits.items()}
    report.text_chars = {
        n: {"min": min(map(len, s.texts)), "mean": sum(map(len, s.texts)) / len(s), "max": max(map(len, s.texts))}
        for n, s in splits.items()
        if s.texts
    }


def _auto_split(cfg: DataConfig, parts: dict[str, _Part], report: DataReport) -> None:
    """Cut the missing evaluation splits from train (or the single `path`), stratified by label."""
    wanted = {n: getattr(cfg.split, n) for n in ("test", "validation") if n not in parts}
    if not wanted:
        return
    pool = parts["train"]
    keep, cut = stratified_split([r.label for r in pool.rows], wanted, cfg.split.seed)
    for n, idx in cut.items():
        parts[n] = _Part(n, pool.source, [pool.rows[i] for i in idx])
        report.sources[n] = f"{pool.source} ({wanted[n]:.0%} stratified, seed {cfg.split.seed})"
    pool.rows = [pool.rows[i] for i in keep]
    report.auto_split = {"from": "path" if cfg.path is not None else "train", **wanted, "seed": cfg.split.seed}


def token_stats(splits: dict[str, Split], tokenizer, max_seq_len: int | None) -> dict:
    """Token counts (special tokens included) per split; `truncated` = texts longer than max_seq_len."""
    out = {}
    for name, split in splits.items():
        if not split.texts:
            continue
        ids = tokenizer(split.texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        lengths = [len(x) for x in ids]
        out[name] = {
            "texts": len(lengths),
            "mean": sum(lengths) / len(lengths),
            "max": max(lengths),
            "truncated": sum(n > max_seq_len for n in lengths) if max_seq_len else 0,
        }
    return {"max_seq_len": max_seq_len, "splits": out}
