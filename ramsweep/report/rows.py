"""What a report shows, before it is drawn: records read from one or more results files,
grouped by what makes their numbers comparable, filtered, ranked by any metric in its own
direction, and flattened into wide rows (one per record, per-tier columns) for csv and json.

PPL on different vocabularies or data is not comparable, so nothing is ranked across groups:
a group is one corpus, tokenizer, vocabulary, fast/full mode and data fingerprint.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ramsweep.config import TIERED_ONLY, Role, bitwise_shape, defaults, roles, seed_base
from ramsweep.errors import ConfigError, NothingMatches, StoreError
from ramsweep.report import search_phases
from ramsweep.sweep.records import DataInfo, ExperimentRecord, Record, Spec, SplitMetrics, gc_paused, latest
from ramsweep.sweep.store import open_store

SPLITS = {"val": "validation", "test": "test"}
# per split: name -> (lower is better, value)
_SPLIT_METRICS: dict[str, tuple[bool, Callable[[SplitMetrics], float | None]]] = {
    "ppl": (True, lambda s: s.ppl),
    "ce": (True, lambda s: s.ce),
    "cal_ppl": (True, lambda s: s.calibrated.ppl if s.calibrated else None),
    "bpb": (True, lambda s: s.bpb),
    "acc": (False, lambda s: s.accuracy),
}
_TIER_METRICS = {"ppl": True, "acc": False, "empty": True, "target_empty": True, "share": False}
_TIER_FIELDS = {"ppl": "ppl", "acc": "accuracy", "empty": "empty_rate", "target_empty": "target_empty_rate",
                "share": "share"}
_TIER_NAME = re.compile(r"tier(\d+)\.(val|test)_(" + "|".join(_TIER_METRICS) + ")")
# a bitwise record's parts (docs/design.md §3c): per frequency band of the target, per bit cluster;
# name -> (lower is better, field)
_BAND_METRICS = {"ppl": (True, "ppl"), "ce": (True, "ce"), "cal_ce": (True, "calibrated_ce"), "acc": (False, "accuracy"),
                 "share": (False, "share")}
_BIT_METRICS = {"acc": (False, "accuracy"), "ce": (True, "ce"), "mean_p": (False, "mean_p"), "empty": (True, "empty"),
                "undecided": (True, "undecided")}
_PART_NAME = re.compile(r"(band|bit)(\d+)\.(val|test)_(\w+)")


@dataclass(frozen=True)
class Metric:
    name: str
    lower_is_better: bool
    value: Callable[[Record], float | None]

    def key(self, record: Record) -> float:
        """Sort key: best first, missing values (and records without figures) last."""
        x = self.value(record) if record.metrics is not None else None
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return math.inf
        return x if self.lower_is_better else -x


def metric_names() -> list[str]:
    return [f"{s}_{m}" for s in SPLITS for m in _SPLIT_METRICS] + [
        "tierN.val_ppl, tierN.test_acc, ...", "bandN.val_ppl, bandN.test_cal_ce, ...", "bitN.val_acc, bitN.test_ce, ..."]


def metric(name: str) -> Metric:
    """A metric by name: val_ppl (the default), test_ppl, val_cal_ppl, test_bpb, val_acc, ... or a
    tier's, e.g. tier0.val_ppl, tier1.test_acc, tier2.val_empty, or a bitwise model's band's or bit
    cluster's, e.g. band0.val_ppl, band2.test_cal_ce, bit3.val_acc, bit0.test_undecided."""
    split, _, base = name.partition("_")
    if split in SPLITS and base in _SPLIT_METRICS:
        lower, get = _SPLIT_METRICS[base]
        return Metric(name, lower, lambda r: get(getattr(r.metrics, SPLITS[split])))
    found = _TIER_NAME.fullmatch(name)
    if found:
        index, split, base = int(found[1]), SPLITS[found[2]], found[3]
        return Metric(name, _TIER_METRICS[base], lambda r: _tier_value(r, split, index, _TIER_FIELDS[base]))
    found = _PART_NAME.fullmatch(name)
    if found and found[4] in (_BAND_METRICS if found[1] == "band" else _BIT_METRICS):
        part, index, split = found[1] + "s", int(found[2]), SPLITS[found[3]]
        lower, field = (_BAND_METRICS if part == "bands" else _BIT_METRICS)[found[4]]
        return Metric(name, lower, lambda r: _part_value(r, split, part, index, field))
    raise ConfigError(f"--sort-by: '{name}' is not a metric; use one of {', '.join(metric_names())}")


def _tier_value(record: Record, split: str, index: int, field: str) -> float | None:
    tiers = getattr(record.metrics, split).tiers
    return getattr(tiers[index], field) if index < len(tiers) else None


def _part_value(record: Record, split: str, part: str, index: int, field: str) -> float | None:
    """A band's or bit cluster's figure; None for a record without it (a Summary holds none)."""
    parts = getattr(getattr(record.metrics, split), part, ())
    return getattr(parts[index], field) if index < len(parts) else None


# ---------------------------------------------------------------- reading and grouping


def load(paths: Iterable[str | Path]) -> list[Record]:
    """The record that stands for each key, over all the files (a key in several files: the
    latest rule applied to them in the order given)."""
    found: list[Record] = []
    for path in map(Path, paths):
        store = open_store(path)  # a path no store can use is refused here, in one line
        if not store.path.exists():
            raise StoreError(f"{path}: no such results file; run `ramsweep run --set quick` first or name another file")
        found += store.records()
    return list(latest(found).values())


def group_of(data: DataInfo) -> str:
    """The comparable group's name, e.g. 'kjv/word full, 13,814 tokens, data 46202d82'."""
    return (f"{data.corpus}/{data.tokenizer} {'full' if data.full_data else 'fast'}, {data.vocab_size:,} tokens, "
            f"data {data.fingerprint[:8]}")


def groups(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records by comparable group, the newest group first (by its latest record's finish, or
    start): the night's results above last week's."""
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(group_of(r.data), []).append(r)
    latest = {g: max((r.finished or r.started or "") for r in members) for g, members in out.items()}
    return dict(sorted(out.items(), key=lambda item: latest[item[0]], reverse=True))  # stable: ties keep order


@dataclass(frozen=True)
class Filters:
    set: str | None = None  # experiments of this set only
    name: str | None = None  # a glob on experiment names, e.g. 'tier0_*'
    top: int | None = None  # the best N experiments of each group
    status: str | None = None  # ok, failed or interrupted: only experiments whose latest record has it

    def check(self, records: list[Record], files) -> None:
        """Say so (NothingMatches) when these filters keep no experiment of `records` (read from
        `files`), rather than a report of empty headings: `set` naming a set the files do not
        hold, `name` or `status` matching none."""
        experiments = [r for r in records if r.kind == "experiment"]
        where = ", ".join(map(str, files))
        if self.set is not None and not any(r.set == self.set for r in experiments):
            sets = ", ".join(sorted({r.set for r in experiments if r.set})) or "none"
            raise NothingMatches(f"--set {self.set}: no experiment of that set in {where}; sets there: {sets}")
        if (self.name or self.status) and not any(self.keep(r) for r in experiments):
            asked = " and ".join(f"--{k} {v}" for k, v in (("name", self.name), ("status", self.status)) if v)
            raise NothingMatches(f"no experiment matches {asked} in {where} ({len(experiments):,} experiments there)")

    def keep(self, r: Record) -> bool:
        if r.kind == "baseline":
            return True  # the yardsticks stay whatever is filtered
        return ((self.set is None or r.set == self.set) and (self.name is None or fnmatch.fnmatchcase(r.name, self.name))
                and (self.status is None or r.status == self.status))


def leaderboard(records: list[Record], by: Metric, filters: Filters = Filters()) -> list[Record]:
    """One group's ok records, best first by `by`; baselines in their place (those without the
    metric at the end); at most `filters.top` experiments."""
    kept = sorted((r for r in records if r.ok and filters.keep(r)), key=by.key)
    if filters.top is not None:
        experiments = [r for r in kept if r.kind == "experiment"][: filters.top]
        kept = [r for r in kept if r.kind == "baseline" or r in experiments]
    return kept


def not_ok(records: list[Record], filters: Filters = Filters()) -> list[Record]:
    """A group's failed and interrupted experiments (their latest record), as they stand."""
    return [r for r in records if not r.ok and filters.keep(r)]


# ---------------------------------------------------------------- configs, by the fields' roles


def config(spec: Spec, where: Callable[[Role], bool]) -> dict[str, Any]:
    """The fields of a stored spec whose Role `where` picks (config.roles), in declaration order;
    a field the record predates reads as its default, so an old record is not told apart from a
    new one by a field it could not have set."""
    stored = spec.model_dump()
    picked = roles()
    return {name: stored.get(name, default) for name, default in defaults().items() if where(picked[name])}


def config_differences(records: list[ExperimentRecord]) -> list[tuple[str, list[str]]]:
    """(field, value per record as text) of each compared field (Role.shown) that differs; between
    architectures, their shapes (tiers, bitwise block) as one `shape` and a tiered-only field as
    "—" for a bitwise record."""
    configs = [config(r.spec, lambda role: role.shown) for r in records]
    out = []
    for name in configs[0] if configs else ():
        values = [c[name] for c in configs]
        if any(v != values[0] for v in values[1:]):
            out.append((name, texts(name, values)))
    if len({c.get("architecture") for c in configs}) > 1:  # tiers and bitwise block: one shape each
        shapes = ("shape", [r.spec.shape for r in records])
        bitwise = [c.get("architecture") == "bitwise" for c in configs]
        out = [shapes if f == "tiers" else (f, ["—" if b else t for b, t in zip(bitwise, v)] if f in TIERED_ONLY else v)
               for f, v in out if f != "bitwise"]
    return out


def _search(block: Mapping) -> str:
    if block.get("phases"):  # its strategy is the block's default, unused
        return search_phases.brief(block)
    how = block.get("per_cluster") if block.get("strategy") == "per-cluster" else ""
    return " ".join(str(p) for p in (block.get("strategy"), how, str(block.get("fitness", "")).upper()) if p)


# How a block (a field holding a mapping) is named beside a none or another block; a block
# without one is named by its entries.
_BRIEF: dict[str, Callable[[Mapping], str]] = {
    "optimize": _search,
    "gating": lambda g: f"{g.get('neurons')} gate neurons of {g.get('bits')} bits",
    "bitwise": bitwise_shape,
}


def texts(name: str, values: list[Any]) -> list[str]:
    """One field's differing values as text: "none" for an unset block; a block by its brief
    and, where the briefs do not tell the blocks apart, by the entries that differ between them."""
    blocks = [v for v in values if isinstance(v, Mapping)]
    brief = _BRIEF.get(name)
    briefs = {brief(b) for b in blocks} if brief else set()
    differ = [k for k in dict.fromkeys(k for b in blocks for k in b)
              if len({orjson.dumps(b.get(k), option=orjson.OPT_SORT_KEYS) for b in blocks}) > 1]
    alike = len(blocks) > 1 and len(briefs) < 2

    def one(value: Any) -> str:
        if value is None:
            return "none"
        if not isinstance(value, Mapping):
            return str(value)
        if alike:  # the same brief (or none): the entries tell them apart
            parts = [brief(value)] if brief else []
            return ", ".join(parts + [f"{k} {value.get(k)}" for k in differ])
        return brief(value) if brief else ", ".join(f"{k} {v}" for k, v in value.items()) or "{}"

    return [one(v) for v in values]


# ---------------------------------------------------------------- seeds


@dataclass(frozen=True)
class Spread:
    """One config over its seeds, on one metric: mean, sample standard deviation, count."""

    mean: float
    sd: float  # 0.0 for a single seed
    n: int

    def text(self, digits: str = ",.0f") -> str:
        if self.n == 1:
            return format(self.mean, digits)
        return f"{format(self.mean, digits)} ± {format(self.sd, digits)} ({self.n} seeds)"

    def within_noise_of(self, other: Spread) -> bool:
        """|difference of means| within two standard errors of it; never with one seed on both
        sides, where the noise is unknown."""
        if self.n == 1 and other.n == 1:
            return False
        return abs(self.mean - other.mean) <= 2 * math.sqrt(self.sd**2 / self.n + other.sd**2 / other.n)


@dataclass(frozen=True)
class Seeds:
    """The ok records of one configuration (spec apart from its seed, on one data group)."""

    name: str  # the experiment's name without .sSEED
    records: tuple[ExperimentRecord, ...]

    def spread(self, by: Metric) -> Spread | None:
        values = [x for x in (by.value(r) for r in self.records) if x is not None and not math.isnan(x)]
        if not values:
            return None
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        return Spread(mean, sd, len(values))


def seed_groups(records: Iterable[Record]) -> list[Seeds]:
    """One group's ok experiments gathered by configuration, in first-seen order."""
    found: dict[str, list[ExperimentRecord]] = {}
    for r in records:
        if r.kind == "experiment" and r.ok:
            same = config(r.spec, lambda role: role.key != "never")  # what is computed, the seed apart
            same.pop("seed", None)
            found.setdefault(orjson.dumps(same, option=orjson.OPT_SORT_KEYS).decode(), []).append(r)
    return [Seeds(seed_base(rs[0].name), tuple(rs)) for rs in found.values()]


def by_seeds(records: list[Record], by: Metric, reference: str | None = None) -> list[tuple[Seeds, Spread, bool]]:
    """Each configuration with its spread on `by`, best mean first, and whether its difference to
    the reference (a configuration or baseline by name; default the best) is within seed noise."""
    spread = [(s, s.spread(by)) for s in seed_groups(records)]
    ranked = sorted(((s, x) for s, x in spread if x is not None),
                    key=lambda sx: sx[1].mean if by.lower_is_better else -sx[1].mean)
    if not ranked:
        return []
    ref = ranked[0][1]
    if reference is not None:
        named = [x for s, x in ranked if s.name == reference]
        named += [Spread(v, 0.0, 1) for r in records if r.kind == "baseline" and r.name == reference
                  for v in [by.value(r)] if v is not None]
        if not named:
            raise ConfigError(f"--reference: no experiment or baseline '{reference}' in this group; name one of "
                              f"{', '.join(s.name for s, _ in ranked)}")
        ref = named[0]
    return [(s, x, x is not ref and x.within_noise_of(ref)) for s, x in ranked]


# ---------------------------------------------------------------- wide rows (csv, json)


def wide_rows(records: list[Record], by: Metric) -> list[dict]:
    """One flat row per record, every value a column: identity, data group, config, per split
    metrics, per tier metrics, times. Ranks are per group, by `by`, over ok experiments."""
    ranks: dict[str, int] = {}
    for members in groups(records).values():
        ranked = [r for r in sorted(members, key=by.key) if r.ok and r.kind == "experiment"]
        ranks |= {r.key: i for i, r in enumerate(ranked, 1)}
    with gc_paused():
        return [_wide(r, ranks.get(r.key)) for r in records]


def _wide(r: Record, rank: int | None) -> dict:
    d = r.data
    columns = config(r.spec, lambda role: role.column) if r.kind == "experiment" else \
        {name: None for name, role in roles().items() if role.column}  # a baseline has no config
    row = {"group": group_of(d), "rank": rank, "kind": r.kind, "name": r.name, "key": r.key, "status": r.status,
           "set": getattr(r, "set", None), **columns, **_bitwise_config(r),
           "corpus": d.corpus, "tokenizer": d.tokenizer, "vocab_size": d.vocab_size,
           "full_data": d.full_data, "fingerprint": d.fingerprint, "device": None, "started": r.started,
           "finished": r.finished, "train_s": r.timing.train_s, "eval_s": r.timing.eval_s,
           "total_s": r.timing.total_s if r.ok else r.timing.elapsed_s, "error": r.error}
    if r.kind == "experiment":
        row["device"] = r.resources.device if r.resources else None
    for short, split in SPLITS.items():
        s = getattr(r.metrics, split) if r.metrics else SplitMetrics()
        cal = s.calibrated
        row |= {f"{short}_ppl": s.ppl, f"{short}_ce": s.ce, f"{short}_acc": s.accuracy, f"{short}_bpb": s.bpb,
                f"{short}_cal_ppl": cal.ppl if cal else None, f"{short}_temperature": cal.temperature if cal else None,
                f"{short}_ppl_floor": s.ppl_floor}
        for t in s.tiers:
            p = f"tier{t.tier}"
            row |= {f"{p}_clusters": t.clusters, f"{p}_neurons": t.neurons, f"{p}_bits": t.bits,
                    f"{p}_memory": t.memory, f"{p}.{short}_share": t.share, f"{p}.{short}_ppl": t.ppl,
                    f"{p}.{short}_acc": t.accuracy, f"{p}.{short}_empty": t.empty_rate,
                    f"{p}.{short}_target_empty": t.target_empty_rate}
        row |= _bitwise_columns(s, short)
    return row


def _bitwise_config(r: Record) -> dict:
    """A bitwise experiment's shape and block as columns (its sizes per cluster are the bitN_ ones)."""
    block = getattr(r.spec, "bitwise", None) if r.kind == "experiment" and r.spec.tiers is None else None
    if not block:
        return {}
    return {"bitwise": r.spec.shape, "bitwise_cell_mode": block.get("cell_mode"),
            "bitwise_sample_rate": block.get("sample_rate")}


def _bitwise_columns(s: SplitMetrics, short: str) -> dict:
    """A bitwise record's split, per frequency band of the target (band0 beside tier0 where they
    cover the same tokens) and per bit cluster; nothing for a tiered record."""
    row: dict = {}
    for b in s.bands:
        p = f"band{b.band}"
        row |= {f"{p}_first": b.first, f"{p}_tokens": b.tokens, f"{p}.{short}_examples": b.examples,
                f"{p}.{short}_share": b.share, f"{p}.{short}_ppl": b.ppl, f"{p}.{short}_ce": b.ce,
                f"{p}.{short}_cal_ce": b.calibrated_ce, f"{p}.{short}_acc": b.accuracy}
    for b in s.bits:
        p = f"bit{b.bit}"
        row |= {f"{p}_neurons": b.neurons, f"{p}_bits": b.bits, f"{p}.{short}_acc": b.accuracy,
                f"{p}.{short}_ce": b.ce, f"{p}.{short}_mean_p": b.mean_p, f"{p}.{short}_empty": b.empty,
                f"{p}.{short}_undecided": b.undecided}
    return row


def columns(rows: list[dict]) -> list[str]:
    """Every column of the rows, in first-seen order (the tier columns of the widest record last)."""
    seen: dict[str, None] = {}
    for row in rows:
        seen |= dict.fromkeys(row)
    return list(seen)


def search_rows(records: list[Record]) -> list[dict]:
    """What each connectivity search did: its fitness on the fitness slice, and validation and
    test PPL and accuracy of the start (the drawn wiring) and of the connectivity chosen."""
    out = []
    for r in records:
        s = getattr(r, "search", None)
        if r.kind != "experiment" or not r.ok or not s:
            continue
        before, after = s["before"], r.metrics
        out.append({
            "name": r.name, "strategy": s["strategy"], "fitness": s["fitness"].upper(),
            "units": s["units"], "improved": s.get("improved"), "evaluations": s["evaluations"],
            "search_s": s["search_s"], "stopped": s["stopped"], "chosen": s["chosen"],
            "phases": len(s.get("phases") or ()),
            "fitness_before": s["fitness_before"]["value"], "fitness_after": s["fitness_after"]["value"],
            "val_ppl": (before["validation"]["ppl"], after.validation.ppl),
            "test_ppl": (before["test"]["ppl"], after.test.ppl),
            "test_acc": (before["test"]["accuracy"], after.test.accuracy),
        })
    return out
