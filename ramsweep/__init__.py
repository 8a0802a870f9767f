"""ramsweep: overnight sweeps of tiered RAM-neuron language-model experiments.

Kept tiny on purpose. The library functions behind the commands:
`ramsweep.run_set(...)` (also `ramsweep.sweep.runner.run_set`) and
`ramsweep.report.report(...)` (the `report` package is the report layer).
"""

__version__ = "0.1.0"

# Bump whenever a change alters what the engine computes for a given spec and data:
# it is part of every experiment key, so results from older semantics are re-run.
ENGINE_SEMANTICS_VERSION = 1


def run_set(*args, **kwargs):
    from ramsweep.sweep.runner import run_set as _run_set

    return _run_set(*args, **kwargs)
