"""Typed result records: one per experiment run or count-model baseline (docs/design.md §4).

The only module that knows a record's fields: the runner builds records here, the stores
validate them here, and status, report and serve read their attributes, never raw keys.
Records are frozen (a finished record never changes) and keep any field they do not know
(`extra="allow"`), so a file written by a newer ramsweep passes through an older one intact.
Experiment records written before `kind` existed read as experiments.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError

from ramsweep.config import bitwise_shape
from ramsweep.messages import field_path, one_line

OK, FAILED, INTERRUPTED = "ok", "failed", "interrupted"
Status = Literal["ok", "failed", "interrupted"]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


class Calibrated(_Part):
    temperature: float | None = None
    ce: float | None = None
    ppl: float | None = None
    bpb: float | None = None
    # the fit ended at a bound of its search: "highest" (T = 1000, no temperature beats uniform
    # guessing) or "lowest" (T = 0.001); None: a temperature inside the range
    bound: str | None = None


class TierMetrics(_Part):
    tier: int
    clusters: int
    neurons: int
    bits: int
    backend: str  # the tier's memory kind (dense, sparse or lsh), stored under its first name: see `memory`
    examples: int = 0
    ce: float | None = None
    ppl: float | None = None
    accuracy: float | None = None
    share: float | None = None  # % of the split's examples whose target is in this tier
    empty_rate: float | None = None
    target_empty_rate: float | None = None
    gate_open: float | None = None  # gating: mean share of the tier's clusters open per example
    gate_target_open: float | None = None  # gating: share of the tier's examples whose target's gate is open
    ungated_ce: float | None = None  # gating: the tier's CE and accuracy with every gate open
    ungated_accuracy: float | None = None

    @property
    def memory(self) -> str:
        """How the tier's cells are stored (docs/design.md §3 "Memory kinds"). The stored field
        keeps the name it was first written with, so every record reads and copies unchanged."""
        return self.backend


class Ungated(_Part):
    ce: float | None = None
    ppl: float | None = None
    accuracy: float | None = None


class BitMetrics(_Part):
    """One bit cluster of a bitwise model (docs/design.md §3c "Metrics beyond the tiered ones")."""

    bit: int  # 0 the most significant
    neurons: int
    bits: int
    accuracy: float | None = None  # P > 0.5 against the target's bit
    ce: float | None = None  # binary cross-entropy, nats
    mean_p: float | None = None
    empty: float | None = None  # share of lookups that found no decision
    undecided: float | None = None  # share of examples whose P is exactly 0.5


class BandMetrics(_Part):
    """The examples whose target is in one frequency band (a bitwise model's per-band figures)."""

    band: int
    first: int  # its first position in the training frequency order
    tokens: int
    examples: int = 0
    share: float | None = None  # % of the split's examples
    ce: float | None = None
    ppl: float | None = None
    accuracy: float | None = None
    calibrated_ce: float | None = None


class SplitMetrics(_Part):
    examples: int = 0
    ce: float | None = None
    ppl: float | None = None
    accuracy: float | None = None
    bpb: float | None = None
    ppl_floor: float | None = None
    calibrated: Calibrated | None = None
    ungated: Ungated | None = None  # gating: the model's figures with every gate open
    tiers: tuple[TierMetrics, ...] = ()
    bits: tuple[BitMetrics, ...] = ()  # a bitwise model's bit clusters
    bands: tuple[BandMetrics, ...] = ()  # a bitwise model's frequency bands


class Metrics(_Part):
    validation: SplitMetrics
    test: SplitMetrics


class DataInfo(_Part):
    """What the numbers were computed on (data/corpus.py's describe())."""

    corpus: str
    tokenizer: str
    vocab_size: int
    full_data: bool = False
    fingerprint: str
    path: str | None = None
    variant: str | None = None
    tokenizer_files: dict[str, str] = {}
    split_tokens: dict[str, int] = {}
    split_bytes: dict[str, int] = {}
    source_sha256: str | None = None

    @property
    def group(self) -> str:
        """e.g. 'kjv/word fast': records of one group are comparable."""
        return f"{self.corpus}/{self.tokenizer}{'' if self.full_data else ' fast'}"


class Spec(_Part):
    """The resolved experiment as it ran (config.Experiment dumped; tiers as text)."""

    name: str
    tiers: str | None = None  # a tiered experiment's; a bitwise one has its `bitwise` block instead
    context: int
    negatives: int = 1000
    empty_value: float = 0.0
    seed: int = 0

    @property
    def shape(self) -> str:
        """What the model is, in one line (config.Experiment.shape)."""
        bitwise = getattr(self, "bitwise", None)
        return bitwise_shape(bitwise) if self.tiers is None and bitwise else str(self.tiers)


class Timing(_Part):
    encode_s: float | None = None
    train_s: float | None = None
    validation_s: float | None = None
    test_s: float | None = None
    total_s: float | None = None
    elapsed_s: float | None = None  # failed and interrupted runs: until they stopped

    @property
    def eval_s(self) -> float | None:
        return None if self.validation_s is None else self.validation_s + (self.test_s or 0.0)


class LshUse(_Part):
    """The price of an LSH tier's hash: distinct training addresses that had to share a cell,
    counted on a sample of the tier's neurons (evenly spaced; each needs a sort of its writes)."""

    lsh_bits: int
    neurons_counted: int
    addresses: int  # distinct addresses written, summed over the counted neurons
    cells: int  # their cells written (non-EMPTY)
    collided: int  # addresses - cells: addresses that found their cell taken by another
    collided_share: float | None = None  # collided / addresses


class Resources(_Part):
    device: str = "cpu"
    threads: int | None = None
    peak_rss_mb: float | None = None
    memory_mb: float | None = None
    cells_stored: tuple[int, ...] = ()
    backends: tuple[str, ...] = ()  # per tier, its memory kind: stored under its first name, see `memories`
    lsh: tuple[LshUse | None, ...] = ()  # per tier; None where a tier is not hashed
    never_written: tuple[int, ...] = ()  # per tier: clusters no training example wrote, skipped in evaluation

    @property
    def memories(self) -> tuple[str, ...]:
        return self.backends


class _Record(_Part):
    name: str
    key: str
    status: Status
    data: DataInfo
    environment: dict[str, Any] = {}
    started: str
    finished: str | None = None
    timing: Timing = Timing()
    error: str | None = None
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK

    def dump(self) -> dict[str, Any]:
        """The JSON object stored in a results file: the fields that were given, exactly (a
        record read from a file dumps to what was read; defaults are not written out)."""
        return self.model_dump(mode="json", exclude_unset=True)


class ExperimentRecord(_Record):
    kind: Literal["experiment"] = "experiment"
    set: str
    spec: Spec
    metrics: Metrics | None = None  # ok records only
    resources: Resources | None = None
    search: dict | None = None  # a connectivity search's summary (optimize/driver.py), where one ran


class BaselineRecord(_Record):
    kind: Literal["baseline"] = "baseline"
    metrics: Metrics


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("kind", "experiment")
    return getattr(value, "kind", "experiment")


Record = Annotated[
    Annotated[ExperimentRecord, Tag("experiment")] | Annotated[BaselineRecord, Tag("baseline")],
    Discriminator(_kind),
]
_RECORD = TypeAdapter(Record)


class Claim(BaseModel):
    """A runner's claim on an experiment (claims.py), as stored in `<results>.claims`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    name: str
    set: str
    owner: str  # the runner's random id: host:pid can be reused
    host: str
    pid: Annotated[int, Field(ge=1, le=2**31 - 1)]  # os.kill(0 or negative) would signal a whole group
    heartbeat: float  # the owner's clock at its last beat: compared for change, never against ours
    since: str
    # what the experiment is doing, published with each heartbeat (progress.py); None before the first
    phase: str | None = None  # loading, training, search, validation, calibration, test
    fraction: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # of the whole experiment
    eta_s: float | None = None  # seconds left, estimated by the runner
    detail: str | None = None  # e.g. "tier 2 of 3", "GA generation 12"

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"


class Runner(BaseModel):
    """A live runner as it announces itself in `<results>.claims` with each heartbeat, so that
    readers (status, serve) know what it plans even while it holds no claim."""

    model_config = ConfigDict(frozen=True, extra="allow")

    owner: str
    host: str
    pid: Annotated[int, Field(ge=1, le=2**31 - 1)]
    set: str
    since: str
    heartbeat: float  # its own clock, like a claim's
    planned: int  # experiments in its plan
    left: int  # of those, how many still need running (its own in flight included)
    jobs: int = 1
    eta_s: float | None = None  # its estimate of its plan's time left (sweep/estimate.py), None: none yet
    estimate: str | None = None  # how that estimate was made

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"


_CLAIMS = TypeAdapter(dict[str, Claim])
_RUNNERS = TypeAdapter(dict[str, Runner])


def parse_claims(value: Any) -> dict[str, Claim]:
    """Claims by key from a claims document's `claims`; RecordError naming the claim and field."""
    try:
        return _CLAIMS.validate_python(value)
    except ValidationError as err:
        raise RecordError(one_line(err), field_path(err)) from None


def parse_runners(value: Any) -> dict[str, Runner]:
    """Runners by owner id from a claims document's `runners`; RecordError naming the field."""
    try:
        return _RUNNERS.validate_python(value)
    except ValidationError as err:
        raise RecordError(one_line(err), field_path(err)) from None


class RecordError(ValueError):
    """A stored object is not a valid record: `where` names its field."""

    def __init__(self, message: str, where: str):
        super().__init__(message)
        self.where = where


def parse_record(value: dict[str, Any] | bytes) -> ExperimentRecord | BaselineRecord:
    """A record from its stored JSON object (or one JSON Lines line); RecordError when invalid."""
    try:
        record = _RECORD.validate_json(value) if isinstance(value, (bytes, str)) else _RECORD.validate_python(value)
    except ValidationError as err:
        raise RecordError(one_line(err), field_path(err)) from None
    if record.ok and record.metrics is None:
        raise RecordError("metrics: missing; an ok record holds its figures (a record without them is not ok)",
                          "metrics")
    return record


@contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector while many records are parsed: each record is a
    dozen small objects, and collections that rescan every record already parsed made reading
    100,000 records take minutes instead of seconds. Parsing creates no cycles to collect."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def dumps_line(record: ExperimentRecord | BaselineRecord) -> bytes:
    """One record as one line of JSON (keys sorted), newline included."""
    return orjson.dumps(record.dump(), option=orjson.OPT_SORT_KEYS) + b"\n"


def latest(records) -> dict[str, ExperimentRecord | BaselineRecord]:
    """The record that stands for each key: its newest `ok` record, else its newest record.
    (A --force re-run that failed leaves the key done; a retried failure that succeeded is done.)"""
    found: dict[str, ExperimentRecord | BaselineRecord] = {}
    for r in records:
        add(found, r)
    return found


def add(found: dict, r) -> None:
    """Fold one more (newer) record or Summary into a `latest` mapping."""
    if r.ok or not (r.key in found and found[r.key].ok):
        found[r.key] = r


# ---------------------------------------------------------------- summaries (serve)


@dataclass(frozen=True, slots=True)
class SpecSummary:
    name: str
    tiers: str | None
    shape: str
    context: int
    negatives: int
    empty_value: float
    seed: int


@dataclass(frozen=True, slots=True)
class SplitSummary:
    ppl: float | None
    ce: float | None
    accuracy: float | None
    bpb: float | None
    ppl_floor: float | None
    calibrated: Calibrated | None
    tiers: tuple = ()  # left out: a card reads the whole record


@dataclass(frozen=True, slots=True)
class MetricsSummary:
    validation: SplitSummary
    test: SplitSummary


@dataclass(frozen=True, slots=True)
class ResourcesSummary:
    device: str


@dataclass(frozen=True, slots=True)
class Summary:
    """A record as a leaderboard, a grid and a list of results read it, with the attributes of
    the record itself (the report's functions take either), at ~1.5 KB where a whole record is
    ~20 KB in memory: a dashboard keeps one per key of a 100,000-record grid."""

    kind: str
    name: str
    key: str
    set: str | None
    status: str
    data: DataInfo  # shared between the records of one data group
    spec: SpecSummary | None
    metrics: MetricsSummary | None
    timing: Timing
    resources: ResourcesSummary | None
    started: str
    finished: str | None
    error: str | None
    search: dict | None = None  # a search's figures without its history (search_brief): the searches table

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def seconds(self) -> float | None:
        """total_s of an ok run, elapsed_s of one that stopped."""
        return self.timing.total_s if self.ok else self.timing.elapsed_s

    @property
    def val_ppl(self) -> float | None:
        return self.metrics.validation.ppl if self.metrics else None

    @property
    def test_ppl(self) -> float | None:
        return self.metrics.test.ppl if self.metrics else None

    @classmethod
    def of(cls, r: ExperimentRecord | BaselineRecord, shared: dict | None = None) -> Summary:
        """`shared` (kept by the caller) holds one DataInfo per distinct value."""
        d = r.data
        data = d if shared is None else shared.setdefault((d.corpus, d.tokenizer, d.vocab_size, d.full_data,
                                                           d.fingerprint), d)
        spec = None
        if r.kind == "experiment":
            s = r.spec
            spec = SpecSummary(s.name, s.tiers, s.shape, s.context, s.negatives, s.empty_value, s.seed)
        metrics = None
        if r.metrics is not None:
            metrics = MetricsSummary(*(SplitSummary(m.ppl, m.ce, m.accuracy, m.bpb, m.ppl_floor, m.calibrated)
                                       for m in (r.metrics.validation, r.metrics.test)))
        res = getattr(r, "resources", None)
        return cls(r.kind, r.name, r.key, getattr(r, "set", None), r.status, data, spec, metrics, r.timing,
                   ResourcesSummary(res.device) if res else None, r.started, r.finished,
                   (r.error or "").splitlines()[0] if r.error else None, search_brief(getattr(r, "search", None)))


_SEARCH_FIGURES = ("strategy", "fitness", "units", "improved", "evaluations", "search_s", "stopped", "chosen",
                   "fitness_before", "fitness_after")


def search_brief(search: dict | None) -> dict | None:
    """A record's search as a list of searches reads it (report.rows.search_rows), without its
    history, candidates and models: a few hundred bytes where the whole can be megabytes."""
    if not search or "before" not in search:
        return None
    before = search["before"]
    return {**{k: search.get(k) for k in _SEARCH_FIGURES},
            "phases": [{"search": p.get("search"), "strategy": p.get("strategy")} for p in search.get("phases") or ()],
            "before": {split: {"ppl": (before.get(split) or {}).get("ppl"),
                               "accuracy": (before.get(split) or {}).get("accuracy")} for split in ("validation", "test")}}
