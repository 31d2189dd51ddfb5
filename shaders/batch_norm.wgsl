// Batch normalisation over the features of [rows, cols] inputs (BatchNorm1d on dense outputs),
// with the activation after it applied in the same pass (act). Needs activation.wgsl and a lane
// width (lanes_scalar.wgsl, or lanes_vec4.wgsl where cols is a multiple of 4: then every
// [cols] axis below is in vec4s of four columns, p.cols = cols / 4) prepended.
// PyTorch's conventions: biased batch variance to normalise, unbiased (·rows/(rows−1)) in the
// running variance; running = (1 − momentum)·running + momentum·batch.
//   Training forward (4 dispatches):
//     bn_stats:           per chunk k of rows: part[k, c] = chunk mean, part[K + k, c] = chunk M2
//                         (Welford's one pass)
//     bn_finalize_stats:  merge the K chunks (Chan et al.): mean[c], inv_std[c] = 1/√(var + eps),
//                         running_mean[c], running_var[c] updated; or, deferred (p.blend = 0),
//                         only the batch's unbiased variance written to `out2` (pending_var)
//     bn_normalize:       y = act(γ·(x − mean)·inv_std + β)
//   Deferred running statistics (1 dispatch, after the step's guard, so a skipped batch leaves
//   them as they were):
//     bn_commit_running:  unless GUARDED and guard[1] ≠ 0: running_mean = (1 − m)·running_mean +
//                         m·mean, running_var = (1 − m)·running_var + m·pending_var
//   Inference forward (1 dispatch):
//     bn_inference:       y = act(γ·(x − running_mean)/√(running_var + eps) + β)
//   Backward (3 dispatches), x̂ = (x − mean)·inv_std:
//     bn_backward_partials: per chunk k: part[k, c] = Σ dy, part[K + k, c] = Σ dy·x̂
//     bn_backward_finalize: sum_dy[c], sum_dyx[c] into part rows 2K, 2K+1; dβ (+)= sum_dy,
//                           dγ (+)= sum_dyx
//     bn_backward_dx:       dx = γ·inv_std·(dy − sum_dy/rows − x̂·sum_dyx/rows)
// x, y, dy, dx: [rows, cols]; γ, β, mean, inv_std, running_*: [cols]; part: [2K + 2, cols].
// Each invocation of the chunked kernels loops over at most 2·chunk rows and each finalize over
// 2·K chunks (the host keeps both far below lavapipe's 65,535-iteration cap), so 60,000 rows
// work. No integer division: the elementwise kernels run on a 2-D grid (columns × rows), each
// invocation ROWS rows of one column, so that its column's parameters are loaded once for them
// (they were 4 of an element's 6 memory accesses).

override WG: u32 = 64u;     // 1-D kernels: invocations per workgroup, along the columns
override TILE_X: u32 = 16u; // elementwise kernels: TILE_X × TILE_Y workgroups (columns × rows),
override TILE_Y: u32 = 16u; // TILE_X no wider than the columns, so that no invocation idles
override ROWS: u32 = 4u;    // elementwise kernels: rows per invocation
override ACT: u32 = 0u;     // bn_normalize, bn_inference: activation.wgsl's code of act (0: none)
override SLOPE: f32 = 0.0;  // its leaky relu slope
override GUARDED: bool = false;  // bn_commit_running: read the skip flag guard[1]

struct Params {
    rows: u32,
    cols: u32,
    chunk: u32,       // rows per chunk
    chunks: u32,      // K
    eps: f32,
    momentum: f32,
    accumulate: u32,  // backward: 1: dγ, dβ += sums, 0: =
    blend: u32,       // bn_finalize_stats: 1: update the running statistics, 0: defer them
}

// Slots (all read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict):
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<V>;
@group(0) @binding(2) var<storage, read_write> gamma: array<V>;
@group(0) @binding(3) var<storage, read_write> b: array<V>;  // forward: β      backward: dy
@group(0) @binding(4) var<storage, read_write> mean: array<V>;  // saved mean      inference: running mean
@group(0) @binding(5) var<storage, read_write> inv_std: array<V>;  // saved inv_std   inference: running var
@group(0) @binding(6) var<storage, read_write> part: array<V>;  // per-chunk partials and sums
@group(0) @binding(7) var<storage, read_write> out: array<V>;  // y, dx; finalize: running mean, dγ
@group(0) @binding(8) var<storage, read_write> out2: array<V>;  // finalize: running var (or pending var), dβ
@group(0) @binding(9) var<storage, read_write> guard: array<u32>;  // commit: the step counters [t, skip]

// Rows in chunk k.
fn chunk_rows(k: u32) -> u32 {
    return min(p.chunk, p.rows - k * p.chunk);
}

// (column, chunk) of a chunked invocation: one per pair, columns fastest, so that a workgroup is
// full however few columns there are (16 channels are 4 vec4s: a grid of one column-workgroup
// per chunk left 60 of its 64 invocations idle).
fn column_chunk(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> vec2<u32> {
    let j = (wid.y * nwg.x + wid.x) * WG + lid.x;
    return vec2<u32>(j % p.cols, j / p.cols);
}

@compute @workgroup_size(WG)
fn bn_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let ck = column_chunk(wid, nwg, lid);
    let c = ck.x;
    let k = ck.y;
    if (k >= p.chunks) { return; }
    let r0 = k * p.chunk;
    let r1 = r0 + chunk_rows(k);
    // Welford's update, one pass over the chunk: on lavapipe every load is a loop over the SIMD
    // lanes, and the two-pass form read each value twice. The reciprocal is one division for all
    // of an invocation's columns.
    var m = splat(0.0);
    var q = splat(0.0);
    for (var r = r0; r < r1; r++) {
        let v = x[r * p.cols + c];
        let d = v - m;
        m += d * (1.0 / f32(r - r0 + 1u));
        q += d * (v - m);
    }
    part[k * p.cols + c] = m;
    part[(p.chunks + k) * p.cols + c] = q;
}

@compute @workgroup_size(WG)
fn bn_finalize_stats(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) { return; }
    let n = f32(p.rows);
    var s = splat(0.0);
    for (var k = 0u; k < p.chunks; k++) {
        s += f32(chunk_rows(k)) * part[k * p.cols + c];
    }
    let m = s / n;
    var q = splat(0.0);
    for (var k = 0u; k < p.chunks; k++) {
        let d = part[k * p.cols + c] - m;
        q += part[(p.chunks + k) * p.cols + c] + f32(chunk_rows(k)) * d * d;
    }
    mean[c] = m;
    inv_std[c] = 1.0 / sqrt(q / n + p.eps);
    if (p.blend != 0u) {
        out[c] = (1.0 - p.momentum) * out[c] + p.momentum * m;
        out2[c] = (1.0 - p.momentum) * out2[c] + p.momentum * (q / (n - 1.0));
    } else {
        out2[c] = q / (n - 1.0);
    }
}

// mean: the batch mean; out2 is read as pending_var at slot 5 (inv_std's) — see the wrapper.
@compute @workgroup_size(WG)
fn bn_commit_running(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) { return; }
    if (GUARDED && guard[1] != 0u) { return; }
    out[c] = (1.0 - p.momentum) * out[c] + p.momentum * mean[c];
    out2[c] = (1.0 - p.momentum) * out2[c] + p.momentum * inv_std[c];
}

// (column, first row) of an elementwise invocation, which runs rows [first, first + ROWS) of
// its column; row tiles past the y dimension's limit fold into z.
fn cell(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> vec2<u32> {
    return vec2<u32>(wid.x * TILE_X + lid.x, ((wid.z * nwg.y + wid.y) * TILE_Y + lid.y) * ROWS);
}

// One past the last row of the invocation whose first row is `r0`.
fn rows_end(r0: u32) -> u32 {
    return min(r0 + ROWS, p.rows);
}

@compute @workgroup_size(TILE_X, TILE_Y)
fn bn_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let rc = cell(wid, nwg, lid);
    let c = rc.x;
    if (c >= p.cols || rc.y >= p.rows) { return; }
    let g = gamma[c];
    let m = mean[c];
    let s = inv_std[c];
    let beta = b[c];
    for (var r = rc.y; r < rows_end(rc.y); r++) {
        let i = r * p.cols + c;
        out[i] = act_forward_v(ACT, g * ((x[i] - m) * s) + beta, SLOPE);
    }
}

@compute @workgroup_size(TILE_X, TILE_Y)
fn bn_inference(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let rc = cell(wid, nwg, lid);
    let c = rc.x;
    if (c >= p.cols || rc.y >= p.rows) { return; }
    let g = gamma[c];
    let m = mean[c];
    let sd = sqrt(inv_std[c] + p.eps);
    let beta = b[c];
    for (var r = rc.y; r < rows_end(rc.y); r++) {
        let i = r * p.cols + c;
        out[i] = act_forward_v(ACT, g * ((x[i] - m) / sd) + beta, SLOPE);
    }
}

@compute @workgroup_size(WG)
fn bn_backward_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>) {
    let ck = column_chunk(wid, nwg, lid);
    let c = ck.x;
    let k = ck.y;
    if (k >= p.chunks) { return; }
    let r0 = k * p.chunk;
    let r1 = r0 + chunk_rows(k);
    let m = mean[c];
    let s = inv_std[c];
    var s_dy = splat(0.0);
    var s_dyx = splat(0.0);
    for (var r = r0; r < r1; r++) {
        let i = r * p.cols + c;
        s_dy += b[i];
        s_dyx += b[i] * ((x[i] - m) * s);
    }
    part[k * p.cols + c] = s_dy;
    part[(p.chunks + k) * p.cols + c] = s_dyx;
}

@compute @workgroup_size(WG)
fn bn_backward_finalize(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) { return; }
    var s_dy = splat(0.0);
    var s_dyx = splat(0.0);
    for (var k = 0u; k < p.chunks; k++) {
        s_dy += part[k * p.cols + c];
        s_dyx += part[(p.chunks + k) * p.cols + c];
    }
    part[2u * p.chunks * p.cols + c] = s_dy;
    part[(2u * p.chunks + 1u) * p.cols + c] = s_dyx;
    if (p.accumulate != 0u) {
        out[c] += s_dyx;
        out2[c] += s_dy;
    } else {
        out[c] = s_dyx;
        out2[c] = s_dy;
    }
}

@compute @workgroup_size(TILE_X, TILE_Y)
fn bn_backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let rc = cell(wid, nwg, lid);
    let c = rc.x;
    if (c >= p.cols || rc.y >= p.rows) { return; }
    let n = f32(p.rows);
    let s = inv_std[c];
    let m = mean[c];
    let g = gamma[c];
    let s_dy = part[2u * p.chunks * p.cols + c];
    let s_dyx = part[(2u * p.chunks + 1u) * p.cols + c];
    for (var r = rc.y; r < rows_end(rc.y); r++) {
        let i = r * p.cols + c;
        let xhat = (x[i] - m) * s;
        out[i] = g * s * (b[i] - s_dy / n - xhat * (s_dyx / n));
    }
}
