"""ramsweep: overnight sweeps of tiered RAM-neuron language-model experiments.

Kept tiny on purpose: importing `ramsweep` loads nothing else. The library functions behind
the commands are imported on first use: `ramsweep.run_set(...)` (ramsweep.sweep.runner) and
`ramsweep.status(...)` (ramsweep.sweep.status); `ramsweep.report` is the report package, whose
`report(...)` renders a results file.
"""

from importlib import import_module, metadata

try:
    __version__ = metadata.version("ramsweep")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC = {"run_set": "ramsweep.sweep.runner", "status": "ramsweep.sweep.status"}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ramsweep' has no attribute {name!r}")
