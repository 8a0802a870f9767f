// What the bitwise model's read and train shaders share (bitwise_wgpu.py prepends this file to
// each): 64-bit arithmetic on u32 pairs, the sampling hash, and a neuron's address.
//
// WGSL has no 64-bit integer, so a u64 is a vec2<u32>(low word, high word), and every operation
// below is exact mod 2^64, as numpy's uint64 on the CPU (connectivity.mix64, bitwise.keeps).

@group(0) @binding(1) var<storage, read> x: array<u32>;      // (examples, row) packed contexts, uint64 as u32 pairs
@group(0) @binding(2) var<storage, read> order: array<u32>;  // neurons' rows of input bits in the engine's address order

const GOLDEN = vec2<u32>(0x7F4A7C15u, 0x9E3779B9u);  // 0x9E3779B97F4A7C15
const MIX1 = vec2<u32>(0x1CE4E5B9u, 0xBF58476Du);    // 0xBF58476D1CE4E5B9
const MIX2 = vec2<u32>(0x133111EBu, 0x94D049BBu);    // 0x94D049BB133111EB
const SAMPLE_SALT = vec2<u32>(0x6D706C65u, 0x7361u); // "sample", big-endian: 0x73616D706C65

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));  // the low word's carry
}

// a >> k for 0 < k < 32 (WGSL masks shift counts to 5 bits, so k = 0 or 32 would be wrong)
fn shr64(a: vec2<u32>, k: u32) -> vec2<u32> {
    return vec2<u32>((a.x >> k) | (a.y << (32u - k)), a.y >> k);
}

// the full 64-bit product of two u32, from 16-bit halves (each partial product fits a u32)
fn mul32(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xFFFFu;
    let a1 = a >> 16u;
    let b0 = b & 0xFFFFu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = (p00 >> 16u) + (p01 & 0xFFFFu) + (p10 & 0xFFFFu);  // < 3 * 2^16: no overflow
    return vec2<u32>((p00 & 0xFFFFu) | (mid << 16u), a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u));
}

// a * b mod 2^64: the cross terms only reach the high word, where u32 wrapping is what we want
fn mul64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let low = mul32(a.x, b.x);
    return vec2<u32>(low.x, low.y + a.x * b.y + a.y * b.x);
}

fn less64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y < b.y || (a.y == b.y && a.x < b.x);
}

// splitmix64's finaliser (connectivity.mix64)
fn mix64(v: vec2<u32>) -> vec2<u32> {
    var z = add64(v, GOLDEN);
    z = mul64(z ^ shr64(z, 30u), MIX1);
    z = mul64(z ^ shr64(z, 27u), MIX2);
    return z ^ shr64(z, 31u);
}

// S = mix(mix(mix(mix(seed) + "sample") + cluster) + neuron) (docs/design.md §3c "Sampling")
fn sample_state(seed: vec2<u32>, cluster: u32, neuron: u32) -> vec2<u32> {
    let s = mix64(add64(mix64(seed), SAMPLE_SALT));
    return mix64(add64(mix64(add64(s, vec2<u32>(cluster, 0u))), vec2<u32>(neuron, 0u)));
}

// whether the neuron of state S keeps the example at position t: top 53 bits of mix(S + t) below R
fn keeps(state: vec2<u32>, t: vec2<u32>, threshold: vec2<u32>, all_kept: u32) -> bool {
    return all_kept != 0u || less64(shr64(mix64(add64(state, t)), 11u), threshold);
}

// the address of the neuron whose order row starts at order[first], for the example whose row
// starts at x[base]: its input bits MSB first (cpu.address); bit q of the uint64 words is bit q & 31 of u32 q >> 5
fn address(base: u32, first: u32, bits: u32) -> u32 {
    var a = 0u;
    for (var j = 0u; j < bits; j++) {
        let q = order[first + j];
        a = (a << 1u) | ((x[base + (q >> 5u)] >> (q & 31u)) & 1u);
    }
    return a;
}
