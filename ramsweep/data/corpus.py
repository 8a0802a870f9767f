"""Corpora as token-id arrays: load, split, fingerprint.

`load_corpus(spec)` reads the source the `DataSpec` names (see sources.py for each corpus
and its split rule), tokenizes it (tokenizers.py) or takes the tokens from the caches (one
in this process, one on disk under `cache_dir`), then keeps a prefix of each split in fast
mode.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramsweep.data.cache import CACHE_FORMAT, cache_file, load_cached, store_cached
from ramsweep.data.sources import SPLITS, Source, resolve_source
from ramsweep.data.spec import DataSpec
from ramsweep.data.tokenizers import Encoded, Tokenizer, get_tokenizer
from ramsweep.errors import DataError

# Fast mode (the default) uses this prefix of each split so a whole set runs in minutes.
FAST_TOKENS = {"train": 100_000, "validation": 10_000, "test": 10_000}


@dataclass(frozen=True, eq=False)
class Corpus:
    name: str  # the corpus kind: "kjv", "wikitext2" or "text"
    tokenizer: str
    vocab: tuple[str, ...]  # token id -> token string
    train: np.ndarray  # (n,) int32 token ids, read-only
    validation: np.ndarray
    test: np.ndarray
    full_data: bool
    fingerprint: str
    variant: str  # which files and format were read, e.g. "raw: wiki.*.raw"
    path: str | None  # the resolved --data-path; None for the embedded corpus
    source_sha256: str  # of the source files' contents
    tokenizer_files: Mapping[str, str]  # file name -> sha256 (GPT-2's files; empty for word)
    token_bytes: Mapping[str, np.ndarray]  # split -> (n,) int32, read-only

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, name: str) -> np.ndarray:
        """The token ids of split `name` ("train", "validation" or "test")."""
        _check_split(name)
        return getattr(self, name)

    def byte_lengths(self, name: str) -> np.ndarray:
        """(n,) int32: the UTF-8 bytes of text each token of split `name` stands for; over a
        whole split they sum to the size of its text (for bits per byte)."""
        _check_split(name)
        return self.token_bytes[name]

    def describe(self) -> dict:
        """Plain JSON-able description, as stored with every result."""
        return {
            "corpus": self.name,
            "path": self.path,
            "variant": self.variant,
            "tokenizer": self.tokenizer,
            "tokenizer_files": {n: h[:12] for n, h in self.tokenizer_files.items()},
            "vocab_size": self.vocab_size,
            "full_data": self.full_data,
            "split_tokens": {s: int(self.split(s).size) for s in SPLITS},
            "split_bytes": {s: int(self.byte_lengths(s).sum()) for s in SPLITS},
            "source_sha256": self.source_sha256[:16],
            "fingerprint": self.fingerprint,
        }


def _check_split(name: str) -> None:
    if name not in SPLITS:
        raise DataError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")


def load_corpus(
    spec: DataSpec | str = "kjv",
    *,
    full_data: bool | None = None,
    cache_dir: Path | None = None,
) -> Corpus:
    """The corpus `spec` names (a DataSpec, or just a corpus kind), tokenized into
    train/validation/test id arrays.

    Fast mode keeps the first FAST_TOKENS of each split; full mode keeps everything.
    `full_data` overrides `spec.full_data`. The vocabulary is always that of the whole
    corpus. With `cache_dir`, the tokenized corpus is kept there for the next process.
    """
    if not isinstance(spec, DataSpec):
        spec = DataSpec(corpus=spec)
    if full_data is not None:
        spec = spec.model_copy(update={"full_data": bool(full_data)})
    source = resolve_source(spec)
    tokenizer = get_tokenizer(spec.tokenizer_name, spec.tokenizer_files)
    encoded = _encoded(source, tokenizer, None if cache_dir is None else Path(cache_dir))
    keep = (lambda s, a: a) if spec.full_data else (lambda s, a: a[: FAST_TOKENS[s]])
    ids = {s: _readonly_view(keep(s, a)) for s, a in encoded.ids.items()}
    nbytes = {s: _readonly_view(keep(s, a)) for s, a in encoded.nbytes.items()}
    # The mode is part of the data even where the prefixes hold everything (a tiny corpus).
    identity = {**data_identity(source, tokenizer), "full_data": spec.full_data}
    return Corpus(
        name=source.kind,
        tokenizer=tokenizer.name,
        vocab=encoded.vocab,
        full_data=spec.full_data,
        fingerprint=fingerprint(identity, encoded.vocab, ids, nbytes),
        variant=source.variant,
        path=source.path,
        source_sha256=source.sha256,
        tokenizer_files=dict(tokenizer.files),
        token_bytes=nbytes,
        **ids,
    )


def data_identity(source: Source, tokenizer: Tokenizer) -> dict:
    """What the data is, apart from its tokens: which corpus, read how, by which tokenizer.
    Content hashes only, so moving the files keeps the fingerprint."""
    return {
        "corpus": source.kind,
        "variant": source.variant,
        "source_sha256": source.sha256,
        "tokenizer": tokenizer.name,
        "tokenizer_version": tokenizer.version,
        "tokenizer_files": dict(tokenizer.files),
    }


def fingerprint(
    identity: Mapping,
    vocab: tuple[str, ...],
    splits: Mapping[str, np.ndarray],
    byte_lengths: Mapping[str, np.ndarray],
) -> str:
    """First 16 hex chars of a sha256 over everything that defines the data."""
    header = {
        **identity,
        "vocab": list(vocab),
        "split_tokens": {s: int(splits[s].size) for s in SPLITS},
    }
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for s in SPLITS:  # sizes are in the header, so the concatenation is unambiguous
        h.update(np.ascontiguousarray(splits[s], dtype="<i4").tobytes())
        h.update(np.ascontiguousarray(byte_lengths[s], dtype="<i4").tobytes())
    return h.hexdigest()[:16]


# The in-process cache: data key -> Encoded (arrays read-only). Keyed by content, so an
# edited file is a new entry, never a stale hit.
_LOADED: dict[str, Encoded] = {}


def clear_loaded() -> None:
    """Forget the corpora tokenized in this process (the on-disk cache stays)."""
    _LOADED.clear()


def _encoded(source: Source, tokenizer: Tokenizer, cache_dir: Path | None) -> Encoded:
    key = _data_key(source, tokenizer)
    path = cache_file(cache_dir, f"{source.kind}-{tokenizer.name}", key) if cache_dir else None
    encoded = _LOADED.get(key)
    if encoded is not None:
        if path is not None and not path.exists():
            store_cached(path, key, encoded)
        return encoded
    encoded = load_cached(path, key) if path is not None else None
    if encoded is None:
        encoded = _tokenize(source, tokenizer)
        if path is not None:
            store_cached(path, key, encoded)
    for arrays in (encoded.ids, encoded.nbytes):
        for a in arrays.values():
            a.flags.writeable = False
    _LOADED[key] = encoded
    return encoded


def _data_key(source: Source, tokenizer: Tokenizer) -> str:
    """Everything the tokens depend on (the token cache's key)."""
    key = {
        "format": CACHE_FORMAT,
        **data_identity(source, tokenizer),
        "library": tokenizer.library,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _tokenize(source: Source, tokenizer: Tokenizer) -> Encoded:
    encoded = tokenizer.encode(source.read())
    for s in SPLITS:
        if encoded.ids[s].size == 0:
            raise DataError(
                f"{source.kind} split {s} has no tokens: {source.files[s]} holds no text; "
                "use a corpus whose every split has some"
            )
    return encoded


def _readonly_view(arr: np.ndarray) -> np.ndarray:
    # A view of a read-only array cannot be made writeable again, so callers cannot
    # corrupt the per-process cache even by flipping the flag.
    view = arr[:]
    view.flags.writeable = False
    return view
