"""Experiment sets from YAML files: discovery (./sets, then the packaged sets), include,
defaults, based_on, data: and grid: sections. Everything a file can get wrong is one
ConfigError line naming the file, the experiment and the field."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ramsweep.config import Experiment, ExperimentSet, seed_list
from ramsweep.data.spec import DataSpec
from ramsweep.errors import ConfigError, DataError
from ramsweep.grid import GridFile, GridSpec
from ramsweep.messages import one_line, short

PACKAGE_DIR = Path(__file__).resolve().parent
_DEFAULT_KEYS = (*(k for k in Experiment.model_fields if k not in ("name", "based_on")), "seeds")


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


def packaged_sets_dir() -> Path | None:
    """The sets that come with ramsweep: inside the package in a wheel (hatch force-includes
    sets/ there), else the source tree's top-level sets/ under an editable install, but only
    where that tree is ramsweep's own (its pyproject.toml names it): a `sets/` folder that
    merely sits beside the package, such as a user's own, is never taken for them."""
    package = PACKAGE_DIR
    if (package / "sets").is_dir():
        return package / "sets"
    source = package.parent
    try:
        ours = re.search(r'^name\s*=\s*"ramsweep"\s*$', (source / "pyproject.toml").read_text(), re.M)
    except OSError:
        return None
    return source / "sets" if ours and (source / "sets").is_dir() else None


def sets_dirs() -> list[Path]:
    """Folders searched for set names, first match wins: ./sets, then the packaged sets."""
    dirs: list[Path] = []
    for folder in (Path.cwd() / "sets", packaged_sets_dir()):
        if folder is not None and folder.is_dir() and all(folder.resolve() != d.resolve() for d in dirs):
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


MAX_SET_BYTES = 1 << 20  # the 729-experiment grid is 1 KB; sets listing experiments, tens of KB
MAX_NODES = 200_000  # YAML values, every alias counted each time it is used (a "billion laughs" stops here)
MAX_DEPTH = 64


def _parse_yaml(path: Path) -> Any:
    src = _display(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SET_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{src}: cannot read the set file ({err.strerror}); check the path") from None
    if len(raw) > MAX_SET_BYTES:
        raise ConfigError(f"{src}: more than {MAX_SET_BYTES >> 20} MiB, far more than a set file needs; "
                          "check that this is the set file you meant")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{src}: not UTF-8 text (byte {err.start} is {raw[err.start]:#04x}); "
                          "save the file as UTF-8") from None
    loader = None
    try:
        loader = _UniqueKeyLoader(text)  # its reader already refuses some characters
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(src, node)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        if isinstance(err, yaml.reader.ReaderError):
            where, problem = f"character {err.position}", f"{err.character:#x} is not allowed in YAML"
        else:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"{src}: YAML syntax error at {where}: {problem}; fix the YAML there "
            "(quote tier strings, indent list items evenly)"
        ) from None
    except RecursionError:
        raise ConfigError(f"{src}: nested too deeply to be a set file; flatten it") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_size(src: str, root: yaml.Node) -> None:
    """Refuse a document whose values, aliases expanded, exceed MAX_NODES or nest deeper than
    MAX_DEPTH, before anything is built from it (nested aliases grow exponentially)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)
            if len(stack) > 10 * MAX_DEPTH + MAX_NODES:  # a malformed graph; never for a real file
                raise ConfigError(f"{src}: too large to be a set file; check what it holds")
            continue
        size[id(node)] = 1 + sum(size.get(id(c), 0) for c in children)
        depth[id(node)] = 1 + max((depth.get(id(c), 0) for c in children), default=0)
        if size[id(node)] > MAX_NODES or depth[id(node)] > MAX_DEPTH:
            raise ConfigError(
                f"{src}: line {node.start_mark.line + 1}: expands to more than {MAX_NODES:,} values or nests "
                f"deeper than {MAX_DEPTH} (YAML aliases used many times?); write the set out plainly"
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


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
            raise ConfigError(f"{src}: {key}: must be {what} (got {short(value)})")
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
                f"(got {short(item)}); start each experiment with '- name:'"
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
    fields = {k: v for k, v in ctx.entries[name].items() if k != "seeds"}  # seeds: expanded afterwards
    start: dict[str, Any] = {k: v for k, v in ctx.defaults.items() if k != "seeds"}
    base = fields.get("based_on")
    if base is not None:
        if isinstance(base, str) and base in ctx.entries:
            start = _resolve(base, ctx, done, (*chain, name)).spec()
        elif isinstance(base, str) and base in ctx.included:
            start = ctx.included[base].spec()
        else:
            known = ", ".join([*ctx.included, *ctx.entries])
            raise ConfigError(
                f"{ctx.src}: experiment '{name}': based_on: no experiment {short(base)} "
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
    resolved = [_resolve(name, ctx, done, ()) for name in ctx.entries]
    return [e for exp in resolved for e in _seeded(exp, ctx.entries[exp.name].get("seeds", ctx.defaults.get("seeds")),
                                                    src)]


def _seeded(exp: Experiment, seeds: Any, src: str) -> list[Experiment]:
    """The experiment once per seed of its `seeds:` (named NAME.sSEED), or as it is without one."""
    if seeds is None:
        return [exp]
    try:
        chosen = seed_list(seeds, exp.seed)
    except ConfigError as err:
        raise ConfigError(f"{src}: experiment '{exp.name}': {err}") from None
    return [exp.model_copy(update={"name": f"{exp.name}.s{seed}", "seed": seed}) for seed in chosen]


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
        raise ConfigError(f"{src}: data: {one_line(err, DataSpec.model_fields)}") from None


def available_sets() -> list[tuple[str, int, str]]:
    """(name, experiment count, description) of every findable set, sorted by name."""
    found = []
    for name, path in sorted(_set_files().items()):
        loaded = load_set(str(path))
        found.append((name, len(loaded.experiments), loaded.description))
    return found
