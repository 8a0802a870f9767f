"""Which device runs the engine: `auto`, `cpu`, `cuda`, `metal`, `wgpu` or `hybrid`.

Every device gives the same cells and metrics (DESIGN.md §3), so the device is not part of
an experiment's key: it only decides where the lookups run. GPU backends are optional extras,
imported only when asked for or probed.

- cuda: numba-cuda kernels train and evaluate (`pip install 'ramsweep[cuda]'`).
- metal / wgpu: the WGSL evaluation kernel through wgpu (Metal on macOS, Vulkan elsewhere);
  training stays on the CPU engine (`pip install 'ramsweep[wgpu]'`).
- hybrid: training on the GPU; evaluation split between the GPU and the CPU threads by their
  measured throughput, both running at once.
- auto: cuda, else a real (not software) GPU through wgpu, else the CPU.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Literal

from ramsweep.errors import ConfigError

Device = Literal["auto", "cpu", "cuda", "metal", "wgpu", "hybrid"]
DEVICES: tuple[str, ...] = Device.__args__


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
    """Where the cells are written: the CUDA kernels for cuda and hybrid, else the CPU."""
    return "cuda" if device in ("cuda", "hybrid") else "cpu"


GIB = 2**30
GPU_WORKSPACE = 2 * GIB  # CUDA's scratch beside one tier: a sparse training batch, evaluation chunks


def check_fits(exp, train_tokens, vocab_size: int, device: str) -> None:
    """Refuse, before any work, an experiment whose trained model cannot fit: in this
    machine's memory (the whole model), and on a CUDA GPU (its largest tier, since tiers are
    trained and evaluated one at a time, plus the packed training contexts and scratch)."""
    from ramsweep.engine.layout import build_layout, expected_tier_bytes  # layout imports config imports this

    layout = build_layout(exp, train_tokens, vocab_size)
    tiers = [expected_tier_bytes(layout, tier) for tier in layout.tiers]
    x = max(0, len(train_tokens) - exp.context) * ((layout.n_input + 63) // 64) * 8
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
