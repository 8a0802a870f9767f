"""Device backends (the Backend protocol: base.py) and the one choice of which runs a tier.

GPU backends are optional extras: their modules are imported only when asked for.
"""

from __future__ import annotations

from ramsweep.engine.backends.base import Backend, TierArrays


def get(device: str) -> Backend:
    """The backend of a device: "cpu", "cuda", or "wgpu" / "metal" (WGSL through wgpu)."""
    if device == "cpu":
        from ramsweep.engine.backends import cpu

        return cpu.BACKEND
    if device == "cuda":
        from ramsweep.engine.backends import cuda

        return cuda.BACKEND
    if device in ("wgpu", "metal"):
        from ramsweep.engine.backends import wgpu

        return wgpu.BACKEND
    raise ValueError(f"unknown device {device!r}")


def choose(device: str, tier: TierArrays, training: bool = False) -> Backend:
    """The backend that trains (or evaluates) `tier` on `device`: the device's own, or the CPU
    engine, with the same cells and counts, where the device's lacks a capability the tier needs
    or the tier is beyond its kernels' limits."""
    own = get(device)
    if own.name == "cpu" or (tier.hashed and not own.lsh):
        return get("cpu")
    if training:
        refused = not own.trains or own.cannot_train(tier)
    else:
        refused = (tier.gate is not None and not own.gates) or own.cannot_evaluate(tier)
    return get("cpu") if refused else own
