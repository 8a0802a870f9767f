import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ramsweep
from ramsweep.data import Corpus, load_corpus
from ramsweep.data.corpus import FAST_TOKENS, SPLITS, chapter_split, fingerprint, read_chapters
from ramsweep.data.tokenizers import WORD, word_tokenize
from ramsweep.errors import DataError


@pytest.fixture(scope="module")
def full() -> Corpus:
    return load_corpus("kjv", full_data=True)


@pytest.fixture(scope="module")
def fast() -> Corpus:
    return load_corpus()


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
    splits = {s: fast.split(s) for s in SPLITS}
    base = fingerprint("kjv", WORD, fast.vocab, splits)
    assert base == fast.fingerprint
    changed = dict(splits, test=splits["test"].copy())
    changed["test"][-1] = (changed["test"][-1] + 1) % fast.vocab_size
    assert fingerprint("kjv", WORD, fast.vocab, changed) != base
    # Moving a token across a split boundary keeps the bytes but changes the data.
    moved = dict(
        splits,
        train=splits["train"][:-1],
        validation=np.concatenate([splits["train"][-1:], splits["validation"]]),
    )
    assert fingerprint("kjv", WORD, fast.vocab, moved) != base
    assert fingerprint("kjv", WORD, fast.vocab[::-1], splits) != base
    assert fingerprint("other", WORD, fast.vocab, splits) != base


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
        with pytest.raises(ValueError):
            corpus.split(s)[0] = 0
        with pytest.raises(ValueError):
            corpus.split(s).flags.writeable = True
    assert load_corpus(full_data=mode == "full").train[0] == corpus.train[0]


def test_unknown_corpus_or_split_is_a_data_error(fast):
    with pytest.raises(DataError, match="kjv") as err:
        load_corpus("shakespeare")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="validation"):
        fast.split("dev")


def test_describe_is_plain_json(fast):
    described = json.loads(json.dumps(fast.describe()))
    assert described == {
        "corpus": "kjv",
        "tokenizer": "word",
        "vocab_size": fast.vocab_size,
        "full_data": False,
        "split_tokens": FAST_TOKENS,
        "fingerprint": fast.fingerprint,
    }
