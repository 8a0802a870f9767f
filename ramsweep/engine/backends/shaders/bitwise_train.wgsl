// Train DENSE bit clusters on examples [e0, e1) of one chunk (layouts and the host side in
// bitwise_wgpu.py); count their stored codes; `probe` exposes the 64-bit helpers to the tests.
//
// count_ternary + fold_ternary: one range of one cluster's neurons. Each kept write adds ±1 to an
// i32 net count (atomics: any order gives the same counts), then the fold turns counts into 2-bit
// codes, 16 a u32, and sets the counts back to 0 for the next range (one counts buffer serves all).
// train_quad: order-exact saturating counters, a workgroup a neuron of a group (neurons of one or
// more clusters, jobs[]). Its LANES invocations walk the examples LANES at a time: each works out
// one example's write into workgroup memory, then every invocation applies, in example order, the
// writes to the words it owns (word index mod LANES), so each cell sees its writes in ascending t,
// one invocation at a time.
// count_codes: the non-zero codes of `words` u32 of cells from `first` (2-bit ternary codes, or
// quad bytes), added to a u64 tally (a u32 pair: the add that wraps the low word carries).

const LANES = 64u;  // train_quad's workgroup size (bitwise_wgpu.LANES)
const JOB = 5u;     // u32 of a train_quad job: cluster, neuron, bits, its order row's start, its cells row's start

struct Params {
    e0: u32,         // examples [e0, e1) of the chunk
    e1: u32,
    row: u32,        // u32 words of an example in `x`
    bits: u32,       // ternary: address bits
    n0: u32,         // ternary: the range's first neuron in its cluster: the hash's neuron is n0 + local
    neurons: u32,    // neurons in this range (ternary) or group (train_quad: its jobs)
    cluster: u32,    // ternary
    shift: u32,      // ternary: the cluster's bit of a target code, (code >> shift) & 1; train_quad: n_bits - 1
    seed_lo: u32,
    seed_hi: u32,
    threshold_lo: u32,  // R = ceil(rate * 2^53)
    threshold_hi: u32,
    all_kept: u32,   // R >= 2^53: every example kept, no hash needed
    size: u32,       // ternary: cells a neuron, 2^bits
    words: u32,      // ternary: u32 words of a neuron's row of codes; count_codes: words to count
    steps: u32,      // train_quad: ceil((e1 - e0) / LANES), uniform for the barriers
    first: u32,      // count_codes: the first word counted
    slot: u32,       // count_codes: the tally's pair
    ternary: u32,    // count_codes: 1 2-bit codes, 0 bytes
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> t: array<u32>;             // (chunk, 2) target positions as u32 pairs
@group(0) @binding(4) var<storage, read> codes: array<u32>;         // (chunk,) target codes
@group(0) @binding(5) var<storage, read_write> counts: array<atomic<i32>>;  // ternary (range neurons, size) net counts
@group(0) @binding(6) var<storage, read_write> cells: array<u32>;   // rows of codes: (range neurons, words), or a group's
@group(0) @binding(7) var<storage, read> probe_in: array<u32>;      // probe: (n, 4) pairs a, b
@group(0) @binding(8) var<storage, read_write> probe_out: array<u32>;  // probe: (n, 12)
@group(0) @binding(9) var<storage, read> jobs: array<u32>;          // train_quad: (group neurons, JOB)
@group(0) @binding(10) var<storage, read_write> tally: array<atomic<u32>>;  // count_codes: (slots, 2) u64 counts

var<workgroup> lane_addr: array<u32, LANES>;
var<workgroup> lane_write: array<u32, LANES>;  // 0 nothing, 1 + y for a kept write of bit y
var<workgroup> group_count: atomic<u32>;

fn seed() -> vec2<u32> {
    return vec2<u32>(p.seed_lo, p.seed_hi);
}

fn kept(state: vec2<u32>, e: u32) -> bool {
    return keeps(state, vec2<u32>(t[2u * e], t[2u * e + 1u]), vec2<u32>(p.threshold_lo, p.threshold_hi), p.all_kept);
}

// x: examples, y: the range's neurons (a dispatch's grid.y)
@compute @workgroup_size(64)
fn count_ternary(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = p.e0 + gid.x;
    let n = gid.y;
    if (e >= p.e1 || n >= p.neurons) {
        return;
    }
    if (kept(sample_state(seed(), p.cluster, p.n0 + n), e)) {
        let a = address(e * p.row, n * p.bits, p.bits);
        atomicAdd(&counts[n * p.size + a], select(-1i, 1i, ((codes[e] >> p.shift) & 1u) == 1u));
    }
}

// one invocation a word of codes: TRUE (3) where the net count is positive, FALSE (1) where
// negative, EMPTY (0) on a tie or no write; each count read is set back to 0; a dispatch may be
// 2-D when the words are many
@compute @workgroup_size(64)
fn fold_ternary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let w = gid.x + gid.y * groups.x * 64u;
    if (w >= p.neurons * p.words) {
        return;
    }
    let n = w / p.words;
    let first = (w % p.words) * 16u;
    var word = 0u;
    for (var i = 0u; i < 16u && first + i < p.size; i++) {
        let c = atomicExchange(&counts[n * p.size + first + i], 0i);
        word |= select(select(0u, 1u, c < 0), 3u, c > 0) << (2u * i);
    }
    cells[w] = word;
}

// the code after writing bit y to a quad cell of code `code` (0: never written, c = 1); 1 + c
fn quad_step(code: u32, y: u32) -> u32 {
    let c = select(code - 1u, 1u, code == 0u);
    if (y == 1u) {
        return min(c + 1u, 3u) + 1u;
    }
    return select(c - 1u, 0u, c == 0u) + 1u;
}

// one workgroup a job (workgroup_id.x): neuron jobs[1] of cluster jobs[0], its rows at order[jobs[3]]
// and cells[jobs[4]] (whole words: rows of different neurons never share a word)
@compute @workgroup_size(64)
fn train_quad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let job = wid.x * JOB;
    let cluster = jobs[job];
    let bits = jobs[job + 2u];
    let first = jobs[job + 3u];
    let row = jobs[job + 4u];
    let bit = p.shift - cluster;  // the cluster's bit of a target code
    let state = sample_state(seed(), cluster, jobs[job + 1u]);
    for (var s = 0u; s < p.steps; s++) {
        let e = p.e0 + s * LANES + lane;
        var write = 0u;
        var a = 0u;
        if (e < p.e1 && kept(state, e)) {
            a = address(e * p.row, first, bits);
            write = 1u + ((codes[e] >> bit) & 1u);
        }
        lane_addr[lane] = a;
        lane_write[lane] = write;
        workgroupBarrier();
        for (var k = 0u; k < LANES; k++) {  // in example order
            let ak = lane_addr[k];
            if (lane_write[k] != 0u && ((ak >> 2u) & (LANES - 1u)) == lane) {
                let i = row + (ak >> 2u);
                let at = (ak & 3u) * 8u;
                let code = quad_step((cells[i] >> at) & 255u, lane_write[k] - 1u);
                cells[i] = (cells[i] & ~(255u << at)) | (code << at);
            }
        }
        workgroupBarrier();  // the lanes' entries are read before the next step overwrites them
    }
}

// non-zero codes of words [first, first + words) of cells, into tally pair `slot`: each invocation
// counts a stride of words, the workgroup sums them, and one add a workgroup goes to the tally
@compute @workgroup_size(64)
fn count_codes(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lane: u32,
               @builtin(num_workgroups) groups: vec3<u32>) {
    if (lane == 0u) {
        atomicStore(&group_count, 0u);
    }
    workgroupBarrier();
    var total = 0u;
    for (var w = gid.x; w < p.words; w += groups.x * 64u) {
        let v = cells[p.first + w];
        if (p.ternary != 0u) {
            total += countOneBits((v | (v >> 1u)) & 0x55555555u);  // bit 2k: code k is not 0
        } else {
            let b = v | (v >> 4u);
            let c = b | (b >> 2u);
            total += countOneBits((c | (c >> 1u)) & 0x01010101u);  // bit 8k: the OR of byte k's bits
        }
    }
    atomicAdd(&group_count, total);
    workgroupBarrier();
    if (lane == 0u) {
        let sum = atomicLoad(&group_count);
        let before = atomicAdd(&tally[2u * p.slot], sum);
        if (before + sum < before) {  // the low word wrapped: carry
            atomicAdd(&tally[2u * p.slot + 1u], 1u);
        }
    }
}

// the helpers on pairs (a, b): a + b, a * b, mix(a), a >> 11, sample_state(a, b.lo, b.hi), a < b
@compute @workgroup_size(64)
fn probe(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (4u * i >= arrayLength(&probe_in)) {
        return;
    }
    let a = vec2<u32>(probe_in[4u * i], probe_in[4u * i + 1u]);
    let b = vec2<u32>(probe_in[4u * i + 2u], probe_in[4u * i + 3u]);
    var results = array<vec2<u32>, 6>(add64(a, b), mul64(a, b), mix64(a), shr64(a, 11u), sample_state(a, b.x, b.y),
                                      vec2<u32>(select(0u, 1u, less64(a, b)), 0u));
    for (var k = 0u; k < 6u; k++) {
        probe_out[12u * i + 2u * k] = results[k].x;
        probe_out[12u * i + 2u * k + 1u] = results[k].y;
    }
}
