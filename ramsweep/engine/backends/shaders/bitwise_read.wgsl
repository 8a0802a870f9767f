// Look up one range of a bit cluster's neurons for examples [e0, e1) of one chunk: bitwise.read_cluster's
// loop, one invocation an example (layouts and the host side in bitwise_wgpu.py). No float here:
// the decided values are summed in integer quarters, and the host computes P from them.

struct Params {
    e0: u32,           // examples [e0, e1) of the chunk
    e1: u32,
    row: u32,          // u32 words of an example in `x`
    bits: u32,         // address bits (<= 32)
    neurons: u32,      // neurons in this range
    kind: u32,         // 0 DENSE ternary, 1 DENSE quad, 2 SPARSE
    words: u32,        // DENSE: u32 words of a neuron's row
    quarters: u32,     // by cell code c: the value read, in quarters, at bits 4c..4c+3
    takes_empty: u32,  // bit c: code c reads empty_value (ternary EMPTY)
    no_decision: u32,  // bit c: code c holds no decision
    order_first: u32,  // the range's first order row starts at order[order_first]
    cells_first: u32,  // DENSE: its first row of cells at cells[cells_first] (a buffer may hold several clusters)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> cells: array<u32>;        // DENSE rows (16 ternary or 4 quad cells a u32); SPARSE keys
@group(0) @binding(4) var<storage, read> offsets: array<u32>;      // SPARSE (range neurons + 1,) into keys
@group(0) @binding(5) var<storage, read> vals: array<u32>;         // SPARSE codes, 4 bytes a u32
@group(0) @binding(6) var<storage, read_write> out: array<u32>;    // the cluster's (chunk, 3): quarters, #EMPTY, #no decision

fn sparse_read(n: u32, a: u32) -> u32 {
    var lo = offsets[n];
    var hi = offsets[n + 1u];
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
        return (vals[lo >> 2u] >> ((lo & 3u) * 8u)) & 255u;
    }
    return 0u;
}

@compute @workgroup_size(64)
fn read_cluster(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = p.e0 + gid.x;
    if (e >= p.e1) {
        return;
    }
    let base = e * p.row;
    var q = 0u;
    var n_empty = 0u;
    var n_none = 0u;
    for (var n = 0u; n < p.neurons; n++) {
        let a = address(base, p.order_first + n * p.bits, p.bits);
        let row = p.cells_first + n * p.words;
        var code: u32;
        if (p.kind == 2u) {
            code = sparse_read(n, a);
        } else if (p.kind == 1u) {
            code = (cells[row + (a >> 2u)] >> ((a & 3u) * 8u)) & 255u;
        } else {
            code = (cells[row + (a >> 4u)] >> ((a & 15u) * 2u)) & 3u;
        }
        if (((p.takes_empty >> code) & 1u) != 0u) {
            n_empty += 1u;
        } else {
            q += (p.quarters >> (4u * code)) & 15u;
        }
        n_none += (p.no_decision >> code) & 1u;
    }
    let o = 3u * e;
    out[o] += q;  // ranges of a cluster run one after another: plain adds, no atomics
    out[o + 1u] += n_empty;
    out[o + 2u] += n_none;
}
