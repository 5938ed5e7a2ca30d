"""Vocabulary trimming on real tokenizers: MiniLM's WordPiece and a trained Unigram (SentencePiece-style)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from pydantic import ValidationError

from tests.conftest import TOPICS, make_topics_csv, minilm_dir
from trainers import metrics as M
from trainers.vocab import VocabularyConfig, trim_vocabulary, unk_rates

CORPUS = VocabularyConfig(trim="corpus", characters=False)  # exactly the used tokens


def topic_texts(tmp_path, per_class=12) -> list[str]:
    lines = make_topics_csv(tmp_path / "t.csv", per_class=per_class).read_text().splitlines()[1:]
    return [line.rsplit(",", 1)[0] for line in lines]


def reshuffled(texts: list[str]) -> list[str]:
    """New sentences made only of the training texts' words (so: in-vocabulary, but never seen as such)."""
    words = sorted({w for t in texts for w in t.split()})
    return [" ".join(words[i::7]) for i in range(7)]


@pytest.fixture(scope="module")
def wordpiece():
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=64, vocab_size=30522, num_labels=4)
    return BertForSequenceClassification(config).eval(), AutoTokenizer.from_pretrained(minilm_dir())


UNIGRAM_TRAIN = [
    "the market rallied as bank profits rose", "the striker scored a goal in the final match",
    "doctors said the vaccine reduced symptoms", "a telescope found a new planet orbiting a star",
    "investors sold shares after the merger", "the coach praised the keeper after the league match",
    "patients waited at the clinic for the nurse", "the genome study used cells from the laboratory",
    "a quick quiz on jazz and zebras",
]


@pytest.fixture(scope="module")
def unigram():
    """An XLM-R-style model with a Unigram tokenizer trained here (Metaspace '▁' pieces, <s> </s> <unk>)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaForSequenceClassification

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.NFKC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator(UNIGRAM_TRAIN * 4, trainers.UnigramTrainer(vocab_size=150, special_tokens=specials,
                                                                           unk_token="<unk>"))
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    assert json.loads(backend.to_str())["model"]["type"] == "Unigram"
    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=80, pad_token_id=1, bos_token_id=0,
                              eos_token_id=2, num_labels=3)
    return XLMRobertaForSequenceClassification(config).eval(), tokenizer


def logits(model, tokenizer, texts):
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def tokens(tokenizer, texts):
    return [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts)["input_ids"]]


def copy_of(pair):
    import copy

    model, tokenizer = pair
    return copy.deepcopy(model), tokenizer


def assert_trim_is_exact(model, tokenizer, train, probe, oov_text, tmp_path):
    before_logits, before_tokens = logits(model, tokenizer, probe), tokens(tokenizer, probe)
    embed_rows = model.get_input_embeddings().weight.shape[1]
    model2, tok2, report = trim_vocabulary(model, tokenizer, train, CORPUS)

    # same tokens, new ids, same logits
    assert tokens(tok2, probe) == before_tokens
    assert tok2(probe)["input_ids"] != tokenizer(probe)["input_ids"]
    torch.testing.assert_close(logits(model2, tok2, probe), before_logits, atol=1e-5, rtol=0)
    # physically smaller: embedding rows = kept tokens, tokenizer agrees
    assert model2.get_input_embeddings().weight.shape[0] == len(tok2) == report.vocab_size_after < report.vocab_size_before
    assert model2.config.vocab_size == len(tok2)
    assert report.params_saved == (report.vocab_size_before - report.vocab_size_after) * embed_rows
    assert report.metrics()[M.VOCAB_PARAMS_SAVED] == report.params_saved
    # a token no training text used is unknown now
    assert tok2.unk_token_id in tok2(oov_text)["input_ids"]
    assert tokenizer.unk_token_id not in tokenizer(oov_text)["input_ids"]

    # save -> reload with plain transformers: same tokens and logits, no stale vocabulary file shipped
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model2.save_pretrained(tmp_path / "trimmed")
    tok2.save_pretrained(tmp_path / "trimmed")
    assert not any(p.suffix in {".txt", ".model"} for p in (tmp_path / "trimmed").iterdir())
    tok3 = AutoTokenizer.from_pretrained(tmp_path / "trimmed")
    model3 = AutoModelForSequenceClassification.from_pretrained(tmp_path / "trimmed").eval()
    assert tokens(tok3, probe) == before_tokens
    torch.testing.assert_close(logits(model3, tok3, probe), before_logits, atol=1e-5, rtol=0)
    return model2, tok2, report


def test_wordpiece_trim_keeps_tokens_and_logits(wordpiece, tmp_path):
    model, tokenizer = copy_of(wordpiece)
    train = topic_texts(tmp_path)
    probe = train[:5] + reshuffled(train)
    _, tok2, report = assert_trim_is_exact(model, tokenizer, train, probe, "volcano election goal", tmp_path)
    distinct = {i for ids in tokenizer(train, add_special_tokens=False)["input_ids"] for i in ids}
    assert report.vocab_size_after == len(distinct) + report.special_kept
    assert report.special_kept == len(tokenizer.all_special_ids)
    # 30522 -> a few dozen tokens: almost all of the embedding goes
    assert report.vocab_size_after < 100


def test_unigram_trim_keeps_tokens_and_logits(unigram, tmp_path):
    model, tokenizer = copy_of(unigram)
    train = UNIGRAM_TRAIN[:4]
    probe = train + reshuffled(train)
    unused = sorted(set("".join(UNIGRAM_TRAIN)) - set("".join(train)))
    assert unused, "the probe needs a character the tokenizer knows but the training texts lack"
    oov = f"the {unused[0]}"
    model2, tok2, report = assert_trim_is_exact(model, tokenizer, train, probe, oov, tmp_path)
    assert type(tok2).__name__ != "BertTokenizer" and tok2.unk_token == "<unk>"
    assert model2.config.pad_token_id == tok2.pad_token_id  # XLM-R positions depend on the padding id


def test_top_k_keeps_exactly_n_most_frequent_plus_specials(wordpiece, tmp_path):
    model, tokenizer = copy_of(wordpiece)
    train = topic_texts(tmp_path)
    counts = Counter(i for ids in tokenizer(train, add_special_tokens=False)["input_ids"] for i in ids)
    n = 10
    _, tok2, report = trim_vocabulary(model, tokenizer, train, VocabularyConfig(trim="top_k", keep=n, characters=False))
    assert report.vocab_size_after == n + len(tokenizer.all_special_ids) == len(tok2)
    specials = set(tokenizer.all_special_tokens)
    kept = set(tok2.get_vocab()) - specials
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    assert kept == set(tokenizer.convert_ids_to_tokens([i for i, _ in ranked[:n]]))
    rare = tokenizer.convert_ids_to_tokens(ranked[-1][0])
    assert tok2.convert_ids_to_tokens(tok2(rare, add_special_tokens=False)["input_ids"]) != [rare]


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_characters_spell_out_unseen_words_instead_of_unknown(kind, wordpiece, unigram, tmp_path):
    model, tokenizer = copy_of(wordpiece if kind == "wordpiece" else unigram)
    train = ["goal match team", "bank profit rose"] if kind == "wordpiece" else UNIGRAM_TRAIN[:4]
    probe = train + reshuffled(train)
    before = logits(model, tokenizer, probe), tokens(tokenizer, probe)
    model2, tok2, report = trim_vocabulary(model, tokenizer, train, VocabularyConfig(trim="corpus"))
    # still exact on in-vocabulary text
    assert tokens(tok2, probe) == before[1]
    torch.testing.assert_close(logits(model2, tok2, probe), before[0], atol=1e-5, rtol=0)
    assert report.characters_kept > 0
    unseen = "boat" if kind == "wordpiece" else "the marble"  # new words, characters all seen in training
    assert not set(unseen.replace(" ", "")) - set("".join(train))
    pieces = tok2.convert_ids_to_tokens(tok2(unseen, add_special_tokens=False)["input_ids"])
    assert tok2.unk_token not in pieces and tok2.convert_tokens_to_string(pieces).strip() == unseen
    assert unk_rates(tokenizer, tok2, [unseen])[1] == 0.0
    if kind == "wordpiece":  # (the tiny Unigram's training texts use every character as a piece anyway)
        _, bare, _ = trim_vocabulary(*copy_of(wordpiece), train, CORPUS)  # without the characters: unknown
        assert bare.unk_token_id in bare(unseen)["input_ids"]


def test_tied_lm_head_is_trimmed_with_the_embedding(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    model = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=64, vocab_size=30522)).eval()
    train = topic_texts(tmp_path, per_class=4)
    before = logits(model, tokenizer, train[:3])
    model2, tok2, report = trim_vocabulary(model, tokenizer, train, CORPUS)
    kept_old_ids = tokenizer.convert_tokens_to_ids(tok2.convert_ids_to_tokens(list(range(len(tok2)))))
    after = logits(model2, tok2, train[:3])
    assert after.shape[-1] == len(tok2)
    torch.testing.assert_close(after, before[..., kept_old_ids], atol=1e-5, rtol=0)
    assert model2.get_output_embeddings().weight is model2.get_input_embeddings().weight
    assert report.params_saved == (30522 - len(tok2)) * (32 + 1)  # embedding rows + the LM head's bias


def test_trimmed_model_exports_to_onnx(wordpiece, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, tokenizer = copy_of(wordpiece)
    train = topic_texts(tmp_path, per_class=4)
    model2, tok2, _ = trim_vocabulary(model, tokenizer, train, CORPUS)
    enc = tok2(train[:2], padding=True, return_tensors="pt")
    path = tmp_path / "trimmed.onnx"
    torch.onnx.export(model2, (enc["input_ids"], enc["attention_mask"]), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input_ids": enc["input_ids"].numpy(), "attention_mask": enc["attention_mask"].numpy()})
    torch.testing.assert_close(torch.from_numpy(out), logits(model2, tok2, train[:2]), atol=1e-4, rtol=0)


def test_unk_rates_count_lost_and_unknown_tokens(wordpiece, tmp_path):
    model, tokenizer = copy_of(wordpiece)
    train = ["goal match team", "bank profit"]
    _, tok2, _ = trim_vocabulary(model, tokenizer, train, CORPUS)
    lost, unk = unk_rates(tokenizer, tok2, ["goal quantum", "bank team telescope planet"])
    assert lost == pytest.approx(3 / 6) and unk == pytest.approx(3 / 6)
    assert unk_rates(tokenizer, tok2, train) == (0.0, 0.0)
    assert unk_rates(tokenizer, tok2, []) == (0.0, 0.0)


def test_trim_none_is_refused_and_bpe_is_not_supported(wordpiece):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    model, tokenizer = copy_of(wordpiece)
    with pytest.raises(ValueError, match="'none'"):
        trim_vocabulary(model, tokenizer, ["x"], VocabularyConfig())
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(UNIGRAM_TRAIN, trainers.BpeTrainer(vocab_size=80, special_tokens=["<unk>"]))
    with pytest.raises(ValueError, match="supports WordPiece and Unigram tokenizers; this one is BPE"):
        trim_vocabulary(model, PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>"), ["x"], CORPUS)


@pytest.mark.parametrize("doc, field", [
    ({"trim": "top_k"}, "vocabulary.keep"),
    ({"trim": "corpus", "keep": 5}, "vocabulary.keep"),
    ({"trim": "none", "corpus": "extra.txt"}, "vocabulary.corpus"),
    ({"trim": "top_k", "keep": 0}, "keep"),
    ({"trim": "all"}, "trim"),
    ({"trim": "corpus", "size": 3}, "size"),
])
def test_config_errors_name_the_field(doc, field):
    with pytest.raises(ValidationError, match=field):
        VocabularyConfig.model_validate(doc)


def test_corpus_file_resolves_against_the_sweep_folder(tmp_path):
    cfg = VocabularyConfig(trim="corpus", corpus="extra.txt")
    with pytest.raises(ValueError, match="vocabulary.corpus: 'extra.txt' is not a file"):
        cfg.corpus_texts(tmp_path)
    (tmp_path / "extra.txt").write_text("telescope orbit\n\n  \nquantum\n", encoding="utf-8")
    assert cfg.corpus_texts(tmp_path) == ["telescope orbit", "quantum"]
    assert cfg.cache_payload(tmp_path)["corpus_sha256"] != VocabularyConfig(trim="corpus").cache_payload(tmp_path)["corpus_sha256"]


def test_trimmed_teacher_is_built_once_and_scores_the_training_split_like_the_teacher(tmp_path, tiny_encoder):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from trainers.config import TrainingConfig
    from trainers.data import DataConfig, encode_cached, fingerprint, load_data
    from trainers.teacher import TeacherConfig, prepare_teacher, prepare_trimmed_teacher
    from trainers.train import predict_logits

    csv = make_topics_csv(tmp_path / "topics.csv")
    training = TrainingConfig(epochs=1, batch_size=16, max_seq_len=16, seed=0)
    loaded = load_data(DataConfig(path=csv, split={"validation": 0.2, "test": 0.2, "seed": 0}), tmp_path)
    encoded = encode_cached(loaded, AutoTokenizer.from_pretrained(tiny_encoder), max_seq_len=16, cache_dir=tmp_path / "data")
    teacher = prepare_teacher(str(tiny_encoder), TeacherConfig(model="x", epochs=1, learning_rate=1e-3),
                              label_names=loaded.label_names, encoded=encoded, data_fingerprint=fingerprint(loaded),
                              training=training, cache_root=tmp_path / "teachers", device="cpu", log=lambda m: None)
    args = dict(loaded=loaded, base_dir=tmp_path, training=training, data_cache_dir=tmp_path / "data", device="cpu")
    assert prepare_trimmed_teacher(teacher, VocabularyConfig(), **args, log=print) is teacher

    logs: list[str] = []
    trimmed = prepare_trimmed_teacher(teacher, CORPUS, **args, log=logs.append)
    assert trimmed.built_now and trimmed.key.startswith(teacher.key) and trimmed.key != teacher.key
    metrics = trimmed.meta["vocabulary"]["metrics"]
    assert metrics[M.VOCAB_SIZE_BEFORE] == 30522 and metrics[M.VOCAB_SIZE_AFTER] < 100
    assert 0.0 <= metrics[M.VAL_VOCAB_LOST_RATE] <= 1.0 and M.TEST_VOCAB_UNK_RATE in metrics
    # the trimmed folder reloads with plain transformers and scores the training split as the teacher did
    tok = AutoTokenizer.from_pretrained(trimmed.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(trimmed.model_dir).eval()
    assert len(tok) == model.config.vocab_size == metrics[M.VOCAB_SIZE_AFTER]
    trimmed_train = encode_cached(loaded, tok, max_seq_len=16, cache_dir=tmp_path / "data")["train"]
    torch.testing.assert_close(predict_logits(model, trimmed_train, batch_size=64, device="cpu"),
                               load_file(str(teacher.logits_path))["logits"], atol=1e-5, rtol=0)
    again = prepare_trimmed_teacher(teacher, CORPUS, **args, log=logs.append)
    assert not again.built_now and again.key == trimmed.key and any("cache hit" in line for line in logs)

    # top_k drops training tokens: the logits are those of the trimmed model, not copied
    small = prepare_trimmed_teacher(teacher, VocabularyConfig(trim="top_k", keep=5), **args, log=lambda m: None)
    assert small.key != trimmed.key and small.meta["vocabulary"]["train_lost_rate"] > 0
    tok = AutoTokenizer.from_pretrained(small.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(small.model_dir).eval()
    small_train = encode_cached(loaded, tok, max_seq_len=16, cache_dir=tmp_path / "data")["train"]
    torch.testing.assert_close(predict_logits(model, small_train, batch_size=64, device="cpu"),
                               load_file(str(small.logits_path))["logits"], atol=1e-5, rtol=0)


def test_trimming_commutes_with_training(wordpiece, tmp_path):
    """Rows no training token uses get no gradient (weight decay acts row by row): training then trimming gives
    the same model as trimming then training, so a trimmed student loses nothing on its training text."""
    from trainers.config import TrainingConfig
    from trainers.train import train

    train_texts = topic_texts(tmp_path, per_class=4)
    labels = torch.arange(len(train_texts)) % 4
    cfg = TrainingConfig(epochs=2, batch_size=8, learning_rate=1e-3, weight_decay=0.0, max_seq_len=16, seed=0)

    def fit(model, tokenizer):
        enc = tokenizer(train_texts, padding=True, return_tensors="pt")
        split = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
        torch.manual_seed(0)
        train(model, split, cfg, device="cpu", log=lambda m: None)
        return model.eval()

    model, tokenizer = copy_of(wordpiece)
    trained_then_trimmed, tok_a, _ = trim_vocabulary(fit(model, tokenizer), tokenizer, train_texts, CORPUS)
    model, tokenizer = copy_of(wordpiece)
    model, tok_b, _ = trim_vocabulary(model, tokenizer, train_texts, CORPUS)
    trimmed_then_trained = fit(model, tok_b)
    probe = train_texts[:6] + reshuffled(train_texts)
    torch.testing.assert_close(logits(trimmed_then_trained, tok_b, probe), logits(trained_then_trimmed, tok_a, probe),
                               atol=1e-4, rtol=0)
