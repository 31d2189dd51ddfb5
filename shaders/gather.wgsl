// Batch assembly on the GPU: rows of the resident data set picked by an index list.
//   gather_rows: x[r, j] = norm(src[idx[start + r], j]);  y[r] = labels[idx[start + r]]
//     src: [total_rows, dim] as u8 packed 4 per u32 (SOURCE_U8) or f32 bits; idx: [n] u32;
//     labels: [total_rows] u32; x: [rows, dim]; y: [rows].
//   norm(v) = v * scale + shift, then (· − mean[j]) / std[j] when STANDARDIZE (mean_std: [2, dim]).
// gather_rows_u8x4: the same for u8 data with dim % 4 == 0, one invocation per packed word (four
// features): lavapipe loads memory one lane at a time, so four lanes reading one word cost four.
// The batch start is `epoch_step[0] * stride` when START_FROM_COUNTER (a training step reads its own
// position from the GPU-side step counter, so an epoch needs no per-step upload), else `start`.

override SOURCE_U8: bool = true;
override STANDARDIZE: bool = false;
override START_FROM_COUNTER: bool = true;
override WG: u32 = 256u;

struct Params {
    rows: u32,
    dim: u32,
    start: u32,
    stride: u32,
    scale: f32,
    shift: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read> mean_std: array<f32>;
@group(0) @binding(5) var<storage, read> epoch_step: array<u32>;
@group(0) @binding(6) var<storage, read_write> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<u32>;

// Grid: x over features, y over batch rows, so no invocation divides by a runtime value (lavapipe
// does integer division one lane at a time).
@compute @workgroup_size(WG)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let r = gid.y;
    if (j >= p.dim || r >= p.rows) { return; }
    let i = r * p.dim + j;
    var start = p.start;
    if (START_FROM_COUNTER) { start = epoch_step[0] * p.stride; }
    let row = idx[start + r];
    let e = row * p.dim + j;
    var v: f32;
    if (SOURCE_U8) {
        v = f32((src[e / 4u] >> (8u * (e % 4u))) & 0xFFu);
    } else {
        v = bitcast<f32>(src[e]);
    }
    x[i] = normalize(v, j);
    if (j == 0u) { y[r] = labels[row]; }
}

fn normalize(v: f32, j: u32) -> f32 {
    var out = v * p.scale + p.shift;
    if (STANDARDIZE) { out = (out - mean_std[j]) / mean_std[p.dim + j]; }
    return out;
}

// Grid: x over words of a row (dim / 4), y over batch rows.
@compute @workgroup_size(WG)
fn gather_rows_u8x4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let r = gid.y;
    let words_per_row = p.dim / 4u;
    if (w >= words_per_row || r >= p.rows) { return; }
    var start = p.start;
    if (START_FROM_COUNTER) { start = epoch_step[0] * p.stride; }
    let row = idx[start + r];
    let word = src[row * words_per_row + w];
    let j = 4u * w;
    let i = r * p.dim + j;
    x[i] = normalize(f32(word & 0xFFu), j);
    x[i + 1u] = normalize(f32((word >> 8u) & 0xFFu), j + 1u);
    x[i + 2u] = normalize(f32((word >> 16u) & 0xFFu), j + 2u);
    x[i + 3u] = normalize(f32(word >> 24u), j + 3u);
    if (w == 0u) { y[r] = labels[row]; }
}
