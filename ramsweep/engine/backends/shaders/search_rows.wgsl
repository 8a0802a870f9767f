// A connectivity search's rows (optimize/cpu.py train_rows): each rewired neuron trained into a
// scratch table of 2-bit cells by atomic ORs (order-free: the CPU's cells exactly), then its
// code at every fitness example read into its row, 4 codes (bytes) a word. Host side in
// optimize/wgpu.py.
//   mode 0: invocation (j, row) writes, for j over the row's writes (grid-stride): FALSE at
//           training example j below n_all (a negative cluster's), then TRUE at its cluster's
//           target examples
//   mode 1: invocation (w, row) packs the row's codes at fitness examples 4w .. 4w + 3

struct Params {
    mode: u32,
    bits: u32,       // address bits of every row (<= 32)
    train_row: u32,  // u32 words of a training example's packed context
    fit_row: u32,    // ... of a fitness example's
    n_fit: u32,
    words: u32,      // u32 words of one row's scratch cells
    out_words: u32,  // u32 words of one output row
    stride: u32,     // invocations along x: the grid-stride
    row0: u32,       // this dispatch's first row
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> train_x: array<u32>;   // (n_train, train_row)
@group(0) @binding(2) var<storage, read> fit_x: array<u32>;     // (n_fit, fit_row)
@group(0) @binding(3) var<storage, read> order: array<u32>;     // (rows, bits) input bits, MSB first
@group(0) @binding(4) var<storage, read> info: array<u32>;      // (rows, 3): writes, n_all, first target example
@group(0) @binding(5) var<storage, read> examples: array<u32>;  // training examples grouped by target cluster
@group(0) @binding(6) var<storage, read_write> scratch: array<atomic<u32>>;  // (rows, words)
@group(0) @binding(7) var<storage, read_write> out: array<u32>;  // (rows, out_words)

fn train_address(e: u32, i: u32) -> u32 {
    var a = 0u;
    for (var j = 0u; j < p.bits; j++) {
        let q = order[i * p.bits + j];
        a = (a << 1u) | ((train_x[e * p.train_row + (q >> 5u)] >> (q & 31u)) & 1u);
    }
    return a;
}

fn fit_address(f: u32, i: u32) -> u32 {
    var a = 0u;
    for (var j = 0u; j < p.bits; j++) {
        let q = order[i * p.bits + j];
        a = (a << 1u) | ((fit_x[f * p.fit_row + (q >> 5u)] >> (q & 31u)) & 1u);
    }
    return a;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = p.row0 + gid.y;
    if (p.mode == 0u) {
        let total = info[i * 3u];
        let n_all = info[i * 3u + 1u];
        let t0 = info[i * 3u + 2u];
        for (var j = gid.x; j < total; j += p.stride) {
            var e = j;
            var code = 1u;
            if (j >= n_all) {
                e = examples[t0 + j - n_all];
                code = 3u;
            }
            let a = train_address(e, i);
            let k = i * p.words + (a >> 4u);
            let b = code << ((a & 15u) << 1u);
            if ((atomicLoad(&scratch[k]) & b) != b) {  // cells only gain bits: most writes find them set
                atomicOr(&scratch[k], b);
            }
        }
        return;
    }
    for (var w = gid.x; w < p.out_words; w += p.stride) {
        var packed = 0u;
        for (var k = 0u; k < 4u; k++) {
            let f = w * 4u + k;
            if (f < p.n_fit) {
                let a = fit_address(f, i);
                let code = (atomicLoad(&scratch[i * p.words + (a >> 4u)]) >> ((a & 15u) << 1u)) & 3u;
                packed |= code << (k * 8u);
            }
        }
        out[i * p.out_words + w] = packed;
    }
}
