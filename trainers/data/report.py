"""What was wrong with the user's data and what the tool did about it, computed before any training."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROBLEMS: dict[str, str] = {
    "malformed_row": "malformed rows",
    "empty_text": "rows with an empty or missing text",
    "invalid_label": "rows whose label is not a label",
    "label_conflict": "rows whose text has two different labels in the split",
    "duplicate_within_split": "repeated rows (same text earlier in the split)",
    "cross_split_duplicate": "rows whose text is also in another split (leakage)",
    "unseen_label": "rows whose label is absent from train",
}


@dataclass
class Problem:
    kind: str  # a field of OnProblem
    split: str
    source: str
    count: int
    examples: list[str]  # first rows, with their line/row number
    detail: str = ""  # breakdown, e.g. "11 repeated header rows"

    def line(self, action: str = "dropped") -> str:
        detail = f" ({self.detail})" if self.detail else ""
        example = f"; e.g. {self.examples[0]}" if self.examples else ""
        return f"{self.split} ({Path(self.source).name}): {action} {self.count} {PROBLEMS[self.kind]}{detail}{example}"


@dataclass
class LabelVariant:
    spelling: str  # as written in the file
    label: str  # the label it was merged into
    count: int


@dataclass
class DataReport:
    sources: dict[str, str] = field(default_factory=dict)
    rows_read: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # after cleaning
    label_rows_read: dict[str, int] = field(default_factory=dict)  # all splits, rows with a valid label
    problems: list[Problem] = field(default_factory=list)
    label_variants: list[LabelVariant] = field(default_factory=list)
    auto_split: dict | None = None
    capped: dict[str, int] = field(default_factory=dict)  # split -> rows before max_rows
    text_chars: dict[str, dict[str, float]] = field(default_factory=dict)
    tokens: dict | None = None  # {"max_seq_len": n, "splits": {split: {"truncated", "max", "mean"}}}
    notes: list[str] = field(default_factory=list)
    extra_warnings: list[str] = field(default_factory=list)

    def count(self, kind: str, split: str | None = None) -> int:
        """Rows dropped for one problem kind (optionally in one split)."""
        return sum(p.count for p in self.problems if p.kind == kind and split in (None, p.split))

    @property
    def warnings(self) -> list[str]:
        out = [p.line() for p in self.problems]
        out += [
            f"label spelled {v.spelling!r} ({v.count} rows) was read as {v.label!r}"
            for v in self.label_variants
        ]
        if self.tokens and self.tokens.get("max_seq_len"):
            for split, t in self.tokens["splits"].items():
                if t["truncated"]:
                    out.append(
                        f"{split}: {t['truncated']} of {t['texts']} texts are longer than max_seq_len="
                        f"{self.tokens['max_seq_len']} tokens and will be truncated (longest {t['max']})"
                    )
        return out + self.extra_warnings

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra_warnings")
        d["warnings"] = self.warnings
        return d

    def render(self, width: int = 110) -> str:
        from rich.console import Console
        from rich.table import Table

        buf = io.StringIO()
        con = Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False, markup=False)
        splits = list(self.rows)
        t = Table(title="Data", title_justify="left")
        t.add_column("split")
        t.add_column("source", overflow="fold")
        t.add_column("read", justify="right")
        t.add_column("dropped", justify="right")
        t.add_column("kept", justify="right")
        for s in splits:
            dropped = sum(p.count for p in self.problems if p.split == s)
            t.add_row(s, self.sources.get(s, ""), str(self.rows_read.get(s, "")), str(dropped), str(self.rows[s]))
        con.print(t)
        if self.auto_split:
            con.print(f"auto split: {self.auto_split}")
        lt = Table(title="Rows per label (after cleaning)", title_justify="left")
        lt.add_column("id", justify="right")
        lt.add_column("label")
        for s in splits:
            lt.add_column(s, justify="right")
        for i, name in enumerate(self.label_names):
            lt.add_row(str(i), name, *(str(self.label_counts.get(s, {}).get(name, 0)) for s in splits))
        con.print(lt)
        if self.problems:
            pt = Table(title="Problems (rows dropped)", title_justify="left")
            for col in ("split", "problem", "rows", "first examples"):
                pt.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
            for p in self.problems:
                detail = f" ({p.detail})" if p.detail else ""
                pt.add_row(p.split, p.kind + detail, str(p.count), "; ".join(p.examples[:3]))
            con.print(pt)
        if self.tokens:
            tt = Table(title=f"Tokens (max_seq_len={self.tokens.get('max_seq_len')})", title_justify="left")
            for col in ("split", "texts", "mean", "max", "truncated"):
                tt.add_column(col, justify="left" if col == "split" else "right")
            for s, v in self.tokens["splits"].items():
                tt.add_row(s, str(v["texts"]), f"{v['mean']:.1f}", str(v["max"]), str(v["truncated"]))
            con.print(tt)
        for n in self.notes:
            con.print(f"note: {n}")
        for w in self.warnings:
            con.print(f"warning: {w}")
        if not self.warnings:
            con.print("no problems found")
        return buf.getvalue()
