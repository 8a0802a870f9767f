"""Every key and figure pinned: the experiments of tests/fixtures/golden.yaml (the quick set,
the findings set's first experiments under each input encoding, a gated, a hashed and a searched
experiment) run on the embedded corpus in fast mode and give the keys and figures stored in
golden.json before the engine was refactored. A refactor that changes a number fails here; a
change of the semantics changes ENGINE_SEMANTICS_VERSION, the keys, and this file, knowingly
(`python tests/test_golden.py` writes it again)."""

import math
import sys
from pathlib import Path

import orjson
import pytest

from ramsweep.sets import load_set
from ramsweep.sweep.runner import run_set
from ramsweep.sweep.store import open_store

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = FIXTURES / "golden.json"


def figures(results: Path) -> dict[str, dict]:
    """Per experiment: its key and every figure of validation and test, overall and per tier."""
    out = {}
    for r in open_store(results).records():
        if r.kind != "experiment":
            continue
        assert r.ok, r.error
        m = r.model_dump(mode="json")["metrics"]
        out[r.name] = {"key": r.key, "validation": _numbers(m["validation"]), "test": _numbers(m["test"])}
    return out


def _numbers(split: dict) -> dict:
    """The split's figures, flattened (tier lists by index): numbers only (a name may change)."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix] = value

    walk("", split)
    return flat


def run_golden(folder: Path) -> dict[str, dict]:
    results = folder / "golden.jsonl"
    summary = run_set(load_set(str(FIXTURES / "golden.yaml")), results=results)
    assert not summary.failed
    return figures(results)


@pytest.mark.slow
def test_every_key_and_figure_is_what_it_was(tmp_path):
    want, got = orjson.loads(GOLDEN.read_bytes()), run_golden(tmp_path)
    assert sorted(got) == sorted(want)
    for name, pinned in want.items():
        assert got[name]["key"] == pinned["key"], f"{name}: its key changed"
        for split in ("validation", "test"):
            now, then = got[name][split], pinned[split]
            assert sorted(now) == sorted(then), f"{name} {split}: other figures"
            for field, value in then.items():
                assert math.isclose(now[field], value, rel_tol=1e-9, abs_tol=1e-12), \
                    f"{name} {split} {field}: {now[field]!r}, pinned {value!r}"


if __name__ == "__main__":  # write golden.json again (a deliberate change of the semantics only)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        GOLDEN.write_bytes(orjson.dumps(run_golden(Path(folder)), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    sys.exit(0)
