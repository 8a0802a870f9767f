"""Which device runs the engine: `auto`, `cpu`, `cuda`, `metal`, `wgpu` or `hybrid`.

Every device gives the same cells and metrics (docs/design.md §3), so the device is not part of
an experiment's key: it only decides where the lookups run. GPU backends are optional extras,
imported only when asked for or probed.

- cuda: numba-cuda kernels train and evaluate (`pip install 'ramsweep[cuda]'`).
- metal / wgpu: WGSL kernels through wgpu (Metal on macOS, Vulkan elsewhere): the tiered model
  evaluates there and trains on the CPU engine; the bitwise model trains and evaluates there
  (`pip install 'ramsweep[wgpu]'`).
- hybrid: training on the GPU; evaluation split between the GPU and the CPU threads by their
  measured throughput, both running at once.
- auto: cuda, else a real (not software) GPU through wgpu, else the CPU.
"""

from __future__ import annotations

import os
from functools import cache

from ramsweep.config import DEVICES
from ramsweep.errors import ConfigError


@cache
def cuda_available() -> bool:
    try:
        from ramsweep.engine.backends import cuda
    except ImportError:
        return False
    return cuda.available()


@cache
def wgpu_info() -> dict | None:
    """The wgpu adapter's info ({"name", "backend", "type"}), or None where there is none."""
    try:
        from ramsweep.engine.backends import wgpu
    except ImportError:
        return None
    return wgpu.adapter_info() if wgpu.available() else None


def resolve(device: str) -> str:
    """The concrete device for a requested one; a one-line ConfigError when it is not here."""
    if device not in DEVICES:
        raise ConfigError(f"device: '{device}' is not a device; use one of {', '.join(DEVICES)}")
    if device == "auto":
        if cuda_available():
            return "cuda"
        info = wgpu_info()
        if info and info["type"] != "CPU":  # a software rasteriser (lavapipe) is slower than numba
            return "metal" if info["backend"] == "Metal" else "wgpu"
        return "cpu"
    if device in ("cuda", "hybrid") and not cuda_available():
        raise ConfigError(f"device: {device} needs an NVIDIA GPU and numba-cuda (pip install 'ramsweep[cuda]'), "
                          "and none is usable here; use --device auto or cpu")
    if device in ("metal", "wgpu"):
        info = wgpu_info()
        if info is None:
            raise ConfigError(f"device: {device} needs wgpu and a GPU adapter (pip install 'ramsweep[wgpu]'), "
                              "and none is usable here; use --device auto or cpu")
        if device == "metal" and info["backend"] != "Metal":
            raise ConfigError(f"device: metal needs macOS; this machine's wgpu adapter is {info['backend']} "
                              "(use --device wgpu, auto or cpu)")
    return device


def describe(device: str) -> str:
    """What ran, for the results record: e.g. "cuda: NVIDIA H100 80GB HBM3"."""
    if device in ("cuda", "hybrid"):
        from ramsweep.engine.backends import cuda

        return f"{device}: {cuda.device_name()}"
    if device in ("metal", "wgpu"):
        info = wgpu_info()
        return f"{device}: {info['name']} ({info['backend']})"
    return "cpu"


def trains_on(device: str) -> str:
    """The device an architecture's train() is handed: cuda for cuda and hybrid (its kernels write
    the cells), metal and wgpu themselves (the bitwise model trains on its WGSL kernels, the tiered
    model on the CPU engine), else cpu."""
    if device in ("cuda", "hybrid"):
        return "cuda"
    return device if device in ("metal", "wgpu") else "cpu"


def physical_memory() -> int | None:
    """This machine's memory in bytes, where the platform says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None
