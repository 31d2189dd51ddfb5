// Layer normalisation over the last axis of x [rows, cols] (PyTorch's LayerNorm(cols)):
//   y = (x − μ_r)·rstd_r · γ + β,  μ_r the row's mean, rstd_r = 1/√(σ²_r + eps), σ²_r the
//   biased variance; γ, β: [cols], each optional (HAS_GAMMA, HAS_BETA; nanoGPT's bias=False).
// Entry points:
//   ln_forward:            one workgroup per row: μ, σ² (two passes, as PyTorch, not E[x²]−μ²),
//                          y; mean[r] and rstd[r] kept for the backward
//   ln_backward_dx:        one workgroup per row, with x̂ = (x − μ)·rstd, g = dy·γ:
//                          dx = rstd·(g − mean(g) − x̂·mean(g·x̂))     (overwrites dx)
//                          ADD_TO_DX: dx = addend + that (a fork's other gradient, summed here
//                          instead of by a pass of its own)
//   ln_backward_partials:  per (column, chunk k of rows): part[k, c] = Σ dy·x̂, part[K + k, c] = Σ dy
//                          (layer_norm_lanes.wgsl, over vec4s where it can)
//   ln_backward_finalize:  per column, the K partials summed in order: dγ (+)= Σ dy·x̂, dβ (+)= Σ dy
//   ln_forward_rows, ln_backward_dx_rows: the row kernels with one invocation per row, for CPU
//                          adapters (layer_norm_lanes.wgsl)
// The row reductions are a tree in workgroup memory (WG a power of two), no subgroup operation,
// so the result does not depend on the subgroup size. The column sums have a fixed order and no
// atomics: two runs give the same bits. Each invocation loops at most 3·⌈cols/WG⌉ + 2·log2(WG)
// times (row kernels), chunk times (partials) or 2·K times (finalize); the wrapper keeps each far
// below lavapipe's 65,535-iteration cap. Rows past the per-dimension workgroup limit fold into y.

override WG: u32 = 64u;            // row kernels: invocations per row; a power of two ≤ 256
override HAS_GAMMA: bool = true;   // forward, backward_dx: γ given (else 1)
override HAS_BETA: bool = true;    // forward: β given (else 0)
override WRITE_DGAMMA: bool = true;  // finalize: write dγ
override WRITE_DBETA: bool = true;   // finalize: write dβ
override ADD_TO_DX: bool = false;    // backward_dx: add `addend` to dx

struct Params {
    rows: u32,
    cols: u32,
    chunk: u32,       // partials: rows per chunk
    chunks: u32,      // K
    eps: f32,
    accumulate: u32,  // finalize: 1: dγ, dβ += sums, 0: =
    _pad0: u32,
    _pad1: u32,
}

// All read_write: one dummy buffer fills every unused slot, and wgpu refuses a buffer bound
// read-only and writable in one dispatch.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;      // [rows, cols]
@group(0) @binding(2) var<storage, read_write> gamma: array<f32>;  // [cols]
@group(0) @binding(3) var<storage, read_write> b: array<f32>;      // forward: β [cols]; backward: dy [rows, cols]
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;   // [rows]
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;   // [rows]
@group(0) @binding(6) var<storage, read_write> out: array<f32>;    // y, dx [rows, cols]; the partials [2K, cols]
@group(0) @binding(7) var<storage, read_write> dgamma: array<f32>; // [cols]
@group(0) @binding(8) var<storage, read_write> dbeta: array<f32>;  // [cols]
// backward_dx with ADD_TO_DX (which binds no dγ): added to dx [rows, cols].
@group(0) @binding(7) var<storage, read_write> addend: array<f32>;

// What the dx kernels store at index i.
fn dx_value(i: u32, v: f32) -> f32 {
    if (ADD_TO_DX) { return addend[i] + v; }
    return v;
}

var<workgroup> red: array<vec2<f32>, WG>;

// The row of a row kernel's workgroup (uniform across it, so returning early is allowed before
// the barriers).
fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// Σ over the workgroup of each lane's v, by a tree in workgroup memory; every lane gets it.
fn workgroup_sum(lane: u32, v: vec2<f32>) -> vec2<f32> {
    red[lane] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            red[lane] += red[lane + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    // Nobody writes red again before every lane has read the total.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn ln_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lane: u32) {
    let r = row_of(wid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = lane; c < p.cols; c += WG) {
        s += x[base + c];
    }
    let m = workgroup_sum(lane, vec2<f32>(s, 0.0)).x / n;
    var q = 0.0;
    for (var c = lane; c < p.cols; c += WG) {
        let d = x[base + c] - m;
        q += d * d;
    }
    let rs = 1.0 / sqrt(workgroup_sum(lane, vec2<f32>(q, 0.0)).x / n + p.eps);
    for (var c = lane; c < p.cols; c += WG) {
        var v = (x[base + c] - m) * rs;
        if (HAS_GAMMA) { v *= gamma[c]; }
        if (HAS_BETA) { v += b[c]; }
        out[base + c] = v;
    }
    if (lane == 0u) {
        mean[r] = m;
        rstd[r] = rs;
    }
}

@compute @workgroup_size(WG)
fn ln_backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lane: u32) {
    let r = row_of(wid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let n = f32(p.cols);
    let m = mean[r];
    let rs = rstd[r];
    var s = vec2<f32>(0.0);
    for (var c = lane; c < p.cols; c += WG) {
        var g = b[base + c];
        if (HAS_GAMMA) { g *= gamma[c]; }
        s += vec2<f32>(g, g * ((x[base + c] - m) * rs));
    }
    let means = workgroup_sum(lane, s) / n;
    for (var c = lane; c < p.cols; c += WG) {
        var g = b[base + c];
        if (HAS_GAMMA) { g *= gamma[c]; }
        let xhat = (x[base + c] - m) * rs;
        out[base + c] = dx_value(base + c, rs * (g - means.x - xhat * means.y));
    }
}

@compute @workgroup_size(64)
fn ln_backward_finalize(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) { return; }
    var s_dyx = 0.0;
    var s_dy = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        s_dyx += out[k * p.cols + c];
        s_dy += out[(p.chunks + k) * p.cols + c];
    }
    if (WRITE_DGAMMA) {
        if (p.accumulate != 0u) { s_dyx += dgamma[c]; }
        dgamma[c] = s_dyx;
    }
    if (WRITE_DBETA) {
        if (p.accumulate != 0u) { s_dy += dbeta[c]; }
        dbeta[c] = s_dy;
    }
}
