"""Before any work: does each experiment fit this machine's memory and its GPU's?

A night that fails at 3 a.m. because the tenth experiment needs more memory than the machine
has is the worst kind of failure; these checks refuse it with one line before the first.
"""

from __future__ import annotations

from ramsweep.config import Experiment
from ramsweep.engine.architecture import Plan
from ramsweep.engine.devices import describe, physical_memory, trains_on
from ramsweep.errors import ConfigError

GIB = 2**30
GPU_WORKSPACE = 2 * GIB  # CUDA's scratch beside one tier: a sparse training batch, evaluation chunks


def check_fits(exp: Experiment, plan: Plan, train_tokens: int, device: str) -> None:
    """Refuse, before any work, an experiment whose trained model cannot fit: in this
    machine's memory (the whole model), and on a CUDA GPU (its largest unit where units are
    trained and evaluated one at a time, else all of them; plus the packed training contexts and
    scratch).
    `plan` is the experiment's (architecture.plan), `train_tokens` the training split's length."""
    units = plan.unit_bytes
    x = max(0, train_tokens - exp.context) * ((plan.input_bits + 63) // 64) * 8
    largest = units.index(max(units))
    where = f"{plan.units[largest]} alone takes {units[largest] / GIB:.1f} GiB"
    host = physical_memory()
    if host and sum(units) + x > host:
        raise ConfigError(f"experiment '{exp.name}': needs about {(sum(units) + x) / GIB:.1f} GiB of memory, more "
                          f"than this machine's {host / GIB:.1f} GiB ({where}); lower its bits or neurons")
    if trains_on(device) == "cuda":
        from ramsweep.engine.backends import cuda

        free = cuda.free_memory()
        need = (sum(units) if plan.gpu_resident else units[largest]) + 2 * x + GPU_WORKSPACE
        if need > free:
            what = f"its {len(units)} units take {sum(units) / GIB:.1f} GiB" if plan.gpu_resident else where
            raise ConfigError(f"experiment '{exp.name}': needs about {need / GIB:.1f} GiB of GPU memory, more than "
                              f"the {free / GIB:.1f} GiB free on {describe(device)} ({what}); lower its "
                              "bits or neurons, or use --device cpu")
