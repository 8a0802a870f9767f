"""Experiment definitions: tier configs, experiments and experiment sets (models only).

Everything here is plain, frozen, validated data. Every invalid value raises a
`ConfigError` with one line naming the experiment, the field and the fix; pydantic's own
multi-line reports never leave this module (messages.py words them). Reading YAML files is
sets.py's; the tier-bits grid is grid.py's.

    >>> str(TierConfig.parse(" 100,15,20 ; REST,5,8 "))
    '100,15,20;rest,5,8'
"""

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from ramsweep.data.spec import DataSpec
from ramsweep.errors import ConfigError
from ramsweep.messages import one_line, short

# Where the engine runs. Every device gives the same cells and metrics, so it is a choice of
# speed, never part of an experiment's key (engine/devices.py resolves and describes it).
Device = Literal["auto", "cpu", "cuda", "metal", "wgpu", "hybrid"]
DEVICES: tuple[str, ...] = Device.__args__

MAX_BITS = 64  # addresses are built in one unsigned 64-bit word
MAX_CONTEXT = 16
MAX_COUNT = 2**31 - 1  # clusters (tokens) in a tier: vocabularies are indexed with int32
MAX_NEURONS = 2**16  # neurons per cluster: far past any RAM LM, well inside int64 arithmetic
TIER_EXAMPLE = '"100,15,20;400,10,12;rest,5,8"'
TIER_FORM = f'write COUNT,NEURONS,BITS tiers separated by ";" (e.g. {TIER_EXAMPLE})'
_INT_RE = re.compile(r"[+-]?\d+")
_SEEDED = re.compile(r"\.s\d+$")  # NAME.sSEED: one seed of an experiment run at several


def seed_base(name: str) -> str:
    """An experiment's name without its .sSEED (NAME.s2 -> NAME); other names as they are."""
    return _SEEDED.sub("", name)
MAX_SEEDS = 100


def seed_list(value: Any, first: int) -> list[int]:
    """A `seeds:` value as seeds: a count n (first, first + 1, ... first + n - 1) or a list of
    distinct seeds. ConfigError with the fix otherwise."""
    fix = "give a number of seeds (e.g. 3) or a list of distinct seeds (e.g. [0, 1, 2])"
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_SEEDS:
            raise ConfigError(f"seeds: {value} is not from 1 to {MAX_SEEDS}; {fix}")
        return [first + i for i in range(value)]
    if isinstance(value, list) and 1 <= len(value) <= MAX_SEEDS and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**64 - 1 for v in value) \
            and len(set(value)) == len(value):
        return list(value)
    raise ConfigError(f"seeds: {short(value)} is not a number of seeds or a list of seeds; {fix}")

# The fix shown after a bad value, by field name: tier and search fields here; an experiment's
# fields carry theirs in their Role, added below the Experiment model.
FIXES = {
    "count": "use a whole number from 1 to 2**31 - 1 (or rest for the last tier)",
    "neurons": "use a whole number from 1 to 65,536",
    "bits": f"use a whole number from 1 to {MAX_BITS}",
    "strategy": "use GA, TS, GA+TS or per-cluster (default GA+TS)",
    "fitness": "use CE, ACCURACY, HARMONIC (phases) or SIMPLE (tiered, no phases) (default CE)",
    "search": "use grid, neurons, bits or connections",
    "range": "give [lo, hi] with 1 <= lo < hi (defaults: neurons 10-300, bits 10-24)",
    "phases": "give a list of phases, e.g. [{search: grid, neurons: [50, 100], bits: [14, 16]}, "
              "{search: neurons, strategy: GA+TS}]",
    "per_cluster": "use GA, TS or GA+TS: what searches each cluster (default GA+TS)",
    "scope": "use tier (each searched tier on its own, the default) or all (one genome over the searched tiers)",
    "population": "use a whole number from 2 to 10,000 (default 30)",
    "generations": "use a whole number from 0 to 100,000 (default 50)",
    "elitism": "use a whole number from 0 to the population (default 2)",
    "tournament": "use a whole number from 1 to the population (default 3)",
    "crossover": "use a probability from 0.0 to 1.0 (default 0.7)",
    "mutation": "use a probability from 0.0 to 1.0 (default 0.01)",
    "neighbours": "use a whole number from 1 to 10,000 (default 30)",
    "tabu": "use a whole number from 0 to 10,000 (default 5)",
    "ts_mutation": "use a probability from 0.0 to 1.0 (default 0.001)",
    "iterations": "use a whole number from 0 to 100,000 (default 5)",
    "patience": "use a whole number of generations or iterations from 1 (default 5), or null for none",
    "fitness_fraction": "use a share of the training split above 0.0 and at most 0.5 (default 0.1)",
    "candidates": "use a whole number from 1 to 100 (default 3)",
    "max_minutes": "use a number of minutes above 0, or null for no cap (the default)",
    "clusters": "use a whole number of clusters per tier from 1, or null for all (the default)",
    "budgets": "map a tier index to budget fields, e.g. {0: {generations: 20}}",
}


def bits_per_token(vocab_size: int) -> int:
    """Bits that write any token id below vocab_size: max(1, ceil(log2(vocab_size))), exactly."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
    return max(1, (vocab_size - 1).bit_length())


class FrozenModel(BaseModel):
    """Frozen, closed models whose validation errors are one-line ConfigErrors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def _where(cls, data: Any) -> str:
        return ""

    @classmethod
    def _fixes(cls) -> Mapping[str, str]:
        return FIXES

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_errors(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as err:
            raise ConfigError(cls._where(data) + one_line(err, cls.model_fields, cls._fixes())) from None
        except ConfigError as err:
            raise ConfigError(cls._where(data) + str(err)) from None


# ---------------------------------------------------------------- tiers


class TierSpec(FrozenModel):
    """One tier: `count` clusters (None = rest) of `neurons` RAM neurons with `bits` inputs."""

    count: Annotated[StrictInt, Field(ge=1, le=MAX_COUNT)] | None
    neurons: Annotated[StrictInt, Field(ge=1, le=MAX_NEURONS)]
    bits: Annotated[StrictInt, Field(ge=1, le=MAX_BITS)]

    def __str__(self) -> str:
        return f"{'rest' if self.count is None else self.count},{self.neurons},{self.bits}"


def _check_rest(tiers: tuple[TierSpec, ...]) -> None:
    rests = [i for i, tier in enumerate(tiers) if tier.count is None]
    if len(rests) > 1:
        raise ConfigError(
            f"'rest' appears {len(rests)} times; only the last tier may be rest "
            '(e.g. "100,15,20;400,10,12;rest,5,8")'
        )
    if rests and rests[0] != len(tiers) - 1:
        raise ConfigError(
            "'rest' must be the last tier; move it to the end (e.g. \"100,15,20;rest,5,8\")"
        )


def _tier_int(text: str, field: str, label: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise ConfigError(f"{label}: {field} {text!r} is not a whole number; {FIXES[field]}")
    return int(text)


def _parse_tier(item: str, index: int) -> TierSpec:
    """One 'COUNT,NEURONS,BITS' item (COUNT may be 'rest', any case)."""
    item = item.strip()
    label = f'tier {index} "{item}"'
    if not item:
        raise ConfigError(f"tier {index} is empty; remove the stray ';' (e.g. {TIER_EXAMPLE})")
    fields = [f.strip() for f in item.split(",")]
    if len(fields) != 3:
        raise ConfigError(
            f"{label} has {len(fields)} field(s), needs 3; {TIER_FORM}"
        )
    rest = fields[0].lower() == "rest"
    count = None if rest else _tier_int(fields[0], "count", label)
    neurons = _tier_int(fields[1], "neurons", label)
    bits = _tier_int(fields[2], "bits", label)
    if count is not None and not 1 <= count <= MAX_COUNT:
        raise ConfigError(f"{label}: count must be from 1 to {MAX_COUNT:,} (got {count}); {FIXES['count']}")
    if not 1 <= neurons <= MAX_NEURONS:
        raise ConfigError(f"{label}: neurons must be from 1 to {MAX_NEURONS:,} (got {neurons}); {FIXES['neurons']}")
    if not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"{label}: bits must be from 1 to {MAX_BITS} (got {bits}); {FIXES['bits']}")
    return TierSpec(count=count, neurons=neurons, bits=bits)


class TierConfig(FrozenModel):
    """Frequency tiers, most frequent first; only the last may be `rest`."""

    tiers: Annotated[tuple[TierSpec, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _rest_only_last(self) -> Self:
        _check_rest(self.tiers)
        return self

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse '100,15,20;400,10,12;rest,5,8' (whitespace around items tolerated)."""
        if not text.strip():
            raise ConfigError(f"the tier config is empty; {TIER_FORM}")
        specs = tuple(_parse_tier(item, i + 1) for i, item in enumerate(text.split(";")))
        _check_rest(specs)
        return cls(tiers=specs)

    def __str__(self) -> str:
        return ";".join(str(tier) for tier in self.tiers)

    def cluster_counts(self, vocab_size: int) -> list[int]:
        """Clusters per tier for a vocabulary (one cluster per token; rest takes the remainder)."""
        explicit = sum(t.count for t in self.tiers if t.count is not None)
        has_rest = self.tiers[-1].count is None
        left = vocab_size - explicit
        if left < 0:
            from ramsweep.data.tokenizers import GPT2_VOCAB_SIZE as gpt2

            bigger = (f", or run on a vocabulary of over {explicit:,} tokens (`--tokenizer gpt2`: {gpt2:,})"
                      if vocab_size < gpt2 and explicit < gpt2 else "")
            raise ConfigError(
                f"the tier counts sum to {explicit:,} but the vocabulary has only "
                f"{vocab_size:,} tokens; lower the counts to fit{bigger}"
            )
        if has_rest and left == 0:
            raise ConfigError(
                f"'rest' would get 0 clusters: the counts already cover all {vocab_size:,} "
                "tokens; drop the rest tier or lower the counts"
            )
        if not has_rest and left > 0:
            raise ConfigError(
                f"the tiers cover {explicit:,} of {vocab_size:,} clusters and there is no "
                f"'rest' tier; add a last tier like ';rest,5,8' or make the counts sum to "
                f"{vocab_size:,}"
            )
        return [left if t.count is None else t.count for t in self.tiers]

    def total_neurons(self, vocab_size: int) -> int:
        """All RAM neurons of the model for a vocabulary."""
        counts = self.cluster_counts(vocab_size)
        return sum(n * t.neurons for n, t in zip(counts, self.tiers))


# ---------------------------------------------------------------- connectivity search

SEARCHES = {"ga": "ga", "ts": "ts", "ga+ts": "ga+ts", "gats": "ga+ts"}
STRATEGIES = {**SEARCHES, "per-cluster": "per-cluster", "per_cluster": "per-cluster", "pc": "per-cluster"}


def _lower_name(choices: Mapping[str, str]):
    """A before-validator: GA+TS, ga+ts and GaTs name the same thing (the research wrote them
    upper-case); unknown names are left for the Literal to refuse with the allowed ones."""
    def validate(value: Any) -> Any:
        return choices.get(value.strip().lower(), value) if isinstance(value, str) else value
    return validate


Probability = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]


class SearchBudget(FrozenModel):
    """How much one GA or tabu search may do (docs/design.md §5; defaults are the research's)."""

    population: Annotated[StrictInt, Field(ge=2, le=10_000)] = 30
    generations: Annotated[StrictInt, Field(ge=0, le=100_000)] = 50
    elitism: Annotated[StrictInt, Field(ge=0, le=10_000)] = 2
    tournament: Annotated[StrictInt, Field(ge=1, le=10_000)] = 3
    crossover: Probability = 0.7
    mutation: Probability = 0.01
    neighbours: Annotated[StrictInt, Field(ge=1, le=10_000)] = 30
    tabu: Annotated[StrictInt, Field(ge=0, le=10_000)] = 5
    ts_mutation: Probability = 0.001
    iterations: Annotated[StrictInt, Field(ge=0, le=100_000)] = 5
    patience: Annotated[StrictInt, Field(ge=1, le=100_000)] | None = 5

    @model_validator(mode="after")
    def _fits_population(self) -> Self:
        for field in ("elitism", "tournament"):
            if getattr(self, field) > self.population:
                raise ConfigError(f"{field}: {getattr(self, field)} is above the population {self.population}; "
                                  f"{FIXES[field]}")
        return self


SIZE_SEARCHES = ("neurons", "bits")
SIZE_RANGES = {"neurons": (10, 300), "bits": (10, 24)}  # the research's
SIZE_MUTATION = 0.2  # a size gene's chance to move, GA and TS (a unit's connections use SearchBudget's)


class Phase(SearchBudget):
    """One phase of an architecture search (docs/design.md §5b): a grid over sizes, GA/TS on each
    unit's neurons or bits, or §5's search on the connections."""

    search: Literal["grid", "neurons", "bits", "connections"]
    strategy: Literal["ga", "ts", "ga+ts"] = "ga+ts"
    neurons: tuple[Annotated[StrictInt, Field(ge=1, le=MAX_NEURONS)], ...] | None = None  # grid
    bits: tuple[Annotated[StrictInt, Field(ge=1, le=MAX_BITS)], ...] | None = None  # grid
    range: tuple[Annotated[StrictInt, Field(ge=1, le=MAX_NEURONS)], Annotated[StrictInt, Field(ge=1, le=MAX_NEURONS)]] \
        | None = None  # neurons / bits: [lo, hi]
    seed: Annotated[StrictInt, Field(ge=0, le=2**64 - 1)] | None = None  # default: the block's + the phase's index

    _strategy = field_validator("strategy", mode="before")(_lower_name(SEARCHES))
    _search = field_validator("search", mode="before")(_lower_name(
        {"grid": "grid", "neurons": "neurons", "bits": "bits", "connections": "connections"}))

    @model_validator(mode="before")
    @classmethod
    def _size_defaults(cls, data: Any) -> Any:
        """A size phase moves a gene at SIZE_MUTATION unless told otherwise, GA and TS alike."""
        if isinstance(data, dict) and str(data.get("search", "")).strip().lower() in SIZE_SEARCHES:
            data = {"mutation": SIZE_MUTATION, "ts_mutation": SIZE_MUTATION, **data}
        return data

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> Self:
        if self.search == "grid":
            if not self.neurons or not self.bits:
                raise ConfigError("a grid phase needs neurons and bits lists, e.g. {search: grid, neurons: [50, 100], "
                                  "bits: [14, 16]}")
        elif self.neurons is not None or self.bits is not None:
            raise ConfigError(f"neurons and bits lists are a grid phase's; a {self.search} phase searches "
                              f"{'within range: [lo, hi]' if self.search in SIZE_SEARCHES else 'the connections'}")
        if self.range is not None:
            if self.search not in SIZE_SEARCHES:
                raise ConfigError(f"range: is a neurons or bits phase's; drop it from the {self.search} phase")
            lo, hi = self.range
            if not lo < hi or (self.search == "bits" and hi > MAX_BITS):
                raise ConfigError(f"range: {list(self.range)} is not [lo, hi] with lo < hi"
                                  f"{f' and hi <= {MAX_BITS}' if self.search == 'bits' else ''}; {FIXES['range']}")
        return self

    @property
    def bounds(self) -> tuple[int, int]:
        """[lo, hi] of a size phase."""
        return self.range or SIZE_RANGES[self.search]

    @property
    def step(self) -> int:
        """How far a size mutation moves: round(0.1 · (lo + hi)), at least 1."""
        lo, hi = self.bounds
        return max(1, round(0.1 * (lo + hi)))


class Optimize(SearchBudget):
    """An experiment's `optimize:` block: search the neurons' connections (docs/design.md §5), or,
    with `phases`, the architecture in phases (§5b).

    Part of the experiment's key. Fitness is measured on the last `fitness_fraction` of the
    training split, which the search's training never sees; the final connectivity is chosen
    on validation; test is only evaluated for the final figures."""

    strategy: Literal["ga", "ts", "ga+ts", "per-cluster"] = "ga+ts"
    fitness: Literal["ce", "accuracy", "simple", "harmonic"] = "ce"
    per_cluster: Literal["ga", "ts", "ga+ts"] = "ga+ts"  # what searches each cluster (per-cluster)
    scope: Literal["tier", "all"] = "tier"  # GA, TS, GA+TS: tier by tier, or all searched tiers as one genome
    tiers: tuple[Annotated[StrictInt, Field(ge=0, le=1000)], ...] | None = None  # searched tiers; None: all
    clusters: Annotated[StrictInt, Field(ge=1, le=MAX_COUNT)] | None = None  # per-cluster: per tier, first ones
    budgets: dict[Annotated[int, Field(ge=0, le=1000)], dict[str, Any]] = {}  # per-tier overrides
    fitness_fraction: Annotated[StrictFloat, Field(gt=0.0, le=0.5)] = 0.1
    candidates: Annotated[StrictInt, Field(ge=1, le=100)] = 3  # best by fitness compared on validation
    max_minutes: Annotated[StrictFloat, Field(gt=0.0)] | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=2**64 - 1)] = 0

    @classmethod
    def _where(cls, data: Any) -> str:
        return "optimize: "

    _strategy = field_validator("strategy", mode="before")(_lower_name(STRATEGIES))
    _search = field_validator("per_cluster", mode="before")(_lower_name(SEARCHES))
    _fitness = field_validator("fitness", mode="before")(
        _lower_name({"ce": "ce", "accuracy": "accuracy", "simple": "simple", "harmonic": "harmonic"}))
    phases: tuple[Phase, ...] | None = None  # an architecture search in phases (§5b)

    @model_serializer(mode="wrap")
    def _phases_only_where_set(self, handler) -> dict:
        """Keys of blocks from before phases existed stay as they were."""
        out = handler(self)
        if self.phases is None:
            out.pop("phases", None)
        return out

    @model_validator(mode="after")
    def _phases_valid(self) -> Self:
        if self.phases is None:
            if self.fitness == "harmonic":
                raise ConfigError("fitness: HARMONIC ranks the genomes of a phase; it needs phases (or use CE, "
                                  "ACCURACY or SIMPLE)")
            return self
        if not self.phases:
            raise ConfigError(f"phases: the list is empty; {FIXES['phases']}")
        if self.fitness == "simple":
            raise ConfigError("fitness: SIMPLE scores a tiered model's clusters one by one, which phases do not; "
                              "use CE, ACCURACY or HARMONIC")
        for index, phase in enumerate(self.phases):
            if phase.search != "connections":
                continue
            if index != len(self.phases) - 1:
                raise ConfigError(f"phases: phase {index}: a connections phase is the last one (§5's search on the "
                                  "sizes the phases before it chose); move it to the end")
            if self.fitness == "harmonic":
                raise ConfigError("fitness: HARMONIC ranks the genomes of a size phase, which a connections phase "
                                  "(§5's search) does not; use CE or ACCURACY")
            self.connections(index)  # its budget with the block's budgets: on top, checked here
        return self

    def connections(self, index: int, max_minutes: float | None = ...) -> "Optimize":
        """Phase `index`, a connections phase, as §5's search: its strategy and budget fields, with
        the block's fitness, fitness_fraction, candidates, scope, tiers and budgets, its seed (default
        the block's plus its index), and `max_minutes` (default the block's: a caller gives what is
        left of it)."""
        phase = self.phases[index]
        try:
            return Optimize(strategy=phase.strategy, fitness=self.fitness, scope=self.scope, tiers=self.tiers,
                            budgets=self.budgets, fitness_fraction=self.fitness_fraction, candidates=self.candidates,
                            max_minutes=self.max_minutes if max_minutes is ... else max_minutes,
                            seed=phase.seed if phase.seed is not None else (self.seed + index) % 2**64,
                            **{k: getattr(phase, k) for k in SearchBudget.model_fields})
        except ConfigError as err:
            raise ConfigError(f"phases: phase {index} (connections): {err}") from None

    @model_validator(mode="after")
    def _budgets_valid(self) -> Self:
        for tier, fields in self.budgets.items():
            unknown = sorted(set(fields) - set(SearchBudget.model_fields))
            if unknown:
                raise ConfigError(f"budgets: tier {tier}: unknown key '{unknown[0]}'; allowed keys: "
                                  f"{', '.join(SearchBudget.model_fields)}")
            try:
                self.budget(tier)
            except ConfigError as err:
                raise ConfigError(f"budgets: tier {tier}: {err}") from None
        return self

    def budget(self, tier: int) -> SearchBudget:
        """The budget of one tier's search: the block's, with that tier's `budgets:` entry on top."""
        base = {k: getattr(self, k) for k in SearchBudget.model_fields}
        return SearchBudget(**{**base, **self.budgets.get(tier, {})})


class Gating(FrozenModel):
    """Per-cluster gates (docs/design.md §3 "Gating"): `neurons` gate neurons of `bits` bits per
    cluster; a cluster whose gate is closed (fewer than ceil(neurons / 2) read TRUE) scores 0."""

    neurons: Annotated[StrictInt, Field(ge=1, le=MAX_NEURONS)]
    bits: Annotated[StrictInt, Field(ge=1, le=MAX_BITS)]

    @classmethod
    def _where(cls, data: Any) -> str:
        return "gating: "

    @property
    def needed(self) -> int:
        """Gate neurons that must read TRUE for the gate to be open."""
        return -(-self.neurons // 2)


class Bitwise(FrozenModel):
    """One cluster per output bit (docs/design.md §3c): `neurons` of `bits` bits per cluster, one
    number for every cluster or a list of one per cluster (its length is checked against the
    vocabulary's bits, docs/design.md §3c "Output code"); each neuron trains on a `sample_rate`
    share of the examples; `cell_mode` says what a cell holds."""

    neurons: Annotated[StrictInt, Field(ge=1, le=MAX_NEURONS)] | tuple[Annotated[StrictInt, Field(ge=1, le=MAX_NEURONS)], ...]
    bits: Annotated[StrictInt, Field(ge=1, le=MAX_BITS)] | tuple[Annotated[StrictInt, Field(ge=1, le=MAX_BITS)], ...]
    sample_rate: Annotated[StrictFloat | StrictInt, Field(gt=0, le=1)] = 1.0
    cell_mode: Literal["ternary", "quad_binary", "quad_weighted"] = "ternary"

    @classmethod
    def _where(cls, data: Any) -> str:
        return "bitwise: "

    @field_validator("neurons", "bits", mode="before")
    @classmethod
    def _one_or_a_list(cls, value: Any, info: ValidationInfo) -> Any:
        whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
        if isinstance(value, list | tuple) and value and all(whole(v) for v in value):
            return tuple(value)
        if not whole(value):
            raise ConfigError(f"{info.field_name}: {short(value)} is not a whole number or a list of them; "
                              f"{BITWISE_FIXES[info.field_name]}")
        return value

    @classmethod
    def _fixes(cls) -> Mapping[str, str]:
        return BITWISE_FIXES

    def per_cluster(self, clusters: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Neurons and bits of each of `clusters` bit clusters."""
        return tuple(_each(self.neurons, clusters)), tuple(_each(self.bits, clusters))


def _each(value: int | tuple[int, ...], clusters: int) -> tuple[int, ...]:
    return (value,) * clusters if isinstance(value, int) else value


def bitwise_shape(block: Mapping[str, Any]) -> str:
    """A bitwise block (as stored) in one line, e.g. 'bitwise 200x20 quad_weighted r=0.25'."""
    sizes = lambda v: str(v) if isinstance(v, int) else "[" + ",".join(map(str, v)) + "]"  # noqa: E731
    return (f"bitwise {sizes(block['neurons'])}x{sizes(block['bits'])} {block.get('cell_mode', 'ternary')} "
            f"r={block.get('sample_rate', 1.0):g}")


BITWISE_FIXES = {
    "neurons": "give one whole number from 1 to 65,536 for every bit cluster, or a list of one per cluster",
    "bits": "give one whole number from 1 to 64 for every bit cluster, or a list of one per cluster",
    "sample_rate": "give a share of the examples above 0 and at most 1 (the research's best: 0.25; default 1.0)",
    "cell_mode": "use ternary (majority vote; EMPTY on a tie reads empty_value), quad_binary or quad_weighted "
                 "(saturating counters, in example order)",
}
TIERED_ONLY = ("negatives", "dense_max_bits", "sparse_max_bits", "lsh_bits", "memory", "gating")


# ---------------------------------------------------------------- experiments

@dataclass(frozen=True)
class Role:
    """What an Experiment field is part of, declared once on the field (`Annotated[..., Role(...)]`);
    the key (`Experiment.spec`), sets' fixes, `compare`, the lineage, seed groups and the report's
    columns all read it from there (`roles`).

    `key`: "default" puts the field in the key only where it differs from its default, so a field
    added later leaves every older key as it was; "always" puts it in at every value; "never" keeps
    it out (a label, or a choice of where and how fast that every device and memory kind computes
    alike). `used`, where given, also keeps it out of the key wherever it changes nothing (keys from
    before it stay). `compared`: compare and the lineage name it when it differs (default: a key
    field). `column`: a column of the csv and json rows."""

    fix: str  # shown after a bad value
    key: Literal["default", "always", "never"] = "default"
    used: Callable[["Experiment"], bool] | None = None
    compared: bool | None = None
    column: bool = False

    @property
    def shown(self) -> bool:
        return self.key != "never" if self.compared is None else self.compared

    def in_key(self, exp: "Experiment", name: str) -> bool:
        """Whether this field of `exp` goes into its key."""
        if self.key == "never" or (self.key == "default" and getattr(exp, name) == type(exp).model_fields[name].default):
            return False
        return self.used is None or self.used(exp)


def roles(model: type[BaseModel] | None = None) -> dict[str, Role]:
    """The registry of experiment fields: each field of `model` (default the Experiment model,
    looked up when called, so a test may stand a wider one in) with its Role, in declaration order.
    A field without one is a TypeError at import: adding a field means deciding its roles."""
    return _roles(model or Experiment)


@cache
def _roles(model: type[BaseModel]) -> dict[str, Role]:
    found = {}
    for name, info in model.model_fields.items():
        role = next((m for m in info.metadata if isinstance(m, Role)), None)
        if role is None:
            raise TypeError(f"{model.__name__}.{name} has no Role: declare what it is part of")
        found[name] = role
    return found


def defaults(model: type[BaseModel] | None = None) -> dict[str, Any]:
    """Each experiment field's default as stored (None where it has none): what a record written
    before the field existed is read as."""
    return {name: None if info.is_required() else info.default
            for name, info in (model or Experiment).model_fields.items()}


_LABEL = {"key": "never", "compared": False}  # a label's roles: in no key, named by no comparison


def _tiered(exp: "Experiment") -> bool:
    """A tiered experiment's field: in its key; a bitwise experiment has none of it."""
    return exp.architecture == "tiered"


class Experiment(FrozenModel):
    """One experiment: what to compute (spec) plus its name and notes. Each field's Role says
    whether it is part of the key, of the compared config and a report column."""

    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]+$"),
                    Role("use only letters, digits, '_', '.' and '-' (e.g. tier0_20bit)", **_LABEL)]
    tiers: Annotated[TierConfig | None, Role(TIER_FORM, key="always", column=True, used=_tiered)] = None
    context: Annotated[StrictInt, Field(ge=1, le=MAX_CONTEXT),
                       Role("use a whole number of tokens from 1 to 16 (default 4)", key="always", column=True)] = 4
    negatives: Annotated[StrictInt, Field(ge=0, le=MAX_COUNT),
                         Role("use a whole number from 0 to 2**31 - 1 (default 1000)", key="always", column=True,
                              used=_tiered)] = 1000
    empty_value: Annotated[StrictFloat, Field(ge=0.0, le=1.0),
                           Role("use a number from 0.0 (abstain, the default) to 1.0", key="always", column=True)] = 0.0
    seed: Annotated[StrictInt, Field(ge=0, le=2**64 - 1),
                    Role("use a whole number from 0 to 2**64 - 1", key="always", column=True)] = 0
    dense_max_bits: Annotated[StrictInt, Field(ge=0, le=MAX_BITS),
                              Role("use a whole number from 0 to 64 (default 10)", key="always", used=_tiered)] = 10
    sparse_max_bits: Annotated[StrictInt, Field(ge=0, le=MAX_BITS),
                               Role("use a whole number from 0 to 64 (default 30)", key="always", used=_tiered)] = 30
    # tiers above sparse_max_bits: 2^lsh_bits cells a neuron; in the key only where a tier is hashed
    lsh_bits: Annotated[StrictInt, Field(ge=1, le=32), Role(
        "use a whole number from 1 to 32: each LSH neuron holds 2^lsh_bits cells (default 20)",
        key="always", used=lambda e: e.hashed())] = 20
    # shown by compare, as it changes the model's memory and time, though never its figures
    memory: Annotated[Literal["auto", "bits"], Role(
        "use auto (DENSE or SPARSE by estimated fill, the default) or bits (by dense_max_bits alone)",
        key="never", compared=True)] = "auto"
    device: Annotated[Device, Role("use auto, cpu, cuda, metal, wgpu or hybrid (default auto)", **_LABEL)] = "auto"
    # connectivity search (docs/design.md §5); None: the drawn wiring
    optimize: Annotated[Optimize | None, Role("give a block of search fields, e.g. {strategy: GA+TS}")] = None
    # per-cluster gates (docs/design.md §3); None: every cluster always counts
    gating: Annotated[Gating | None, Role("give gate neurons and bits, e.g. {neurons: 5, bits: 12}")] = None
    # how token ids become input bits: a RAM neuron reads id bits, so the numbering is part of the model
    encoding: Annotated[Literal["native", "frequency", "appearance"], Role(
        "use native (the tokenizer's ids: sorted words, GPT-2's own; also spelt sorted), frequency or appearance",
        column=True)] = "native"
    gray: Annotated[StrictBool, Role(
        "use true (Gray-code each id before its bits are read) or false (the default)", column=True)] = False
    # the model (engine/architecture.py); in the key only when not the first architecture, tiered
    architecture: Annotated[Literal["tiered", "bitwise"], Role(
        "use tiered (one cluster per token; the default) or bitwise (one cluster per output bit)", column=True)] = "tiered"
    # one cluster per output bit (docs/design.md §3c); only with architecture: bitwise
    bitwise: Annotated[Bitwise | None, Role("give neurons and bits, e.g. {neurons: 200, bits: 20, sample_rate: 0.25, "
                                            "cell_mode: quad_weighted}")] = None
    based_on: Annotated[StrictStr | None, Role("give the name of another experiment of the same set", **_LABEL)] = None
    # why: the rationale, shown on the experiment's card
    description: Annotated[StrictStr, Role("use a quoted string", **_LABEL)] = ""
    # what the researcher saw, kept in the set file, shown on the card
    notes: Annotated[StrictStr, Role("use a quoted string (a YAML block `notes: |` keeps line breaks)", **_LABEL)] = ""

    @classmethod
    def _fixes(cls) -> Mapping[str, str]:
        return FIXES | {name: role.fix for name, role in roles(cls).items()}

    @classmethod
    def _where(cls, data: Any) -> str:
        name = data.get("name") if isinstance(data, Mapping) else getattr(data, "name", None)
        return f"experiment '{name}': " if isinstance(name, str) else "experiment (no name): "

    @field_validator("tiers", mode="before")
    @classmethod
    def _tiers_from_text(cls, value: Any) -> Any:
        if isinstance(value, TierConfig):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"tiers: must be a quoted string (got {short(value)}); {TIER_FORM}")
        try:
            return TierConfig.parse(value)
        except ConfigError as err:
            raise ConfigError(f"tiers: {err}") from None

    @field_validator("encoding", mode="before")
    @classmethod
    def _sorted_is_native(cls, value: Any) -> Any:
        return "native" if value == "sorted" else value  # the word tokenizer's own ids are in sorted order

    @field_serializer("tiers")
    def _tiers_as_text(self, tiers: TierConfig | None) -> str | None:
        return None if tiers is None else str(tiers)

    @model_validator(mode="after")
    def _fields_of_its_architecture(self) -> Self:
        where = self._where(self)
        if self.architecture == "tiered":
            if self.tiers is None:
                raise ConfigError(f"{where}tiers: missing; {TIER_FORM}, or set architecture: bitwise with a bitwise: block")
            if self.bitwise is not None:
                raise ConfigError(f"{where}bitwise: goes with architecture: bitwise; add that, or drop the block")
            return self
        if self.bitwise is None:
            raise ConfigError(f"{where}bitwise: missing; a bitwise experiment needs e.g. bitwise: {{neurons: 200, "
                              "bits: 20, sample_rate: 0.25, cell_mode: quad_weighted}")
        if self.tiers is not None:
            raise ConfigError(f"{where}tiers: is for the tiered architecture; a bitwise experiment's shape is its "
                              "bitwise: block (drop tiers)")
        defaults = type(self).model_fields
        for name in TIERED_ONLY:
            if getattr(self, name) != defaults[name].default:
                raise ConfigError(f"{where}{name}: is a tiered experiment's field, which a bitwise experiment does not "
                                  "have; drop it (or use architecture: tiered)")
        if self.optimize is not None:
            if self.optimize.phases is None:
                raise ConfigError(f"{where}optimize: a bitwise model is searched in phases; give e.g. optimize: "
                                  "{phases: [{search: grid, neurons: [50, 100], bits: [14, 16]}]}")
            tiered = [k for k in ("scope", "tiers", "clusters", "budgets")
                      if getattr(self.optimize, k) != Optimize.model_fields[k].default]
            if tiered and any(phase.search == "connections" for phase in self.optimize.phases):
                raise ConfigError(f"{where}optimize: {tiered[0]}: is a tiered model's; a bitwise model's connections "
                                  "phase searches each bit cluster in turn with the phase's budget (drop it)")
        return self

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Self:
        # After-validators run outside the wrap that adds the label, so add it here.
        if self.dense_max_bits > self.sparse_max_bits:
            raise ConfigError(
                f"{self._where(self)}dense_max_bits: {self.dense_max_bits} is above sparse_max_bits "
                f"{self.sparse_max_bits}; keep dense_max_bits <= sparse_max_bits (defaults 10, 30)"
            )
        if self.tiers is None:  # bitwise: checked by _fields_of_its_architecture
            return self
        n_tiers = len(self.tiers.tiers)
        if self.gating is not None and self.memory_kind(self.gating.bits) == "lsh":
            raise ConfigError(
                f"{self._where(self)}gating: bits: {self.gating.bits} is above sparse_max_bits "
                f"{self.sparse_max_bits}, and gate neurons do not take LSH memory; use at most {self.sparse_max_bits}")
        if self.gating is not None and self.optimize is not None:
            raise ConfigError(f"{self._where(self)}gating: connectivity search does not support gates yet; "
                              "drop gating or optimize")
        if self.optimize is not None:
            for index, tier in enumerate(self.tiers.tiers, start=1):
                if self.memory_kind(tier.bits) == "lsh":
                    raise ConfigError(
                        f"{self._where(self)}optimize: tier {index} \"{tier}\" has LSH memory (bits above "
                        f"sparse_max_bits {self.sparse_max_bits}), which connectivity search does not support; "
                        f"raise sparse_max_bits to {tier.bits} or drop optimize")
            for index, phase in enumerate(self.optimize.phases or ()):
                widest = _widest_bits(phase)
                if self.memory_kind(widest) == "lsh":
                    raise ConfigError(
                        f"{self._where(self)}optimize: phases: phase {index} ({phase.search}) reaches {widest} bits, "
                        f"above sparse_max_bits {self.sparse_max_bits}: LSH tiers, which the search does not support; "
                        f"keep its bits at most {self.sparse_max_bits} or raise sparse_max_bits to {widest}")
            named = [("tiers", t) for t in self.optimize.tiers or ()] + [("budgets", t) for t in self.optimize.budgets]
            for field, tier in named:
                if tier >= n_tiers:
                    raise ConfigError(
                        f"{self._where(self)}optimize: {field}: tier {tier} does not exist; the tiers are "
                        f"numbered 0 (most frequent) to {n_tiers - 1}")
        return self

    def spec(self) -> dict[str, Any]:
        """The canonical JSON-able definition of what is computed: the fields their Role puts in
        the key (no name or notes; optimize, gating, encoding and gray only where set, so keys from
        before them stay)."""
        left_out = {name for name, role in roles(type(self)).items() if not role.in_key(self, name)}
        return self.model_dump(mode="json", exclude=left_out)

    def hashed(self) -> bool:
        """Some tier has LSH memory (its cells indexed by a hash of the address)."""
        return self.tiers is not None and any(self.memory_kind(t.bits) == "lsh" for t in self.tiers.tiers)

    def input_bits(self, vocab_size: int) -> int:
        """Width of one example's input: context x bits_per_token(vocab_size)."""
        return self.context * bits_per_token(vocab_size)

    def memory_kind(self, bits: int) -> Literal["dense", "sparse", "lsh"]:
        """Memory kind of a tier of `bits` inputs under this experiment's thresholds (by
        bits alone; with memory: auto, layout.py may still make a SPARSE tier DENSE by fill)."""
        if bits <= self.dense_max_bits:
            return "dense"
        return "sparse" if bits <= self.sparse_max_bits else "lsh"

    @property
    def shape(self) -> str:
        """What the model is, in one line: its tiers, or its bit clusters."""
        return str(self.tiers) if self.bitwise is None else bitwise_shape(self.bitwise.model_dump())

    def check_against_data(self, vocab_size: int) -> None:
        """Raise ConfigError if the tiers (or bit clusters) don't fit this vocabulary or its input width."""
        if self.bitwise is not None:
            return self._check_bitwise(vocab_size)
        try:
            self.tiers.cluster_counts(vocab_size)
        except ConfigError as err:
            raise ConfigError(f"experiment '{self.name}': tiers: {err}") from None
        width = self.input_bits(vocab_size)
        for index, tier in enumerate(self.tiers.tiers, start=1):
            if tier.bits > width:
                raise ConfigError(
                    f"experiment '{self.name}': tiers: tier {index} \"{tier}\" has {tier.bits} "
                    f"bits but the input is only {width} bits wide (context {self.context} x "
                    f"{bits_per_token(vocab_size)} bits per token for {vocab_size:,} tokens); "
                    f"lower its bits to at most {width} or raise context"
                )
        if self.gating is not None and self.gating.bits > width:  # its wiring could not be drawn
            raise ConfigError(
                f"experiment '{self.name}': gating: bits {self.gating.bits} is more than the input's "
                f"{width} bits (context {self.context} x {bits_per_token(vocab_size)} bits per token for "
                f"{vocab_size:,} tokens); lower the gates' bits to at most {width} or raise context"
            )
        self._check_phase_widths(vocab_size)

    def _check_bitwise(self, vocab_size: int) -> None:
        clusters, width = bits_per_token(vocab_size), self.input_bits(vocab_size)
        where = f"experiment '{self.name}': bitwise: "
        for field in ("neurons", "bits"):
            value = getattr(self.bitwise, field)
            if not isinstance(value, int) and len(value) != clusters:
                raise ConfigError(f"{where}{field}: {len(value)} values for {clusters} bit clusters ({vocab_size:,} "
                                  f"tokens need {clusters} bits); give {clusters}, or one number for all")
        for cluster, bits in enumerate(self.bitwise.per_cluster(clusters)[1]):
            if bits > width:
                raise ConfigError(f"{where}bits: cluster {cluster} has {bits} bits but the input is only {width} bits "
                                  f"wide (context {self.context} x {bits_per_token(vocab_size)} bits per token); lower "
                                  f"its bits to at most {width} or raise context")
        self._check_phase_widths(vocab_size)

    def _check_phase_widths(self, vocab_size: int) -> None:
        """A size phase's bits within the input's width (a unit of more bits could not be wired)."""
        width = self.input_bits(vocab_size)
        for index, phase in enumerate(self.optimize.phases or () if self.optimize is not None else ()):
            widest = _widest_bits(phase)
            if widest > width:
                raise ConfigError(f"experiment '{self.name}': optimize: phases: phase {index} ({phase.search}) reaches "
                                  f"{widest} bits but the input is only {width} bits wide (context {self.context} x "
                                  f"{bits_per_token(vocab_size)} bits per token); keep its bits at most {width}")


def _widest_bits(phase: Phase) -> int:
    """The most bits a phase gives a unit (0: a phase that keeps the bits it is given)."""
    return max(phase.bits) if phase.search == "grid" else phase.bounds[1] if phase.search == "bits" else 0


FIXES.update({name: role.fix for name, role in roles(Experiment).items()})


class ExperimentSet(FrozenModel):
    """A named, ordered list of experiments loaded from one YAML file (and its includes)."""

    name: StrictStr
    description: StrictStr = ""
    experiments: tuple[Experiment, ...]
    source: StrictStr
    data: DataSpec | None = None  # the file's `data:`; None: the command line's (kjv by default)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        name, times = Counter(self.names()).most_common(1)[0] if self.experiments else ("", 1)
        if times > 1:
            raise ConfigError(
                f"{self.source}: experiment '{name}': name: used {times} times; "
                "give each experiment a unique name"
            )
        return self

    def names(self) -> list[str]:
        return [e.name for e in self.experiments]

    def with_seeds(self, seeds: Iterable[int]) -> "ExperimentSet":
        """Every experiment once per seed, named NAME.sSEED (`--seeds 0,1,2`); an experiment the
        set already ran at several seeds is run at these instead."""
        seeds = list(seeds)
        bases = {}
        for e in self.experiments:
            bases.setdefault(seed_base(e.name), e)
        kept = tuple(e.model_copy(update={"name": f"{base}.s{seed}", "seed": seed})
                     for base, e in bases.items() for seed in seeds)
        return self.model_copy(update={"experiments": kept})

    def select(self, names: Iterable[str]) -> "ExperimentSet":
        """The named experiments only, in the set's order (unknown names are an error). A name
        without its seed suffix names every seed of it: `asymmetric` for asymmetric.s0, .s1, ..."""
        names = list(names)
        wanted = set(names)
        unknown = [n for n in names if not any(n in (e.name, seed_base(e.name)) for e in self.experiments)]
        if unknown:
            choices = list(dict.fromkeys(seed_base(n) for n in self.names()))
            seeded = " (a seed's name, NAME.sK, picks that seed alone)" if len(choices) < len(self.names()) else ""
            raise ConfigError(f"set '{self.name}': no experiment '{unknown[0]}'; choose from: {', '.join(choices)}{seeded}")
        kept = tuple(e for e in self.experiments if e.name in wanted or seed_base(e.name) in wanted)
        return self.model_copy(update={"experiments": kept})
