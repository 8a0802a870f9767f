"""The tier-bits grid (`ramsweep grid`): every tier's bits over a range, as an ExperimentSet.

Defaults come from sets/grid.yaml (found like any set); the grid itself and its order are
config.GridSpec's, so `ramsweep run --set grid` and `grid_set()` give the same experiments.
Grid experiments are ordinary experiments: keyed by their spec, skipped when done.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ramsweep.config import ExperimentSet, GridShape, GridSpec, load_grid
from ramsweep.errors import ConfigError


def grid_set(
    tiers: int | None = None, *, bits: tuple[int, int] | None = None,
    counts: list[str | int] | None = None, neurons: list[int] | None = None,
    context: int | None = None, negatives: int | None = None,
    limit: int | None = None, sample: int | None = None, seed: int = 0,
) -> ExperimentSet:
    """The grid in grid order, arguments left None taken from sets/grid.yaml.

    `sample` K draws K experiments without replacement (numpy Generator seeded by `seed`),
    kept in grid order; `limit` then keeps the first `limit` of those (or of the whole grid).
    The set is named "grid" for the file's number of tiers, else e.g. "grid4".
    """
    file = load_grid()
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
    for name, value, low in (("limit", limit, 1), ("sample", sample, 1), ("seed", seed, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(f"grid: {name}: {value!r} is not allowed; use a whole number, {low} or more")
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


def dry_run(exp_set: ExperimentSet, data=None) -> str:
    """What `ramsweep grid` would run: each config with its memory estimated from the config
    and the training split's frequencies (an upper bound), then the count."""
    from ramsweep.data import load_corpus
    from ramsweep.engine.layout import estimate_memory_bytes

    corpus = load_corpus(data or "kjv")
    sizes = [estimate_memory_bytes(e, corpus.train, corpus.vocab_size) for e in exp_set.experiments]
    lines = [f"{i:>6}  {e.name:<22} {str(e.tiers):<34} {mib(b):>12}"
             for i, (e, b) in enumerate(zip(exp_set.experiments, sizes), 1)]
    lines.append(f"{len(sizes):,} experiments in set {exp_set.name}; memory per experiment at most "
                 f"{mib(min(sizes))} to {mib(max(sizes))} (median {mib(float(np.median(sizes)))}), "
                 f"estimated on {corpus.name}/{corpus.tokenizer} ({'full' if corpus.full_data else 'fast'} mode); "
                 f"nothing was run")
    return "\n".join(lines) + "\n"


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"
