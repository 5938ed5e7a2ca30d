"""`vocabulary:` in a sweep file: whether and how to trim the teacher's vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class VocabularyConfig(BaseModel):
    """none: the tokenizer as shipped; corpus: keep the tokens the training texts (and `corpus`) use;
    top_k: keep the `keep` most frequent of those. Special tokens are always kept, and with `characters`
    the single-character tokens of the texts' characters too."""

    model_config = ConfigDict(extra="forbid")

    trim: Literal["none", "corpus", "top_k"] = Field("none", description="none | corpus | top_k")
    keep: int | None = Field(None, ge=1, description="top_k only: how many non-special tokens to keep")
    characters: bool = Field(
        True,
        description="also keep the single-character tokens of every character the texts use, so that an unseen "
        "word of a known script is spelled out in characters instead of becoming the unknown token",
    )
    corpus: Path | None = Field(
        None, description="an extra UTF-8 text file, one text per line, whose tokens are kept too (relative to the sweep file)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> VocabularyConfig:
        if self.trim == "top_k" and self.keep is None:
            raise ValueError("vocabulary.keep: required when vocabulary.trim is 'top_k' (the number of tokens to keep)")
        if self.trim != "top_k" and self.keep is not None:
            raise ValueError(f"vocabulary.keep: only used with vocabulary.trim 'top_k', but trim is {self.trim!r}")
        if self.trim == "none" and self.corpus is not None:
            raise ValueError("vocabulary.corpus: only used when vocabulary.trim is 'corpus' or 'top_k', but trim is 'none'")
        return self

    def corpus_path(self, base_dir: Path) -> Path | None:
        """The extra corpus resolved against the sweep file's folder; raises naming the field if it is missing."""
        if self.corpus is None:
            return None
        path = self.corpus if self.corpus.is_absolute() else Path(base_dir) / self.corpus
        if not path.is_file():
            raise ValueError(f"vocabulary.corpus: {str(self.corpus)!r} is not a file (looked for {path})")
        return path

    def corpus_texts(self, base_dir: Path) -> list[str]:
        path = self.corpus_path(base_dir)
        if path is None:
            return []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ValueError(f"vocabulary.corpus: {path.name} is not UTF-8 text ({exc})") from None
        return [line for line in lines if line.strip()]

    def cache_payload(self, base_dir: Path) -> dict:
        """What makes two trimmed teachers differ: the settings and the corpus file's content."""
        import hashlib

        path = self.corpus_path(base_dir)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None
        return {"trim": self.trim, "keep": self.keep, "characters": self.characters, "corpus_sha256": digest}
