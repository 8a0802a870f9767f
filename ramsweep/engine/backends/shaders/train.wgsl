// Write a dense tier's cells: cpu.train_dense's writes, in any order (a cell's code is the OR of
// what is written to it, so atomicOr gives the CPU's cells exactly). Layouts and the host side
// in wgpu.py (train_tier). One dispatch writes one chunk of examples into one range of neurons:
//   mode 0 (negatives): invocation (example, neuron) writes FALSE at the example's cell
//   mode 1 (targets):   invocation (example) writes TRUE at its cell in each neuron of its target
//                       cluster that the range holds

struct Params {
    n_examples: u32,   // rows of `inputs` and `targets` in this chunk
    row: u32,          // u32 words per row: the packed context, 2 per uint64 word
    bits: u32,         // address bits per neuron (<= 32, or any width when hashed)
    neurons: u32,      // neurons per cluster
    lo: u32,           // this range's neurons [lo, hi), counted within the tier: rows n - lo
    hi: u32,
    neg_hi: u32,       // neurons below this are of negative clusters (written FALSE everywhere)
    mode: u32,
    hashed: u32,       // LSH: the cell is the XOR of the hash words at the address's 1 bits
    hash_base: u32,    // LSH: where the range's hash words start in `order`
    row_words: u32,    // u32 words of one neuron's cells
    y0: u32,           // mode 0: the first neuron of this dispatch (past 65,535 rows of a grid)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inputs: array<u32>;        // (n_examples, row)
@group(0) @binding(2) var<storage, read> targets: array<u32>;       // (n_examples,) target cluster in the tier, or ~0
@group(0) @binding(3) var<storage, read> order: array<u32>;         // (range neurons, bits), then hash words
@group(0) @binding(4) var<storage, read_write> cells: array<atomic<u32>>;  // (range neurons, row_words)

fn address(base: u32, n: u32) -> u32 {
    var a = 0u;
    for (var j = 0u; j < p.bits; j++) {
        let q = order[n * p.bits + j];
        let bit = (inputs[base + (q >> 5u)] >> (q & 31u)) & 1u;
        if (p.hashed != 0u) {
            a ^= select(0u, order[p.hash_base + n * p.bits + j], bit == 1u);
        } else {
            a = (a << 1u) | bit;
        }
    }
    return a;
}

fn write(n: u32, a: u32, code: u32) {
    let i = n * p.row_words + (a >> 4u);
    let bits = code << ((a & 15u) << 1u);
    if ((atomicLoad(&cells[i]) & bits) != bits) {  // cells only gain bits: most writes find them set
        atomicOr(&cells[i], bits);
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.x;
    if (e >= p.n_examples) {
        return;
    }
    let base = e * p.row;
    if (p.mode == 0u) {
        let n = p.lo + p.y0 + gid.y;
        if (n < p.neg_hi) {
            write(n - p.lo, address(base, n - p.lo), 1u);
        }
        return;
    }
    let c = targets[e];
    if (c == 0xFFFFFFFFu) {
        return;
    }
    let first = max(p.lo, c * p.neurons);
    let last = min(p.hi, (c + 1u) * p.neurons);
    for (var n = first; n < last; n++) {
        write(n - p.lo, address(base, n - p.lo), 3u);
    }
}
