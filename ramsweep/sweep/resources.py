"""Before any work: does each experiment fit this machine's memory and its GPU's?

A night that fails at 3 a.m. because the tenth experiment needs more memory than the machine
has is the worst kind of failure; these checks refuse it with one line before the first.
"""

from __future__ import annotations

import os

from ramsweep.config import Experiment
from ramsweep.engine.devices import describe, trains_on
from ramsweep.engine.layout import Layout, expected_tier_bytes
from ramsweep.errors import ConfigError

GIB = 2**30
GPU_WORKSPACE = 2 * GIB  # CUDA's scratch beside one tier: a sparse training batch, evaluation chunks


def check_fits(exp: Experiment, layout: Layout, train_tokens: int, device: str) -> None:
    """Refuse, before any work, an experiment whose trained model cannot fit: in this
    machine's memory (the whole model), and on a CUDA GPU (its largest tier, since tiers are
    trained and evaluated one at a time, plus the packed training contexts and scratch).
    `layout` is the experiment's (layout.layout_of), `train_tokens` the training split's length."""
    tiers = [expected_tier_bytes(layout, tier) + (expected_tier_bytes(layout, layout.gates[tier.index]) if layout.gates
                                                 else 0) for tier in layout.tiers]  # a tier with its gates
    x = max(0, train_tokens - exp.context) * ((layout.n_input + 63) // 64) * 8
    largest = tiers.index(max(tiers))
    where = f"tier {largest + 1} \"{exp.tiers.tiers[largest]}\" alone takes {tiers[largest] / GIB:.1f} GiB"
    host = physical_memory()
    if host and sum(tiers) + x > host:
        raise ConfigError(f"experiment '{exp.name}': needs about {(sum(tiers) + x) / GIB:.1f} GiB of memory, more "
                          f"than this machine's {host / GIB:.1f} GiB ({where}); lower that tier's bits or neurons")
    if trains_on(device) == "cuda":
        from ramsweep.engine.backends import cuda

        free = cuda.free_memory()
        need = tiers[largest] + 2 * x + GPU_WORKSPACE
        if need > free:
            raise ConfigError(f"experiment '{exp.name}': needs about {need / GIB:.1f} GiB of GPU memory, more than "
                              f"the {free / GIB:.1f} GiB free on {describe(device)} ({where}); lower that tier's "
                              "bits or neurons, or use --device cpu")


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None
