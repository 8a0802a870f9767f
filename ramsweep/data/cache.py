"""On-disk token cache: a tokenized corpus stored once as `.npz`, never trusted blindly.

A file is named by its key (a hash of everything the tokens depend on) and holds that key,
the whole split arrays, bytes per token, the vocabulary and a sha256 over all of them.
Anything that does not check out (unreadable, truncated, other keys, checksum mismatch) is
treated as absent: the corpus is tokenized again and the file rewritten. Writes go to a
temporary file in the same folder and `os.replace` it, so readers, and several runners
writing the same entry, only ever see whole files.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from ramsweep._io import write_atomic
from ramsweep.data.sources import SPLITS
from ramsweep.data.tokenizers import Encoded

CACHE_FORMAT = 1
_ARRAYS = (*SPLITS, *(f"{s}_bytes" for s in SPLITS))
_KEYS = {"meta", "vocab", "checksum", *_ARRAYS}


def cache_file(cache_dir: Path, label: str, key: str) -> Path:
    return Path(cache_dir) / f"{label}-{key[:24]}.npz"


def load_cached(path: Path, key: str) -> Encoded | None:
    """The corpus stored at `path` under `key`; None if absent or not exactly as written."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if set(z.files) != _KEYS:
                return None
            arrays = {name: z[name] for name in _KEYS}
    except Exception:  # a damaged file may fail in any way numpy or zipfile can: rebuild it
        return None
    try:
        if bytes(arrays.pop("checksum")).decode() != _checksum(arrays):
            return None
        meta = json.loads(bytes(arrays["meta"]))
        vocab = json.loads(bytes(arrays["vocab"]))
    except (ValueError, TypeError):
        return None
    if meta != {"format": CACHE_FORMAT, "key": key}:
        return None
    ids = {s: arrays[s] for s in SPLITS}
    nbytes = {s: arrays[f"{s}_bytes"] for s in SPLITS}
    for s in SPLITS:
        if ids[s].dtype != np.int32 or nbytes[s].dtype != np.int32 or ids[s].ndim != 1:
            return None
        if ids[s].shape != nbytes[s].shape:
            return None
    return Encoded(tuple(vocab), ids, nbytes)


def store_cached(path: Path, key: str, encoded: Encoded) -> None:
    """Write `encoded` to `path` atomically. A cache that cannot be written (read-only or
    full disk) only costs time, so OS errors are swallowed."""
    arrays = {
        "meta": _json_bytes({"format": CACHE_FORMAT, "key": key}),
        "vocab": _json_bytes(list(encoded.vocab)),
        **{s: np.ascontiguousarray(encoded.ids[s], dtype=np.int32) for s in SPLITS},
        **{f"{s}_bytes": np.ascontiguousarray(encoded.nbytes[s], dtype=np.int32) for s in SPLITS},
    }
    arrays["checksum"] = np.frombuffer(_checksum(arrays).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())
    except OSError:
        pass


def _json_bytes(value) -> np.ndarray:
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode(), dtype=np.uint8)


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name} {a.dtype.str} {a.shape}\n".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
