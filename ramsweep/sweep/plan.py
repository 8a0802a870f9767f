"""Which experiments of a set still need running: keys and skip-completed (DESIGN.md §4)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from ramsweep import ENGINE_SEMANTICS_VERSION
from ramsweep.config import Experiment


def experiment_key(exp: Experiment, data_fingerprint: str) -> str:
    """Hash of what the experiment computes: canonical spec + data + engine semantics.
    Not the name, so renaming never re-runs; changing tiers or data always does."""
    blob = orjson.dumps(
        {"spec": exp.spec(), "data": data_fingerprint, "engine": ENGINE_SEMANTICS_VERSION},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob).hexdigest()[:16]


def baseline_key(name: str, data_fingerprint: str) -> str:
    """A count-model baseline is computed once per data (and engine semantics version)."""
    blob = orjson.dumps({"baseline": name, "data": data_fingerprint, "engine": ENGINE_SEMANTICS_VERSION},
                        option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Planned:
    experiment: Experiment
    key: str
    done: bool


def plan(experiments, data_fingerprint: str, completed: set[str]) -> list[Planned]:
    out = []
    for exp in experiments:
        key = experiment_key(exp, data_fingerprint)
        out.append(Planned(exp, key, key in completed))
    return out
