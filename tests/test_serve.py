"""`ramsweep serve`: what the dashboard's API shows (the report's own rankings, grids and cards),
that it follows a results file as records land, that it refuses what it must (foreign Host
headers, missing or wrong tokens, every write method, a public host without a token), that it
writes nothing, and that runners publish what their experiments are doing."""

import importlib.util
import itertools
import os
import subprocess
import sys
import threading
import time

import orjson
import pytest
from conftest import ARTIFACTS, CHROMIUM, DRIVER, baseline_record, browser, dashboard, experiment_record, requested_urls
from typer.testing import CliRunner

from ramsweep.cli import app as cli
from ramsweep.report.rows import leaderboard, load, metric
from ramsweep.sweep import claims as claims_module
from ramsweep.sweep.progress import Report, Tracker
from ramsweep.sweep.records import parse_record
from ramsweep.sweep.store import open_store

pytest.importorskip("starlette")
pytest.importorskip("httpx2")
from starlette.testclient import TestClient  # noqa: E402

from ramsweep.serve import allowed_hosts, resolve_token  # noqa: E402
from ramsweep.serve.app import COOKIE, create_app  # noqa: E402
from ramsweep.serve.feed import Feed  # noqa: E402

TOKEN = "a-test-token-of-some-length"
ROUTES = ["/", "/api", "/api/status", "/api/records", "/api/leaderboard", "/api/grids", "/api/experiments/k0",
          "/api/events", "/static/app.js"]


def grid_file(path, extra=()):
    """A 2x2x2 tier-bits grid, a failure, a baseline, and `extra` records."""
    store = open_store(path)
    for i, bits in enumerate(itertools.product((8, 9), repeat=3)):
        name = "grid_b" + "_".join(f"{b:02d}" for b in bits)
        row = experiment_record(name, f"k{i}", val_ppl=1000.0 + 100 * bits[0] + 10 * bits[1] + bits[2])
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
        assert latest["latest"][0]["name"] == "broken"  # newest first
        card = c.get("/api/experiments/k0").json()
        assert card["record"]["name"] == "grid_b08_08_08" and "<h3>grid_b08_08_08</h3>" in card["card_html"]
        assert c.get("/api/experiments/nope").status_code == 404
        assert c.get("/api/leaderboard", params={"sort_by": "nope"}).json()["error"].startswith("sort_by: 'nope'")
        assert c.get("/api/records", params={"limit": "0"}).status_code == 400


def test_a_record_is_shown_as_text_never_as_markup(tmp_path):
    sneaky = experiment_record("x<script>alert(1)</script>", "ks")
    sneaky["spec"] = {**sneaky["spec"], "description": "<img src=x onerror=alert(1)>"}
    grid_file(tmp_path / "r.jsonl", [sneaky])
    with client(tmp_path / "r.jsonl") as c:
        html = c.get("/api/experiments/ks").json()["card_html"]
    assert "<script>" not in html and "<img" not in html and "&lt;img" in html


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
    store.append(parse_record(experiment_record("late", "klate", val_ppl=10.0)))
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
            assert driver.execute_script("return document.documentElement.scrollWidth") <= size[0]
            ARTIFACTS.mkdir(exist_ok=True)
            assert driver.save_screenshot(str(ARTIFACTS / f"dashboard-{viewport}.png"))
            first.click()
            wait.until(lambda d: "grid_b08_08_08" in d.find_element(By.ID, "card-body").text)
            assert driver.find_element(By.ID, "card").is_displayed()
            driver.save_screenshot(str(ARTIFACTS / f"dashboard-card-{viewport}.png"))
            assert page_problems(driver, url) == []
        finally:
            driver.quit()


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
