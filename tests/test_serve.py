"""`ramsweep serve`: what the dashboard's API shows (the report's own rankings, grids and cards),
that it follows a results file as records land, that it refuses what it must (foreign Host
headers, missing or wrong tokens, every write method, a public host without a token), that it
writes nothing, that runners publish what their experiments are doing, and that a real
`ramsweep serve` keeps looking and says why when its files break, and refuses in one line what it
cannot use."""

import importlib.util
import itertools
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from conftest import ARTIFACTS, CHROMIUM, DRIVER, baseline_record, browser, dashboard, experiment_record, requested_urls
from typer.testing import CliRunner

from ramsweep.cli import app as cli
from ramsweep.report.rows import group_of, leaderboard, load, metric
from ramsweep.sweep import claims as claims_module
from ramsweep.sweep.progress import Report, Tracker
from ramsweep.sweep.records import parse_record
from ramsweep.sweep.store import open_store

pytest.importorskip("starlette")
pytest.importorskip("httpx2")
from starlette.testclient import TestClient  # noqa: E402

from ramsweep.serve import allowed_hosts, resolve_token  # noqa: E402
from ramsweep.serve import app as app_module  # noqa: E402
from ramsweep.serve.app import COOKIE, HEADERS, create_app  # noqa: E402
from ramsweep.serve.feed import Feed  # noqa: E402

TOKEN = "a-test-token-of-some-length"
ROUTES = ["/", "/api", "/api/status", "/api/records", "/api/leaderboard", "/api/grids", "/api/experiments/k0",
          "/api/events", "/static/app.js"]


def grid_file(path, extra=()):
    """A 2x2x2 tier-bits grid (finished 10 minutes apart, the worst first), a failure, a
    baseline, and `extra` records."""
    store = open_store(path)
    for i, bits in enumerate(itertools.product((8, 9), repeat=3)):
        name = "grid_b" + "_".join(f"{b:02d}" for b in bits)
        row = experiment_record(name, f"k{i}", val_ppl=1000.0 + 100 * bits[0] + 10 * bits[1] + bits[2],
                                finished=f"2026-11-26T{(70 - 10 * i) // 60:02d}:{(70 - 10 * i) % 60:02d}:00+00:00")
        row["spec"] = {**row["spec"], "name": name, "tiers": ";".join(
            f"{c},{n},{b}" for c, n, b in zip(("100", "400", "rest"), (15, 10, 5), bits))}
        store.append(parse_record(row))
    store.append(parse_record(experiment_record("broken", "kx", status="failed")))
    store.append(parse_record(baseline_record("unigram", 1500.0)))
    for r in extra:
        store.append(parse_record(r))
    return store


def client(path, **options) -> TestClient:
    return TestClient(create_app(Feed([path]), **options), base_url="http://127.0.0.1")


def test_the_api_shows_what_the_report_shows(results_path):
    grid_file(results_path)
    with client(results_path) as c:
        status = c.get("/api/status").json()["files"][0]
        assert status["counts"]["done"] == 8 and status["counts"]["failed"] == 1
        board = c.get("/api/leaderboard", params={"sort_by": "val_ppl", "top": 5}).json()
        group = board["groups"][0]
        experiments = [row["cells"]["name"] for row in group["rows"] if not row["baseline"]]
        by = metric("val_ppl")
        expected = [r.name for r in leaderboard(load([results_path]), by) if r.kind == "experiment"][:5]
        assert experiments == expected  # the report's ranking, cut at top
        assert any(row["baseline"] and "unigram" in row["cells"]["name"] for row in group["rows"])
        grids = c.get("/api/grids").json()["grids"]
        assert len(grids) == 1 and grids[0]["done"] == 8 and grids[0]["total"] == 8
        assert grids[0]["panels"][0]["rows"][0]["text"][0] == "1,888"  # bits 8, 8, 8: 1000 + 800 + 80 + 8
        latest = c.get("/api/records").json()
        assert [r["name"] for r in latest["failed"]] == ["broken"]
        assert [r["name"] for r in latest["latest"][:2]] == ["grid_b08_08_08", "grid_b08_08_09"]  # newest first
        card = c.get("/api/experiments/k0").json()
        assert card["record"]["name"] == "grid_b08_08_08" and "<h3>grid_b08_08_08</h3>" in card["card_html"]
        assert c.get("/api/experiments/nope").status_code == 404
        assert c.get("/api/leaderboard", params={"sort_by": "nope"}).json()["error"].startswith("sort_by: 'nope'")
        assert c.get("/api/records", params={"limit": "0"}).status_code == 400


def test_the_dashboard_ranks_bitwise_beside_tiered_and_its_card_shows_bits_and_bands(tmp_path):
    """Real runs of both architectures on one corpus: one leaderboard (the bitwise shape in the
    shape column, no PPL floor of its own), and the bitwise card's per-bit and per-band tables."""
    from test_report import bitwise_and_tiered

    bw, tiered = bitwise_and_tiered()
    path = tmp_path / "r.jsonl"
    store = open_store(path)
    for row in (bw, tiered):
        store.append(parse_record(row))
    record = parse_record(bw)
    with client(path) as c:
        group, = c.get("/api/leaderboard").json()["groups"]
        cells = {row["cells"]["name"]: row["cells"] for row in group["rows"]}
        assert cells["bw"]["tiers"] == "bitwise [3,4,5,6,7,8,9,10,11,12]x6 quad_weighted r=0.5"
        assert cells["bw"]["test PPL"] == f"{record.metrics.test.ppl:,.0f}" and set(cells) == {"bw", "tiered"}
        assert group["ppl_floor"] == [f"{tiered['metrics']['test']['ppl_floor']:,.0f}"]
        card = c.get("/api/experiments/kbw").json()["card_html"]
    assert "Per bit cluster, test split" in card and "Per frequency band of the target, test split" in card
    bit, band = record.metrics.test.bits[9], record.metrics.test.bands[2]
    assert (f"<td>9</td>\n<td>12</td>\n<td>6</td>\n<td>{100 * bit.accuracy:.2f}%</td>\n<td>{bit.ce:.4f}</td>"
            in card)
    assert f"<td>501–600</td>\n<td>100</td>\n<td>{band.share:.1f}</td>\n<td>{band.ppl:,.0f}</td>" in card


def test_the_card_of_a_search_in_phases_shows_each_phase_its_candidates_and_history(tmp_path):
    """A real search in phases: the dashboard's card has the report's phase table, and per phase
    its chosen sizes per unit, its candidates on validation (the chosen one marked) and its
    history on the fitness slice (the best line marked); the leaderboard ranks it as any other."""
    from test_report import searched_in_phases

    searched = searched_in_phases()
    path = tmp_path / "r.jsonl"
    open_store(path).append(parse_record(searched))
    with client(path) as c:
        group, = c.get("/api/leaderboard").json()["groups"]
        assert [row["cells"]["name"] for row in group["rows"]] == ["bw_phases"]
        card = c.get("/api/experiments/kph").json()["card_html"]
    assert "Search in phases, CE on 600 slice examples: 6×6/6 → " in card
    assert "<th>sizes: start → chosen</th>\n<th>slice CE</th>\n<th>val CE</th>" in card
    for phase, kind in zip(searched["search"]["phases"], ("grid", "neurons GA+TS", "bits TS")):
        val = {c["label"]: c["validation_ce"] for c in phase["selection"]}
        label = phase["chosen_label"]
        moved = f"{val['start']:.4f} kept" if label == "start" else f"{val['start']:.4f} → {val[label]:.4f}"
        assert f"<td>{phase['phase']}</td>\n<td>{kind}</td>" in card
        assert f"<td>{moved}</td>\n<td>{label}</td>\n<td>{phase['evaluations']}</td>" in card
        assert f"Phase {phase['phase']}, {kind}: chose {label} (" in card
        chosen = next(c for c in phase["selection"] if c["label"] == label)
        assert (f"<td>{chosen['validation_ce']:.4f}</td>\n<td>{100 * chosen['validation_accuracy']:.2f}%</td>\n"
                f"<td>chosen</td>") in card
    grid = searched["search"]["phases"][0]
    best = min(grid["history"], key=lambda h: h["ce"])
    assert (f"<td>{best['step']}</td>\n<td>{best['neurons']}</td>\n<td>{best['bits']}</td>\n<td>{best['ce']:.4f}</td>"
            in card)
    last = searched["search"]["phases"][1]["history"][-1]
    assert f"<td>{last['stage'].upper()}</td>\n<td>{last['step']}</td>\n<td>{last['best_ce']:.4f}</td>" in card
    assert card.count("History on the fitness slice") == 3 and card.count("<td>best</td>") == 3


def test_a_search_in_phases_is_shown_as_text_never_as_markup(tmp_path):
    from test_report import synthetic_phases

    sneaky = experiment_record("x<script>alert(1)</script>", "ks",
                               search=synthetic_phases(label="<img src=x onerror=alert(1)>"))
    grid_file(tmp_path / "r.jsonl", [sneaky])
    with client(tmp_path / "r.jsonl") as c:
        html = c.get("/api/experiments/ks").json()["card_html"]
    assert "Search in phases" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>" not in html and "<img" not in html


def test_a_record_is_shown_as_text_never_as_markup(tmp_path):
    sneaky = experiment_record("x<script>alert(1)</script>", "ks")
    sneaky["spec"] = {**sneaky["spec"], "description": "<img src=x onerror=alert(1)>"}
    grid_file(tmp_path / "r.jsonl", [sneaky])
    with client(tmp_path / "r.jsonl") as c:
        found = c.get("/api/experiments/ks").json()
    html = found["card_html"]
    assert "<script>" not in html and "<img" not in html and "&lt;img" in html
    assert found["charts"] and all("x&lt;script&gt;alert(1)&lt;/script&gt;" in svg_of(svg).findtext(f"{SVG}title")
                                   or "&lt;script" in svg for svg in found["charts"])


SVG = "{http://www.w3.org/2000/svg}"


def svg_of(markup: str) -> ET.Element:
    """A chart as the page parses it: SVG with no script, no style attribute and no link out."""
    assert "<script" not in markup and "style=" not in markup and "href" not in markup
    return ET.fromstring(markup)


def test_the_night_chart_draws_each_result_when_it_finished_and_the_best_so_far(tmp_path):
    """/api/night: per data group, a dot an ok experiment at its finishing time and a step line of
    the best so far in the metric asked for (the failure and the baseline are not results)."""
    grid_file(tmp_path / "r.jsonl")
    with client(tmp_path / "r.jsonl") as c:
        night = c.get("/api/night").json()
        by_accuracy = c.get("/api/night?sort_by=val_acc").json()
    group, = night["groups"]
    assert group["group"] == group_of(parse_record(experiment_record()).data) and night["sort_by"] == "val_ppl"
    svg = svg_of(group["svg"])
    dots = sorted((float(d.get("cx")), float(d.get("cy"))) for d in svg.iter(f"{SVG}circle"))
    assert len(dots) == 8
    gaps = [b[0] - a[0] for a, b in zip(dots, dots[1:])]
    assert max(gaps) - min(gaps) <= 0.2 and min(gaps) > 10  # finished 10 minutes apart: evenly spaced (0.1 px)
    assert [y for _, y in dots] == sorted(y for _, y in dots)  # the worst first: each one lower on the chart
    step, = [p for p in svg.iter(f"{SVG}polyline") if p.get("class") == "step"]
    corners = [tuple(map(float, p.split(","))) for p in step.get("points").split()]
    assert corners[0] == dots[0] and corners[-1] == dots[-1]  # from the first result to the best, the last
    assert [y for _, y in corners] == sorted(y for _, y in corners)  # the best so far only falls
    assert "hours since the first result (" in group["svg"] and "best val_ppl so far" in group["svg"]
    assert "best val_acc so far" in by_accuracy["groups"][0]["svg"]


def test_searches_are_listed_and_a_cards_charts_draw_its_history_and_its_units(tmp_path):
    """/api/searches: the report's search table from the feed's summaries (the same cells as from
    the whole record); a searched experiment's card: its history over every phase (a point a
    history line, each phase's start marked) and its test accuracy and CE per bit cluster; a
    tiered one's per tier."""
    from test_report import searched_in_phases

    from ramsweep.report.rows import search_rows
    from ramsweep.report.tables import search_cells

    searched = searched_in_phases()
    path = tmp_path / "r.jsonl"
    grid_file(path, [searched])
    with client(path) as c:
        searches = c.get("/api/searches").json()
        card = c.get("/api/experiments/kph").json()
        tiered = c.get("/api/experiments/k0").json()
    record = parse_record(searched)
    row, = searches["rows"]
    assert row == {"key": "kph", "cells": search_cells(search_rows([record])[0])}
    history, accuracy, ce = map(svg_of, card["charts"])
    phases = searched["search"]["phases"]
    best, mean = list(history.iter(f"{SVG}polyline"))
    assert len(best.get("points").split()) == sum(len(p["history"]) for p in phases)
    assert len(mean.get("points").split()) == sum(len(p["history"]) for p in phases if p["search"] != "grid")
    marks = [t.text for t in history.iter(f"{SVG}text") if t.get("class") == "mark"]
    assert marks == [f"{p['phase']} {kind}" for p, kind in zip(phases, ("grid", "neurons GA+TS", "bits TS"))]
    bits = record.metrics.test.bits
    heights = [float(r.get("height")) for r in accuracy.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert len(heights) == len(bits)
    assert heights.index(max(heights)) == max(range(len(bits)), key=lambda i: bits[i].accuracy)
    assert sum(r.get("class") == "bar" for r in ce.iter(f"{SVG}rect")) == len(bits)
    assert [len([r for r in svg_of(c).iter(f"{SVG}rect") if r.get("class") == "bar"]) for c in tiered["charts"]] == [1, 1]


def test_the_feed_follows_appends_and_replacements(tmp_path):
    journal = tmp_path / "r.jsonl"
    store = grid_file(journal)
    feed = Feed([journal])
    assert feed.refresh() and not feed.refresh()  # nothing new: nothing re-read
    version = feed.version
    with open(journal, "ab") as f:  # a line being appended: not read until its newline is there
        f.write(b'{"kind": "experiment"')
    assert not feed.refresh()
    journal.write_bytes(journal.read_bytes()[: -len(b'{"kind": "experiment"')])
    store.append(parse_record(experiment_record("late", "klate", val_ppl=10.0, finished="2026-11-26T02:00:00+00:00")))
    assert feed.refresh() and feed.version == version + 1
    assert feed.newest(1)[0][1].name == "late"
    document = tmp_path / "r.json"
    grid_file(document)
    feed = Feed([document])
    feed.refresh()
    open_store(document).append(parse_record(experiment_record("grid_b08_08_08", "k0", val_ppl=1.0)))  # a rerun
    assert feed.refresh()
    assert [s.metrics.validation.ppl for s in feed.summaries() if s.key == "k0"] == [1.0]


def test_no_route_accepts_a_write_method(tmp_path):
    grid_file(tmp_path / "r.jsonl")
    with client(tmp_path / "r.jsonl") as c:
        for route, method in itertools.product(ROUTES, ("POST", "PUT", "PATCH", "DELETE", "OPTIONS")):
            response = c.request(method, route)
            assert response.status_code == 405, (method, route)
            assert "access-control-allow-origin" not in response.headers


def test_a_foreign_host_header_is_refused(tmp_path):
    grid_file(tmp_path / "r.jsonl")
    with client(tmp_path / "r.jsonl") as c:
        assert c.get("/api/status", headers={"host": "attacker.example"}).status_code == 400
        assert c.get("/api/status", headers={"host": "localhost:8765"}).status_code == 200
    assert "attacker.example" not in allowed_hosts("0.0.0.0")
    assert "nas.lan" in allowed_hosts("0.0.0.0", ["nas.lan"])


def test_the_token_is_required_and_kept_in_a_cookie(tmp_path):
    grid_file(tmp_path / "r.jsonl")
    with client(tmp_path / "r.jsonl", token=TOKEN) as c:
        assert c.get("/api/status").status_code == 401
        assert c.get("/").status_code == 401
        assert c.get("/", params={"token": "wrong-token-of-some-length"}).status_code == 403
        first = c.get("/", params={"token": TOKEN}, follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/"
        cookie = first.cookies[COOKIE]
        assert TOKEN not in cookie and "httponly" in first.headers["set-cookie"].lower()
        assert "samesite=strict" in first.headers["set-cookie"].lower()
        c.cookies.clear()
        assert c.get("/api/status", headers={"cookie": f"{COOKIE}={cookie}"}).status_code == 200
        assert c.get("/", headers={"cookie": f"{COOKIE}={cookie}"}).status_code == 200
        assert c.get("/api/status", headers={"cookie": f"{COOKIE}={'0' * 64}"}).status_code == 403
        assert c.get("/api/status", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/status", headers={"authorization": "Bearer nope"}).status_code == 403


def test_a_public_host_without_a_token_exits_2_with_one_line(tmp_path):
    for args in (["--host", "0.0.0.0"], ["--host", "192.168.1.20"], ["--host", "0.0.0.0", "--token", "short"]):
        result = CliRunner().invoke(cli, ["serve", str(tmp_path / "r.jsonl"), *args])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ramsweep: error: --"), result.output
    assert resolve_token("127.0.0.1", None) is None
    assert len(resolve_token("0.0.0.0", "auto")) >= 32


def test_the_server_writes_nothing(tmp_path):
    """Every endpoint, a stream, and the page: the folder of the results is byte for byte as it was."""
    grid_file(tmp_path / "r.jsonl")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    with client(tmp_path / "r.jsonl") as c:
        for _ in range(20):
            for route in ROUTES:
                if route != "/api/events":
                    assert c.get(route).status_code in (200, 404)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert after == before


# ------------------------------------------------------------------ a real `ramsweep serve` under faults

SERVE = [sys.executable, "-m", "ramsweep", "serve"]
SERVE_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # this checkout's code, from any cwd
# As root, permissions do not bind; setpriv drops the capabilities that override them.
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
needs_permissions = pytest.mark.skipif(bool(UNPRIVILEGED) and not shutil.which("setpriv"),
                                       reason="as root, needs setpriv to make permissions bind")


@contextmanager
def served(results, *args, prefix=()):
    """`ramsweep serve RESULTS ARGS` in its own process on a free port: its base URL and process."""
    proc = subprocess.Popen([*prefix, *SERVE, str(results), "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=SERVE_ENV)
    try:
        line = ""
        while "ramsweep serve: http" not in line:
            line = proc.stdout.readline()
            assert line, f"serve ended: {proc.stderr.read()}"
        yield "http://127.0.0.1:" + re.search(r":(\d+)/", line)[1], proc
        assert proc.poll() is None, "the dashboard died"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def get(url: str, path: str, **headers) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url + path, headers=headers), timeout=10) as response:
        return orjson.loads(response.read())


def first_event(url: str) -> dict:
    """The first `update` of the event stream: the status as it stands."""
    with urllib.request.urlopen(url + "/api/events", timeout=10) as stream:
        for line in stream:
            if line.startswith(b"data: "):
                return orjson.loads(line[6:])
    raise AssertionError("the event stream ended")


def until(check, seconds: float, what: str):
    """Poll `check` until it returns something true (returned), failing after `seconds`."""
    end = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < end, f"not within {seconds} s: {what}"
        time.sleep(0.1)
    return found


def shown(url: str) -> tuple[str | None, set[str]]:
    """The file's error as the dashboard says it, and the names of the latest results it shows."""
    return get(url, "/api/status")["files"][0]["error"], {r["name"] for r in get(url, "/api/records")["latest"]}


def fifo(path):
    os.replace(path, path.with_suffix(".kept"))
    os.mkfifo(path)
    return lambda: (path.unlink(), os.replace(path.with_suffix(".kept"), path))


def link_loop(path):
    os.replace(path, path.with_suffix(".kept"))
    os.symlink(path.name, path)  # a link to itself
    return lambda: (path.unlink(), os.replace(path.with_suffix(".kept"), path))


def no_search_permission(path):
    path.parent.chmod(0o600)
    return lambda: path.parent.chmod(0o755)


def file_in_place_of_its_folder(path):
    folder = path.parent
    os.replace(folder, folder.with_name("kept"))
    folder.write_text("not a folder\n")
    return lambda: (folder.unlink(), os.replace(folder.with_name("kept"), folder))


@pytest.mark.parametrize("breaking", [fifo, link_loop, pytest.param(no_search_permission, marks=needs_permissions),
                                      file_in_place_of_its_folder], ids=lambda f: f.__name__)
def test_a_broken_results_path_is_said_and_the_page_recovers_once_it_is_restored(tmp_path, breaking):
    """The dashboard keeps showing what it read and says why it cannot read more (on the API and
    the event stream), never stops looking, and catches up once the file is back."""
    results = tmp_path / "runs" / "r.jsonl"
    results.parent.mkdir()
    store = grid_file(results)
    with served(results, prefix=UNPRIVILEGED if breaking is no_search_permission else ()) as (url, proc):
        until(lambda: shown(url)[1] >= {"grid_b08_08_08", "broken"}, 10, "the results shown")
        restore = breaking(results)
        try:
            error, names = until(lambda: (now := shown(url))[0] and now, 15, "the error shown")
            assert str(results) in error and "\n" not in error
            assert "grid_b08_08_08" in names  # what was read stays on the page
            assert str(results) in first_event(url)["files"][0]["error"]
        finally:
            restore()
        store.append(parse_record(experiment_record("after", "kafter", val_ppl=10.0)))
        until(lambda: (now := shown(url))[0] is None and "after" in now[1], 15, "the recovery shown")
        assert proc.poll() is None


def test_a_journal_with_one_bad_line_shows_the_records_before_it(tmp_path):
    results = tmp_path / "r.jsonl"
    grid_file(results)
    good = results.stat().st_size
    with open(results, "ab") as f:
        f.write(b"{not a record}\n" + orjson.dumps(experiment_record("after_the_bad_line", "kbad")) + b"\n")
    with served(results) as (url, _):
        error, names = until(lambda: (now := shown(url))[0] and now, 10, "the bad line named")
        assert f"byte {good}" in error or "line 11" in error, error
        assert {"grid_b08_08_08", "grid_b09_09_09", "broken"} <= names and "after_the_bad_line" not in names


SERVE_REFUSES = {
    "a symbolic-link loop": (lambda tmp: ["loop"], 3),
    "a folder without search permission": (lambda tmp: ["locked/r.jsonl"], 3),
    "a path under a file": (lambda tmp: ["a-file/r.jsonl"], 3),
    "a 300-character name": (lambda tmp: ["x" * 294 + ".jsonl"], 3),
    "--port -1": (lambda tmp: ["r.jsonl", "--port", "-1"], 2),
    "--port 70000": (lambda tmp: ["r.jsonl", "--port", "70000"], 2),
    "--allow-host *": (lambda tmp: ["r.jsonl", "--allow-host", "*"], 2),
    "--allow-host *.example.com": (lambda tmp: ["r.jsonl", "--allow-host", "*.example.com"], 2),
    "--allow-host with a port": (lambda tmp: ["r.jsonl", "--allow-host", "nas.lan:8765"], 2),
    "a token of 16 spaces": (lambda tmp: ["r.jsonl", "--host", "0.0.0.0", "--token", " " * 16], 2),
    "a token of one character": (lambda tmp: ["r.jsonl", "--host", "0.0.0.0", "--token", "a" * 32], 2),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=needs_permissions if "permission" in c else ())
                                  for c in SERVE_REFUSES])
def test_serve_refuses_what_it_cannot_use_in_one_line(tmp_path, case):
    args, code = SERVE_REFUSES[case]
    os.symlink("loop", tmp_path / "loop")
    (tmp_path / "locked").mkdir(mode=0o600)
    (tmp_path / "a-file").write_text("a file\n")
    prefix = UNPRIVILEGED if "permission" in case else []
    # --port 0 first: a --port under test comes after it and wins
    argv = [*prefix, *SERVE, "--port", "0", *args(tmp_path)]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=SERVE_ENV)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = err.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("ramsweep: error: "), (out, err)
    flag = case.split()[0] if case.startswith("--") else "--token" if "token" in case else args(tmp_path)[0][:20]
    assert flag in lines[0] and "ramsweep serve: http" not in out, (out, err)


def test_a_bugs_500_carries_the_security_headers_and_no_detail(tmp_path, monkeypatch):
    feed = Feed([tmp_path / "r.jsonl"])
    monkeypatch.setattr(feed, "newest", lambda limit: 1 / 0)
    with TestClient(create_app(feed), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        response = c.get("/api/records")
    assert response.status_code == 500 and "ZeroDivisionError" in response.json()["error"]
    assert all(response.headers.get(k) == v for k, v in HEADERS.items()), response.headers


def test_the_host_check_refusal_carries_the_security_headers(tmp_path):
    grid_file(tmp_path / "r.jsonl")
    with served(tmp_path / "r.jsonl") as (url, _):
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(url, "/api/status", Host="attacker.example")
        assert refused.value.code == 400
        for name, value in HEADERS.items():
            assert refused.value.headers[name] == value, name


@pytest.mark.slow
def test_an_idle_dashboard_does_not_read_a_long_torn_tail_again(tmp_path):
    """50 MB of a record being appended (no newline yet) costs one read, not one per look."""
    results = tmp_path / "r.jsonl"
    grid_file(results)
    with open(results, "ab") as f:
        f.write(b'{"kind": "experiment", "name": "' + b"x" * 50_000_000)
    with served(results) as (url, proc):
        until(lambda: "grid_b08_08_08" in shown(url)[1], 20, "the results shown")
        time.sleep(1.0)  # the first reads are done
        before, start = cpu_s(proc.pid), time.monotonic()
        time.sleep(4.0)  # 8 looks
        share = (cpu_s(proc.pid) - before) / (time.monotonic() - start)
    assert share < 0.03, f"an idle dashboard used {share:.1%} of a core"


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used (user and system, /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_read_that_does_not_return_is_said_and_the_dashboard_answers_meanwhile(tmp_path, monkeypatch):
    """A hung network mount cannot be made in a test: a follow that blocks until released stands in."""
    monkeypatch.setattr(app_module, "STALL_S", 0.5)
    grid_file(tmp_path / "r.jsonl")
    feed = Feed([tmp_path / "r.jsonl"])
    store, release = feed.files[0].store, threading.Event()
    follow = store.follow

    def hung(*args, **kwargs):
        release.wait()
        return follow(*args, **kwargs)

    with TestClient(create_app(feed), base_url="http://127.0.0.1") as c:
        assert c.get("/api/status").json()["files"][0]["counts"]["done"] == 8
        monkeypatch.setattr(store, "follow", hung)
        try:
            error = until(lambda: c.get("/api/status").json()["files"][0]["error"], 5, "the stall said")
            assert "still reading" in error and str(tmp_path / "r.jsonl") in error
            assert c.get("/api/records").json()["latest"]  # requests are answered meanwhile
        finally:
            release.set()
        until(lambda: c.get("/api/status").json()["files"][0]["error"] is None, 5, "the stall over")


# ------------------------------------------------------------------ runners publish their progress


def test_a_tracker_turns_phases_into_a_rising_fraction():
    t = Tracker()
    t.start("k")
    seen = []
    for phase, f in [("training", 0.0), ("training", 0.5), ("validation", 0.0), ("validation", 1.0),
                     ("calibration", 0.0), ("test", 0.5), ("test", 1.0)]:
        t.update(Report("k", phase, f))
        seen.append(t.published("k")["fraction"])
    assert seen == sorted(seen) and seen[0] == 0.0 and seen[-1] == 1.0
    t.finish("k", type("Timing", (), {"train_s": 8.0, "validation_s": 1.0, "test_s": 1.0})())
    assert t.shares["train_s"] == pytest.approx(0.8)  # learned from the one finished experiment
    assert t.published("k") == {}


def test_a_runner_publishes_each_phase_and_itself_then_leaves_nothing(tmp_path, monkeypatch):
    import ramsweep

    monkeypatch.setattr(claims_module, "HEARTBEAT_S", 0.05)
    set_path = tmp_path / "three.yaml"
    set_path.write_text("experiments:\n" + "".join(
        f'  - {{name: e{b}, tiers: "100,8,{b};rest,2,{b}", context: 2, negatives: 5}}\n' for b in (6, 7, 8)))
    store = open_store(tmp_path / "r.jsonl")
    seen_phases, seen_runners = set(), []
    done = threading.Event()

    def watch():
        while not done.is_set():
            try:
                seen_phases.update((c.phase, c.fraction is None or 0 <= c.fraction <= 1) for c in store.claims().values())
                seen_runners.extend(store.runners().values())
            except Exception:  # noqa: BLE001 - a read between two writes may fail; the next one won't
                pass
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        ramsweep.run_set(str(set_path), results=store.path)
    finally:
        done.set()
        watcher.join()
    phases = {phase for phase, _ in seen_phases if phase}
    assert phases & {"training", "validation", "calibration", "test"}, seen_phases
    assert all(ok for _, ok in seen_phases)
    assert seen_runners and {(r.set, r.planned, r.pid) for r in seen_runners} == {("three", 3, os.getpid())}
    assert min(r.left for r in seen_runners) < 3  # it counts down
    assert store.claims() == {} and store.runners() == {}  # nothing left behind


# ------------------------------------------------------------------ in a real browser

needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER and importlib.util.find_spec("selenium")),
                                   reason="needs Debian's chromium and chromium-driver, and selenium")


def page_problems(driver, url: str) -> list:
    """Console errors, and requests to anywhere but this server."""
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    elsewhere = [u for u in requested_urls(driver) if not u.startswith(url)]
    return errors + elsewhere


@needs_browser
@pytest.mark.parametrize("viewport, size", [("desktop", (1280, 900)), ("phone", (390, 844))])
def test_the_page_shows_the_sweep_with_nothing_from_elsewhere(tmp_path, viewport, size):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    grid_file(tmp_path / "r.jsonl")
    with dashboard(tmp_path / "r.jsonl") as url:
        driver = browser(*size)
        try:
            driver.get(url)
            wait = WebDriverWait(driver, 10)
            wait.until(lambda d: d.find_element(By.ID, "connection").text == "live")
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#leaderboards tbody tr")) == 9)  # 8 + baseline
            first = driver.find_element(By.CSS_SELECTOR, "#leaderboards tbody tr[data-key]")
            assert "grid_b08_08_08" in first.text  # the best by validation PPL
            assert len(driver.find_elements(By.CSS_SELECTOR, ".heatmap td")) == 8  # 2 panels of 2 x 2
            assert "broken" in driver.find_element(By.ID, "failed").text
            night = driver.find_element(By.CSS_SELECTOR, "#night svg")  # the night: a dot a result, the best so far
            assert len(night.find_elements(By.CSS_SELECTOR, "circle")) == 8 and night.is_displayed()
            assert 200 < night.rect["width"] <= size[0] and night.rect["height"] > 60
            assert driver.execute_script("return document.documentElement.scrollWidth") <= size[0]
            ARTIFACTS.mkdir(exist_ok=True)
            assert driver.save_screenshot(str(ARTIFACTS / f"dashboard-{viewport}.png"))
            first.click()
            wait.until(lambda d: "grid_b08_08_08" in d.find_element(By.ID, "card-body").text)
            assert driver.find_element(By.ID, "card").is_displayed()
            charts = driver.find_elements(By.CSS_SELECTOR, "#card-body svg")  # accuracy and CE per tier
            assert len(charts) == 2 and all(c.rect["width"] <= size[0] for c in charts)
            driver.save_screenshot(str(ARTIFACTS / f"dashboard-card-{viewport}.png"))
            assert page_problems(driver, url) == []
        finally:
            driver.quit()


@pytest.mark.slow
@needs_browser
@pytest.mark.parametrize("viewport, size", [("desktop", (1280, 900)), ("phone", (390, 844))])
def test_a_search_is_listed_its_card_draws_its_history_and_a_flight_its_phase(tmp_path, viewport, size):
    """The searches table lists a search in phases; its card opens with its history over the
    phases and its figures per bit cluster, drawn within the page's width. An experiment in
    flight shows its phases: those done, the current one, those to come."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_report import searched_in_phases

    store = grid_file(tmp_path / "r.jsonl", [searched_in_phases()])
    runner = claims_module.Claims(store, about=lambda: {"set": "s", "planned": 10, "left": 1, "jobs": 1},
                                  progress=lambda key: {"phase": "validation", "fraction": 0.6, "eta_s": 30.0})
    assert runner.claim_next([("kq", "in_flight")], lambda key, latest: True, "s").key == "kq"
    runner.beat()
    with dashboard(tmp_path / "r.jsonl") as url:
        driver = browser(*size)
        try:
            driver.get(url)
            wait = WebDriverWait(driver, 10)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".flight .phases li.current"))
            steps = driver.find_elements(By.CSS_SELECTOR, ".flight .phases li")
            assert [(li.text, li.get_attribute("class")) for li in steps] == [
                ("load", "done"), ("train", "done"), ("validate", "current"), ("test", "")]
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#searches tbody tr")) == 1)
            row = driver.find_element(By.CSS_SELECTOR, "#searches tbody tr")
            assert row.text.startswith("bw_phases") and "phases" in row.text
            driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click()", row)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#card-body svg")) == 3)
            history = driver.find_element(By.CSS_SELECTOR, "#card-body svg")
            assert "the search's CE on the fitness slice" in history.find_element(By.TAG_NAME, "title").get_attribute(
                "textContent")
            assert history.is_displayed() and 200 < history.rect["width"] <= size[0]
            ARTIFACTS.mkdir(exist_ok=True)
            assert driver.save_screenshot(str(ARTIFACTS / f"dashboard-search-card-{viewport}.png"))
            assert page_problems(driver, url) == []
        finally:
            driver.quit()
            runner.release_all()


@pytest.mark.slow
@needs_browser
def test_a_result_shows_on_the_open_page_within_5_s_of_landing(tmp_path):
    """A real `ramsweep run` on the file the page shows: each result appears without a reload,
    and the runner with what its experiment is doing."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    set_path = tmp_path / "three.yaml"
    set_path.write_text("experiments:\n" + "".join(
        f'  - {{name: live{b}, tiers: "rest,1,{b}", context: 1, negatives: 5}}\n' for b in (4, 5, 6)))
    results = tmp_path / "r.jsonl"
    with dashboard(results) as url:
        driver = browser(390, 844)
        try:
            driver.get(url)
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "connection").text == "live")
            driver.execute_script("window.sameDocument = true")
            run = subprocess.Popen([sys.executable, "-m", "ramsweep", "run", "--set", str(set_path), "--results",
                                    str(results)], env={**os.environ, "RAMSWEEP_HEARTBEAT_S": "0.2"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            shown, saw_runner = set(), False
            while len(shown) < 3:
                assert run.poll() is None or len(landed(results)) > len(shown), run.stderr.read()
                saw_runner |= "runner " in driver.find_element(By.ID, "files").text
                for name in sorted(landed(results) - shown):
                    WebDriverWait(driver, 5, poll_frequency=0.1).until(
                        lambda d: name in d.find_element(By.ID, "latest").text, f"{name} not shown within 5 s")
                    shown.add(name)
                    if len(shown) == 1:
                        driver.save_screenshot(str(ARTIFACTS / "dashboard-live-phone.png"))
                time.sleep(0.05)
            assert run.wait(60) == 0
            assert saw_runner, "the page never showed the runner"
            assert driver.execute_script("return window.sameDocument") is True  # no reload
            assert page_problems(driver, url) == []
        finally:
            driver.quit()


@pytest.mark.slow
@needs_browser
def test_a_page_that_lost_its_server_reconnects_and_catches_up(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    results = tmp_path / "r.jsonl"
    store = grid_file(results)
    connection = lambda d: d.find_element(By.ID, "connection").text  # noqa: E731
    driver = browser(1280, 900)
    try:
        with dashboard(results) as url:
            port = int(url.rstrip("/").rsplit(":", 1)[1])
            driver.get(url)
            WebDriverWait(driver, 10).until(lambda d: connection(d) == "live")
        WebDriverWait(driver, 10).until(lambda d: connection(d) != "live")  # the server is gone: it says so
        store.append(parse_record(experiment_record("while_away", "kaway", val_ppl=10.0)))
        with dashboard(results, port=port):
            WebDriverWait(driver, 15).until(lambda d: "while_away" in d.find_element(By.ID, "latest").text)
            WebDriverWait(driver, 5).until(lambda d: connection(d) == "live")
    finally:
        driver.quit()


@pytest.mark.slow
@needs_browser
def test_without_server_sent_events_the_page_polls(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    results = tmp_path / "r.jsonl"
    store = grid_file(results)
    driver = browser(390, 844)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"})
        with dashboard(results) as url:
            driver.get(url)
            latest = lambda d: d.find_element(By.ID, "latest").text  # noqa: E731
            WebDriverWait(driver, 10).until(lambda d: "grid_b09_09_09" in latest(d))
            assert "polling" in driver.find_element(By.ID, "connection").text
            store.append(parse_record(experiment_record("polled", "kpolled", val_ppl=10.0)))
            WebDriverWait(driver, 8).until(lambda d: "polled" in latest(d))  # one poll every 5 s
            assert page_problems(driver, url) == []
    finally:
        driver.quit()


def landed(results) -> set[str]:
    """Names of the experiments recorded so far (complete lines only)."""
    if not results.exists():
        return set()
    lines = results.read_bytes().split(b"\n")[:-1]
    return {r["name"] for r in map(orjson.loads, lines) if r.get("kind") == "experiment"}


def test_the_latest_results_are_newest_first_across_files(tmp_path):
    tonight, last_week = tmp_path / "tonight.jsonl", tmp_path / "week.jsonl"
    new = experiment_record("tonight_run", "kn", val_ppl=10.0)
    new["finished"] = "2026-12-04T03:00:00+00:00"
    old = experiment_record("last_weeks_run", "ko", val_ppl=20.0)
    old["finished"] = "2026-11-27T03:00:00+00:00"
    open_store(tonight).append(parse_record(new))
    open_store(last_week).append(parse_record(old))
    feed = Feed([tonight, last_week])  # read in this order: before, last week's came out as the newest
    feed.refresh()
    assert [s.name for _, s in feed.newest(2)] == ["tonight_run", "last_weeks_run"]


def test_a_big_grids_night_is_thinned_but_keeps_every_new_best():
    """59,049 results would be 59,049 dots on a phone: at most MAX_DOTS, evenly spaced, plus every
    result that set a new best (the step line's corners), which are all kept."""
    from types import SimpleNamespace

    import numpy as np

    from ramsweep.report import charts

    rng = np.random.default_rng(1)
    values = 1000 + 500 * rng.random(20_000)
    results = [SimpleNamespace(kind="experiment", ok=True, finished=f"2026-12-04T{k // 3600 % 24:02d}:{k // 60 % 60:02d}:"
                               f"{k % 60:02d}+00:00", metrics=SimpleNamespace(validation=SimpleNamespace(ppl=v)))
               for k, v in enumerate(values)]
    svg = svg_of(charts.best_so_far(results, metric("val_ppl"), "a big grid"))
    dots = {(float(c.get("cx")), float(c.get("cy"))) for c in svg.iter(f"{SVG}circle")}
    step, = [p for p in svg.iter(f"{SVG}polyline") if p.get("class") == "step"]
    corners = [tuple(map(float, p.split(","))) for p in step.get("points").split()][0::2]  # each new best, the end
    news = int((values == np.minimum.accumulate(values)).sum())  # results that set a new best
    assert len(corners) - 1 == news and set(corners[:-1]) <= dots  # every new best is drawn
    assert charts.MAX_DOTS <= len(dots) <= charts.MAX_DOTS + news
