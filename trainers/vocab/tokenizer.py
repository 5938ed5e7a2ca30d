"""Rewrite a fast tokenizer's vocabulary to a kept subset of its ids, renumbered in their old order.

The tokenizer's whole pipeline (normaliser, pre-tokeniser, model, post-processor, decoder) lives in
one JSON document; only the model's vocabulary, the unknown token's id, the added tokens' ids and
the post-processor's special-token ids change. Why tokenisation of kept text is unchanged:
- WordPiece is greedy longest-match: the piece chosen at each position was kept, and no longer
  candidate exists in a subset of the old vocabulary, so the same piece wins;
- Unigram picks the most probable segmentation: the old best one is still available with the same
  scores, and every alternative was already available before, so it still wins.
BPE is refused: its merges create intermediate tokens that a text's final tokens do not reveal.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

SUPPORTED = ("WordPiece", "Unigram")
# What save_pretrained of a fast tokenizer may write; anything else (vocab.txt, *.model) describes the
# old vocabulary and must not be shipped next to the trimmed one.
_KEEP_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"}


def backend_spec(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"vocabulary trimming needs a fast tokenizer (a tokenizer.json); {type(tokenizer).__name__} has none"
        )
    spec = json.loads(backend.to_str())
    kind = spec["model"]["type"]
    if kind not in SUPPORTED:
        raise ValueError(f"vocabulary trimming supports {' and '.join(SUPPORTED)} tokenizers; this one is {kind}")
    return spec


def vocab_tokens(spec: dict) -> list[str]:
    """The model vocabulary as a list indexed by id."""
    model = spec["model"]
    if model["type"] == "Unigram":
        return [piece for piece, _score in model["vocab"]]
    tokens = [""] * len(model["vocab"])
    for token, idx in model["vocab"].items():
        tokens[idx] = token
    return tokens


def required_ids(spec: dict, tokenizer) -> set[int]:
    """Ids that every trimmed vocabulary keeps: special and added tokens, the unknown token, byte fallbacks."""
    keep = {t["id"] for t in spec.get("added_tokens", [])}
    keep |= set(tokenizer.all_special_ids)
    model = spec["model"]
    if model["type"] == "Unigram":
        if model.get("unk_id") is not None:
            keep.add(model["unk_id"])
        if model.get("byte_fallback"):  # unknown characters become <0xNN> pieces: all 256 stay reachable
            keep |= {i for i, (p, _) in enumerate(model["vocab"]) if len(p) == 6 and p.startswith("<0x") and p.endswith(">")}
    else:
        keep.add(model["vocab"][model["unk_token"]])
    return keep


def character_ids(spec: dict, tokenizer, texts) -> set[int]:
    """Ids of the single-character tokens (word-initial and word-internal forms) of every character that
    `texts` contain after the tokenizer's normalisation: with them, any word written in those characters
    still tokenises (spelled out) instead of becoming the unknown token."""
    normalizer = tokenizer.backend_tokenizer.normalizer
    chars: set[str] = set()
    for text in texts:
        chars |= set(normalizer.normalize_str(text) if normalizer is not None else text)
    chars -= set(" \t\n\r")
    model = spec["model"]
    if model["type"] == "Unigram":
        index = {piece: i for i, (piece, _) in enumerate(model["vocab"])}
        forms = ["\u2581", *chars, *("\u2581" + c for c in chars)]  # SentencePiece's word-start mark
    else:
        index = model["vocab"]
        prefix = model.get("continuing_subword_prefix") or "##"
        forms = [*chars, *(prefix + c for c in chars)]
    return {index[f] for f in forms if f in index}


def _remap_post_processor(node: dict | None, new_id: dict[int, int]) -> None:
    if node is None:
        return
    kind = node["type"]
    if kind == "Sequence":
        for child in node["processors"]:
            _remap_post_processor(child, new_id)
    elif kind == "TemplateProcessing":
        for special in node["special_tokens"].values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for field in ("sep", "cls"):
            token, idx = node[field]
            node[field] = [token, new_id[idx]]
    elif kind != "ByteLevel":
        raise ValueError(f"vocabulary trimming: post-processor {kind} is not supported")


def trimmed_spec(spec: dict, kept: list[int]) -> dict:
    """A copy of `spec` whose vocabulary is `kept` (sorted old ids), renumbered 0..len(kept)-1."""
    new_id = {old: new for new, old in enumerate(kept)}
    out = json.loads(json.dumps(spec))
    model = out["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [spec["model"]["vocab"][old] for old in kept]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        tokens = vocab_tokens(spec)
        model["vocab"] = {tokens[old]: new for new, old in enumerate(kept)}
    for added in out.get("added_tokens", []):
        added["id"] = new_id[added["id"]]
    _remap_post_processor(out.get("post_processor"), new_id)
    for state in ("truncation", "padding"):  # call-time state, not part of the vocabulary
        out[state] = None
    return out


def rebuild_tokenizer(tokenizer, spec: dict, new_id: dict[int, int]):
    """The same tokenizer class and settings with `spec` as its pipeline (saved and reloaded, so it reloads)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer.save_pretrained(folder)
        for path in folder.iterdir():
            if path.name not in _KEEP_FILES:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if "added_tokens_decoder" in config:
            config["added_tokens_decoder"] = {str(new_id[int(k)]): v for k, v in config["added_tokens_decoder"].items()}
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        rebuilt = AutoTokenizer.from_pretrained(folder)
    rebuilt.name_or_path = tokenizer.name_or_path
    return rebuilt
