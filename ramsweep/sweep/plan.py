"""Keys, and the one rule for what still needs running (docs/design.md §4).

The runner, the claims, `status` and `run --dry-run` all ask `needs_running`; nothing else
decides whether an experiment is done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ramsweep._io import digest
from ramsweep.config import Experiment
from ramsweep.semantics import ENGINE_SEMANTICS_VERSION
from ramsweep.sweep.records import FAILED, INTERRUPTED, Summary


def experiment_key(exp: Experiment, data_fingerprint: str) -> str:
    """Hash of what the experiment computes: canonical spec + data + engine semantics.
    Not the name, so renaming never re-runs; changing tiers or data always does."""
    return digest({"spec": exp.spec(), "data": data_fingerprint, "engine": ENGINE_SEMANTICS_VERSION})


def baseline_key(name: str, data_fingerprint: str) -> str:
    """A count-model baseline is computed once per data (and engine semantics version)."""
    return digest({"baseline": name, "data": data_fingerprint, "engine": ENGINE_SEMANTICS_VERSION})


@dataclass(frozen=True)
class Planned:
    experiment: Experiment
    key: str


def plan(experiments: Iterable[Experiment], data_fingerprint: str) -> dict[str, Planned]:
    """The set's experiments by key, in set order; the same spec twice runs once (the first name)."""
    planned: dict[str, Planned] = {}
    for exp in experiments:
        key = experiment_key(exp, data_fingerprint)
        planned.setdefault(key, Planned(exp, key))
    return planned


@dataclass(frozen=True)
class Options:
    """What the user asked: retry failed experiments; run these keys again although done, counting
    them done only by an ok record started at or after `since` (the run's start, ISO time)."""

    retry_failed: bool = True
    forced: frozenset[str] = frozenset()
    since: str = ""


def needs_running(key: str, latest: Summary | None, options: Options = Options()) -> bool:
    """THE rule. `latest` stands for the key's latest record (records.latest's rule: a Summary or the
    record itself), None when it has none."""
    if latest is None:
        return True
    if latest.ok:
        return key in options.forced and latest.started < options.since
    return latest.status == INTERRUPTED or (latest.status == FAILED and options.retry_failed)


def pending(planned: Mapping[str, Planned], latest: Mapping[str, Summary],
            options: Options = Options()) -> list[Planned]:
    """The planned experiments that still need running, in plan order."""
    return [p for key, p in planned.items() if needs_running(key, latest.get(key), options)]
