"""Hostile input, generated: random and mutated set files, results files and claims files are
each either read or refused with one line (ConfigError / StoreError: exit code 2 or 3 in the
CLI), never a traceback, never a hang (each case has a time limit), never a change to the file."""

import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from conftest import baseline_record, experiment_record
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ramsweep.cli import app
from ramsweep.errors import ConfigError, StoreError
from ramsweep.report import report
from ramsweep.sets import load_set
from ramsweep.sweep.status import status
from ramsweep.sweep.store import open_store

SETS = Path(__file__).resolve().parent.parent / "sets"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 150))  # FUZZ_EXAMPLES=5000 for a longer hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SECONDS = 10  # per case: a hang fails the test instead of the suite


@contextmanager
def time_limit(seconds: int = SECONDS):
    def hung(signum, frame):
        raise AssertionError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_line(err: Exception) -> None:
    assert str(err) and "\n" not in str(err), repr(err)


# ---------------------------------------------------------------- mutations

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)
YAML_BITS = st.sampled_from([
    "&a [1, 2]", "*a", "[*a, *a, *a, *a]", "{", "}", "- ", ": ", "\n  ", "\t", "'", '"', "99999999999999999999999",
    "-1", "1e400", ".nan", "rest", ";", ",", "!!python/object:os.system", "<<: *a", "~", "\x00", "\u2028", "#",
    "---\n", "...\n", "&b", "tiers: ", "name: ", "include: [quick]", "based_on: x", "grid:", "data: {corpus: text}",
])


@st.composite
def mutated(draw, original: bytes, pieces=YAML_BITS):
    """`original` with a few random edits: cut, insert a fragment or random bytes, duplicate, truncate."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["cut", "insert", "bytes", "duplicate", "truncate"]))
        if edit == "cut":
            del data[at:at + draw(st.integers(1, 40))]
        elif edit == "insert":
            data[at:at] = draw(pieces).encode()
        elif edit == "bytes":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif edit == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 80))]
        else:
            del data[at:]
    return bytes(data)


VALID_SETS = [(SETS / name).read_bytes() for name in ("quick.yaml", "extended.yaml", "grid.yaml", "asymmetric.yaml")]
set_files = st.one_of(st.sampled_from(VALID_SETS).flatmap(mutated), st.binary(max_size=300),
                      st.text(max_size=300).map(str.encode))


# ---------------------------------------------------------------- set files


@FUZZ
@given(content=set_files)
def test_any_set_file_is_loaded_or_refused_in_one_line(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("sets") / "fuzzed.yaml"
    path.write_bytes(content)
    with time_limit():
        try:
            loaded = load_set(str(path))
        except ConfigError as err:
            one_line(err)
        else:
            assert loaded.experiments
    assert path.read_bytes() == content


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=set_files)
def test_the_cli_answers_any_set_file_with_one_line_and_an_exit_code(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "fuzzed.yaml"
    path.write_bytes(content)
    with time_limit(60):
        result = CliRunner().invoke(app, ["run", "--set", str(path), "--dry-run", "--results", str(folder / "r.json")])
    if result.exit_code != 0:
        assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("ramsweep: error: "), result.stderr
    assert not (folder / "r.json").exists() and path.read_bytes() == content


# ---------------------------------------------------------------- results and claims files


def valid_results(kind: str) -> bytes:
    rows = [experiment_record("a", "ka"), experiment_record("b", "kb", status="failed"), baseline_record()]
    if kind == "jsonl":
        return b"".join(orjson.dumps(r) + b"\n" for r in rows)
    return orjson.dumps({"schema": 1, "results": rows}, option=orjson.OPT_INDENT_2)


@st.composite
def poisoned_record(draw, kind: str) -> bytes:
    """A valid file with one field of one record replaced by any JSON value."""
    rows = [experiment_record("a", "ka"), experiment_record("b", "kb", status="failed"), baseline_record()]
    row = draw(st.sampled_from(rows))
    path = draw(st.sampled_from([("name",), ("status",), ("metrics", "test", "ppl"), ("data",), ("timing",),
                                 ("metrics", "validation", "tiers"), ("spec", "context"), ("kind",), ("key",)]))
    target = row
    for part in path[:-1]:
        target = target.get(part) if isinstance(target, dict) else None
    if isinstance(target, dict):
        target[path[-1]] = draw(JSON)
    if kind == "jsonl":  # the json module writes what orjson would not: integers past 64 bits, NaN
        return b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    return json.dumps({"schema": 1, "results": rows}).encode()


def results_files(kind: str):
    return st.one_of(mutated(valid_results(kind), st.sampled_from(['"', "{", "}", "[", "]", ",", "null", "1e999", "\n"])),
                     poisoned_record(kind), st.binary(max_size=200))


def check_results_file(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    with time_limit():
        for read in (lambda: open_store(path).summaries(), lambda: open_store(path).records(),
                     lambda: status(path), lambda: report(path, "csv"), lambda: report(path, "table")):
            try:
                read()
            except StoreError as err:
                one_line(err)
    assert path.read_bytes() == content


@FUZZ
@given(content=results_files("json"))
def test_any_results_document_is_read_or_refused_in_one_line_and_never_changed(tmp_path_factory, content):
    check_results_file(tmp_path_factory.mktemp("doc") / "results.json", content)


@FUZZ
@given(content=results_files("jsonl"))
def test_any_journal_is_read_or_refused_in_one_line_and_never_changed(tmp_path_factory, content):
    check_results_file(tmp_path_factory.mktemp("journal") / "results.jsonl", content)


CLAIM = {"key": "k1", "name": "a", "set": "s", "owner": "o", "host": "h", "pid": 12, "heartbeat": 1.0,
         "since": "2026-11-26T00:00:00+00:00"}


@FUZZ
@given(content=st.one_of(
    st.builds(lambda field, value: json.dumps({"schema": 1, "claims": {"k1": {**CLAIM, field: value}}}).encode(),
              st.sampled_from(sorted(CLAIM)), JSON),
    mutated(orjson.dumps({"schema": 1, "claims": {"k1": CLAIM}}), st.sampled_from(['"', "{", "}", ",", "-1", "1e999"])),
    st.binary(max_size=120)))
def test_any_claims_file_is_read_or_refused_in_one_line_and_never_changed(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("claims")
    claims = folder / "results.json.claims"
    claims.write_bytes(content)
    with time_limit():
        for read in (lambda: open_store(folder / "results.json").claims(), lambda: status(folder / "results.json")):
            try:
                read()
            except StoreError as err:
                one_line(err)
    assert claims.read_bytes() == content


@pytest.mark.parametrize("name", ["results.json", "results.jsonl"])
def test_the_valid_files_the_fuzzers_start_from_are_read(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(valid_results(name.split(".")[1]))
    assert len(open_store(path).records()) == 3


# ---------------------------------------------------------------- any bytes, every command

CORPUS_TEXT = "".join(f"line {i} of a small corpus with words {i % 7} and {i % 11}\n" for i in range(400))
EVERY_COMMAND = [["run", "--set", "{set}", "--results", "{r}", "--data", "text", "--data-path", "{corpus}"],
                 ["run", "--set", "{set}", "--results", "{r}", "--dry-run"], ["status", "{r}"], ["report", "{r}"],
                 ["report", "{r}", "-f", "html"], ["report", "{r}", "-f", "csv"], ["compare", "a", "b", "--results", "{r}"],
                 ["convert", "{r}", "{other}"]]


def parses(path: Path) -> bool:
    try:
        open_store(path).records()
    except StoreError:
        return False
    return True


def check_every_command(folder: Path, name: str, content: bytes) -> None:
    """Each command answers `content` as a results file with exit 0 or one line and an exit code;
    a file that does not parse is never rewritten, replaced, moved or cut, nor set aside."""
    path = folder / name
    path.write_bytes(content)
    st = path.stat()
    unparsed = not parses(path)
    (folder / "set.yaml").write_text('experiments:\n  - {name: a, tiers: "rest,1,4", context: 1, negatives: 5}\n')
    (folder / "corpus.txt").write_text(CORPUS_TEXT)
    for command in EVERY_COMMAND:
        other = folder / ("copy.jsonl" if name.endswith(".json") else "copy.json")
        args = [a.format(set=folder / "set.yaml", r=path, corpus=folder / "corpus.txt", other=other) for a in command]
        with time_limit(60):
            result = CliRunner().invoke(app, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        if result.exit_code != 0:
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("ramsweep: error: "), (args, result.stderr)
        if unparsed:
            assert result.exit_code in (2, 3), (args, result.exit_code, result.output)
            after = path.stat()
            assert path.read_bytes() == content and (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
            assert not other.exists() and not Path(f"{path}.torn").exists(), args
        other.unlink(missing_ok=True)
        if name.endswith(".jsonl"):  # a journal only ever grows (a document that parses is rewritten whole)
            kept_whole(path, content)


def kept_whole(path: Path, content: bytes) -> None:
    """Whatever ran, every byte of `content` is still in the file, or, for a journal's torn last
    line (only after a complete line), in `<file>.torn`."""
    torn = Path(f"{path}.torn")
    moved = torn.read_bytes().removesuffix(b"\n") if torn.exists() else b""
    kept = content[:len(content) - len(moved)]
    assert content.endswith(moved) and path.read_bytes().startswith(kept)
    if moved:
        assert kept.endswith(b"\n") and kept.strip(), "a tail set aside that followed no complete line"


ONE_LINE_DOCUMENT = orjson.dumps({"schema": 1, "results": [experiment_record("a", "ka")]})


def any_results_bytes(kind: str):
    return st.one_of(st.binary(max_size=300), results_files(kind), mutated(ONE_LINE_DOCUMENT),
                     st.sampled_from([b"", b"\n", ONE_LINE_DOCUMENT, ONE_LINE_DOCUMENT + b"\n"]))


EVERY_COMMAND_FUZZ = settings(max_examples=max(10, EXAMPLES // 5), deadline=None,
                              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.slow
@EVERY_COMMAND_FUZZ
@given(content=any_results_bytes("json"))
def test_every_command_answers_any_json_results_bytes_and_never_rewrites_what_it_cannot_parse(tmp_path_factory,
                                                                                                content):
    check_every_command(tmp_path_factory.mktemp("any"), "results.json", content)


@pytest.mark.slow
@EVERY_COMMAND_FUZZ
@given(content=any_results_bytes("jsonl"))
@example(content=ONE_LINE_DOCUMENT)  # a JSON document on one line, named .jsonl: once moved aside whole
def test_every_command_answers_any_jsonl_results_bytes_and_never_rewrites_what_it_cannot_parse(tmp_path_factory,
                                                                                                 content):
    check_every_command(tmp_path_factory.mktemp("any"), "results.jsonl", content)
