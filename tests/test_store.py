"""The store contract (ramsweep/sweep/store/base.py), run against every store kind: append-only,
safe across processes, durable, never clobbers; plus what only the journal has (a torn last
line) and `convert`."""

import multiprocessing
import os
import subprocess
import sys

import orjson
import pytest
from conftest import baseline_record, experiment_record, record

from ramsweep.errors import StoreError
from ramsweep.sweep.records import ExperimentRecord, parse_record
from ramsweep.sweep.store import Journal, JsonDocument, convert, open_store


def stored_objects(path):
    """The file as jq or pandas would read it: a document's results, or a journal's lines."""
    if path.suffix == ".jsonl":
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return orjson.loads(path.read_bytes())["results"]


def test_the_suffix_chooses_the_kind(tmp_path):
    assert isinstance(open_store(tmp_path / "r.jsonl"), Journal)
    assert isinstance(open_store(tmp_path / "r.json"), JsonDocument)
    assert isinstance(open_store(tmp_path / "results"), JsonDocument)


def test_appended_records_read_back_in_order_and_as_plain_json(results_path):
    store = open_store(results_path)
    assert store.records() == [] and store.latest() == {}
    first, second = record(name="a", key="ka"), record(name="b", key="kb", status="failed")
    store.append(first)
    store.append(second)
    assert store.records() == [first, second]
    assert [r["name"] for r in stored_objects(results_path)] == ["a", "b"]
    assert stored_objects(results_path)[0] == first.dump()
    assert open_store(results_path).records() == [first, second]  # a fresh reader agrees
    left = sorted(p.name for p in results_path.parent.iterdir())
    assert left == sorted([results_path.name, ".ramsweep.lock"])  # the file and who last held the lock


def test_latest_is_the_newest_ok_record_else_the_newest(results_path):
    store = open_store(results_path)
    rows = [record(key="k1", status="failed"), record(key="k1", test_ppl=5.0), record(key="k1", status="failed"),
            record(key="k2", status="failed"), record(key="k2", status="interrupted")]
    for r in rows:
        store.append(r)
    latest = store.latest()
    assert latest["k1"] == rows[1] and latest["k2"] == rows[4]
    heads = open_store(results_path).summaries()  # what planning and claims read: the same records
    assert {k: (h.status, h.test_ppl) for k, h in heads.items()} == {"k1": ("ok", 5.0), "k2": ("interrupted", None)}


def test_an_earlier_record_is_never_changed_even_with_fields_this_version_does_not_know(results_path):
    store = open_store(results_path)
    future = experiment_record(name="from_the_future", key="kf") | {"new_field": {"x": [1, 2]}}
    store.append(parse_record(future))
    store.append(record(key="k2"))
    assert stored_objects(results_path)[0] == future
    assert open_store(results_path).records()[0].new_field == {"x": [1, 2]}


def test_records_written_before_kind_existed_read_as_experiments(tmp_path):
    old = {k: v for k, v in experiment_record().items() if k != "kind"}
    path = tmp_path / "results.json"
    path.write_bytes(orjson.dumps({"schema": 1, "results": [old, baseline_record()]}))
    kinds = [type(r).__name__ for r in open_store(path).records()]
    assert kinds == ["ExperimentRecord", "BaselineRecord"]


UNREADABLE = {
    "results.json": [b'{"schema": 1, "results": [', b"[1, 2]", b'{"schema": 99, "results": []}'],
    "results.jsonl": [b'{"kind": "experiment", "na\n', b"[1, 2]\n", b"not json at all\n"],
}


@pytest.mark.parametrize("name, content", [(n, c) for n, cs in UNREADABLE.items() for c in cs])
def test_a_file_it_cannot_read_is_refused_in_one_line_and_left_as_it_was(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    store = open_store(path)
    with pytest.raises(StoreError, match=name) as err:
        store.append(record())
    assert "\n" not in str(err.value)
    with pytest.raises(StoreError):
        store.records()
    assert path.read_bytes() == content


def test_an_invalid_record_is_named_by_place_and_field_and_nothing_is_written(results_path):
    good = experiment_record(key="k1")
    bad = experiment_record(key="k2")
    bad["metrics"]["test"]["ppl"] = "lots"
    if results_path.suffix == ".jsonl":
        results_path.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps(bad) + b"\n")
        where = "line 2"
    else:
        results_path.write_bytes(orjson.dumps({"schema": 1, "results": [good, bad]}))
        where = "record 2"
    before = results_path.read_bytes()
    with pytest.raises(StoreError) as err:
        open_store(results_path).append(record(key="k3"))
    message = str(err.value)
    assert where in message and "metrics.test.ppl" in message and "\n" not in message, message
    assert results_path.read_bytes() == before


def test_a_failing_write_leaves_the_previous_file_intact(results_path, monkeypatch):
    store = open_store(results_path)
    store.append(record(key="k1"))
    before = results_path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(StoreError, match="No space left"):
        store.append(record(key="k2"))
    monkeypatch.undo()
    assert results_path.read_bytes() == before
    assert [p.name for p in results_path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert [r.key for r in open_store(results_path).records()] == ["k1"]


def test_an_unusable_results_folder_is_a_one_line_store_error(tmp_path, results_path):
    (tmp_path / "afile").write_text("not a folder")
    path = tmp_path / "afile" / results_path.name
    with pytest.raises(StoreError, match=f"afile/{results_path.name}: a part of the path is a file, not a folder"):
        open_store(path).append(record())


def _append_many(path, worker: int, count: int) -> None:
    store = open_store(path)
    for i in range(count):
        store.append(record(name=f"w{worker}", key=f"w{worker}-{i}"))


def test_many_processes_appending_at_once_lose_and_duplicate_nothing(results_path):
    workers, each = 4, 25
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(results_path, w, each)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    keys = [r.key for r in open_store(results_path).records()]
    assert sorted(keys) == sorted(f"w{w}-{i}" for w in range(workers) for i in range(each))
    for w in range(workers):  # each writer's records stay in the order it appended them
        mine = [k for k in keys if k.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(each)]


def test_a_reader_sees_what_another_process_appended(results_path):
    reader, writer = open_store(results_path), open_store(results_path)
    writer.append(record(key="k1"))
    assert [r.key for r in reader.records()] == ["k1"]
    writer.append(record(key="k2"))
    assert [r.key for r in reader.records()] == ["k1", "k2"] and set(reader.latest()) == {"k1", "k2"}


# ---------------------------------------------------------------- the journal's torn last line


def test_a_torn_last_line_is_skipped_then_set_aside_and_nothing_before_it_is_lost(tmp_path, caplog):
    path = tmp_path / "results.jsonl"
    store = open_store(path)
    store.append(record(key="k1"))
    store.append(record(key="k2"))
    intact = path.read_bytes()
    torn = orjson.dumps(experiment_record(key="k3"))[:150]  # a power cut mid-append: no newline
    with open(path, "ab") as f:
        f.write(torn)
    assert [r.key for r in open_store(path).records()] == ["k1", "k2"]
    assert sorted(open_store(path).summaries()) == ["k1", "k2"]  # what runners and status read
    assert "torn append" in caplog.text
    store.append(record(key="k4"))
    assert path.read_bytes().startswith(intact)  # every earlier byte is still there
    assert [r.key for r in open_store(path).records()] == ["k1", "k2", "k4"]
    assert (tmp_path / "results.jsonl.torn").read_bytes() == torn + b"\n"
    assert all(line.strip() for line in path.read_bytes().split(b"\n")[:-1])  # no glued or empty line


def test_a_last_record_that_only_lost_its_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(orjson.dumps(experiment_record(key="k1")))  # complete, no newline
    store = open_store(path)
    assert [r.key for r in store.records()] == ["k1"]
    store.append(record(key="k2"))
    assert [r.key for r in store.records()] == ["k1", "k2"]
    assert [r.key for r in open_store(path).records()] == ["k1", "k2"]
    assert not (tmp_path / "results.jsonl.torn").exists()


def test_a_damaged_line_in_the_middle_is_refused_not_cut(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(orjson.dumps(experiment_record(key="k1")) + b"\n{half a rec\n" +
                     orjson.dumps(experiment_record(key="k2")) + b"\n")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="line 2"):
        open_store(path).append(record(key="k3"))
    assert path.read_bytes() == before


# ---------------------------------------------------------------- convert


@pytest.mark.parametrize("source, target", [("a.json", "b.jsonl"), ("a.jsonl", "b.json")])
def test_convert_copies_every_record_unchanged_into_the_other_kind(tmp_path, source, target):
    src = open_store(tmp_path / source)
    future = parse_record(experiment_record(key="kf") | {"new_field": 1})
    rows = [record(key="k1"), record(key="k2", status="failed"), future, parse_record(baseline_record())]
    for r in rows:
        src.append(r)
    before = src.path.read_bytes()
    assert convert(tmp_path / source, tmp_path / target) == 4
    assert open_store(tmp_path / target).records() == rows
    assert stored_objects(tmp_path / target) == stored_objects(tmp_path / source)
    assert src.path.read_bytes() == before
    with pytest.raises(StoreError, match="already exists"):
        convert(tmp_path / source, tmp_path / target)
    with pytest.raises(StoreError, match="no such results file"):
        convert(tmp_path / "missing.json", tmp_path / "c.jsonl")


def test_records_are_typed(results_path):
    store = open_store(results_path)
    store.append(record(key="k1"))
    got = store.records()[0]
    assert isinstance(got, ExperimentRecord) and got.metrics.test.tiers[0].bits == 20
    assert got.data.group == "kjv/word fast" and got.timing.eval_s == 1.0
    assert os.path.getsize(results_path) > 0


def test_convert_between_a_relative_and_an_absolute_name_of_one_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    open_store("a.json").append(record(key="k1"))
    assert convert("a.json", tmp_path / "b.jsonl") == 1  # one folder's lock, taken twice by one thread
    assert [r.key for r in open_store(tmp_path / "b.jsonl").records()] == ["k1"]


# ---------------------------------------------------------------- a file that is not of its kind

TINY_SET = 'experiments:\n  - {name: alpha, tiers: "30,2,6;rest,1,4", context: 2, negatives: 20}\n'
NOT_A_JOURNAL = [b'{"schema": 1, "results": []}',  # a JSON document written on one line
                 b"any file named by mistake, with no newline",
                 bytes(b for b in range(256) if b != 0x0A)]  # binary, no newline


@pytest.mark.parametrize("content", NOT_A_JOURNAL, ids=["document", "text", "binary"])
def test_a_jsonl_that_is_not_a_journal_is_refused_by_every_command_and_never_touched(tmp_path, content):
    path = tmp_path / "results.jsonl"
    path.write_bytes(content)
    (tmp_path / "tiny.yaml").write_text(TINY_SET)
    for args in (["run", "--set", tmp_path / "tiny.yaml", "--results", path], ["status", path],
                 ["report", path], ["convert", path, tmp_path / "copy.json"]):
        done = subprocess.run([sys.executable, "-m", "ramsweep", *map(str, args)], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "NUMBA_NUM_THREADS": "1"})
        assert done.returncode == 3, (args[0], done.returncode, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and "not a ramsweep journal" in done.stderr, done.stderr
        assert path.read_bytes() == content
        left = sorted(p.name for p in tmp_path.iterdir() if p.name != ".ramsweep.lock")  # the lock's name tag
        assert left == ["results.jsonl", "tiny.yaml"]  # no .torn, no copy, no claims


@pytest.mark.parametrize("tail", [b'{"kind": "experiment"}', b"plain text", b'["a list"'])
def test_only_the_start_of_a_record_after_a_complete_line_is_a_torn_append(tmp_path, tail):
    path = tmp_path / "results.jsonl"
    open_store(path).append(record(key="k1"))
    path.write_bytes(path.read_bytes() + tail)
    before = path.read_bytes()
    for call in (lambda: open_store(path).records(), lambda: open_store(path).summaries(),
                 lambda: open_store(path).append(record(key="k2"))):
        with pytest.raises(StoreError, match="its last line .*not a record, nor the start of one"):
            call()
    assert path.read_bytes() == before and not (tmp_path / "results.jsonl.torn").exists()


def test_a_follower_gets_the_records_before_a_bad_line_then_the_error(tmp_path):
    path = tmp_path / "results.jsonl"
    good = b"".join(orjson.dumps(experiment_record(key=k)) + b"\n" for k in ("k1", "k2"))
    path.write_bytes(good + b"{half a rec\n" + orjson.dumps(experiment_record(key="k3")) + b"\n")
    found, mark, _ = open_store(path).follow(None)
    assert [r.key for r, _ in found] == ["k1", "k2"]
    with pytest.raises(StoreError, match=f"the line at byte {len(good)}"):
        open_store(path).follow(mark)


def test_a_follower_does_not_read_an_unchanged_file_again(tmp_path, monkeypatch):
    """An idle dashboard beside a journal with a long torn tail must not reread it every poll."""
    from ramsweep.sweep.store import journal

    path = tmp_path / "results.jsonl"
    open_store(path).append(record(key="k1"))
    with open(path, "ab") as f:
        f.write(b'{"name": "' + b"x" * (4 << 20))  # a 4 MiB torn tail
    reads, read_file = [], journal.read_file
    monkeypatch.setattr(journal, "read_file", lambda *a: reads.append(a) or read_file(*a))
    store, mark = open_store(path), None
    for _ in range(5):
        found, mark, _ = store.follow(mark)
    assert len(reads) == 1
    store.summaries(), store.summaries()
    assert len(reads) == 2
    with open(path, "ab") as f:
        f.write(b'"}\n')  # the tail completed (as a bad record here): read once more, and refused
    for _ in range(3):
        with pytest.raises(StoreError, match="line at byte"):
            store.follow(mark)
    assert len(reads) == 3  # a damaged file is not read again either until it changes


def test_convert_says_what_it_left_and_a_failed_write_leaves_no_target(tmp_path, monkeypatch, caplog):
    from ramsweep.sweep.store import journal

    source = tmp_path / "a.json"
    open_store(source).append(record(key="k1"))
    target = tmp_path / "b.jsonl"

    def disk_full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal, "_write_all", disk_full)
    with pytest.raises(StoreError, match="could not append .*as it was before") as info:
        convert(source, target)
    assert "intact" not in str(info.value) and not target.exists()
    monkeypatch.undo()
    assert convert(source, target) == 1  # the retry finds no half-written file in its way
    torn = tmp_path / "c.jsonl"
    torn.write_bytes(target.read_bytes() + orjson.dumps(experiment_record(key="k2"))[:90])
    assert convert(torn, tmp_path / "d.json") == 1
    assert "torn append" in caplog.text and "c.jsonl" in caplog.text


@pytest.mark.parametrize("blank", [b"\t", b" \n\n  "])
def test_blanks_without_a_newline_are_ended_not_set_aside(tmp_path, blank):
    path = tmp_path / "results.jsonl"
    path.write_bytes(blank)
    store = open_store(path)
    assert store.records() == []
    store.append(record(key="k1"))
    assert path.read_bytes().startswith(blank) and not (tmp_path / "results.jsonl.torn").exists()
    assert [r.key for r in open_store(path).records()] == ["k1"]
