"""Files a search keeps beside the results: its checkpoint and the connectivity it found.

Both live in `<results file>.search/`, named by the experiment's key: `KEY.checkpoint.npz`
while the search runs (replaced atomically after every generation or iteration, removed at
the end) and `KEY.npz`, the final connectivity: only the neurons that differ from the drawn
wiring, so the file is small and the optimised model can be rebuilt without searching again
(`load_connectivity`).
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ramsweep._io import open_regular, write_atomic

log = logging.getLogger("ramsweep")


def folder_of(results: str | Path) -> Path:
    return Path(str(results) + ".search")


def _npz(arrays: dict[str, np.ndarray], meta: dict | str) -> bytes:
    buf = io.BytesIO()
    text = meta if isinstance(meta, str) else json.dumps(meta)
    np.savez_compressed(buf, meta=np.frombuffer(text.encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def _read_npz(path: Path) -> tuple[dict, str] | None:
    try:
        with open_regular(path) as f:  # a FIFO or device in its place is "does not read", not a hang
            raw = f.read()
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
            return arrays, z["meta"].tobytes().decode()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError, EOFError):
        return None


class Checkpoints:
    """Save and load one experiment's search checkpoint (what optimize/checkpoint.encode produces).
    A checkpoint that does not read, or is not this search's, is set aside as `NAME.invalid`
    (kept for a look, never resumed) and the search starts over."""

    def __init__(self, folder: Path, key: str):
        self.path = folder / f"{key}.checkpoint.npz"
        self.key = key

    def save(self, saved: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"key": self.key, "search": saved["meta"]})
        write_atomic(self.path, _npz(saved["arrays"], meta))

    def load(self) -> dict | None:
        """The last checkpoint, with its `set_aside` for the search to call if it finds it invalid;
        None if there is none or it does not read (then it is set aside)."""
        if not self.path.exists():
            return None
        found = _read_npz(self.path)
        try:
            meta = json.loads(found[1]) if found else None
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or not isinstance(meta.get("search"), str):
            self.set_aside("does not read")
            return None
        if meta.get("key") != self.key:
            self.set_aside(f"belongs to experiment {meta.get('key')!r}")
            return None
        return {"meta": meta["search"], "arrays": found[0], "set_aside": self.set_aside}

    def set_aside(self, why: str) -> None:
        aside = self.path.with_name(self.path.name + ".invalid")
        self.path.replace(aside)  # an older one of the same name was set aside before: the newest is kept
        log.warning(f"search checkpoint {self.path} {why}; set aside as {aside.name}, the search starts over")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def save_connectivity(folder: Path, key: str, connectivity: list[np.ndarray], drawn: list[np.ndarray],
                      meta: dict) -> Path:
    """Write KEY.npz: per tier, the neurons whose connections differ from `drawn`, and theirs."""
    arrays = {}
    for t, (conn, start) in enumerate(zip(connectivity, drawn)):
        neurons = np.flatnonzero((conn != start).any(axis=1)).astype(np.int64)
        arrays[f"tier{t}_neurons"], arrays[f"tier{t}_connections"] = neurons, conn[neurons].astype(np.int32)
    path = folder / f"{key}.npz"
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, _npz(arrays, {**meta, "tiers": len(connectivity)}))
    return path


def load_connectivity(path: Path, drawn: list[np.ndarray]) -> list[np.ndarray]:
    """The connectivity a search saved, rebuilt over the experiment's drawn wiring."""
    found = _read_npz(Path(path))
    if found is None:
        raise ValueError(f"{path}: not a connectivity file")
    arrays = found[0]
    out = [c.copy() for c in drawn]
    for t, conn in enumerate(out):
        neurons = arrays[f"tier{t}_neurons"]
        conn[neurons] = arrays[f"tier{t}_connections"]
    return out
