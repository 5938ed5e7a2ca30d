"""Choose the kept tokens, trim model and tokenizer together, and report what it saved and cost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel

from trainers import metrics as M
from trainers.vocab.config import VocabularyConfig
from trainers.vocab.embeddings import (
    _ID_FIELDS,
    trim_embeddings,
    unique_param_bytes,
    unique_param_count,
    word_embeddings,
)
from trainers.vocab.tokenizer import backend_spec, character_ids, rebuild_tokenizer, required_ids, trimmed_spec

_BATCH = 1024


class TrimReport(BaseModel):
    trim: str
    vocab_size_before: int
    vocab_size_after: int
    special_kept: int
    characters_kept: int  # single-character tokens kept beyond those the texts use as tokens (cfg.characters)
    distinct_in_texts: int  # distinct non-special tokens the training texts (+ corpus) use
    params_before: int
    params_after: int
    bytes_before: int
    bytes_after: int

    @property
    def params_saved(self) -> int:
        return self.params_before - self.params_after

    @property
    def bytes_saved(self) -> int:
        return self.bytes_before - self.bytes_after

    def metrics(self) -> dict[str, float]:
        """The trim's numbers under their names in trainers.metrics."""
        return {
            M.VOCAB_SIZE_BEFORE: float(self.vocab_size_before),
            M.VOCAB_SIZE_AFTER: float(self.vocab_size_after),
            M.VOCAB_PARAMS_SAVED: float(self.params_saved),
            M.VOCAB_WEIGHTS_SAVED: self.bytes_saved / 2**20,
        }


def token_counts(tokenizer, texts: Iterable[str]) -> Counter:
    """How often each id occurs when `texts` are tokenised in full (no truncation, no special tokens)."""
    counts: Counter = Counter()
    texts = list(texts)
    for start in range(0, len(texts), _BATCH):
        for ids in tokenizer(texts[start:start + _BATCH], add_special_tokens=False, truncation=False,
                             verbose=False)["input_ids"]:
            counts.update(ids)
    return counts


def kept_ids(tokenizer, model_config, texts: list[str], counts: Counter,
             cfg: VocabularyConfig) -> tuple[list[int], set[int], set[int]]:
    """Sorted old ids to keep; the required (special) ones and the character ones among them."""
    spec = backend_spec(tokenizer)
    required = required_ids(spec, tokenizer)
    required |= {v for f in _ID_FIELDS if isinstance(v := getattr(model_config, f, None), int)}
    characters = character_ids(spec, tokenizer, texts) - required if cfg.characters else set()
    used = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if i not in required | characters]
    if cfg.trim == "top_k":
        used = used[: cfg.keep]
    return sorted(required | characters | set(used)), required, characters


def trim_vocabulary(model, tokenizer, texts: Iterable[str], cfg: VocabularyConfig):
    """(model, tokenizer, report) with the vocabulary cut to the special tokens plus those `texts` use
    (all of them for trim 'corpus', the `cfg.keep` most frequent for 'top_k'; ties go to the lower id),
    plus, with `cfg.characters`, the single-character tokens of the texts' characters.

    `texts` are the training texts plus any extra corpus. The model is changed in place. Text made of
    kept tokens tokenises to the same tokens (renumbered ids) and gives the same logits; any other
    token is re-segmented into kept pieces or becomes the unknown token.
    """
    if cfg.trim == "none":
        raise ValueError("trim_vocabulary: vocabulary.trim is 'none'; there is nothing to trim")
    from trainers.families import adapter_for

    if (why := adapter_for(model).vocabulary_refusal(tokenizer)) is not None:
        raise ValueError(f"vocabulary trimming: {why}")
    spec = backend_spec(tokenizer)
    size_before = word_embeddings(model).num_embeddings
    if size_before != len(tokenizer):
        raise ValueError(
            f"vocabulary trimming: the model has {size_before} embedding rows but the tokenizer {len(tokenizer)} tokens; "
            "they must describe the same vocabulary"
        )
    texts = list(texts)
    counts = token_counts(tokenizer, texts)
    kept, required, characters = kept_ids(tokenizer, model.config, texts, counts, cfg)
    params_before, bytes_before = unique_param_count(model), unique_param_bytes(model)
    new_id = {old: new for new, old in enumerate(kept)}
    new_tokenizer = rebuild_tokenizer(tokenizer, trimmed_spec(spec, kept), new_id)
    trim_embeddings(model, kept)
    if len(new_tokenizer) != len(kept):
        raise AssertionError(f"trimmed tokenizer has {len(new_tokenizer)} tokens, expected {len(kept)}")
    report = TrimReport(
        trim=cfg.trim, vocab_size_before=size_before, vocab_size_after=len(kept), special_kept=len(required),
        characters_kept=len(characters - set(counts)),
        distinct_in_texts=sum(1 for i in counts if i not in required),
        params_before=params_before, params_after=unique_param_count(model),
        bytes_before=bytes_before, bytes_after=unique_param_bytes(model),
    )
    return model, new_tokenizer, report


def unk_rates(before, after, texts: Iterable[str]) -> tuple[float, float]:
    """(lost_rate, unk_rate) of `texts`, both over their tokens under the untrimmed tokenizer `before`
    (special tokens not counted): the share of those tokens that the trimmed vocabulary lacks (they are
    re-segmented into kept pieces or unknown now), and the share that became unknown, i.e. how many
    more unknown tokens the trimmed tokenizer `after` produces than `before` did."""
    texts = list(texts)
    if not texts:
        return 0.0, 0.0
    kept_tokens = set(after.get_vocab())
    old_counts = token_counts(before, texts)
    old_tokens = before.convert_ids_to_tokens(list(old_counts))
    total = max(sum(old_counts.values()), 1)
    lost = sum(n for tok, n in zip(old_tokens, old_counts.values()) if tok not in kept_tokens)
    new_unk = token_counts(after, texts).get(after.unk_token_id, 0)
    return lost / total, max(new_unk - old_counts.get(before.unk_token_id, 0), 0) / total
