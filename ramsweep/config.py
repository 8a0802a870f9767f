"""Experiment definitions: tier configs, experiments, tier-bits grids and the YAML experiment sets.

Everything here is plain, frozen, validated data. Every invalid value raises a
`ConfigError` with one line naming the file, the experiment, the field and the fix;
pydantic's own multi-line reports never leave this module.

    >>> str(TierConfig.parse(" 100,15,20 ; REST,5,8 "))
    '100,15,20;rest,5,8'
"""

import re
from collections import deque
from dataclasses import dataclass
from collections.abc import Iterable, Mapping, Sequence
from math import comb
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

import ramsweep
from ramsweep.data.spec import DataSpec
from ramsweep.engine.devices import Device
from ramsweep.errors import ConfigError, DataError

MAX_BITS = 64  # addresses are built in one unsigned 64-bit word
TIER_EXAMPLE = '"100,15,20;400,10,12;rest,5,8"'
TIER_FORM = f'write COUNT,NEURONS,BITS tiers separated by ";" (e.g. {TIER_EXAMPLE})'
_INT_RE = re.compile(r"[+-]?\d+")

# The fix shown after a bad value, by field name.
_FIXES = {
    "name": "use only letters, digits, '_', '.' and '-' (e.g. tier0_20bit)",
    "tiers": TIER_FORM,
    "context": "use a whole number of tokens from 1 to 16 (default 4)",
    "negatives": "use a whole number, 0 or more (default 1000)",
    "empty_value": "use a number from 0.0 (abstain, the default) to 1.0",
    "seed": "use a whole number from 0 to 2**64 - 1",
    "dense_max_bits": "use a whole number from 0 to 64 (default 10)",
    "sparse_max_bits": "use a whole number from 0 to 64 (default 30)",
    "device": "use auto, cpu, cuda, metal, wgpu or hybrid (default auto)",
    "memory": "use auto (DENSE or SPARSE by estimated fill, the default) or bits (by dense_max_bits alone)",
    "based_on": "give the name of another experiment of the same set",
    "description": "use a quoted string",
    "count": "use a whole number, 1 or more (or rest for the last tier)",
    "neurons": "use a whole number, 1 or more",
    "bits": f"use a whole number from 1 to {MAX_BITS}",
}


def bits_per_token(vocab_size: int) -> int:
    """Bits that write any token id below vocab_size: max(1, ceil(log2(vocab_size))), exactly."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
    return max(1, (vocab_size - 1).bit_length())


# ---------------------------------------------------------------- error translation


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(err: ValidationError, allowed: Iterable[str]) -> str:
    """The first problem of a pydantic report as 'field: problem (got x); fix'."""
    first = err.errors()[0]
    parts = [str(p) for p in first["loc"]]
    field = ".".join(parts) or "value"
    fix = _FIXES.get(parts[-1] if parts else "", "see the README for the allowed values")
    if first["type"] == "extra_forbidden":
        return f"unknown key '{field}'; allowed keys: {', '.join(allowed)}"
    if first["type"] == "missing":
        return f"{field}: missing; add a `{field}:` line and {fix}"
    problem = re.sub(r"^(Input|String|Value) should", "must", first["msg"])
    return f"{field}: {problem} (got {_short(first['input'])}); {fix}"


class _Frozen(BaseModel):
    """Frozen, closed models whose validation errors are one-line ConfigErrors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def _where(cls, data: Any) -> str:
        return ""

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_errors(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as err:
            raise ConfigError(cls._where(data) + _one_line(err, cls.model_fields)) from None
        except ConfigError as err:
            raise ConfigError(cls._where(data) + str(err)) from None


# ---------------------------------------------------------------- tiers


class TierSpec(_Frozen):
    """One tier: `count` clusters (None = rest) of `neurons` RAM neurons with `bits` inputs."""

    count: Annotated[StrictInt, Field(ge=1)] | None
    neurons: Annotated[StrictInt, Field(ge=1)]
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
        raise ConfigError(f"{label}: {field} {text!r} is not a whole number; {_FIXES[field]}")
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
    if count is not None and count < 1:
        raise ConfigError(f"{label}: count must be at least 1 (got {count}); {_FIXES['count']}")
    if neurons < 1:
        raise ConfigError(f"{label}: neurons must be at least 1 (got {neurons}); {_FIXES['neurons']}")
    if not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"{label}: bits must be from 1 to {MAX_BITS} (got {bits}); {_FIXES['bits']}")
    return TierSpec(count=count, neurons=neurons, bits=bits)


class TierConfig(_Frozen):
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
            raise ConfigError(
                f"the tier counts sum to {explicit:,} but the vocabulary has only "
                f"{vocab_size:,} tokens; lower the counts to fit"
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


# ---------------------------------------------------------------- experiments

# Labels, and choices that change where and how fast but not what is computed (every device
# and memory backend gives the same cells and metrics): not part of the experiment's key.
_SPEC_EXCLUDED = {"name", "based_on", "description", "device", "memory"}


class Experiment(_Frozen):
    """One experiment: what to compute (spec) plus its name and notes."""

    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    tiers: TierConfig
    context: Annotated[StrictInt, Field(ge=1, le=16)] = 4
    negatives: Annotated[StrictInt, Field(ge=0)] = 1000
    empty_value: Annotated[StrictFloat, Field(ge=0.0, le=1.0)] = 0.0
    seed: Annotated[StrictInt, Field(ge=0, le=2**64 - 1)] = 0
    dense_max_bits: Annotated[StrictInt, Field(ge=0, le=MAX_BITS)] = 10
    sparse_max_bits: Annotated[StrictInt, Field(ge=0, le=MAX_BITS)] = 30
    memory: Literal["auto", "bits"] = "auto"
    device: Device = "auto"
    based_on: StrictStr | None = None
    description: StrictStr = ""

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
            raise ConfigError(f"tiers: must be a quoted string (got {_short(value)}); {TIER_FORM}")
        try:
            return TierConfig.parse(value)
        except ConfigError as err:
            raise ConfigError(f"tiers: {err}") from None

    @field_serializer("tiers")
    def _tiers_as_text(self, tiers: TierConfig) -> str:
        return str(tiers)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Self:
        # After-validators run outside the wrap that adds the label, so add it here.
        if self.dense_max_bits > self.sparse_max_bits:
            raise ConfigError(
                f"{self._where(self)}dense_max_bits: {self.dense_max_bits} is above sparse_max_bits "
                f"{self.sparse_max_bits}; keep dense_max_bits <= sparse_max_bits (defaults 10, 30)"
            )
        return self

    def spec(self) -> dict[str, Any]:
        """The canonical JSON-able definition of what is computed (no name or notes)."""
        return self.model_dump(mode="json", exclude=_SPEC_EXCLUDED)

    def input_bits(self, vocab_size: int) -> int:
        """Width of one example's input: context x bits_per_token(vocab_size)."""
        return self.context * bits_per_token(vocab_size)

    def memory_kind(self, bits: int) -> Literal["dense", "sparse", "lsh"]:
        """Memory backend for a tier of `bits` inputs under this experiment's thresholds (by
        bits alone; with memory: auto, layout.py may still make a SPARSE tier DENSE by fill)."""
        if bits <= self.dense_max_bits:
            return "dense"
        return "sparse" if bits <= self.sparse_max_bits else "lsh"

    def check_against_data(self, vocab_size: int) -> None:
        """Raise ConfigError if the tiers don't fit this vocabulary or its input width."""
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


class ExperimentSet(_Frozen):
    """A named, ordered list of experiments loaded from one YAML file (and its includes)."""

    name: StrictStr
    description: StrictStr = ""
    experiments: tuple[Experiment, ...]
    source: StrictStr
    data: DataSpec | None = None  # the file's `data:`; None: the command line's (kjv by default)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = self.names()
        for name in names:
            if names.count(name) > 1:
                raise ConfigError(
                    f"{self.source}: experiment '{name}': name: used {names.count(name)} times; "
                    "give each experiment a unique name"
                )
        return self

    def names(self) -> list[str]:
        return [e.name for e in self.experiments]

    def select(self, names: Iterable[str]) -> "ExperimentSet":
        """The named experiments only, in the set's order (unknown names are an error)."""
        wanted = list(names)
        unknown = [n for n in wanted if n not in self.names()]
        if unknown:
            raise ConfigError(
                f"set '{self.name}': no experiment '{unknown[0]}'; "
                f"choose from: {', '.join(self.names())}"
            )
        kept = tuple(e for e in self.experiments if e.name in wanted)
        return self.model_copy(update={"experiments": kept})


# ---------------------------------------------------------------- tier-bits grids

MAX_GRID_EXPERIMENTS = 100_000  # one set's worth; bigger grids need a limit or a sample
GRID_KEYS = ("tiers", "bits", "context", "negatives", "shapes")
_GRID_REQUIRED = ("tiers", "bits", "shapes")
_SHAPE_EXAMPLE = "3: {counts: [100, 400, rest], neurons: [15, 10, 5]}"


def bisection_order(levels: int) -> list[int]:
    """0, the top, then midpoints breadth-first ([0, 8, 4, 2, 6, 1, 3, 5, 7] for 9 levels):
    every prefix is spread over the whole range."""
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


class GridShape(_Frozen):
    """The clusters and neurons of each tier of a grid: counts (None = rest) and neurons."""

    counts: tuple[Annotated[StrictInt, Field(ge=1)] | None, ...]
    neurons: tuple[Annotated[StrictInt, Field(ge=1)], ...]

    @classmethod
    def parse(cls, counts: Any, neurons: Any, tiers: int, label: str = "") -> "GridShape":
        """From YAML or arguments: one count (a whole number, or rest for the last) and one
        neurons number per tier; errors start with `label` (e.g. 'shapes.3.')."""
        example = f"(e.g. {_SHAPE_EXAMPLE.split(': ', 1)[1]})"
        for field, values in (("counts", counts), ("neurons", neurons)):
            if not isinstance(values, (list, tuple)) or len(values) != tiers:
                got = f"{len(values)} values" if isinstance(values, (list, tuple)) else _short(values)
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
            elif _whole(count, 1) or (text is not None and text.isdigit() and int(text) >= 1):
                parsed.append(int(count))
            else:
                raise ConfigError(
                    f"{label}counts: count {i} {count!r} is not a count; {_FIXES['count']}"
                )
        for i, n in enumerate(neurons, start=1):
            if not _whole(n, 1):
                raise ConfigError(
                    f"{label}neurons: neurons {i} {n!r} is not a number of neurons; {_FIXES['neurons']}"
                )
        return cls(counts=tuple(parsed), neurons=tuple(neurons))


class GridSpec(_Frozen):
    """A `grid:` section: every tier's bits over one inclusive range, in the grid order."""

    tiers: Annotated[StrictInt, Field(ge=1)]
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
                f"must be a mapping with keys {', '.join(GRID_KEYS)} (got {_short(data)})"
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
        if not _whole(tiers, 1):
            raise ConfigError(
                f"tiers: {tiers!r} is not a number of tiers; use a whole number, 1 or more (e.g. 3)"
            )
        pair = isinstance(bits, (list, tuple)) and len(bits) == 2
        if not (pair and all(_whole(v, 1, MAX_BITS) for v in bits) and bits[0] <= bits[1]):
            raise ConfigError(
                f"bits: {_short(bits)} is not a range; give [LOW, HIGH] with "
                f"1 <= LOW <= HIGH <= {MAX_BITS} (e.g. [8, 16], both ends included)"
            )
        for key, lo, hi in (("context", 1, 16), ("negatives", 0, None)):
            if key in data and not _whole(data[key], lo, hi):
                raise ConfigError(f"{key}: {data[key]!r} is out of range; {_FIXES[key]}")
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
                    f"shapes.{n}: must be {{counts: [...], neurons: [...]}} (got {_short(shape)}); "
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
        """The experiments at `indices` (default: the whole grid), in the order given."""
        indices = range(self.size) if indices is None else indices
        if len(indices) > MAX_GRID_EXPERIMENTS:
            raise ConfigError(
                f"{len(indices):,} experiments of a grid of {self.size:,} ({self.levels} bit values ^ "
                f"{self.tiers} tiers) is more than {MAX_GRID_EXPERIMENTS:,} in one set; narrow bits, "
                "use fewer tiers, or take a limit or a sample"
            )
        return tuple(self.experiment(i) for i in indices)


# ---------------------------------------------------------------- set files

_DEFAULT_KEYS = tuple(k for k in Experiment.model_fields if k not in ("name", "based_on"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice (plain PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key_node.value}' appears twice", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def sets_dirs() -> list[Path]:
    """Folders searched for set names, first match wins: ./sets, then the packaged sets."""
    package = Path(ramsweep.__file__).parent
    packaged = package / "sets"  # installed wheel: hatch force-includes sets/ here
    if not packaged.is_dir():
        packaged = package.parent / "sets"  # editable install: the repo's top-level sets/
    dirs: list[Path] = []
    for folder in (Path.cwd() / "sets", packaged):
        if folder.is_dir() and all(folder.resolve() != d.resolve() for d in dirs):
            dirs.append(folder)
    return dirs


def _set_files() -> dict[str, Path]:
    """Every findable set by name; an earlier folder shadows a later one."""
    found: dict[str, Path] = {}
    for folder in sets_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def _display(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text


def _find_set(name_or_path: str, near: Path | None = None) -> Path:
    """A set file: a path (relative to `near` if given), else a name in near or sets_dirs()."""
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        if near is not None and not path.is_absolute():
            path = near / path
        if not path.is_file():
            raise ConfigError(f"set file '{name_or_path}' not found; check the path")
        return path
    if near is not None and (near / f"{name_or_path}.yaml").is_file():
        return near / f"{name_or_path}.yaml"
    files = _set_files()
    if name_or_path in files:
        return files[name_or_path]
    looked = ", ".join(_display(d) for d in sets_dirs()) or "no sets folder found"
    raise ConfigError(
        f"unknown set '{name_or_path}'; available sets: {', '.join(sorted(files)) or 'none'} "
        f"(looked in {looked})"
    )


def _parse_yaml(path: Path) -> Any:
    src = _display(path)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as err:
        raise ConfigError(f"{src}: cannot read the set file ({err.strerror}); check the path") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"{src}: YAML syntax error at {where}: {problem}; fix the YAML there "
            "(quote tier strings, indent list items evenly)"
        ) from None


_SET_KEY_KINDS = {
    "description": (str, "a quoted string"),
    "include": (list, "a list of set names, e.g. [quick]"),
    "defaults": (dict, "a mapping of experiment fields, e.g. {context: 4}"),
    "experiments": (list, "a list of experiments, each starting with '- name:'"),
    "data": (dict, "a mapping like {corpus: wikitext2, path: ~/data/wikitext-2}"),
}
_SET_KEYS = (*_SET_KEY_KINDS, "grid")  # grid: a GridSpec instead of listed experiments


def _read_set_file(path: Path) -> dict[str, Any]:
    """The file's top-level mapping, checked, with every key present (grid: None if absent)."""
    src = _display(path)
    raw = _parse_yaml(path)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: the top level must be a mapping with keys: {', '.join(_SET_KEYS)}")
    for key in raw:
        if key not in _SET_KEYS:
            raise ConfigError(f"{src}: unknown key '{key}'; allowed keys: {', '.join(_SET_KEYS)}")
    values: dict[str, Any] = {}
    for key, (kind, what) in _SET_KEY_KINDS.items():
        value = kind() if raw.get(key) is None else raw[key]
        if key == "include" and isinstance(value, str):
            value = [value]  # `include: quick` reads as naturally as `include: [quick]`
        if not isinstance(value, kind) or (key == "include" and not all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{src}: {key}: must be {what} (got {_short(value)})")
        values[key] = value
    values["grid"] = raw.get("grid")  # GridSpec checks what is inside
    if "grid" in raw and raw["grid"] is None:
        raise ConfigError(f"{src}: grid: is empty; give its tiers, bits and shapes (see sets/grid.yaml)")
    if "grid" in raw and (values["experiments"] or values["include"] or values["defaults"]):
        raise ConfigError(
            f"{src}: grid: a grid set generates its experiments, so it cannot also have "
            "experiments, include or defaults; put those in another set file"
        )
    return values


def _named_entries(
    src: str, items: list[Any], included: Mapping[str, Experiment]
) -> dict[str, dict[str, Any]]:
    """The file's own experiments by name, in order; names present, valid keys, unique."""
    entries: dict[str, dict[str, Any]] = {}
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ConfigError(
                f"{src}: experiment #{number}: must be a mapping with a name and tiers "
                f"(got {_short(item)}); start each experiment with '- name:'"
            )
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"{src}: experiment #{number} (no name): name: missing or empty; give every "
                "experiment a unique `name:` of letters, digits, '_', '.' and '-'"
            )
        if name in entries or name in included:
            where = "an included set" if name in included else "this file"
            raise ConfigError(
                f"{src}: experiment '{name}': name: duplicate (already defined in {where}); "
                "give each experiment a unique name"
            )
        entries[name] = item
    return entries


def _build(fields: Mapping[str, Any], src: str) -> Experiment:
    try:
        return Experiment.model_validate(dict(fields))
    except ConfigError as err:
        raise ConfigError(f"{src}: {err}") from None


@dataclass(frozen=True)
class _FileContext:
    """What based_on resolution inside one set file can see."""

    src: str
    entries: dict[str, dict[str, Any]]  # the file's own experiments, raw
    included: dict[str, Experiment]  # experiments of included sets, resolved
    defaults: dict[str, Any]


def _resolve(
    name: str, ctx: _FileContext, done: dict[str, Experiment], chain: tuple[str, ...]
) -> Experiment:
    """Build one own experiment: defaults < its based_on experiment's spec < its own fields."""
    if name in done:
        return done[name]
    if name in chain:
        loop = " -> ".join((*chain[chain.index(name):], name))
        raise ConfigError(
            f"{ctx.src}: experiment '{name}': based_on: cycle {loop}; "
            "base one of them on an experiment outside the cycle"
        )
    fields = ctx.entries[name]
    start: dict[str, Any] = dict(ctx.defaults)
    base = fields.get("based_on")
    if base is not None:
        if isinstance(base, str) and base in ctx.entries:
            start = _resolve(base, ctx, done, (*chain, name)).spec()
        elif isinstance(base, str) and base in ctx.included:
            start = ctx.included[base].spec()
        else:
            known = ", ".join([*ctx.included, *ctx.entries])
            raise ConfigError(
                f"{ctx.src}: experiment '{name}': based_on: no experiment {_short(base)} "
                f"in this set; use one of: {known}"
            )
    done[name] = _build({**start, **fields}, ctx.src)
    return done[name]


def _own_experiments(path: Path, raw: dict[str, Any], included: list[Experiment]) -> list[Experiment]:
    src = _display(path)
    for key in raw["defaults"]:
        if key not in _DEFAULT_KEYS:
            raise ConfigError(
                f"{src}: defaults: unknown key '{key}'; allowed keys: {', '.join(_DEFAULT_KEYS)}"
            )
    by_name = {e.name: e for e in included}
    ctx = _FileContext(src, _named_entries(src, raw["experiments"], by_name), by_name, raw["defaults"])
    done: dict[str, Experiment] = {}
    return [_resolve(name, ctx, done, ()) for name in ctx.entries]


def _collect(
    path: Path, raw: dict[str, Any], stack: tuple[Path, ...], seen: set[Path]
) -> list[Experiment]:
    """Included sets' experiments (each file once, in include order), then the file's own."""
    if raw["grid"] is not None:  # generated, not listed (a grid file has no includes)
        return list(_grid_spec(path, raw).experiments())
    experiments: list[Experiment] = []
    for include in raw["include"]:
        try:
            child = _find_set(include, near=path.parent)
        except ConfigError as err:
            raise ConfigError(f"{_display(path)}: include: {err}") from None
        key = child.resolve()
        if key in stack:
            loop = " -> ".join(p.stem for p in (*stack[stack.index(key):], key))
            raise ConfigError(
                f"{_display(path)}: include: include cycle {loop}; remove one of these includes"
            )
        if key in seen:  # a set reached twice (a diamond) contributes its experiments once
            continue
        seen.add(key)
        experiments += _collect(child, _read_set_file(child), (*stack, key), seen)
    return experiments + _own_experiments(path, raw, experiments)


def _grid_spec(path: Path, raw: dict[str, Any]) -> GridSpec:
    try:
        return GridSpec.model_validate(raw["grid"])
    except ConfigError as err:
        raise ConfigError(f"{_display(path)}: grid: {err}") from None


@dataclass(frozen=True)
class GridFile:
    """A set file with a `grid:` section: its grid and what its ExperimentSet is labelled with."""

    name: str
    description: str
    source: str
    spec: GridSpec
    data: DataSpec | None = None


def load_grid(name_or_path: str = "grid") -> GridFile:
    """The `grid:` section of a set file, found like any set (./sets/grid.yaml first)."""
    path = _find_set(name_or_path)
    raw = _read_set_file(path)
    if raw["grid"] is None:
        raise ConfigError(f"{_display(path)}: has no `grid:` section; use a grid set such as sets/grid.yaml")
    return GridFile(path.stem, raw["description"], _display(path), _grid_spec(path, raw), _data_spec(path, raw))


def load_set(name_or_path: str) -> ExperimentSet:
    """Load a set by path (.yaml) or by name (./sets/NAME.yaml, then the packaged sets)."""
    path = _find_set(name_or_path)
    raw = _read_set_file(path)
    key = path.resolve()
    experiments = _collect(path, raw, (key,), {key})
    if not experiments:
        raise ConfigError(
            f"{_display(path)}: experiments: the set has no experiments; list some under "
            "`experiments:` or `include:` another set"
        )
    return ExperimentSet(
        name=path.stem, description=raw["description"], experiments=tuple(experiments),
        source=_display(path), data=_data_spec(path, raw),
    )


# DataSpec's messages name the command-line options; in a set file the keys are these.
_DATA_KEYS = {"--data-path": "path", "--tokenizer-files": "tokenizer_files",
              "--tokenizer": "tokenizer", "--full-data": "full_data", "--data": "corpus"}


def _data_spec(path: Path, raw: dict[str, Any]) -> DataSpec | None:
    """The file's `data:` section (only the named file's: included sets' are not used),
    a relative `path` or `tokenizer_files` taken from the set file's folder, as cron
    may start the run anywhere."""
    if not raw["data"]:
        return None
    src, fields = _display(path), dict(raw["data"])
    unknown = [k for k in fields if k not in DataSpec.model_fields]
    if unknown:
        raise ConfigError(
            f"{src}: data: unknown key '{unknown[0]}'; allowed keys: {', '.join(DataSpec.model_fields)}"
        )
    for key in ("path", "tokenizer_files"):
        if isinstance(fields.get(key), str) and fields[key].strip():
            fields[key] = str(path.parent / Path(fields[key]).expanduser())
    try:
        return DataSpec.model_validate(fields)
    except DataError as err:
        message = re.sub("|".join(_DATA_KEYS), lambda m: _DATA_KEYS[m[0]], str(err))
        raise ConfigError(f"{src}: data: {message}") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "data"
        raise ConfigError(f"{src}: data: {where}: {first['msg']} (got {_short(first['input'])})") from None


def available_sets() -> list[tuple[str, int, str]]:
    """(name, experiment count, description) of every findable set, sorted by name."""
    found = []
    for name, path in sorted(_set_files().items()):
        loaded = load_set(str(path))
        found.append((name, len(loaded.experiments), loaded.description))
    return found
