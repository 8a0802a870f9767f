"""The tier-bits grid: every tier's bits over one range, in an order that covers the space
evenly early (`ramsweep grid`, and set files with a `grid:` section).

Pure config: it reads no file. sets.py reads a grid file into a GridFile; `grid_set` turns
one, with the command line's arguments on top, into an ordinary ExperimentSet (its
experiments keyed by their spec and skipped when done like any other).
"""

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from math import comb
from typing import Annotated, Any

import numpy as np
from pydantic import Field, StrictInt, model_validator

from ramsweep.config import FIXES, MAX_BITS, MAX_COUNT, MAX_NEURONS, Experiment, ExperimentSet, FrozenModel, TierConfig, TierSpec
from ramsweep.data.spec import DataSpec
from ramsweep.errors import ConfigError
from ramsweep.messages import short

MAX_GRID_TIERS = 16  # 2 bit values ^ 16 tiers is already 65,536 experiments
MAX_GRID_EXPERIMENTS = 100_000  # one set's worth; bigger grids need a limit or a sample
GRID_KEYS = ("tiers", "bits", "context", "negatives", "shapes")
_GRID_REQUIRED = ("tiers", "bits", "shapes")
_SHAPE_EXAMPLE = "3: {counts: [100, 400, rest], neurons: [15, 10, 5]}"


@cache
def bisection_order(levels: int) -> list[int]:
    """0, the top, then midpoints breadth-first ([0, 8, 4, 2, 6, 1, 3, 5, 7] for 9 levels):
    every prefix is spread over the whole range. (Cached: do not change the list returned.)"""
    order, spans = [0] + ([levels - 1] if levels > 1 else []), deque([(0, levels - 1)])
    while spans:
        lo, hi = spans.popleft()
        if hi - lo >= 2:
            mid = (lo + hi) // 2
            order.append(mid)
            spans += [(lo, mid), (mid, hi)]
    return order


def grid_point(index: int, levels: int, tiers: int) -> tuple[int, ...]:
    """Each tier's level (0 .. levels-1) at position `index` of the grid order.

    With d_k the base-`levels` digits of index (least significant first) and b the
    bisection order, tier t gets sum_k b(d_k) * C(t, k) mod levels. The Pascal matrix is
    unit lower-triangular, so this is a bijection of range(levels**tiers); its first column
    is all ones, so every aligned block of `levels` points holds every level of every tier
    once (the first block is the uniform configs), and when the differences of tier numbers
    are units mod levels (3 tiers and odd levels) the first levels**2 points hold every pair
    of levels of every two tiers. A night that stops early has still covered the space evenly.
    """
    b = bisection_order(levels)
    digits = [b[(index // levels**k) % levels] for k in range(tiers)]
    return tuple(sum(d * comb(t, k) for k, d in enumerate(digits)) % levels for t in range(tiers))


def _whole(value: Any, lo: int, hi: int | None = None) -> bool:
    whole = isinstance(value, int) and not isinstance(value, bool)
    return whole and value >= lo and (hi is None or value <= hi)


class GridShape(FrozenModel):
    """The clusters and neurons of each tier of a grid: counts (None = rest) and neurons."""

    counts: tuple[Annotated[StrictInt, Field(ge=1, le=MAX_COUNT)] | None, ...]
    neurons: tuple[Annotated[StrictInt, Field(ge=1, le=MAX_NEURONS)], ...]

    @classmethod
    def parse(cls, counts: Any, neurons: Any, tiers: int, label: str = "") -> "GridShape":
        """From YAML or arguments: one count (a whole number, or rest for the last) and one
        neurons number per tier; errors start with `label` (e.g. 'shapes.3.')."""
        example = f"(e.g. {_SHAPE_EXAMPLE.split(': ', 1)[1]})"
        for field, values in (("counts", counts), ("neurons", neurons)):
            if not isinstance(values, (list, tuple)) or len(values) != tiers:
                got = f"{len(values)} values" if isinstance(values, (list, tuple)) else short(values)
                raise ConfigError(
                    f"{label}{field}: {got} for {tiers} tier(s); give one per tier {example}"
                )
        parsed = []
        for i, count in enumerate(counts, start=1):
            text = str(count).strip().lower() if isinstance(count, str) else None
            if text == "rest" or count is None:
                if i != tiers:
                    raise ConfigError(
                        f"{label}counts: only the last count may be rest (got {list(counts)}); {example}"
                    )
                parsed.append(None)
            elif _whole(count, 1, MAX_COUNT) or (text is not None and text.isdigit() and 1 <= int(text) <= MAX_COUNT):
                parsed.append(int(count))
            else:
                raise ConfigError(
                    f"{label}counts: count {i} {count!r} is not a count; {FIXES['count']}"
                )
        for i, n in enumerate(neurons, start=1):
            if not _whole(n, 1, MAX_NEURONS):
                raise ConfigError(
                    f"{label}neurons: neurons {i} {n!r} is not a number of neurons; {FIXES['neurons']}"
                )
        return cls(counts=tuple(parsed), neurons=tuple(neurons))


class GridSpec(FrozenModel):
    """A `grid:` section: every tier's bits over one inclusive range, in the grid order."""

    tiers: Annotated[StrictInt, Field(ge=1, le=MAX_GRID_TIERS)]
    bits: tuple[StrictInt, StrictInt]
    context: Annotated[StrictInt, Field(ge=1, le=16)] = 4
    negatives: Annotated[StrictInt, Field(ge=0)] = 1000
    shapes: dict[int, GridShape]  # by number of tiers

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any) -> Any:
        # Checked by hand so every message names the grid field and its fix (not Experiment's).
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"must be a mapping with keys {', '.join(GRID_KEYS)} (got {short(data)})"
            )
        for key in data:
            if key not in GRID_KEYS:
                raise ConfigError(f"unknown key '{key}'; allowed keys: {', '.join(GRID_KEYS)}")
        for key in _GRID_REQUIRED:
            if key not in data:
                raise ConfigError(
                    f"{key}: missing; add it (e.g. tiers: 3, bits: [8, 16], shapes: {{{_SHAPE_EXAMPLE}}})"
                )
        tiers, bits = data["tiers"], data["bits"]
        if not _whole(tiers, 1, MAX_GRID_TIERS):
            raise ConfigError(
                f"tiers: {tiers!r} is not a number of tiers; use a whole number from 1 to {MAX_GRID_TIERS} (e.g. 3)"
            )
        pair = isinstance(bits, (list, tuple)) and len(bits) == 2
        if not (pair and all(_whole(v, 1, MAX_BITS) for v in bits) and bits[0] <= bits[1]):
            raise ConfigError(
                f"bits: {short(bits)} is not a range; give [LOW, HIGH] with "
                f"1 <= LOW <= HIGH <= {MAX_BITS} (e.g. [8, 16], both ends included)"
            )
        for key, lo, hi in (("context", 1, 16), ("negatives", 0, MAX_COUNT)):
            if key in data and not _whole(data[key], lo, hi):
                raise ConfigError(f"{key}: {data[key]!r} is out of range; {FIXES[key]}")
        return {**data, "bits": tuple(bits), "shapes": cls._shapes(data["shapes"], tiers)}

    @staticmethod
    def _shapes(shapes: Any, tiers: int) -> dict[int, GridShape]:
        if not isinstance(shapes, Mapping) or not shapes:
            raise ConfigError(
                f"shapes: must map numbers of tiers to counts and neurons (e.g. {_SHAPE_EXAMPLE})"
            )
        parsed = {}
        for n, shape in shapes.items():
            if not _whole(n, 1):
                raise ConfigError(
                    f"shapes: key {n!r} is not a number of tiers; use 1, 2, 3 ... (e.g. {_SHAPE_EXAMPLE})"
                )
            if isinstance(shape, GridShape):  # already parsed (grid_set's arguments)
                shape = {"counts": shape.counts, "neurons": shape.neurons}
            if not isinstance(shape, Mapping) or sorted(shape) != ["counts", "neurons"]:
                raise ConfigError(
                    f"shapes.{n}: must be {{counts: [...], neurons: [...]}} (got {short(shape)}); "
                    f"e.g. {_SHAPE_EXAMPLE}"
                )
            parsed[n] = GridShape.parse(shape["counts"], shape["neurons"], n, f"shapes.{n}.")
        if tiers not in parsed:
            raise ConfigError(
                f"tiers: {tiers} has no entry under shapes; add one like {_SHAPE_EXAMPLE} "
                f"or use one of {', '.join(map(str, sorted(parsed)))}"
            )
        return parsed

    @property
    def levels(self) -> int:
        return self.bits[1] - self.bits[0] + 1

    @property
    def size(self) -> int:
        return self.levels**self.tiers

    def bits_at(self, index: int) -> tuple[int, ...]:
        """Each tier's bits at position `index` of the grid order."""
        return tuple(self.bits[0] + level for level in grid_point(index, self.levels, self.tiers))

    def experiment(self, index: int) -> Experiment:
        """The experiment at `index` of the grid order, e.g. grid_b08_12_16."""
        bits = self.bits_at(index)
        shape = self.shapes[self.tiers]
        tiers = ";".join(
            f"{'rest' if c is None else c},{n},{b}" for c, n, b in zip(shape.counts, shape.neurons, bits)
        )
        return Experiment(
            name="grid_b" + "_".join(f"{b:02d}" for b in bits), tiers=tiers, context=self.context,
            negatives=self.negatives, description=f"tier-bits grid, point {index + 1:,} of {self.size:,}",
        )

    def experiments(self, indices: Sequence[int] | None = None) -> tuple[Experiment, ...]:
        """The experiments at `indices` (default: the whole grid), in the order given.

        Linear in their number: each tier value (count, neurons, bits) is validated once, as is
        one whole experiment; every point then only combines validated parts (a grid of 59,049
        is built in seconds, where validating each from text took minutes)."""
        indices = range(self.size) if indices is None else indices
        if len(indices) > MAX_GRID_EXPERIMENTS:
            raise ConfigError(
                f"{len(indices):,} experiments of a grid of {self.size:,} ({self.levels} bit values ^ "
                f"{self.tiers} tiers) is more than {MAX_GRID_EXPERIMENTS:,} in one set; narrow bits, "
                "use fewer tiers, or take a limit or a sample"
            )
        if not indices:
            return ()
        shape = self.shapes[self.tiers]
        specs = [{b: TierSpec(count=c, neurons=n, bits=b) for b in range(self.bits[0], self.bits[1] + 1)}
                 for c, n in zip(shape.counts, shape.neurons)]
        template = self.experiment(indices[0])
        out = []
        for index in indices:
            bits = self.bits_at(index)
            tiers = TierConfig.model_construct(tiers=tuple(specs[t][b] for t, b in enumerate(bits)))
            out.append(template.model_copy(update={
                "name": "grid_b" + "_".join(f"{b:02d}" for b in bits), "tiers": tiers,
                "description": f"tier-bits grid, point {index + 1:,} of {self.size:,}"}))
        return tuple(out)


@dataclass(frozen=True)
class GridFile:
    """A set file with a `grid:` section: its grid and what its ExperimentSet is labelled with."""

    name: str
    description: str
    source: str
    spec: GridSpec
    data: DataSpec | None = None


def grid_set(
    file: "GridFile", tiers: int | None = None, *, bits: tuple[int, int] | None = None,
    counts: list[str | int] | None = None, neurons: list[int] | None = None,
    context: int | None = None, negatives: int | None = None,
    limit: int | None = None, sample: int | None = None, seed: int = 0,
) -> ExperimentSet:
    """The grid in grid order, arguments left None taken from `file` (sets.load_grid()).

    `sample` K draws K experiments without replacement (numpy Generator seeded by `seed`),
    kept in grid order; `limit` then keeps the first `limit` of those (or of the whole grid).
    The set is named "grid" for the file's number of tiers, else e.g. "grid4".
    """
    spec = _with_arguments(file.spec, tiers, bits, counts, neurons, context, negatives)
    indices = _chosen(spec.size, limit, sample, seed)
    name = file.name if spec.tiers == file.spec.tiers else f"{file.name}{spec.tiers}"
    as_file = spec == file.spec.model_copy(update={"shapes": {spec.tiers: file.spec.shapes.get(spec.tiers)}})
    description = file.description if as_file else (
        f"Tier-bits grid: bits {spec.bits[0]}-{spec.bits[1]} in each of {spec.tiers} tiers "
        f"({spec.size:,} experiments)"
    )
    return ExperimentSet(
        name=name, description=description, experiments=spec.experiments(indices), source=file.source,
        data=file.data,
    )


def _with_arguments(spec: GridSpec, tiers, bits, counts, neurons, context, negatives) -> GridSpec:
    """The file's grid with the given arguments in place, checked like the file; keeps only
    the shape of the chosen number of tiers."""
    tiers = spec.tiers if tiers is None else tiers
    given = {"tiers": tiers, "bits": bits, "context": context, "negatives": negatives}
    fields = {**spec.model_dump(exclude={"shapes"}), **{k: v for k, v in given.items() if v is not None}}
    shapes = spec.shapes  # kept whole when tiers is bad: GridSpec names that first
    if isinstance(tiers, int) and not isinstance(tiers, bool) and tiers >= 1:
        default = spec.shapes.get(tiers)
        if default is None and (counts is None or neurons is None):
            raise ConfigError(
                f"grid: tiers: {tiers} has no default counts and neurons; pass both (one per tier) "
                f"or use {', '.join(map(str, sorted(spec.shapes)))} tiers"
            )
        counts = default.counts if counts is None else counts
        neurons = default.neurons if neurons is None else neurons
        try:
            shapes = {tiers: GridShape.parse(counts, neurons, tiers)}
        except ConfigError as err:
            raise ConfigError(f"grid: {err}") from None
    try:
        return GridSpec.model_validate({**fields, "shapes": shapes})
    except ConfigError as err:
        raise ConfigError(f"grid: {err}") from None


def _chosen(size: int, limit: int | None, sample: int | None, seed: int) -> Sequence[int]:
    """Grid positions to run, in grid order (a range when nothing is drawn: never listed)."""
    for name, value, low, high in (("limit", limit, 1, None), ("sample", sample, 1, None), ("seed", seed, 0, 2**64 - 1)):
        if value is not None and not _whole(value, low, high):
            allowed = f"from {low} to {high}" if high else f"{low} or more"
            raise ConfigError(f"grid: {name}: {value!r} is not allowed; use a whole number {allowed}")
    if sample is not None and sample > size:
        raise ConfigError(
            f"grid: sample: {sample:,} is more than the grid's {size:,} experiments; sample at most {size:,}"
        )
    indices: Sequence[int] = range(size)
    if sample is not None:
        drawn = np.random.default_rng(seed).choice(size, size=sample, replace=False)
        indices = sorted(int(i) for i in drawn)
    return indices if limit is None else indices[:limit]


def parse_range(text: str, flag: str) -> tuple[int, int]:
    """'8-16' (or a single '12') as an inclusive (low, high)."""
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise ConfigError(f"{flag}: '{text}' is not a range of bits; write it like 8-16") from None
