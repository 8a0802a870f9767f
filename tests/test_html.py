"""The HTML report as a reader sees it: opened in a real headless browser (Debian's chromium,
driven by Selenium through chromedriver; no browser download), on a desktop and on a
phone-sized screen: no console error, no network request, the leaderboard and an SVG plot
visible. A screenshot of each is kept in tests/artifacts/. A report of hostile set and results
files shows their HTML as text: no script runs and no request leaves the page."""

import itertools
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ARTIFACTS, CHROMIUM, DRIVER, baseline_record, browser, experiment_record

from ramsweep.report import report
from ramsweep.sweep.records import parse_record
from ramsweep.sweep.store import open_store

pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """An HTML report of a small 3-tier grid with seeds, a failure and baselines."""
    folder = tmp_path_factory.mktemp("html")
    store = open_store(folder / "results.jsonl")
    for i, bits in enumerate(itertools.product((8, 9), repeat=3)):
        name = "grid_b" + "_".join(f"{b:02d}" for b in bits)
        row = experiment_record(name, name, val_ppl=1000.0 + 100 * bits[0] + 10 * bits[1] + bits[2],
                                test_ppl=900.0 + 50 * i)
        row["spec"] = {**row["spec"], "name": name, "tiers": ";".join(
            f"{c},{n},{b}" for c, n, b in zip(("100", "400", "rest"), (15, 10, 5), bits))}
        store.append(parse_record(row))
    store.append(parse_record(experiment_record("broken", "kx", status="failed")))
    store.append(parse_record(baseline_record("unigram", 300.0)))
    path = folder / "report.html"
    path.write_text(report(store.path, "html"))
    return path


@pytest.mark.parametrize("viewport, size", [("desktop", (1280, 900)), ("phone", (390, 844))])
def test_the_html_report_opens_offline_with_its_leaderboard_and_plots(page, viewport, size):
    from selenium.webdriver.common.by import By

    driver = browser(*size)
    try:
        driver.get(page.as_uri())
        tables = driver.find_elements(By.TAG_NAME, "table")
        assert tables and tables[0].is_displayed() and "grid_b09_09_09" not in tables[0].text[:0]
        assert "ranked by val_ppl" in driver.find_element(By.TAG_NAME, "h2").text
        svgs = [s for s in driver.find_elements(By.CSS_SELECTOR, ".plots svg") if s.size["width"] > 50]
        assert len(svgs) >= 4  # metric vs bits, empty-hit vs bits, accuracy vs PPL, the grid's heatmap
        driver.execute_script("arguments[0].scrollIntoView()", svgs[0])
        assert svgs[0].is_displayed()
        assert driver.execute_script("return window.innerWidth") == size[0]
        assert driver.execute_script("return document.documentElement.scrollWidth") <= size[0], \
            "the page is wider than the screen (tables scroll inside themselves)"
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        urls = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
        fetched = {u for u in urls if not u.startswith("data:")}  # inline images of the heatmaps: no request
        assert fetched <= {page.as_uri()}, f"network requests: {fetched}"
        ARTIFACTS.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / f"report-{viewport}.png"))
    finally:
        driver.quit()


# ------------------------------------------------------------------ hostile text in set and results files


def payloads(origin: str) -> list[str]:
    """Markup that, were it HTML, would run script or load something from `origin` (each writes
    document.title or requests a path of its own there)."""
    return [f"<script>document.title='ran';fetch('{origin}/script')</script>",
            f"<img src=x onerror=\"document.title='ran';fetch('{origin}/onerror')\">",
            f"<iframe src=\"{origin}/iframe\"></iframe>",
            f"<a href=\"javascript:fetch('{origin}/anchor')\">an html link</a>",
            f"[a markdown link](javascript:fetch('{origin}/link'))",
            f"![a remote image]({origin}/image.png)",
            f"<link rel=\"stylesheet\" href=\"{origin}/style.css\">"]


def hostile_records(origin: str) -> list[dict]:
    """Records as a results file from anywhere may hold them: markup in names, the set, notes, an error."""
    script, onerror, iframe, *_ = payloads(origin)
    named = experiment_record(onerror, "k-named", set=iframe)
    named["spec"] |= {"description": script, "notes": "\n".join(payloads(origin))}
    return [named, experiment_record(script, "k-failed", status="failed", error=f"RuntimeError: {onerror}")]


@pytest.fixture(scope="module")
def listener():
    """A local web server that records every path requested of it: its origin, then the paths."""
    requested: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self):
            requested.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", requested
    server.shutdown()


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory, listener):
    """`ramsweep run` of a set whose notes and description are markup, hostile records added to
    its results file, then `ramsweep report --format html` of it: the page's path."""
    origin, _ = listener
    folder = tmp_path_factory.mktemp("hostile")
    experiment = {"name": "alpha", "tiers": "30,2,6;rest,1,4", "context": 2, "negatives": 20,
                  "description": payloads(origin)[0], "notes": "\n".join(payloads(origin))}
    (folder / "hostile.yaml").write_text(json.dumps({"description": payloads(origin)[2],  # JSON is YAML
                                                    "experiments": [experiment]}))
    ramsweep = [sys.executable, "-m", "ramsweep"]
    subprocess.run([*ramsweep, "run", "--set", "hostile.yaml", "--results", "results.jsonl"], cwd=folder,
                   check=True, capture_output=True)
    store = open_store(folder / "results.jsonl")
    for row in hostile_records(origin):
        store.append(parse_record(row))
    page = subprocess.run([*ramsweep, "report", "results.jsonl", "--format", "html"], cwd=folder, check=True,
                          capture_output=True, text=True).stdout
    (folder / "report.html").write_text(page)
    return folder / "report.html"


def opened(driver, page, requested: list[str]) -> set[str]:
    """Open `page` and let any script it ran, or load it started, reach the listener: the URLs
    the page loaded beyond itself and its data: images (a load the policy refused is announced,
    then blocked), and the paths the listener saw."""
    driver.get(page.as_uri())
    time.sleep(0.5)
    messages = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    urls = {m["params"]["requestId"]: m["params"]["request"]["url"] for m in messages
            if m["method"] == "Network.requestWillBeSent"}
    for m in messages:
        if m["method"] == "Network.loadingFailed" and m["params"].get("blockedReason") == "csp":
            urls.pop(m["params"]["requestId"], None)
    return ({u for u in urls.values() if not u.startswith("data:")} - {page.as_uri()}) | set(requested)


@pytest.mark.slow
def test_markup_in_set_and_results_files_is_shown_as_text_and_runs_nothing(hostile_page, listener):
    from selenium.webdriver.common.by import By

    origin, requested = listener
    driver = browser(1280, 900)
    try:
        assert opened(driver, hostile_page, requested) == set()
        assert driver.title == "ramsweep report"
        assert driver.find_elements(By.CSS_SELECTOR, "script, iframe, img, link, object, embed") == []
        links = [a.get_attribute("href") for a in driver.find_elements(By.TAG_NAME, "a")]
        assert links and all(u.startswith(f"{origin}/") for u in links), links  # the image, as a link
        text = driver.find_element(By.TAG_NAME, "body").text
        for shown in ("<script>document.title='ran'", "<img src=x onerror=", "<iframe src=",
                      "<a href=\"javascript:", "[a markdown link](javascript:", "a remote image"):
            assert shown in text, shown
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()


def test_the_page_policy_alone_stops_script_and_loads_that_slip_into_it(hostile_page, listener, tmp_path):
    from selenium.webdriver.common.by import By

    origin, requested = listener
    slipped = tmp_path / "slipped.html"  # as if escaping had missed every payload
    slipped.write_text(hostile_page.read_text().replace("<body>", "<body>" + "".join(payloads(origin)), 1))
    driver = browser(1280, 900)
    try:
        assert opened(driver, slipped, requested) == set()
        assert driver.title == "ramsweep report"
        assert driver.find_elements(By.TAG_NAME, "iframe")  # there, and refused its load
        refused = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
        for what in ("Executing inline script", "stylesheet", "image", "Framing"):
            assert any(what in message for message in refused), (what, refused)
    finally:
        driver.quit()


def test_the_html_report_escapes_every_text_and_carries_its_policy(tmp_path):
    store = open_store(tmp_path / "results.jsonl")
    for row in hostile_records("http://127.0.0.1:9"):
        store.append(parse_record(row))
    page = report(store.path, "html")
    head = page[:page.index("<style>")]
    assert "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:;" in head
    for raw in ("<script", "<iframe", "<img", "<link", "onerror=\"", "href=\"javascript:"):
        assert raw not in page, raw
    assert "&lt;script&gt;document.title=" in page and "&lt;img src=x onerror=" in page
