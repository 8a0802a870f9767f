"""On-disk token cache: a tokenized corpus stored once as `.npz`, never trusted blindly.

A file is named by its key (a hash of everything the tokens depend on: the source files'
contents, the tokenizer) and holds that key, the whole split arrays, bytes per token, the
vocabulary and a keyed checksum (HMAC-SHA256) over all of them. The checksum's key is this
user's secret (`~/.cache/ramsweep/token-cache.key`, mode 0600, made on first use), so a file
edited and given a recomputed checksum by anyone else does not check out. Before any array
is read, each one's declared size is checked against the bytes the file really holds: a
crafted header cannot make a runner allocate gigabytes. Anything that does not check out is
treated as absent: the corpus is tokenized again and the file rewritten. Writes are atomic
(`_io.write_atomic`, with the permissions a results file gets).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import json
import math
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

from ramsweep._io import write_atomic
from ramsweep.data.sources import SPLITS
from ramsweep.data.tokenizers import Encoded

CACHE_FORMAT = 2  # 2: keyed checksums
MAX_MEMBER_BYTES = 16 << 30  # no tokenized corpus comes near this
_ARRAYS = (*SPLITS, *(f"{s}_bytes" for s in SPLITS))
_KEYS = {"meta", "vocab", "checksum", *_ARRAYS}


def cache_file(cache_dir: Path, label: str, key: str) -> Path:
    return Path(cache_dir) / f"{label}-{key[:24]}.npz"


def load_cached(path: Path, key: str) -> Encoded | None:
    """The corpus stored at `path` under `key`; None if absent or not exactly as written."""
    try:
        if not _sizes_check_out(path):
            return None
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


def _sizes_check_out(path: Path) -> bool:
    """Every member is a stored (uncompressed) .npy whose header declares no more data than it
    holds: checked from the headers alone, before numpy allocates anything."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > MAX_MEMBER_BYTES:
                return False
            with archive.open(info) as member:
                major, _ = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
                if dtype.hasobject or math.prod(shape) * dtype.itemsize > info.file_size:
                    return False
    return True


@functools.cache
def _secret() -> bytes:
    """This user's key for the cache checksums, made once; a fresh one for this process alone
    where none can be kept (then caches written now are trusted only by this process)."""
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ramsweep"
    path = folder / "token-cache.key"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            st = path.stat()
            key = path.read_bytes()
            if st.st_uid == os.getuid() and not st.st_mode & 0o077 and len(key) == 32:
                return key
            raise OSError("the key file is not this user's alone") from None
        key = secrets.token_bytes(32)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key
    except OSError:
        return secrets.token_bytes(32)


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hmac.new(_secret(), digestmod=hashlib.sha256)
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name} {a.dtype.str} {a.shape}\n".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
