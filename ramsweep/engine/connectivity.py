"""Seeded connectivity: which input bits each neuron observes (docs/design.md §3 "Connectivity").

Every neuron has its own splitmix64 stream seeded by (experiment seed, tier, neuron), so a
neuron's wiring never depends on how many other neurons exist or on the order they are
built in, and any backend (or the pure-Python reference) can rebuild it exactly.
Draws are a partial Fisher–Yates shuffle of the input positions: uniform without
replacement (the modulo reduction's bias is below 2^-40 for any real input width).
"""

import numpy as np
from numba import njit, prange

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def mix64(x):
    z = x + GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def neuron_state(seed, tier, neuron):
    return mix64(mix64(mix64(np.uint64(seed)) + np.uint64(tier)) + np.uint64(neuron))


GATE_SALT = np.uint64(int.from_bytes(b"gate", "big"))


@njit(cache=True, inline="always")
def gate_state(seed, tier, neuron):
    """A gate neuron's stream: seeded by (seed, "gate", tier, neuron)."""
    return mix64(mix64(mix64(mix64(np.uint64(seed)) + GATE_SALT) + np.uint64(tier)) + np.uint64(neuron))


BIT_SALT = np.uint64(int.from_bytes(b"bit", "big"))


@njit(cache=True, inline="always")
def bit_state(seed, cluster, neuron):
    """A bitwise model's neuron's stream (docs/design.md §3c "Sizes"): seeded by (seed, "bit", cluster, neuron)."""
    return mix64(mix64(mix64(mix64(np.uint64(seed)) + BIT_SALT) + np.uint64(cluster)) + np.uint64(neuron))


@njit(cache=True, inline="always")
def shuffle_into(row, state, n_input):
    """row[j], j < len(row): a partial Fisher–Yates shuffle of 0..n_input-1 drawn from the
    splitmix64 stream at `state` (output i mixes state + (i+1)·GOLDEN)."""
    pool = np.arange(n_input, dtype=np.int32)
    for j in range(row.shape[0]):
        r = mix64(state)
        state = state + GOLDEN
        k = j + np.int64(r % np.uint64(n_input - j))
        pool[j], pool[k] = pool[k], pool[j]
        row[j] = pool[j]


@njit(cache=True, parallel=True, nogil=True)
def draw_connectivity(seed, tier, n_neurons, bits, n_input, gate=False):
    """(n_neurons, bits) int32: input-bit positions; column 0 is the address's MSB. `gate`:
    the tier's gate neurons' wiring (their own streams)."""
    conn = np.empty((n_neurons, bits), dtype=np.int32)
    for neuron in prange(n_neurons):
        shuffle_into(conn[neuron], gate_state(seed, tier, neuron) if gate else neuron_state(seed, tier, neuron), n_input)
    return conn


@njit(cache=True, parallel=True, nogil=True)
def draw_bit_connectivity(seed, cluster, n_neurons, bits, n_input):
    """(n_neurons, bits) int32: the wiring of a bitwise model's bit cluster, from the (seed, "bit",
    cluster, neuron) streams; column 0 is the address's MSB."""
    conn = np.empty((n_neurons, bits), dtype=np.int32)
    for neuron in prange(n_neurons):
        shuffle_into(conn[neuron], bit_state(seed, cluster, neuron), n_input)
    return conn


LSH_SALT = np.uint64(int.from_bytes(b"lsh", "big"))


@njit(cache=True, parallel=True, nogil=True)
def draw_hashes(seed, tier, n_neurons, bits, lsh_bits):
    """(n_neurons, bits) uint32: each LSH neuron's H3 hash words q_j (docs/design.md §3 "LSH memory"),
    the top lsh_bits bits of a splitmix64 stream seeded by (seed, tier, neuron, "lsh"); the cell
    of address a is the XOR of the q_j whose address bit j (column 0 the MSB) is 1."""
    q = np.empty((n_neurons, bits), dtype=np.uint32)
    for neuron in prange(n_neurons):
        state = mix64(neuron_state(seed, tier, neuron) + LSH_SALT)
        for j in range(bits):
            q[neuron, j] = np.uint32(mix64(state) >> np.uint64(64 - lsh_bits))
            state = state + GOLDEN
    return q
