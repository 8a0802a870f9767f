"""The design document is the repository's own: every `docs/design.md §…` reference in the package,
README, BENCHMARKS.md, set files, benchmarks, scripts and tests names a section that exists (and
each bullet it quotes, e.g. §3 "Gating", is in that section), and no file points outside the
repository for the design."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
OUTSIDE = "DESIGN" + ".md"  # the guide this document replaces, named so that this file does not name it
CITED_IN = ["ramsweep/**/*.py", "ramsweep/**/*.wgsl", "README.md", "BENCHMARKS.md", "sets/*.yaml",
            "benchmarks/*.py", "scripts/*", "tests/*.py", "pyproject.toml", ".ci/run"]
REFERENCE = re.compile(r'docs/design\.md\s+§(\w+)((?:\s*,?\s*"[^"\n]+")*)')
HEADING = re.compile(r"^##\s+(\d+[a-z]?)\.\s", re.MULTILINE)


def sections() -> dict[str, str]:
    """Section id ("3", "3b", ...) -> its text, heading included."""
    text = DESIGN.read_text(encoding="utf-8")
    found = list(HEADING.finditer(text))
    return {m.group(1): text[m.start(): found[i + 1].start() if i + 1 < len(found) else len(text)]
            for i, m in enumerate(found)}


def citing_files() -> list[Path]:
    files = {p for pattern in CITED_IN for p in ROOT.glob(pattern) if p.is_file()}
    return sorted(f for f in files if f.suffix not in (".gz", ".pyc") and f != Path(__file__).resolve())


def references() -> list[tuple[str, str, list[str]]]:
    """(file:line, section, quoted bullet names) of every reference outside the document."""
    out = []
    for path in citing_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in REFERENCE.finditer(text):
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
            out.append((where, m.group(1), re.findall(r'"([^"\n]+)"', m.group(2))))
    return out


def test_the_design_has_the_sections_the_project_numbers():
    assert list(sections()) == ["1", "2", "3", "3b", "3c", "4", "5", "5b", "6", "7"]


def test_every_reference_names_a_section_and_bullet_that_exist():
    found, refs = sections(), references()
    assert len(refs) >= 20, "the references were not found: has their form changed?"
    for where, section, bullets in refs:
        assert section in found, f"{where}: docs/design.md §{section} has no such section"
        for bullet in bullets:
            assert f"**{bullet.lower()}" in found[section].lower(), \
                f'{where}: docs/design.md §{section} has no bullet "{bullet}"'


def test_the_reference_pattern_reads_the_forms_in_use():
    text = 'see docs/design.md §3 "Clusters and tiers", "Memory kinds"; and docs/design.md §3b.'
    assert [(m.group(1), re.findall(r'"([^"]+)"', m.group(2))) for m in REFERENCE.finditer(text)] == [
        ("3", ["Clusters and tiers", "Memory kinds"]), ("3b", [])]


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_nothing_points_outside_the_repository_for_the_design():
    for path in tracked_files():
        if path == DESIGN or not path.is_file() or path.suffix in (".gz", ".png", ".npz"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        assert OUTSIDE not in text, f"{path.relative_to(ROOT)} names {OUTSIDE}; cite docs/design.md §N"


def test_the_design_names_no_path_outside_the_repository():
    text = DESIGN.read_text(encoding="utf-8")
    assert OUTSIDE not in text
    assert not re.search(r"(?<![\w.])/(work|home|tmp|shared)/", text), "the design names a path outside the repository"
