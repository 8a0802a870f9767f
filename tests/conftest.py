"""Shared test helpers and fixtures: one-line error checks, valid records made by hand, and a
results path of each store kind."""

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
