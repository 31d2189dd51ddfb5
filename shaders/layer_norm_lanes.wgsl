// Layer normalisation's kernels written over `V` (layer_norm.wgsl has the formulas and the
// workgroup-per-row kernels for GPUs). Needs a lane width prepended: lanes_scalar.wgsl, or
// lanes_vec4.wgsl where cols is a multiple of 4; then every [cols] axis below is in vec4s of four
// columns and p.cols = cols / 4. A row's sums run over its values one at a time in column order
// (add_in_order) and every element is computed by the same scalar operations: the results are
// the same bits at either width.
//   ln_forward_rows, ln_backward_dx_rows: one invocation per row and no workgroup memory, for CPU
//                          adapters (lavapipe), where barriers cost more than the loads they
//                          share; they loop 3·cols and 2·cols times. lavapipe loads each value
//                          of a lane by a loop over the SIMD lanes, so a vec4 shares that loop's
//                          cost among four values.
//   ln_backward_partials:  per (column, chunk k of rows): part[k, c] = Σ dy·x̂, part[K + k, c] = Σ dy
//                          (layer_norm.wgsl's ln_backward_finalize sums them: part's layout is
//                          [2K, cols] of floats at either width)

override HAS_GAMMA: bool = true;   // forward, backward_dx: γ given (else 1)
override HAS_BETA: bool = true;    // forward: β given (else 0)
override ADD_TO_DX: bool = false;  // backward_dx: add `addend` to dx

struct Params {
    rows: u32,
    cols: u32,        // in V
    chunk: u32,       // partials: rows per chunk
    chunks: u32,      // K
    eps: f32,
    accumulate: u32,  // unused here (finalize's)
    _pad0: u32,
    _pad1: u32,
}

// The slots of layer_norm.wgsl, as V where they run along the columns.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<V>;      // [rows, cols]
@group(0) @binding(2) var<storage, read_write> gamma: array<V>;  // [cols]
@group(0) @binding(3) var<storage, read_write> b: array<V>;      // forward: β [cols]; backward: dy [rows, cols]
@group(0) @binding(4) var<storage, read_write> mean: array<f32>; // [rows]
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>; // [rows]
@group(0) @binding(6) var<storage, read_write> out: array<V>;    // y, dx [rows, cols]; the partials [2K, cols]
@group(0) @binding(7) var<storage, read_write> addend: array<V>; // backward_dx with ADD_TO_DX: added to dx

const INVOCATIONS: u32 = 64u;

// Row r of a per-row invocation, or p.rows past the end (1-D grid folded into y).
fn row_of_invocation(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * INVOCATIONS + lid.x;
}

@compute @workgroup_size(INVOCATIONS)
fn ln_forward_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of_invocation(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let n = f32(p.cols * LANES);
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        s = add_in_order(s, x[base + c]);
    }
    let m = s / n;
    var q = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let d = x[base + c] - splat(m);
        q = add_in_order(q, d * d);
    }
    let rs = 1.0 / sqrt(q / n + p.eps);
    for (var c = 0u; c < p.cols; c++) {
        var v = (x[base + c] - splat(m)) * rs;
        if (HAS_GAMMA) { v *= gamma[c]; }
        if (HAS_BETA) { v += b[c]; }
        out[base + c] = v;
    }
    mean[r] = m;
    rstd[r] = rs;
}

@compute @workgroup_size(INVOCATIONS)
fn ln_backward_dx_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of_invocation(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let n = f32(p.cols * LANES);
    let m = mean[r];
    let rs = rstd[r];
    var s_g = 0.0;
    var s_gx = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        var g = b[base + c];
        if (HAS_GAMMA) { g *= gamma[c]; }
        s_g = add_in_order(s_g, g);
        s_gx = add_in_order(s_gx, g * ((x[base + c] - splat(m)) * rs));
    }
    let mean_g = s_g / n;
    let mean_gx = s_gx / n;
    for (var c = 0u; c < p.cols; c++) {
        var g = b[base + c];
        if (HAS_GAMMA) { g *= gamma[c]; }
        let xhat = (x[base + c] - splat(m)) * rs;
        var v = rs * (g - splat(mean_g) - xhat * mean_gx);
        if (ADD_TO_DX) { v = addend[base + c] + v; }
        out[base + c] = v;
    }
}

// Columns (of V) per invocation of ln_backward_partials: a row's mean and rstd are loaded once
// for them (on lavapipe every load is a loop over the SIMD lanes; they were 2 of a column's 4
// loads a row). Each column's sums run over the chunk's rows in order, as with one column.
const PARTIAL_COLS: u32 = 4u;
// Its workgroup: a quarter of the others', so that char_gpt's 192 invocations make 12 workgroups
// (a CPU adapter runs each on one thread: 3 of 64 kept one of 2 threads idle a third of the time).
const PARTIALS_WG: u32 = 16u;

// One invocation per (group of PARTIAL_COLS columns, chunk), column groups fastest, so that a
// workgroup is full however few columns there are (128 columns are 32 vec4s, 8 groups).
@compute @workgroup_size(PARTIALS_WG)
fn ln_backward_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = (wid.y * nwg.x + wid.x) * PARTIALS_WG + lid.x;
    let groups = (p.cols + PARTIAL_COLS - 1u) / PARTIAL_COLS;
    let c0 = (j % groups) * PARTIAL_COLS;
    let k = j / groups;
    if (k >= p.chunks) { return; }
    let r0 = k * p.chunk;
    let r1 = min(r0 + p.chunk, p.rows);
    // The group's last columns past the row's end repeat its last column (never written).
    var s_dyx: array<V, PARTIAL_COLS>;
    var s_dy: array<V, PARTIAL_COLS>;
    for (var r = r0; r < r1; r++) {
        let m = splat(mean[r]);
        let rs = rstd[r];
        for (var q = 0u; q < PARTIAL_COLS; q++) {
            let i = r * p.cols + min(c0 + q, p.cols - 1u);
            let dy = b[i];
            s_dy[q] += dy;
            s_dyx[q] += dy * ((x[i] - m) * rs);
        }
    }
    for (var q = 0u; q < PARTIAL_COLS; q++) {
        let c = c0 + q;
        if (c < p.cols) {
            out[k * p.cols + c] = s_dyx[q];
            out[(p.chunks + k) * p.cols + c] = s_dy[q];
        }
    }
}
