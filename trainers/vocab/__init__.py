"""Vocabulary trimming: keep only the tokens a task's texts use, in the tokenizer and the embeddings.

Multilingual encoders keep most of their weights in the embedding matrix; encoder pruning never
touches it. Trimming rewrites the tokenizer and every vocabulary-sized weight consistently, so text
made of kept tokens tokenises and scores exactly as before.
"""

from trainers.vocab.config import VocabularyConfig
from trainers.vocab.trim import TrimReport, trim_vocabulary, unk_rates

__all__ = ["TrimReport", "VocabularyConfig", "trim_vocabulary", "unk_rates"]
