// A batch of random windows of a token array (nanoGPT's get_batch), drawn on the device from a
// counter-based hash of (seed, step, row): no offsets are uploaded, and the same seed and step
// give the same windows on every run and in src/cpu/token_batch.rs.
//   token_windows: o_b = ⌊hash(seed, step[0], first + b) · (len − block) / 2³²⌋,  0 ≤ o_b < len − block
//                  x[b, j] = tokens[o_b + j],  y[b, j] = tokens[o_b + j + 1]
//                  tokens: [len] u32,  x, y: [batch, block] u32
// `first` numbers the rows from a row of a larger batch: data-parallel rank r of a batch split into
// shards of `batch` rows draws rows [r·batch, (r+1)·batch) of it, the windows one process draws.
// One invocation per (b, j); the hash is recomputed per invocation (three rounds, cheaper than a
// second dispatch). The offset is the high word of hash · (len − block), Lemire's multiply-shift
// (no modulo bias beyond 2⁻³²), with the 32×32 → 64-bit product built from 16-bit halves.

override WG: u32 = 256u;

struct Params {
    len: u32,
    block: u32,
    batch: u32,
    seed: u32,
    first: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> step: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;

// PCG-RXS-M-XS hash of one u32 (Jarzynski & Olano, 2020), as dropout.wgsl's.
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// The random word of row `index` at (seed, step): dropout.wgsl's dropout_hash.
fn window_hash(seed: u32, t: u32, index: u32) -> u32 {
    let key = pcg_hash(seed ^ pcg_hash(t));
    return pcg_hash(pcg_hash(index ^ key) ^ pcg_hash(key));
}

// ⌊a · b / 2³²⌋ exactly, from 16-bit halves (every partial sum stays below 2³²).
fn mul_high(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let cross = (lo_lo >> 16u) + (hi_lo & 0xFFFFu) + lo_hi;
    return a_hi * b_hi + (hi_lo >> 16u) + (cross >> 16u);
}

@compute @workgroup_size(WG)
fn token_windows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.batch * p.block) { return; }
    let b = i / p.block;
    let j = i % p.block;
    let offset = mul_high(window_hash(p.seed, step[0], p.first + b), p.len - p.block);
    x[i] = tokens[offset + j];
    y[i] = tokens[offset + j + 1u];
}

// advance_step: step[0] += 1, the counter token_windows reads (a training step's t where no
// gather advances it, an evaluation's batch index). One invocation, a dispatch after the windows'.
@compute @workgroup_size(1)
fn advance_step() {
    step[0] = step[0] + 1u;
}
