"""Vocabulary trimming: keep only the tokens a task's texts use, in the tokenizer and the embeddings.

Multilingual encoders keep most of their weights in the embedding matrix; encoder pruning never
touches it. Trimming rewrites the tokenizer and every vocabulary-sized weight consistently, so text
made of kept tokens tokenises and scores exactly as before.

Names load on first use (PEP 562), so reading `vocabulary:` of a sweep file imports no torch.
"""

from __future__ import annotations

from trainers.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "TrimReport": "trainers.vocab.trim",
    "VocabularyConfig": "trainers.vocab.config",
    "trim_vocabulary": "trainers.vocab.trim",
    "unk_rates": "trainers.vocab.trim",
})
