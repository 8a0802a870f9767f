"""The seam between the sweep and a model architecture (docs/design.md §2).

The runner, the experiment, the executors, the store, the report and the CLI know an
experiment's model only through this interface, chosen by the experiment's `architecture`
field. An architecture is one module that implements it (`engine/tiered.py`: one cluster per
token, docs/design.md §3) and one line in ARCHITECTURES; nothing else changes to add one.
Its units are what it is made of and what a search may change (a tiered model's tiers; a
bitwise model's bit clusters, docs/design.md §3c).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # a light module: progress.py reads its phase names in workers that start fast
    from ramsweep.config import Experiment

# the phases an architecture's `figures` reports through its `phase` callback (progress.py shows them)
VALIDATION, CALIBRATION, TEST = "validation", "calibration", "test"
# architecture name -> the module that implements it (imported when an experiment needs it)
ARCHITECTURES = {"tiered": "ramsweep.engine.tiered", "bitwise": "ramsweep.engine.bitwise_output"}


@dataclass(frozen=True)
class Plan:
    """What an architecture knows of an experiment before any work, from its config and the
    training split's frequencies (making it checks the config against the data)."""

    units: tuple[str, ...]  # each unit, as messages name it: 'tier 1 "100,15,20"'
    unit_bytes: tuple[int, ...]  # each unit's arrays at the expected fill, with what trains beside it
    bound_bytes: int  # at most the trained model's arrays: --dry-run's memory, the longest first
    input_bits: int  # one training context's packed input
    gpu_resident: bool = False  # whether a GPU holds every unit at once (else one unit at a time)
    lookups: int = 0  # neurons one example reads when scored: the measure of its time (sweep/estimate.py)


class Architecture(Protocol):
    """One model architecture. `model` is the architecture's own trained model; the sweep only
    hands it back."""

    name: str

    def plan(self, exp: Experiment, freq) -> Plan:
        """The experiment's units and memory (ConfigError if the config does not fit the data)."""

    def train(self, exp: Experiment, corpus, device: str, progress: Callable[[float], None]) -> Any:
        """The model trained on the training split, on `device` (a devices.trains_on name)."""

    def search(self, exp: Experiment, corpus, device: str, resume: dict | None,
               checkpoint: Callable[[dict], None], progress: Callable[[dict], None]):
        """The experiment's `optimize:` search (fitness on the training split's last part, the
        choice on validation): an outcome with `start`, `chosen`, `chosen_label` and `summary`."""

    def figures(self, model, corpus, device: str, phase: Callable[..., None]) -> tuple[dict, dict, float]:
        """Validation metrics, the temperature fitted there, then test at that temperature (test
        decides nothing); and the time test began (perf_counter)."""

    def resources(self, model) -> dict:
        """What the record keeps of the model's memory, per unit."""

    def timing(self, model) -> dict:
        """The record's timing fields the architecture measures itself (within train_s)."""

    def wiring(self, model) -> tuple[list, list]:
        """The model's connectivity and the drawn one it started from (a search's artifact)."""


def of(exp: Experiment) -> Architecture:
    """The architecture an experiment names."""
    return import_module(ARCHITECTURES[exp.architecture]).ARCHITECTURE
