"""The HTML report as a reader sees it: opened in a real headless browser (Debian's chromium,
driven by Selenium through chromedriver; no browser download), on a desktop and on a
phone-sized screen: no console error, no network request, the leaderboard and an SVG plot
visible. A screenshot of each is kept in tests/artifacts/."""

import itertools
import json

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
