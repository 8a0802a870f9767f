"""The architecture seam (engine/architecture.py): the sweep knows a model only through it.

A stand-in architecture registered under the experiments' name takes over the whole sweep:
planning and the memory checks, training, the figures, the record, the report and status, with
no call into the tiered engine. This module is that stand-in (it predicts the training split's
unigram frequencies, add-one smoothed), found through ARCHITECTURES as any architecture is.
"""

import math

import numpy as np
import orjson
import pytest

from ramsweep.engine import architecture, tiered
from ramsweep.engine.architecture import Plan
from ramsweep.report import report
from ramsweep.sets import load_set
from ramsweep.sweep.runner import run_set
from ramsweep.sweep.status import status

SET = """
experiments:
  - {name: alpha, tiers: "30,2,6;rest,1,4", context: 2, negatives: 20}
  - {name: beta, tiers: "30,2,11;rest,1,5", context: 3, negatives: 20}
"""


class Unigram:
    """The stand-in: one unit, its counts; a model is the smoothed unigram distribution."""

    name = "unigram"

    def plan(self, exp, freq) -> Plan:
        return Plan(("the counts",), (8 * freq.vocab_size,), 8 * freq.vocab_size, 1)

    def train(self, exp, corpus, device, progress):
        counts = np.bincount(corpus.train, minlength=corpus.vocab_size) + 1.0
        return counts / counts.sum()

    def search(self, exp, corpus, device, resume, checkpoint, progress):
        raise AssertionError("no search here")

    def figures(self, model, corpus, device, phase=lambda phase, fraction=0.0: None):
        def split(tokens):
            ce = float(-np.log(model[tokens]).mean())
            return {"examples": int(tokens.shape[0]), "ce": ce, "ppl": math.exp(ce),
                    "accuracy": float((tokens == model.argmax()).mean())}

        return split(corpus.validation), split(corpus.test), 0.0

    def resources(self, model) -> dict:
        return {"memory_mb": model.nbytes / 2**20}

    def timing(self, model) -> dict:
        return {}

    def wiring(self, model):
        return [], []


ARCHITECTURE = Unigram()


def never(*args, **kwargs):
    raise AssertionError("the tiered engine was called")


def test_an_architecture_registered_in_one_place_runs_the_whole_sweep(tmp_path, monkeypatch):
    monkeypatch.setitem(architecture.ARCHITECTURES, "tiered", __name__)  # the experiments' architecture
    for name in ("train", "evaluate", "score", "layout_of"):
        monkeypatch.setattr(tiered, name, never)
    (tmp_path / "set.yaml").write_text(SET)
    results = tmp_path / "results.jsonl"
    summary = run_set(load_set(str(tmp_path / "set.yaml")), results=results)
    assert summary.ran == ["alpha", "beta"] and not summary.failed
    records = [orjson.loads(line) for line in results.read_bytes().splitlines()]
    ran = [r for r in records if r["kind"] == "experiment"]
    assert all(r["status"] == "ok" and r["resources"]["memory_mb"] > 0 for r in ran)
    ce = ran[0]["metrics"]["test"]["ce"]
    assert ce == ran[1]["metrics"]["test"]["ce"] and ce == pytest.approx(math.log(ran[0]["metrics"]["test"]["ppl"]))
    assert "alpha" in report(results, "md") and status(results).counts["done"] == 2


def test_every_experiment_names_a_registered_architecture():
    from ramsweep.config import Experiment

    exp = Experiment(name="a", tiers="rest,2,4")
    assert exp.architecture in architecture.ARCHITECTURES
    assert architecture.of(exp) is tiered.ARCHITECTURE and "architecture" not in exp.spec()  # old keys stay


def test_a_bitwise_experiment_runs_through_the_sweep_and_equals_the_oracle():
    """architecture: bitwise through run_experiment (train, calibrate on validation, test): the
    record's figures are the oracle's (docs/design.md §3c) at the record's temperature."""
    from test_optimize import small_corpus

    from ramsweep.config import Experiment
    from ramsweep.engine import bitwise_reference as oracle
    from ramsweep.engine.bitwise_output import bands
    from ramsweep.sweep.experiment import Task, run_experiment

    corpus = small_corpus(vocab=45)  # 6 bit clusters; 45 is not a power of two
    for cell_mode, rate in (("quad_weighted", 0.25), ("ternary", 1.0)):
        exp = Experiment(name="bw", architecture="bitwise", context=2, encoding="frequency", gray=True,
                         bitwise={"neurons": [3, 4, 5, 6, 7, 8], "bits": 6, "sample_rate": rate, "cell_mode": cell_mode})
        record = run_experiment(Task(exp, "k", "s"), corpus)
        assert record.ok, record.error
        codes = oracle.token_codes(corpus.train, 45, "frequency", True)
        model = oracle.train(corpus.train, 45, codes=codes, context=2, neurons=[3, 4, 5, 6, 7, 8], bits=6, seed=0,
                             sample_rate=rate, cell_mode=cell_mode)
        t = record.metrics.test.calibrated.temperature
        want = oracle.evaluate(model, corpus.test, temperature=t, bands=bands(45))
        got = record.metrics.test
        assert (got.examples, got.accuracy) == (want["examples"], want["accuracy"])
        assert got.ce == pytest.approx(want["ce"], rel=1e-12) and got.calibrated.ce == pytest.approx(
            want["calibrated"]["ce"], rel=1e-12)
        assert [b.ce for b in got.bits] == pytest.approx([b["ce"] for b in want["bits"]], rel=1e-12)
        assert [b.examples for b in got.bands] == [b["examples"] for b in want["bands"]]
        assert record.resources.device.startswith("cpu") and len(record.resources.memories) == 6
