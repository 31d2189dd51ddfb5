// Batch assembly on the GPU: rows of the resident data set picked by an index list.
//   gather_rows: x[r, j] = norm(src[idx[start + r], j]);  y[r] = labels[idx[start + r]]
//     src: [total_rows, dim] as u8 packed 4 per u32 (SOURCE_U8) or f32 bits; idx: [n] u32;
//     labels: [total_rows] u32; x: [rows, dim]; y: [rows].
//   norm(v) = v * scale + shift, then (· − mean[j]) / std[j] when STANDARDIZE (mean_std: [2, dim]).
// gather_rows_u8x4: the same for u8 data with dim % 4 == 0, one invocation per packed word (four
// features): lavapipe loads memory one lane at a time, so four lanes reading one word cost four.
// The batch start is `epoch_step[0] * stride` when START_FROM_COUNTER (a training step reads its own
// position from the GPU-side step counter, so an epoch needs no per-step upload), else `start`.
//
// A data set larger than one storage binding is split into up to four chunks of rows_per_chunk
// whole rows (src0..src3, the last possibly shorter), each packed from word 0 of its own buffer.
// The *_chunked entries read the row's chunk; the others read src0 only, so their layout needs
// just 7 storage bindings (the WebGPU default allows 8; the chunked ones need 10).

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
    rows_per_chunk: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src0: array<u32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read> mean_std: array<f32>;
@group(0) @binding(5) var<storage, read> epoch_step: array<u32>;
@group(0) @binding(6) var<storage, read_write> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<u32>;
@group(0) @binding(8) var<storage, read> src1: array<u32>;
@group(0) @binding(9) var<storage, read> src2: array<u32>;
@group(0) @binding(10) var<storage, read> src3: array<u32>;

// The data-set row of batch row r.
fn batch_row(r: u32) -> u32 {
    var start = p.start;
    if (START_FROM_COUNTER) { start = epoch_step[0] * p.stride; }
    return idx[start + r];
}

// (chunk, row within it) of a data-set row. Comparisons, not a division: lavapipe divides by a
// runtime value one lane at a time.
fn chunk_of(row: u32) -> vec2<u32> {
    let n = p.rows_per_chunk;
    let c = u32(row >= n) + u32(row >= 2u * n) + u32(row >= 3u * n);
    return vec2<u32>(c, row - c * n);
}

// Word i of chunk c.
fn chunk_word(c: u32, i: u32) -> u32 {
    switch c {
        case 0u: { return src0[i]; }
        case 1u: { return src1[i]; }
        case 2u: { return src2[i]; }
        default: { return src3[i]; }
    }
}

// Element e of a row-major chunk: its word, and the feature's value in that word.
fn word_of(e: u32) -> u32 {
    if (SOURCE_U8) { return e / 4u; }
    return e;
}
fn value_in(word: u32, e: u32) -> f32 {
    if (SOURCE_U8) { return f32((word >> (8u * (e % 4u))) & 0xFFu); }
    return bitcast<f32>(word);
}

fn normalize(v: f32, j: u32) -> f32 {
    var out = v * p.scale + p.shift;
    if (STANDARDIZE) { out = (out - mean_std[j]) / mean_std[p.dim + j]; }
    return out;
}

// Feature j of batch row r, from `word` holding element e of its chunk; the label with feature 0.
fn store(r: u32, j: u32, row: u32, word: u32, e: u32) {
    x[r * p.dim + j] = normalize(value_in(word, e), j);
    if (j == 0u) { y[r] = labels[row]; }
}

// Features 4w..4w+3 of batch row r, from their packed word; the label with word 0.
fn store4(r: u32, w: u32, row: u32, word: u32) {
    let j = 4u * w;
    let i = r * p.dim + j;
    x[i] = normalize(f32(word & 0xFFu), j);
    x[i + 1u] = normalize(f32((word >> 8u) & 0xFFu), j + 1u);
    x[i + 2u] = normalize(f32((word >> 16u) & 0xFFu), j + 2u);
    x[i + 3u] = normalize(f32(word >> 24u), j + 3u);
    if (w == 0u) { y[r] = labels[row]; }
}

// Grid: x over features, y over batch rows, so no invocation divides by a runtime value.
@compute @workgroup_size(WG)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let r = gid.y;
    if (j >= p.dim || r >= p.rows) { return; }
    let row = batch_row(r);
    let e = row * p.dim + j;
    store(r, j, row, src0[word_of(e)], e);
}

@compute @workgroup_size(WG)
fn gather_rows_chunked(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let r = gid.y;
    if (j >= p.dim || r >= p.rows) { return; }
    let row = batch_row(r);
    let at = chunk_of(row);
    let e = at.y * p.dim + j;
    store(r, j, row, chunk_word(at.x, word_of(e)), e);
}

// Grid: x over words of a row (dim / 4), y over batch rows.
@compute @workgroup_size(WG)
fn gather_rows_u8x4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let r = gid.y;
    let words_per_row = p.dim / 4u;
    if (w >= words_per_row || r >= p.rows) { return; }
    let row = batch_row(r);
    store4(r, w, row, src0[row * words_per_row + w]);
}

@compute @workgroup_size(WG)
fn gather_rows_u8x4_chunked(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.x;
    let r = gid.y;
    let words_per_row = p.dim / 4u;
    if (w >= words_per_row || r >= p.rows) { return; }
    let row = batch_row(r);
    let at = chunk_of(row);
    store4(r, w, row, chunk_word(at.x, at.y * words_per_row + w));
}
