"""WGSL kernels (wgpu: Metal on macOS, Vulkan elsewhere) of the incremental fitness: the same
rows as cpu.py, so the same counts and figures.

A candidate's cost is its rewired neurons' rows: each neuron trained over the training split,
then read at every fitness example. Those run through WGSL (shaders/search_rows.wgsl: a
scratch table of 2-bit cells a row, written by atomic ORs, order-free as the engine's
training), and the rows come back into the host's pool, where cpu.py moves the changed
clusters and sums the figures in float64 (WGSL has no 64-bit float): the CPU's bits. Rows
wider than the buffer cap allows (a scratch row over it) train on the CPU engine.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from ramsweep.engine.backends import wgpu as engine_wgpu
from ramsweep.optimize import cpu

SHADER = engine_wgpu.SHADER.with_name("search_rows.wgsl")
WRITES_PER_DISPATCH = 1 << 28  # (example, row) writes or reads one dispatch may make: GPU watchdogs kill long ones
MAX_X = 1024  # workgroups along the examples (each invocation strides over the rest)


@cache
def _pipeline():
    device = engine_wgpu._gpu()[0]
    module = device.create_shader_module(code=SHADER.read_text())
    return device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": "main"})


def _words(x: np.ndarray) -> np.ndarray:
    """(n, words) uint64 packed contexts as (n, 2 * words) u32, low word first."""
    return np.ascontiguousarray(x, dtype="<u8").view("<u4").reshape(x.shape[0], 2 * x.shape[1])


class Kernels(cpu.Kernels):
    """cpu.Kernels whose rewired neurons' rows are trained and read through WGSL."""

    def __init__(self, train_x, by_target, n_negatives, fit, n_levels, level_tables, exp_levels, memories):
        super().__init__(train_x, by_target, n_negatives, fit, n_levels, level_tables, exp_levels, memories)
        self._device = None

    def _upload(self):
        """The training and fitness examples and the grouped targets on the GPU, once."""
        if self._device is None:
            device = engine_wgpu._gpu()[0]
            self._train, self._fit = _words(self.train_x), _words(self.fit_x)
            self._buffers = [engine_wgpu._buffer(device, a) for a in (self._train, self._fit, self.by_target[1])]
            self._device = device
        return self._device

    def fits(self, bits: int) -> bool:
        """Whether rows of `bits` bits train here: addresses fit a u32, one row's scratch and the
        examples fit the buffer cap."""
        cap = engine_wgpu.binding_cap()
        words = max(1, (1 << bits) // 16) if bits <= engine_wgpu.MAX_BITS else cap
        return (bits <= engine_wgpu.MAX_BITS and 4 * words <= cap and self.train_x is not None
                and 8 * self.train_x.size <= cap and 8 * self.fit_x.size <= cap and 4 * self.fit_x.shape[0] <= cap)

    def train_rows(self, clusters, masks, order, bits, slots) -> None:
        if not self.fits(bits):
            return super().train_rows(clusters, masks, order, bits, slots)
        device, pipeline = self._upload(), _pipeline()
        cap, n_fit = engine_wgpu.binding_cap(), self.fit_x.shape[0]
        words, out_words = max(1, (1 << bits) // 16), max(1, -(-n_fit // 4))
        offsets = self.by_target[0]
        n_all = np.where(np.asarray(clusters) < self.n_negatives, self.train_x.shape[0], 0)
        t0, t1 = offsets[clusters], offsets[np.asarray(clusters) + 1]
        info = np.stack([n_all + t1 - t0, n_all, t0], axis=1).astype(np.uint32)
        per_batch = max(1, min(cap // (4 * words), cap // (4 * out_words), engine_wgpu.MAX_GRID))
        for lo in range(0, len(slots), per_batch):
            hi = min(lo + per_batch, len(slots))
            rows = self._rows_of(device, pipeline, order[lo:hi], info[lo:hi], bits, words, out_words)
            self.rows[np.asarray(slots[lo:hi], dtype=np.int64)] = rows[:, :n_fit]

    def _rows_of(self, device, pipeline, order, info, bits, words, out_words) -> np.ndarray:
        """(rows, 4 * out_words) uint8: the codes of rows wired by `order` at the fitness examples."""
        n_rows = order.shape[0]
        d_order, d_info = (engine_wgpu._buffer(device, a) for a in (order.astype(np.uint32), info))
        d_scratch = engine_wgpu._scratch(device, 4 * n_rows * words)  # zeroed: every cell EMPTY
        d_out = engine_wgpu._scratch(device, 4 * n_rows * out_words)
        d_train, d_fit, d_examples = self._buffers
        for mode, along in ((0, int(info[:, 0].max())), (1, out_words)):
            x = max(1, min(MAX_X, -(-along // engine_wgpu.WORKGROUP)))
            step = max(1, min(engine_wgpu.MAX_GRID, WRITES_PER_DISPATCH // max(1, along)))
            for row0 in range(0, n_rows, step):
                params = [mode, bits, self._train.shape[1], self._fit.shape[1], self.fit_x.shape[0], words, out_words,
                          x * engine_wgpu.WORKGROUP, row0, 0, 0, 0]  # padded to 16-byte rows
                group = engine_wgpu.bind(device, pipeline, [engine_wgpu._buffer(device, np.array(params), "UNIFORM"),
                                                            d_train, d_fit, d_order, d_info, d_examples, d_scratch, d_out])
                engine_wgpu.dispatch(device, pipeline, group, x, min(step, n_rows - row0))
        return np.frombuffer(device.queue.read_buffer(d_out), dtype=np.uint8).reshape(n_rows, 4 * out_words)
