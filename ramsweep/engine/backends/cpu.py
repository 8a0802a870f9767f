"""CPU kernels (numba): train and evaluate one tier of RAM neurons.

Cells are 2-bit codes, EMPTY = 0b00, FALSE = 0b01, TRUE = 0b11, so "TRUE beats FALSE beats
EMPTY" is a bitwise OR and the trained memory does not depend on the order of writes.
Training is neuron-parallel (each neuron's memory is private: no locks, no atomics);
evaluation is example-parallel (each example's accumulators belong to one thread).
Kernels release the GIL (nogil) so the runner's claim heartbeat keeps beating during them.

Shapes used throughout:
  tokens    (n_tokens,) int32          the split's token ids
  examples  (n_examples,) int64        positions t >= context; context = tokens[t-context:t]
  x         (n_examples, words) uint64 each example's context, packed: bit i of context token k
                                       at packed bit k*bits_per_token + i
  masks     (n_neurons, words) uint64  per neuron, the packed bits it reads in each word
  order     (n_neurons, bits) uint16   the same bits as indices, in address order: by word, and
                                       high bit first within a word (column 0 is the MSB)
Addresses are labels (docs/design.md §3): a neuron's address lists its input bits in this sorted
order rather than in connection order, so one BMI2 `pext` per word builds it. CPUs without a
fast pext walk `order` instead and get the same address.
  dense     (n_neurons, words) uint32  16 cells per word, cell a at bits 2(a%16)..+1 of word a//16
  sparse    offsets (n_neurons+1,) int64; keys (n_cells,) sorted per neuron; vals (n_cells,) uint8
"""

import dataclasses
import platform

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

FALSE = np.uint32(1)
TRUE = np.uint32(3)
SCRATCH_MAX_BITS = 24  # up to here a sparse neuron dedupes through a 2^bits scratch table
NO_HASHES = np.zeros((0, 1), dtype=np.uint32)  # the `hashes` of a tier without LSH


ONE = np.uint64(1)


@njit(cache=True, parallel=True, nogil=True)
def pack_inputs(tokens, examples, context, bits_per_token, words):
    x = np.zeros((examples.shape[0], words), dtype=np.uint64)
    for e in prange(examples.shape[0]):
        for k in range(context):
            tok = np.uint64(tokens[examples[e] - context + k])
            q = k * bits_per_token
            w, b = q >> 6, q & 63
            x[e, w] |= tok << np.uint64(b)
            if b + bits_per_token > 64:  # the token straddles two words
                x[e, w + 1] |= tok >> np.uint64(64 - b)
    return x


def fast_pext() -> bool:
    """pext is one fast instruction on x86 with BMI2, except AMD before Zen 3 (microcoded)."""
    if numba.config.CPU_NAME or platform.machine().lower() not in ("x86_64", "amd64"):
        return False  # a generic or foreign target: don't emit BMI2
    import llvmlite.binding as ll

    slow = ("znver1", "znver2", "bdver", "btver")
    return bool(ll.get_host_cpu_features().get("bmi2")) and not ll.get_host_cpu_name().startswith(slow)


USE_PEXT = fast_pext()


def _llvm_call(name, builder, args, n_args):
    i64 = ir.IntType(64)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64] * n_args), name)
    return builder.call(fn, args)


@intrinsic
def pext(typingctx, x, mask):
    def codegen(context, builder, signature, args):
        return _llvm_call("llvm.x86.bmi.pext.64", builder, args, 2)

    return types.uint64(types.uint64, types.uint64), codegen


@intrinsic
def popcount(typingctx, x):
    def codegen(context, builder, signature, args):
        return _llvm_call("llvm.ctpop.i64", builder, args, 1)

    return types.uint64(types.uint64), codegen


if USE_PEXT:

    @njit(cache=True, inline="always")
    def address(x, e, masks, order, n):
        """Address of neuron n for example e."""
        a = np.uint64(0)
        for w in range(masks.shape[1]):
            m = masks[n, w]
            if m != 0:  # two shifts: one by 64 (a 64-bit neuron in one word) would be undefined
                a = ((a << (popcount(m) - ONE)) << ONE) | pext(x[e, w], m)
        return a

else:

    @njit(cache=True, inline="always")
    def address(x, e, masks, order, n):
        """Address of neuron n for example e (the same value pext would build)."""
        a = np.uint64(0)
        for j in range(order.shape[1]):
            q = order[n, j]
            a = (a << ONE) | ((x[e, q >> 6] >> np.uint64(q & 63)) & ONE)
        return a


@njit(cache=True, inline="always")
def dense_write(dense, n, a, code):
    w = a >> np.uint64(4)
    dense[n, w] = dense[n, w] | (code << np.uint32((a & np.uint64(15)) << ONE))


@njit(cache=True, inline="always")
def dense_read(dense, n, a):
    return (dense[n, a >> np.uint64(4)] >> np.uint32((a & np.uint64(15)) << ONE)) & np.uint32(3)


@njit(cache=True, inline="always")
def hashed(a, hashes, n):
    """LSH: the cell of address a of neuron n, XOR of its hash words at the address's 1 bits
    (hashes[n, k] belongs to address bit k counted from the MSB, in the engine's address order)."""
    bits = hashes.shape[1]
    h = np.uint64(0)
    for k in range(bits):
        if (a >> np.uint64(bits - 1 - k)) & ONE:
            h ^= np.uint64(hashes[n, k])
    return h


@njit(cache=True, inline="always")
def cell_of(x, e, masks, order, hashes, n):
    """Where neuron n reads or writes for example e: its address, or the address's hash (LSH:
    `hashes` has a row per neuron; (0, 1) otherwise)."""
    a = address(x, e, masks, order, n)
    return hashed(a, hashes, n) if hashes.shape[0] else a


@njit(cache=True, inline="always")
def sparse_read(offsets, keys, vals, n, a):
    lo, hi = offsets[n], offsets[n + 1]
    end = hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < a:
            lo = mid + 1
        else:
            hi = mid
    if lo < end and keys[lo] == a:
        return np.uint32(vals[lo])
    return np.uint32(0)


@njit(cache=True, parallel=True, nogil=True)
def train_dense(x, masks, order, hashes, neurons, first, n_negatives, by_target_offsets, by_target_examples, dense):
    """by_target_examples: example indices (rows of x) grouped by target cluster position."""
    n_neurons = dense.shape[0]
    # Negative clusters see every example (FALSE; a target example's TRUE then wins by OR).
    n_negative_neurons = min(max(n_negatives - first, 0) * neurons, n_neurons)
    for n in prange(n_negative_neurons):
        for e in range(x.shape[0]):
            dense_write(dense, n, cell_of(x, e, masks, order, hashes, n), FALSE)
    for n in prange(n_neurons):
        c = first + n // neurons
        for i in range(by_target_offsets[c], by_target_offsets[c + 1]):
            dense_write(dense, n, cell_of(x, by_target_examples[i], masks, order, hashes, n), TRUE)


@njit(cache=True, nogil=True)
def _collect_scratch(addrs, codes, bits, keys_out, vals_out, start):
    """Dedupe (address, code) writes through a 2^bits table; emit sorted keys with OR'd codes."""
    scratch = np.zeros(np.int64(1) << bits, dtype=np.uint8)
    touched = np.empty(addrs.shape[0], dtype=np.uint64)
    u = 0
    for i in range(addrs.shape[0]):
        a = addrs[i]
        if scratch[a] == 0:
            touched[u] = a
            u += 1
        scratch[a] |= codes[i]
    if u * 16 < scratch.shape[0]:
        order = np.sort(touched[:u])
        for i in range(u):
            keys_out[start + i] = order[i]
            vals_out[start + i] = scratch[order[i]]
    else:  # dense enough that a scan beats sorting the touched addresses
        w = start
        for a in range(scratch.shape[0]):
            if scratch[a] != 0:
                keys_out[w] = a
                vals_out[w] = scratch[a]
                w += 1
    return u


@njit(cache=True, nogil=True)
def collect_sorted(addrs, codes, keys_out, vals_out, start):
    """Same result as _collect_scratch for any width: sort, then OR codes of equal addresses."""
    order = np.argsort(addrs, kind="mergesort")
    w = start - 1
    for i in range(order.shape[0]):
        a = addrs[order[i]]
        if w < start or keys_out[w] != a:
            w += 1
            keys_out[w] = a
            vals_out[w] = 0
        vals_out[w] |= codes[order[i]]
    return w + 1 - start


@njit(cache=True, inline="always")
def writes(x, masks, order, n, negative, by_target_examples, t0, t1):
    """(addresses, codes) neuron n is written at: FALSE at every example if its cluster is a
    negative, TRUE at its targets' examples (by_target_examples[t0:t1])."""
    n_all = x.shape[0] if negative else 0
    addrs = np.empty(n_all + t1 - t0, dtype=np.uint64)
    codes = np.empty(n_all + t1 - t0, dtype=np.uint8)
    for e in range(n_all):
        addrs[e] = address(x, e, masks, order, n)
        codes[e] = 1
    for i in range(t0, t1):
        addrs[n_all + i - t0] = address(x, by_target_examples[i], masks, order, n)
        codes[n_all + i - t0] = 3
    return addrs, codes


@njit(cache=True, inline="always")
def cluster_reads(x, e, masks, order, hashes, c, neurons, is_sparse, dense, offsets, keys, vals):
    """(TRUE, EMPTY) reads of cluster c's neurons (tier-local index) for example e."""
    n_true, n_empty = 0, 0
    for n in range(c * neurons, (c + 1) * neurons):
        a = cell_of(x, e, masks, order, hashes, n)
        v = sparse_read(offsets, keys, vals, n, a) if is_sparse else dense_read(dense, n, a)
        n_true += v == 3
        n_empty += v == 0
    return n_true, n_empty


@njit(cache=True, parallel=True, nogil=True)
def train_sparse_batch(x, masks, order, hashes, neurons, first, n_negatives, by_target_offsets, by_target_examples,
                       bits, lo, starts, keys_out, vals_out, counts):
    """Cells of neurons lo .. lo+len(counts)-1; neuron lo+b may use keys_out[starts[b]:starts[b+1]].
    LSH (`hashes` has rows): the cells are the addresses' hashes, and `bits` the hash's width."""
    for b in prange(counts.shape[0]):
        n = lo + b
        c = first + n // neurons
        addrs, codes = writes(x, masks, order, n, c < n_negatives, by_target_examples, by_target_offsets[c],
                              by_target_offsets[c + 1])
        if hashes.shape[0]:
            for i in range(addrs.shape[0]):
                addrs[i] = hashed(addrs[i], hashes, n)
        if bits <= SCRATCH_MAX_BITS:
            counts[b] = _collect_scratch(addrs, codes, bits, keys_out, vals_out, starts[b])
        else:
            counts[b] = collect_sorted(addrs, codes, keys_out, vals_out, starts[b])


@njit(cache=True, parallel=True, nogil=True)
def distinct_addresses(x, masks, order, sample, neurons, first, n_negatives, by_target_offsets, by_target_examples,
                       out):
    """out[i]: distinct addresses neuron sample[i] is written at (an LSH tier's count of what
    its hash had to fold together: found by sorting, so done for a sample of neurons)."""
    for i in prange(sample.shape[0]):
        n = sample[i]
        c = first + n // neurons
        addrs, _ = writes(x, masks, order, n, c < n_negatives, by_target_examples, by_target_offsets[c],
                          by_target_offsets[c + 1])
        addrs.sort()
        d = 0
        for j in range(addrs.shape[0]):
            d += j == 0 or addrs[j] != addrs[j - 1]
        out[i] = d


@njit(cache=True, parallel=True, nogil=True)
def evaluate_tier(x, target_pos, masks, order, hashes, neurons, first, chunk, block,
                  is_sparse, dense, offsets, keys, vals, score_table, level_table,
                  best_score, best_pos, target_score, empty_all, empty_target, hist,
                  g_need, g_masks, g_order, g_neurons, g_is_sparse, g_dense, g_offsets, g_keys, g_vals,
                  open_all, target_open):
    """Fold one tier's clusters into each example's score histogram and argmax.

    score_table[t, e]: score of a cluster whose neurons read t TRUE and e EMPTY cells;
    level_table[t, e] its column in `hist`, which counts each example's clusters per distinct
    score: the softmax's sum at any temperature comes from it, exactly the same on every
    backend. Clusters are visited in cluster order with a strict '>', so ties go to the
    earlier cluster. Blocks of `block` clusters keep their memory in cache while a chunk of
    `chunk` examples passes over it.

    Gating (g_need > 0): cluster c's gate neurons are g_neurons rows of the g_ tables; with
    fewer than g_need of them reading TRUE the gate is closed and the cluster scores 0 (level
    level_table[0, 0]); its neurons are still read, so the EMPTY counts do not depend on gates.
    open_all[e] counts the open clusters, target_open[e] is 1 when the target's gate is open.
    """
    n_examples = x.shape[0]
    n_clusters = masks.shape[0] // neurons
    for ci in prange((n_examples + chunk - 1) // chunk):
        e0, e1 = ci * chunk, min((ci + 1) * chunk, n_examples)
        for c0 in range(0, n_clusters, block):
            c1 = min(c0 + block, n_clusters)
            for e in range(e0, e1):
                empties, opens = 0, 0
                bs, bp = best_score[e], best_pos[e]
                for c in range(c0, c1):
                    n_true, n_empty = 0, 0
                    for n in range(c * neurons, (c + 1) * neurons):
                        a = cell_of(x, e, masks, order, hashes, n)
                        if is_sparse:
                            v = sparse_read(offsets, keys, vals, n, a)
                        else:
                            v = dense_read(dense, n, a)
                        n_true += v == 3
                        n_empty += v == 0
                    level, s = level_table[n_true, n_empty], score_table[n_true, n_empty]
                    if g_need > 0:
                        g_true = 0
                        for n in range(c * g_neurons, (c + 1) * g_neurons):
                            a = address(x, e, g_masks, g_order, n)
                            if g_is_sparse:
                                g_true += sparse_read(g_offsets, g_keys, g_vals, n, a) == 3
                            else:
                                g_true += dense_read(g_dense, n, a) == 3
                        if g_true >= g_need:
                            opens += 1
                            if first + c == target_pos[e]:
                                target_open[e] = 1
                        else:
                            level, s = level_table[0, 0], score_table[0, 0]
                    hist[e, level] += 1
                    if s > bs:
                        bs, bp = s, first + c
                    if first + c == target_pos[e]:
                        target_score[e] = s
                        empty_target[e] = n_empty
                    empties += n_empty
                best_score[e], best_pos[e] = bs, bp
                empty_all[e] += empties
                if g_need > 0:
                    open_all[e] += opens


@njit(cache=True, parallel=True, nogil=True)
def dense_cells(dense, out):
    """out[n] = non-EMPTY cells of dense neuron n (2-bit codes, 16 a word)."""
    for n in prange(dense.shape[0]):
        k = np.uint64(0)
        for w in range(dense.shape[1]):
            v = np.uint64(dense[n, w])
            k += popcount((v | (v >> ONE)) & np.uint64(0x55555555))
        out[n] = k


@njit(cache=True, parallel=True, nogil=True)
def level_moments(hist, levels, beta, mean, var):
    """Per example, the mean and variance of the score under softmax(beta x score) over its
    clusters (hist: clusters per level): the temperature fit's slope and curvature. Each row
    is one thread's, so the numbers do not depend on the thread count."""
    for i in prange(hist.shape[0]):
        top = -np.inf
        for j in range(levels.shape[0]):
            if hist[i, j] > 0 and levels[j] > top:
                top = levels[j]
        w_sum, m1, m2 = 0.0, 0.0, 0.0
        for j in range(levels.shape[0]):
            if hist[i, j] > 0:
                w = hist[i, j] * np.exp(beta * (levels[j] - top))  # <= 0 exponent: no overflow
                w_sum += w
                m1 += w * levels[j]
                m2 += w * levels[j] * levels[j]
        mean[i] = m1 / w_sum
        var[i] = max(m2 / w_sum - mean[i] * mean[i], 0.0)


# --- the CPU backend (base.Backend): the kernels above, called with one TierArrays ------------

CACHE_BLOCK_BYTES = 256 * 1024  # memory of one block of clusters, kept hot while examples pass
DENSE_CHUNK = 64  # examples per work item; sparse tiers give each thread one long slice instead,
# since their per-neuron tables are large and each should be fetched once per thread
SPARSE_BATCH_ENTRIES = 1 << 26  # bounds the scratch of one sparse training batch (~0.6 GB)
# a tier without gates: the kernels' gate arguments, of the types a gate's have (one compilation)
NO_GATE = (np.zeros((0, 1), np.uint32), np.zeros(1, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.uint8))
NO_COUNTS = np.zeros(1, np.int64)  # open_all and target_open without gates: never written


class CPU:
    """The CPU engine: trains and evaluates every tier (the reference the other backends match)."""

    name = "cpu"
    trains = gates = lsh = True

    def cannot_train(self, tier) -> str | None:
        return None

    def cannot_evaluate(self, tier) -> str | None:
        return None

    def upload(self, tier):
        return tier

    def train(self, tier, data):
        offsets_t, examples_t = data.by_target()
        common = (data.x, tier.masks, tier.order, tier.hashes, tier.neurons, tier.first, data.n_negatives, offsets_t,
                  examples_t)
        if not tier.is_sparse:
            dense = np.zeros((tier.n_neurons, max(1, (1 << tier.bits) // 16)), dtype=np.uint32)
            train_dense(*common, dense)
            return dataclasses.replace(tier, dense=dense)
        offsets, keys, vals = train_sparse(tier, data, offsets_t, common)
        return dataclasses.replace(tier, offsets=offsets, keys=keys, vals=vals)

    def evaluate(self, tier, batch) -> None:
        # blocks of clusters whose memory stays in cache while a chunk of examples passes over it
        block = max(1, CACHE_BLOCK_BYTES // max(1, tier.nbytes // max(1, tier.n_clusters)))
        chunk = max(DENSE_CHUNK, -(-len(batch) // numba.get_num_threads())) if tier.is_sparse else DENSE_CHUNK
        gate = tier.gate
        if gate is None:
            gating = (0, tier.masks, tier.order, 1, False, *NO_GATE, NO_COUNTS, NO_COUNTS)
        else:
            gating = (tier.gate_need, gate.masks, gate.order, gate.neurons, gate.is_sparse, gate.dense, gate.offsets,
                      gate.keys, gate.vals, batch.open_all, batch.target_open)
        evaluate_tier(batch.x, batch.target_pos, tier.masks, tier.order, tier.hashes, tier.neurons, tier.first, chunk,
                      block, tier.is_sparse, tier.dense, tier.offsets, tier.keys, tier.vals, tier.score_table,
                      tier.level_table, batch.best_score, batch.best_pos, batch.target_score, batch.empty_all,
                      batch.empty_target, batch.hist, *gating)


BACKEND = CPU()


def train_sparse(tier, data, offsets_t, common):
    """Sparse neurons in batches whose worst-case cell count fits SPARSE_BATCH_ENTRIES: (offsets,
    keys, vals)."""
    clusters = tier.first + np.arange(tier.n_neurons) // tier.neurons
    bound = (offsets_t[clusters + 1] - offsets_t[clusters]) + np.where(clusters < data.n_negatives, data.x.shape[0], 0)
    bound = np.minimum(bound, 2 ** min(tier.bits, 62))
    key_dtype = np.uint32 if tier.bits <= 32 else np.uint64
    counts = np.zeros(tier.n_neurons, dtype=np.int64)
    keys_parts, vals_parts = [], []
    lo = 0
    while lo < tier.n_neurons:
        hi = lo + max(1, int(np.searchsorted(np.cumsum(bound[lo:]), SPARSE_BATCH_ENTRIES, side="right")))
        starts = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(bound[lo:hi], out=starts[1:])
        keys_out = np.empty(starts[-1], dtype=key_dtype)
        vals_out = np.empty(starts[-1], dtype=np.uint8)
        train_sparse_batch(*common, tier.bits, lo, starts, keys_out, vals_out, counts[lo:hi])
        # Compact each neuron's used prefix into new arrays: views would keep the whole
        # worst-case batch alive until the end (gigabytes over a tier of negatives).
        used = [slice(starts[b], starts[b] + counts[lo + b]) for b in range(hi - lo)]
        keys_parts.append(np.concatenate([keys_out[u] for u in used]))
        vals_parts.append(np.concatenate([vals_out[u] for u in used]))
        del keys_out, vals_out
        lo = hi
    offsets = np.zeros(tier.n_neurons + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, np.concatenate(keys_parts), np.concatenate(vals_parts)
