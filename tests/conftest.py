"""Shared test helpers and fixtures: one-line error checks, valid records made by hand, and a
results path of each store kind."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from ramsweep.errors import ConfigError
from ramsweep.sweep.records import parse_record

STORE_FILES = ("results.json", "results.jsonl")  # a JSON document and a journal


def config_error(call, *fragments: str) -> str:
    """Run call, expect a one-line ConfigError containing every fragment; return the message."""
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


DATA = {"corpus": "kjv", "tokenizer": "word", "vocab_size": 13814, "full_data": False, "fingerprint": "fp"}


def experiment_record(name="a", key="ka", test_ppl=7000.0, val_ppl=9000.0, status="ok", **fields):
    """A complete, valid experiment record as stored (a dict), with one tier."""
    tiers = [{"tier": 0, "clusters": 100, "neurons": 15, "bits": 20, "backend": "sparse", "examples": 10,
              "ce": 10.0, "ppl": test_ppl, "accuracy": 0.25, "share": 46.5, "empty_rate": 0.5,
              "target_empty_rate": 0.25}]

    def split(ppl):
        return {"examples": 20, "ce": 10.0, "ppl": ppl, "accuracy": 0.125, "ppl_floor": 5000.0, "bpb": 3.5,
                "calibrated": {"temperature": 0.05, "ce": 6.0, "ppl": ppl / 20, "bpb": 2.1}, "tiers": tiers}

    record = {"kind": "experiment", "name": name, "set": "s", "key": key, "status": status, "data": DATA,
              "spec": {"name": name, "tiers": "100,15,20;rest,5,8", "context": 4},
              "started": "2026-11-26T00:00:00+00:00", "finished": "2026-11-26T00:00:02+00:00"}
    if status == "ok":
        record |= {"metrics": {"validation": split(val_ppl), "test": split(test_ppl)},
                   "timing": {"train_s": 1.0, "validation_s": 0.5, "test_s": 0.5, "total_s": 2.0}}
    else:
        record |= {"error": "RuntimeError: boom", "timing": {"elapsed_s": 1.0}}
    return record | fields


def baseline_record(name="uniform", ppl=13814.0, bpb=4.0):
    split = {"examples": 19, "ce": 1.0, "ppl": ppl, "bpb": bpb}
    return {"kind": "baseline", "name": name, "key": f"base-{name}", "status": "ok", "data": DATA,
            "metrics": {"validation": split, "test": split}, "started": "2026-11-26T00:00:00+00:00"}


def record(**fields):
    """A typed experiment record (see experiment_record)."""
    return parse_record(experiment_record(**fields))


@pytest.fixture(params=STORE_FILES)
def results_path(request, tmp_path):
    """A results file path of each kind (the test runs once per kind)."""
    return tmp_path / request.param


# ------------------------------------------------------------------ CUDA kernels in numba-cuda's simulator


SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"  # numba-cuda's simulator: each GPU thread a Python thread
# bitwise_cuda's sizes in the simulator: small blocks, and every batch boundary forced (ternary count
# batches of one neuron, quad launches of one cluster, SPARSE scratch of a few neurons)
BITWISE_SIMULATOR_SIZES = (("THREADS", 16), ("LANES", 4), ("COUNT_BYTES", 256), ("QUAD_BYTES", 64),
                           ("SCRATCH_BYTES", 256))


def shrink_bitwise_cuda(bitwise_cuda, monkeypatch) -> None:
    """In the simulator, bitwise_cuda at BITWISE_SIMULATOR_SIZES (and numpy's uint64 hash wraps quietly,
    as the GPU's does); on a real GPU, as it is."""
    if SIMULATED:
        import warnings

        warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
        for name, value in BITWISE_SIMULATOR_SIZES:
            monkeypatch.setattr(bitwise_cuda, name, value)


@pytest.fixture
def cuda_kernels(monkeypatch):
    """engine/bitwise_cuda.py on a real GPU or in the simulator (shrunk); the test is skipped elsewhere."""
    bitwise_cuda = pytest.importorskip("ramsweep.engine.bitwise_cuda", reason="numba-cuda is not installed")
    if not bitwise_cuda.available():
        pytest.skip("no CUDA device (run with NUMBA_ENABLE_CUDASIM=1)")
    shrink_bitwise_cuda(bitwise_cuda, monkeypatch)
    return bitwise_cuda


def run_in_the_simulator(test_file: str, leave_out: str) -> str:
    """Run `test_file` again under NUMBA_ENABLE_CUDASIM=1 (CUDA kernels on the CPU), its tests
    except `leave_out` (a -k expression); expect it to pass and return its summary line."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, "-k",
                           f"not ({leave_out})"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    last = done.stdout.splitlines()[-1]
    assert " passed" in last, done.stdout[-500:]
    return last


# ------------------------------------------------------------------ a real browser (Debian's chromium)

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots, kept by CI


def browser(width: int, height: int):
    """Headless chromium at a desktop size, or a phone's screen emulated below 500 px wide; its
    console and network logs are kept (driver.get_log("browser" | "performance"))."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={max(width, 500)},{height}"):  # a headless window is at least 500 px wide
        options.add_argument(flag)
    if width < 500:  # a phone: its screen, emulated
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": height,
                                                                              "pixelRatio": 3}})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))


def requested_urls(driver) -> set[str]:
    messages = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    return {m["params"]["request"]["url"] for m in messages if m["method"] == "Network.requestWillBeSent"}


# ------------------------------------------------------------------ a real dashboard beside the runners


@contextmanager
def dashboard(results, hammer: int = 0, every: float = 0.1, port: int = 0):
    """`ramsweep serve RESULTS` in its own process (on a free port unless `port` is given); yields
    its base URL. With `hammer`, a client also sends up to that many requests to it meanwhile,
    one every `every` seconds, each expected to succeed."""
    proc = subprocess.Popen([sys.executable, "-m", "ramsweep", "serve", str(results), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    try:
        line = ""
        while "ramsweep serve: http" not in line:
            line = proc.stdout.readline()
            assert line, f"serve ended: {proc.stderr.read()}"
        url = re.search(r"http://\S+/", line)[0].replace(re.search(r"//([^:/]+)", line)[1], "127.0.0.1", 1)
        failures: list[str] = []
        stop = threading.Event()
        client = threading.Thread(target=_hammer, args=(url, hammer, every, stop, failures), daemon=True)
        client.start()
        yield url
        stop.set()
        client.join()
        assert not failures, failures[:3]
        assert proc.poll() is None, "the dashboard died"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def _hammer(url: str, n: int, every: float, stop: threading.Event, failures: list[str]) -> None:
    routes = ("api/status", "api/records", "api/leaderboard", "api/grids", "")
    for i in range(n):
        if stop.wait(every):
            return
        try:
            with urllib.request.urlopen(url + routes[i % len(routes)], timeout=10) as response:
                response.read()
        except Exception as e:  # noqa: BLE001 - every failure is reported by the test
            failures.append(f"{routes[i % len(routes)]}: {e}")
