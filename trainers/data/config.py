"""The `data:` section of a sweep file: where the user's data lives and what to do with its flaws.

Three ways to name data, exactly one per config:

* ``train`` (+ optional ``validation`` / ``test``): local files, one per split;
* ``path``: one local file that the tool splits (stratified) into train/validation/test;
* ``hf_dataset``: a Hugging Face dataset id (or a local dataset folder), read with
  ``datasets.load_dataset`` (offline when HF_DATASETS_OFFLINE / HF_HUB_OFFLINE = 1).

Missing validation/test splits are cut from train by `split` (stratified, seeded). `max_seq_len`
is deliberately absent: it belongs to training, and the data report only takes it as an argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from trainers.data.errors import DataError
from trainers.strict import Strict

Policy = Literal["drop", "error"]
SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}


class SplitConfig(Strict):
    """Fractions of the pool being split (the single `path` file, or `train` when a split is missing)."""

    validation: float = Field(0.1, ge=0, lt=1, description="fraction cut for validation when it is not given")
    test: float = Field(0.2, ge=0, lt=1, description="fraction cut for test when it is not given")
    seed: int = 0

    @model_validator(mode="after")
    def _leaves_train(self) -> SplitConfig:
        if self.validation + self.test >= 1:
            raise ValueError(f"split.validation + split.test must be < 1 (got {self.validation} + {self.test})")
        return self


class OnProblem(Strict):
    """What to do with each kind of faulty row: "drop" it (logged, counted in the report) or stop with an "error".

    Which copy goes when the same text is in two places, and why:

    * ``duplicate_within_split``: later copies are dropped, the first occurrence stays.
    * ``cross_split_duplicate`` (leakage): the copy in the split that is *less* of a reference loses it. Test is
      never shrunk (its metric is the one compared with published numbers), so a train or validation row whose
      text is also in test is dropped from train/validation; a train row also in validation is dropped from train.
      Training on evaluation texts would inflate every accuracy the sweep reports.
    * ``label_conflict``: the same text with two different labels in one split. No copy can be trusted, so all
      its rows leave that split.
    * ``unseen_label``: a validation/test row whose label never occurs in (cleaned) train: the model cannot
      predict it, so it is dropped from that evaluation split.
    """

    empty_text: Policy = "drop"
    invalid_label: Policy = "drop"
    malformed_row: Policy = "drop"
    label_conflict: Policy = "drop"
    duplicate_within_split: Policy = "drop"
    cross_split_duplicate: Policy = "drop"
    unseen_label: Policy = "drop"


class DataConfig(Strict):
    """The user's labelled texts and the cleaning policy; validated before any training starts."""

    path: Path | None = Field(None, description="one file, split by the tool into train/validation/test")
    train: Path | None = None
    validation: Path | None = None
    test: Path | None = None
    format: Literal["csv", "tsv", "jsonl", "json", "parquet"] | None = Field(
        None, description="file format; inferred from the extension when absent"
    )
    hf_dataset: str | None = Field(None, description="Hugging Face dataset id, or a local dataset folder")
    hf_config: str | None = None
    hf_splits: dict[SplitName, str] | None = Field(
        None, description="our split -> the dataset's split name; default train/validation(or valid, dev)/test"
    )
    text_column: str | dict[SplitName, str] = Field(
        "text", description="the text column; or one per split, e.g. {train: sentence, validation: content, "
        "test: content} where the published files name it differently"
    )
    label_column: str | dict[SplitName, str] = Field("label", description="the label column; or one per split")
    label_names: list[str] | None = Field(
        None, description="fixes label order (id = position); integer labels index into it"
    )
    max_rows: PositiveInt | None = Field(None, description="stratified row cap per split, for quick runs")
    split: SplitConfig = SplitConfig()
    on_problem: OnProblem = OnProblem()

    @field_validator("on_problem", mode="before")
    @classmethod
    def _one_policy_for_all(cls, v: object) -> object:
        """`on_problem: error` is shorthand for every problem set to error."""
        if isinstance(v, str):
            return {name: v for name in OnProblem.model_fields}
        return v

    @field_validator("label_names")
    @classmethod
    def _distinct_names(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if len(v) < 2:
            raise ValueError(f"label_names needs at least 2 labels (got {v})")
        stripped = [n.strip() for n in v]
        if any(not n for n in stripped):
            raise ValueError("label_names contains an empty name")
        dupes = sorted({n for n in stripped if stripped.count(n) > 1})
        if dupes:
            raise ValueError(f"label_names repeats {dupes}")
        return stripped

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        files = {k: getattr(self, k) for k in SPLITS if getattr(self, k) is not None}
        sources = [name for name, on in (("path", self.path is not None), ("train/validation/test", bool(files)),
                                         ("hf_dataset", self.hf_dataset is not None)) if on]
        if len(sources) != 1:
            raise ValueError(
                "data: give exactly one of `path`, `train` (+ `validation`/`test`) or `hf_dataset`"
                + (f" (got {' and '.join(sources)})" if sources else " (got none)")
            )
        if files and "train" not in files:
            raise ValueError("data: `validation`/`test` given without `train`; give `train` or a single `path`")
        if self.hf_dataset is None and (self.hf_config is not None or self.hf_splits is not None):
            raise ValueError("data: `hf_config`/`hf_splits` only apply with `hf_dataset`")
        if self.hf_dataset is not None and self.format is not None:
            raise ValueError("data: `format` applies to local files, not `hf_dataset`")
        if self.hf_splits is not None and "train" not in self.hf_splits:
            raise ValueError("data.hf_splits must map `train` to a split name")
        return self

    @model_validator(mode="after")
    def _columns_per_split(self) -> DataConfig:
        read = ["train"] if self.path is not None else [k for k in SPLITS if getattr(self, k) is not None]
        if self.hf_dataset is not None:
            read = list(self.hf_splits or SPLITS)
        for field in ("text_column", "label_column"):
            value = getattr(self, field)
            if isinstance(value, dict):
                missing = [k for k in read if k not in value]
                if missing and (self.hf_dataset is None or "train" in missing):
                    raise ValueError(
                        f"data.{field}: no column named for split(s) {', '.join(missing)} (got {value}); name one "
                        f"per split read ({', '.join(read)}), or give a single column name"
                    )
        return self

    def column(self, field: Literal["text_column", "label_column"], split: str) -> str:
        """The column `field` names in `split`'s file ("pool", the single `path`, reads train's)."""
        value = getattr(self, field)
        if isinstance(value, str):
            return value
        return value.get("train" if split == "pool" else split) or value["train"]

    def files(self, base_dir: Path) -> dict[str, Path]:
        """Local files per split ("pool" for the single `path`), relative paths resolved against base_dir."""
        named = {"pool": self.path} if self.path is not None else {k: getattr(self, k) for k in SPLITS}
        return {k: (p if p.is_absolute() else Path(base_dir) / p) for k, p in named.items() if p is not None}

    def file_format(self, file: Path) -> str:
        """The explicit `format`, else the one the extension implies; DataError when neither says."""
        if self.format is not None:
            return self.format
        fmt = FORMATS.get(file.suffix.lower())
        if fmt is None:
            raise DataError(
                f"{file}: unknown format (extension {file.suffix or '(none)'!r}); expected one of "
                f"{', '.join(FORMATS)} or set data.format"
            )
        return fmt
