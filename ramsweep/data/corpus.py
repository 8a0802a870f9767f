"""Corpora as token-id arrays: load, split by chapter, fingerprint.

The embedded corpus is the King James Version (`kjv.txt.gz`, one verse per line as
`Ge1:1 In the beginning ...`, built by scripts/build_kjv.sh).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from ramsweep.data.tokenizers import Tokenizer, get_tokenizer
from ramsweep.errors import DataError

SPLITS = ("train", "validation", "test")

# Fast mode (the default) uses this prefix of each split so a whole set runs in minutes.
FAST_TOKENS = {"train": 100_000, "validation": 10_000, "test": 10_000}

# Embedded corpora: name -> package data file.
CORPORA = {"kjv": "kjv.txt.gz"}

# "Ge1:1 text": the book+chapter part ("Ge1", "1Jn3", "Rev22") names the chapter.
_VERSE_RE = re.compile(r"^(\d?[A-Za-z]+\d+):\d+ (.*)$")


@dataclass(frozen=True)
class Chapter:
    ref: str  # "Ge1", "1Jn3", "Rev22"
    verses: tuple[str, ...]  # verse texts, reference prefix stripped


@dataclass(frozen=True, eq=False)
class Corpus:
    name: str
    tokenizer: str
    vocab: tuple[str, ...]  # token id -> token string
    train: np.ndarray  # (n,) int32 token ids, read-only
    validation: np.ndarray
    test: np.ndarray
    full_data: bool
    fingerprint: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, name: str) -> np.ndarray:
        """The token ids of split `name` ("train", "validation" or "test")."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")
        return getattr(self, name)

    def describe(self) -> dict:
        """Plain JSON-able description, as stored with every result."""
        return {
            "corpus": self.name,
            "tokenizer": self.tokenizer,
            "vocab_size": self.vocab_size,
            "full_data": self.full_data,
            "split_tokens": {s: int(self.split(s).size) for s in SPLITS},
            "fingerprint": self.fingerprint,
        }


def chapter_split(index: int) -> str:
    """The split of chapter `index` (0-based, book order): every split spans the book."""
    return {8: "validation", 9: "test"}.get(index % 10, "train")


def load_corpus(name: str = "kjv", *, full_data: bool = False) -> Corpus:
    """Corpus `name` tokenized into train/validation/test id arrays.

    Fast mode (the default) keeps the first FAST_TOKENS of each split; `full_data=True`
    keeps everything. The vocabulary is always that of the whole corpus.
    """
    tokenizer = get_tokenizer("word")
    vocab, full = _tokenized(name, tokenizer.name)
    splits = {s: full[s] if full_data else full[s][: FAST_TOKENS[s]] for s in SPLITS}
    return Corpus(
        name=name,
        tokenizer=tokenizer.name,
        vocab=vocab,
        full_data=full_data,
        fingerprint=fingerprint(name, tokenizer, vocab, splits),
        **{s: _readonly_view(a) for s, a in splits.items()},
    )


def fingerprint(
    name: str, tokenizer: Tokenizer, vocab: tuple[str, ...], splits: dict[str, np.ndarray]
) -> str:
    """First 16 hex chars of a sha256 over everything that defines the data."""
    header = {
        "corpus": name,
        "tokenizer": tokenizer.name,
        "tokenizer_version": tokenizer.version,
        "vocab": list(vocab),
        "split_tokens": {s: int(splits[s].size) for s in SPLITS},
    }
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for s in SPLITS:  # sizes are in the header, so the concatenation is unambiguous
        h.update(np.ascontiguousarray(splits[s], dtype="<i4").tobytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=None)
def read_chapters(name: str = "kjv") -> tuple[Chapter, ...]:
    """The chapters of embedded corpus `name`, in book order."""
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; choose one of: {', '.join(sorted(CORPORA))}")
    raw = resources.files("ramsweep.data").joinpath(CORPORA[name]).read_bytes()
    chapters: dict[str, list[str]] = {}
    for n, line in enumerate(gzip.decompress(raw).decode("utf-8").splitlines(), 1):
        m = _VERSE_RE.match(line)
        if m is None:
            raise DataError(f"{CORPORA[name]} line {n} is not a verse ('Ge1:1 text'): {line!r}")
        chapters.setdefault(m[1], []).append(m[2])
    return tuple(Chapter(ref, tuple(verses)) for ref, verses in chapters.items())


@lru_cache(maxsize=None)
def _tokenized(name: str, tokenizer_name: str) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """(vocab, full split arrays); cached because tokenizing the whole book takes a while."""
    tokenize = get_tokenizer(tokenizer_name).tokenize
    # Tokens never span verses, so a chapter can be tokenized in one call.
    tokens = [tokenize(" ".join(ch.verses)) for ch in read_chapters(name)]
    # Ids follow sorted token strings: stable whatever the split or mode.
    vocab = tuple(sorted({t for ch in tokens for t in ch}))
    index = {t: i for i, t in enumerate(vocab)}
    parts: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, ch in enumerate(tokens):
        parts[chapter_split(i)].extend(ch)
    splits = {}
    for s, toks in parts.items():
        arr = np.fromiter((index[t] for t in toks), dtype=np.int32, count=len(toks))
        arr.flags.writeable = False
        splits[s] = arr
    return vocab, splits


def _readonly_view(arr: np.ndarray) -> np.ndarray:
    # A view of a read-only array cannot be made writeable again, so callers cannot
    # corrupt the per-process cache even by flipping the flag.
    view = arr[:]
    view.flags.writeable = False
    return view
