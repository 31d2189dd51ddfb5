// Batch assembly on the GPU: rows of the resident data set picked by an index list.
//   gather_rows: x[r, j] = norm(src[idx[start + r], j]);  y[r] = labels[idx[start + r]]
//     src: [total_rows, dim] as u8 packed 4 per u32 (SOURCE_U8) or f32 bits; idx: [n] u32;
//     labels: [total_rows] u32; x: [rows, dim]; y: [rows].
//   norm(v) = v * scale + shift, then (· − mean[j]) / std[j] when STANDARDIZE (mean_std: [2, dim]).
// gather_rows_u8x4: the same for u8 data with dim % 4 == 0 (and x 16-byte aligned), stored as vec4s:
// one invocation per group of WORDS packed words (4·WORDS features) of one batch row, on a 1-D grid.
// lavapipe pays per lane for every load, the row index and counter included, and per workgroup, so
// few fat invocations beat one per word (a 256-row batch of 784 features: ~0.2 ms against ~0.7 ms).
// The batch start is `epoch_step[PARITY] * stride` when START_FROM_COUNTER (a training step reads
// its own position from the GPU-side step counter, so an epoch needs no per-step upload), else
// `start`. Such a gather also advances the counters, so that no dispatch of its own does: its
// first invocation writes epoch_step[1 − PARITY] = epoch_step[PARITY] + 1, the next step's position
// (consecutive steps alternate PARITY, so no invocation reads the cell its dispatch writes; a second
// gather in the same step writes the same value again), and with ADVANCE_T adds one to t_counter[0],
// the update count t that the step's optimizer update reads (nothing in a gather reads it).
//
// A data set larger than one storage binding is split into up to four chunks of rows_per_chunk
// whole rows (src0..src3, the last possibly shorter), each packed from word 0 of its own buffer.
// The *_chunked entries read the row's chunk; the others read src0 only, so their layout needs
// just 8 storage bindings (the WebGPU default; the chunked ones need 11: src1..src3 at 9..11).

override SOURCE_U8: bool = true;
override STANDARDIZE: bool = false;
override START_FROM_COUNTER: bool = true;
override PARITY: u32 = 0u;
override ADVANCE_T: bool = false;
override WG: u32 = 256u;
// Packed words (4 features each) per invocation of the u8x4 entries.
const WORDS: u32 = 4u;

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
@group(0) @binding(5) var<storage, read_write> epoch_step: array<u32>;  // [2]: position cells
@group(0) @binding(6) var<storage, read_write> x: array<f32>;
@group(0) @binding(7) var<storage, read_write> y: array<u32>;
// x again, as vec4s, for the u8x4 entries (an entry point binds one of the two).
@group(0) @binding(6) var<storage, read_write> x4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> t_counter: array<u32>;  // ADVANCE_T: [1]
@group(0) @binding(9) var<storage, read> src1: array<u32>;
@group(0) @binding(10) var<storage, read> src2: array<u32>;
@group(0) @binding(11) var<storage, read> src3: array<u32>;

// The data-set row of batch row r.
fn batch_row(r: u32) -> u32 {
    var start = p.start;
    if (START_FROM_COUNTER) { start = epoch_step[PARITY] * p.stride; }
    return idx[start + r];
}

// Batch row r's label, and the counters with the first row's (one invocation per gather).
fn store_label(r: u32, row: u32) {
    y[r] = labels[row];
    if (r == 0u && START_FROM_COUNTER) {
        epoch_step[1u - PARITY] = epoch_step[PARITY] + 1u;
        if (ADVANCE_T) { t_counter[0] += 1u; }
    }
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
    if (j == 0u) { store_label(r, row); }
}

// Features 4w..4w+3 of batch row r, from their packed word.
fn store4(r: u32, w: u32, word: u32) {
    let bytes = vec4<u32>(word, word >> 8u, word >> 16u, word >> 24u) & vec4<u32>(0xFFu);
    var out = vec4<f32>(bytes) * p.scale + p.shift;
    if (STANDARDIZE) {
        let j = 4u * w;
        let mean = vec4<f32>(mean_std[j], mean_std[j + 1u], mean_std[j + 2u], mean_std[j + 3u]);
        let k = p.dim + j;
        out = (out - mean) / vec4<f32>(mean_std[k], mean_std[k + 1u], mean_std[k + 2u], mean_std[k + 3u]);
    }
    x4[r * (p.dim / 4u) + w] = out;
}

// The group of an u8x4 invocation: (batch row, first word), the row p.rows when past the end.
fn word_group(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> vec2<u32> {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    let groups_per_row = (p.dim / 4u + WORDS - 1u) / WORDS;
    let r = i / groups_per_row;
    return vec2<u32>(min(r, p.rows), (i - r * groups_per_row) * WORDS);
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

// Grid: 1-D over (batch row, word group), folded into y past the per-dimension limit.
@compute @workgroup_size(WG)
fn gather_rows_u8x4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = word_group(wid, nwg, lid);
    let r = g.x;
    if (r >= p.rows) { return; }
    let row = batch_row(r);
    let words_per_row = p.dim / 4u;
    for (var k = 0u; k < WORDS; k++) {
        let w = g.y + k;
        if (w < words_per_row) { store4(r, w, src0[row * words_per_row + w]); }
    }
    if (g.y == 0u) { store_label(r, row); }
}

@compute @workgroup_size(WG)
fn gather_rows_u8x4_chunked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = word_group(wid, nwg, lid);
    let r = g.x;
    if (r >= p.rows) { return; }
    let row = batch_row(r);
    let at = chunk_of(row);
    let words_per_row = p.dim / 4u;
    for (var k = 0u; k < WORDS; k++) {
        let w = g.y + k;
        if (w < words_per_row) { store4(r, w, chunk_word(at.x, at.y * words_per_row + w)); }
    }
    if (g.y == 0u) { store_label(r, row); }
}
