"""ramsweep: overnight sweeps of tiered RAM-neuron language-model experiments.

Kept tiny on purpose: import the library functions from their modules
(`ramsweep.sweep.runner.run_set`, `ramsweep.report.tables.report`), or from here lazily.
"""

__version__ = "0.1.0"

# Bump whenever a change alters what the engine computes for a given spec and data:
# it is part of every experiment key, so results from older semantics are re-run.
ENGINE_SEMANTICS_VERSION = 1


def run_set(*args, **kwargs):
    from ramsweep.sweep.runner import run_set as _run_set

    return _run_set(*args, **kwargs)


def report(*args, **kwargs):
    from ramsweep.report.tables import report as _report

    return _report(*args, **kwargs)
