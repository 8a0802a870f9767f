"""Where a corpus's text comes from, and how it is cut into train/validation/test.

A `Source` names the files it read and their hash (the token cache key and the data
fingerprint depend on content, not on where the files lie), and gives each split as a
sequence of texts that are tokenized separately.

- kjv: the embedded King James Version (`kjv.txt.gz`, one verse per line as
  `Ge1:1 In the beginning ...`, built by scripts/build_kjv.sh). A text is a chapter, its
  verses joined by spaces; chapter i goes to validation if i % 10 == 8, test if 9.
- wikitext2: WikiText-2's own train/valid/test files from a local folder, raw preferred over
  tokenized. One text per split: the file's lines as they are.
- text: UTF-8 files, cut at line ends into chunks of at least TEXT_CHUNK_CHARS characters,
  split by the KJV rule over the chunk index, so every split spans the whole text.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ramsweep._io import open_regular
from ramsweep.data.spec import DataSpec
from ramsweep.errors import DataError

SPLITS = ("train", "validation", "test")

Texts = dict[str, list[str]]  # split -> texts tokenized separately


@dataclass(frozen=True, eq=False)
class Source:
    kind: str  # "kjv" | "wikitext2" | "text"
    variant: str  # which files and format, e.g. "wiki.*.raw"
    path: str | None  # the resolved --data-path; None for the embedded corpus
    sha256: str  # of the files' contents (with their relative names in a folder)
    files: dict[str, str]  # split -> the file(s) it comes from, for messages
    read: Callable[[], Texts]


def resolve_source(spec: DataSpec) -> Source:
    """The source `spec` names; DataError if its files are missing or unreadable."""
    if spec.corpus == "kjv":
        return kjv_source()
    path = Path(os.path.realpath(Path(spec.path).expanduser()))
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"--data-path {path} does not exist: {_PATH_HINT[spec.corpus]}") from None
    except OSError as e:
        raise DataError(f"--data-path {spec.path}: cannot use it ({e.strerror}): {_PATH_HINT[spec.corpus]}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # reading a device or FIFO would never end
        raise DataError(f"--data-path {spec.path}: is a FIFO, device or socket, not a file or folder: "
                        f"{_PATH_HINT[spec.corpus]}")
    return wikitext_source(path) if spec.corpus == "wikitext2" else text_source(path)


_PATH_HINT = {
    "wikitext2": "name the folder holding WikiText-2 (wiki.*.raw / wiki.*.tokens files "
    "or the Hugging Face parquet download)",
    "text": "name a UTF-8 text file or a folder of *.txt files",
}


def split_of(index: int) -> str:
    """The split of chapter or chunk `index` (0-based, in order): every split spans the text."""
    return {8: "validation", 9: "test"}.get(index % 10, "train")


# --- kjv ------------------------------------------------------------------------------

CORPORA = {"kjv": "kjv.txt.gz"}  # embedded corpora: name -> package data file

# "Ge1:1 text": the book+chapter part ("Ge1", "1Jn3", "Rev22") names the chapter.
_VERSE_RE = re.compile(r"^(\d?[A-Za-z]+\d+):\d+ (.*)$")


@dataclass(frozen=True)
class Chapter:
    ref: str  # "Ge1", "1Jn3", "Rev22"
    verses: tuple[str, ...]  # verse texts, reference prefix stripped


def kjv_source() -> Source:
    def read() -> Texts:
        texts: Texts = {s: [] for s in SPLITS}
        for i, ch in enumerate(read_chapters("kjv")):
            texts[split_of(i)].append(" ".join(ch.verses))
        return texts

    name = CORPORA["kjv"]
    digest = hashlib.sha256(_embedded("kjv")).hexdigest()
    return Source("kjv", f"{name}: chapters", None, digest, dict.fromkeys(SPLITS, name), read)


@cache
def _embedded(name: str) -> bytes:
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}; choose one of: {', '.join(sorted(CORPORA))}")
    return resources.files("ramsweep.data").joinpath(CORPORA[name]).read_bytes()


@cache
def read_chapters(name: str = "kjv") -> tuple[Chapter, ...]:
    """The chapters of embedded corpus `name`, in book order."""
    chapters: dict[str, list[str]] = {}
    text = gzip.decompress(_embedded(name)).decode("utf-8")
    for n, line in enumerate(text.splitlines(), 1):
        m = _VERSE_RE.match(line)
        if m is None:
            raise DataError(f"{CORPORA[name]} line {n} is not a verse ('Ge1:1 text'): {line!r}")
        chapters.setdefault(m[1], []).append(m[2])
    return tuple(Chapter(ref, tuple(verses)) for ref, verses in chapters.items())


# --- wikitext2 ------------------------------------------------------------------------

_CLASSIC = {"train": "wiki.train", "validation": "wiki.valid", "test": "wiki.test"}
_CLASSIC_SUB = {"raw": "wikitext-2-raw", "tokens": "wikitext-2"}  # folders in the zips
_HF_SUB = {"raw": "wikitext-2-raw-v1", "tokens": "wikitext-2-v1"}  # Salesforce/wikitext configs
_LOOKED_FOR = (
    "wiki.{train,valid,test}.raw or .tokens (there or in wikitext-2-raw/, wikitext-2/) and "
    "{train,validation,test}-*.parquet (there or in wikitext-2-raw-v1/, wikitext-2-v1/)"
)


def wikitext_source(folder: Path) -> Source:
    """WikiText-2 from the first complete layout in `folder`: raw before tokenized,
    the classic files before the Hugging Face parquet files."""
    if not folder.is_dir():
        raise DataError(
            f"--data-path {folder} is a file; --data wikitext2 needs the folder holding "
            "WikiText-2's files"
        )
    for flavour in ("raw", "tokens"):
        ext = "." + flavour
        for where in (folder, folder / _CLASSIC_SUB[flavour]):
            found = _find(where, {s: [where / f"{f}{ext}"] for s, f in _CLASSIC.items()})
            if found:
                return _wikitext(folder, f"{flavour}: wiki.*{ext}", found, _decode_files)
        # The config folder itself counts when its name says which flavour it holds.
        hf = [folder / _HF_SUB[flavour]]
        if ("raw" in folder.name) == (flavour == "raw"):
            hf.insert(0, folder)
        for where in hf:
            found = _find(where, {s: sorted(where.glob(f"{s}-*.parquet")) for s in SPLITS})
            if found:
                variant = f"{flavour}: hugging face parquet {where.name}"
                return _wikitext(folder, variant, found, _read_parquet_files)
    raise DataError(f"no WikiText-2 files in {folder}: looked for {_LOOKED_FOR}")


def _find(where: Path, candidates: dict[str, list[Path]]) -> dict[str, list[Path]] | None:
    """The files of each split, None if none is there; DataError if only some are."""
    found = {s: [p for p in paths if p.is_file()] for s, paths in candidates.items()}
    if not any(found.values()):
        return None
    missing = [s for s, paths in found.items() if not paths]
    if missing:
        have = ", ".join(p.name for paths in found.values() for p in paths)
        want = ", ".join(
            candidates[s][0].name if candidates[s] and candidates[s][0].suffix != ".parquet"
            else f"{s}-*.parquet" for s in missing
        )
        raise DataError(
            f"WikiText-2 in {where} is incomplete: it has {have} but no {want}; "
            "every split needs its file"
        )
    return found


def _wikitext(
    folder: Path, variant: str, found: dict[str, list[Path]], decode: Callable
) -> Source:
    data = {s: [(p, _read_bytes(p)) for p in paths] for s, paths in found.items()}
    h = hashlib.sha256()
    for s in SPLITS:
        for p, raw in data[s]:
            h.update(f"{s} {p.name} {len(raw)}\n".encode())
            h.update(raw)
    files = {s: ", ".join(str(p) for p in paths) for s, paths in found.items()}
    return Source(
        "wikitext2", variant, str(folder), h.hexdigest(), files,
        lambda: {s: [decode(data[s])] for s in SPLITS},
    )


def _decode_files(files: list[tuple[Path, bytes]]) -> str:
    return "".join(decode_utf8(p, raw) for p, raw in files)


def _read_parquet_files(files: list[tuple[Path, bytes]]) -> str:
    return "".join(_read_parquet(p, raw) for p, raw in files)


def _read_parquet(path: Path, raw: bytes) -> str:
    """A split's text from a Hugging Face WikiText parquet file (one line per row, in `text`).

    Hugging Face's loader stored each whitespace-only line of the WikiText files as an empty
    row and kept every other line with its "\\n"; WikiText's blank lines are " \\n", so an
    empty row is read back as " \\n" and both downloads give the same text.
    """
    if importlib.util.find_spec("pyarrow") is None:
        raise DataError(
            f"reading {path} needs pyarrow: pip install 'ramsweep[parquet]' (or use WikiText-2's "
            "wiki.*.tokens / .raw files, which need nothing more)"
        )
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(pa.BufferReader(raw))
        schema = pf.schema_arrow
        if "text" not in schema.names:
            raise DataError(
                f"{path} has no 'text' column (it has: {', '.join(schema.names) or 'none'}); "
                "WikiText parquet files hold one line per row in 'text'"
            )
        kind = schema.field("text").type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise DataError(f"{path}: column 'text' holds {kind}, not strings")
        rows = pf.read(columns=["text"]).column("text").to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"cannot read {path} as parquet: {_first_line(e)}") from None
    return "".join(row if row else " \n" for row in rows)


# --- text -----------------------------------------------------------------------------

TEXT_CHUNK_CHARS = 1000


def text_source(path: Path) -> Source:
    """UTF-8 text from a file, or from every *.txt file below a folder (by relative path)."""
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*.txt") if p.is_file()),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise DataError(f"no *.txt files below --data-path {path}: add some or name a file")
        names = [p.relative_to(path).as_posix() for p in files]
    else:
        files, names = [path], [""]  # a lone file's name is not part of its content
    data = [(p, _read_bytes(p)) for p in files]
    h = hashlib.sha256()
    for name, (_, raw) in zip(names, data):
        h.update(f"{name} {len(raw)}\n".encode())
        h.update(raw)

    def read() -> Texts:
        texts: Texts = {s: [] for s in SPLITS}
        n = 0
        for p, raw in data:
            for chunk in text_chunks(decode_utf8(p, raw)):
                texts[split_of(n)].append(chunk)
                n += 1
        if n < 10:
            raise DataError(
                f"text corpus {path} is too short: it makes {n} chunk(s) of about "
                f"{TEXT_CHUNK_CHARS} characters (cut at line ends) and needs at least 10 so "
                "that validation and test get one each; use a longer text"
            )
        return texts

    variant = f"text: line chunks of {TEXT_CHUNK_CHARS}+ characters, split by chunk % 10"
    return Source("text", variant, str(path), h.hexdigest(), dict.fromkeys(SPLITS, str(path)), read)


def text_chunks(text: str, size: int = TEXT_CHUNK_CHARS) -> list[str]:
    """`text` cut into consecutive chunks, each ending at the first line end at or after
    `size` characters (the last one may be shorter): "".join(chunks) == text."""
    chunks, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size - 1)
        end = len(text) if end < 0 else end + 1
        chunks.append(text[start:end])
        start = end
    return chunks


# --- files ----------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        with open_regular(path) as f:
            return f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def decode_utf8(path: Path, raw: bytes) -> str:
    """The text of `raw` (read from `path`), a UTF-8 byte-order mark dropped."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8: byte {e.start} (0x{raw[e.start]:02x}) {e.reason}; "
            "convert it to UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
