// Evaluate one range of a tier's clusters for one chunk of examples: cpu.evaluate_tier's loop,
// gates included, one invocation per EX examples (layouts and the host side in wgpu.py). Nothing here compares
// floats: scores are integer levels, the host maps them to values. Ranges of one tier run in
// cluster order and carry each example's state in `stats`, so the strict '>' keeps ties with
// the earlier cluster across ranges too.

struct Params {
    n_examples: u32,   // rows of `inputs` in this chunk
    row: u32,          // u32 words per row: the packed context (2 per uint64 word), then the target
    bits: u32,         // address bits per neuron (<= 32, or any width when hashed)
    neurons: u32,      // neurons per cluster
    c0: u32,           // this range's clusters [c0, c1), counted within the tier
    c1: u32,
    first: u32,        // cluster position of the tier's cluster 0
    n_levels: u32,     // columns of `hist`
    is_sparse: u32,
    dense_words: u32,  // u32 words per dense neuron row
    hashed: u32,       // LSH: the cell is the XOR of the hash words at the address's 1 bits
    hash_base: u32,    // LSH: where the range's hash words start in `order`, (range neurons, bits)
    // gating (g_need > 0): each cluster's g_neurons gate neurons, their tables after the tier's own
    g_need: u32,       // TRUE gate reads that open a cluster's gate
    g_neurons: u32,
    g_bits: u32,
    g_is_sparse: u32,
    g_dense_words: u32,
    g_order_base: u32,  // where the gate rows start in `order`, (range clusters * g_neurons, g_bits)
    g_cells_base: u32,  // ... their dense rows or keys in `cells`
    g_offsets_base: u32,  // ... their offsets in `offsets` (positions in `cells`)
    g_vals_base: u32,  // ... the byte of `vals` holding the code of the key at g_cells_base
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inputs: array<u32>;       // (n_examples, row)
@group(0) @binding(2) var<storage, read> order: array<u32>;        // (range neurons, bits) input bits, MSB first; hash words
@group(0) @binding(3) var<storage, read> level_table: array<u32>;  // (neurons+1, neurons+1): level of (n_true, n_empty)
@group(0) @binding(4) var<storage, read> cells: array<u32>;        // dense (range neurons, dense_words); sparse keys
@group(0) @binding(5) var<storage, read> offsets: array<u32>;      // sparse: (range neurons + 1,) into keys
@group(0) @binding(6) var<storage, read> vals: array<u32>;         // sparse: cell codes, 4 bytes a word
@group(0) @binding(7) var<storage, read_write> hist: array<u32>;   // (n_examples, n_levels) clusters per level
@group(0) @binding(8) var<storage, read_write> stats: array<u32>;  // (n_examples, 7), see main

const EX: u32 = 4u;  // examples an invocation (wgpu.py's EX): a neuron's wiring is read once for them

// a neuron's cell index for each of EX examples (rows at b): its address from its `bits` input
// bits at order[first..], or under LSH (hashed) the XOR of its hash words at order[hash_first..] at
// the address's 1 bits, built bit by bit, so a hashed address of up to 64 bits needs no 64-bit integer
fn addresses(b: array<u32, 4>, first: u32, bits: u32, hash_first: u32, hashed: bool) -> array<u32, 4> {
    var rows = b;
    var a = array<u32, 4>(0u, 0u, 0u, 0u);
    for (var j = 0u; j < bits; j++) {
        let q = order[first + j];
        var h = 0u;
        if (hashed) {
            h = order[hash_first + j];
        }
        for (var k = 0u; k < EX; k++) {
            let bit = (inputs[rows[k] + (q >> 5u)] >> (q & 31u)) & 1u;
            if (hashed) {
                a[k] ^= select(0u, h, bit == 1u);
            } else {
                a[k] = (a[k] << 1u) | bit;
            }
        }
    }
    return a;
}

// the code at address a of the neuron whose keys offsets[i]..offsets[i + 1] index in `cells`;
// the key at key_base has its code at byte val_base of `vals`
fn sparse_read(i: u32, a: u32, key_base: u32, val_base: u32) -> u32 {
    var lo = offsets[i];
    var hi = offsets[i + 1u];
    let end = hi;
    while (lo < hi) {
        let mid = (lo + hi) >> 1u;
        if (cells[mid] < a) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    if (lo < end && cells[lo] == a) {
        let b = lo - key_base + val_base;
        return (vals[b >> 2u] >> ((b & 3u) * 8u)) & 255u;
    }
    return 0u;
}

fn dense_read(base: u32, words: u32, n: u32, a: u32) -> u32 {
    return (cells[base + n * words + (a >> 4u)] >> ((a & 15u) << 1u)) & 3u;
}

// neuron n's code at address a: the tier's own (gate false) or its gate's, each table at its bases
fn code_at(gate: bool, n: u32, a: u32) -> u32 {
    if (gate) {
        if (p.g_is_sparse != 0u) {
            return sparse_read(p.g_offsets_base + n, a, p.g_cells_base, p.g_vals_base);
        }
        return dense_read(p.g_cells_base, p.g_dense_words, n, a);
    }
    if (p.is_sparse != 0u) {
        return sparse_read(n, a, 0u, 0u);
    }
    return dense_read(0u, p.dense_words, n, a);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // examples e0 + k * 64 for k < EX: neighbouring invocations read neighbouring rows; a lane
    // past the chunk's end repeats e0 and writes nothing
    let e0 = wid.x * 64u * EX + lid;
    if (e0 >= p.n_examples) {
        return;
    }
    var e: array<u32, 4>;
    var live: array<bool, 4>;
    var base: array<u32, 4>;
    var tpos: array<u32, 4>;
    // stats: 1 + best level so far (0: none yet), its cluster, 1 + the target's level
    // (0: not met), the target's EMPTY reads, EMPTY reads over all clusters, open gates, 1 when
    // the target's gate is open
    var best: array<u32, 4>;
    var best_c: array<u32, 4>;
    var empties = array<u32, 4>(0u, 0u, 0u, 0u);
    var opens = array<u32, 4>(0u, 0u, 0u, 0u);
    for (var k = 0u; k < EX; k++) {
        live[k] = e0 + k * 64u < p.n_examples;
        e[k] = select(e0, e0 + k * 64u, live[k]);
        base[k] = e[k] * p.row;
        tpos[k] = inputs[base[k] + p.row - 1u];
        best[k] = stats[e[k] * 7u];
        best_c[k] = stats[e[k] * 7u + 1u];
    }
    for (var c = p.c0; c < p.c1; c++) {
        var n_true = array<u32, 4>(0u, 0u, 0u, 0u);  // zeroed explicitly: on lavapipe the implicit zero of a var in a loop was not redone each pass
        var n_empty = array<u32, 4>(0u, 0u, 0u, 0u);
        let n0 = (c - p.c0) * p.neurons;
        for (var n = n0; n < n0 + p.neurons; n++) {
            let a = addresses(base, n * p.bits, p.bits, p.hash_base + n * p.bits, p.hashed != 0u);
            for (var k = 0u; k < EX; k++) {
                let v = code_at(false, n, a[k]);
                n_true[k] += select(0u, 1u, v == 3u);
                n_empty[k] += select(0u, 1u, v == 0u);
            }
        }
        var g_true = array<u32, 4>(0u, 0u, 0u, 0u);
        if (p.g_need > 0u) {
            let g0 = (c - p.c0) * p.g_neurons;
            for (var n = g0; n < g0 + p.g_neurons; n++) {
                let a = addresses(base, p.g_order_base + n * p.g_bits, p.g_bits, 0u, false);  // gates: never hashed
                for (var k = 0u; k < EX; k++) {
                    let v = code_at(true, n, a[k]);
                    g_true[k] += select(0u, 1u, v == 3u);
                }
            }
        }
        for (var k = 0u; k < EX; k++) {
            if (!live[k]) {
                continue;
            }
            let s = e[k] * 7u;
            var level = level_table[n_true[k] * (p.neurons + 1u) + n_empty[k]];
            if (p.g_need > 0u) {  // a closed gate scores the cluster as (0 TRUE, 0 EMPTY) reads
                if (g_true[k] >= p.g_need) {
                    opens[k] += 1u;
                    if (p.first + c == tpos[k]) {
                        stats[s + 6u] = 1u;
                    }
                } else {
                    level = level_table[0u];
                }
            }
            hist[e[k] * p.n_levels + level] += 1u;
            if (level + 1u > best[k]) {
                best[k] = level + 1u;
                best_c[k] = c;
            }
            if (p.first + c == tpos[k]) {
                stats[s + 2u] = level + 1u;
                stats[s + 3u] = n_empty[k];
            }
            empties[k] += n_empty[k];
        }
    }
    for (var k = 0u; k < EX; k++) {
        if (live[k]) {
            let s = e[k] * 7u;
            stats[s] = best[k];
            stats[s + 1u] = best_c[k];
            stats[s + 4u] += empties[k];
            stats[s + 5u] += opens[k];
        }
    }
}
