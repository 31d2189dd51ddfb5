// Batch norm's backward through the max pooling that reads its output (src/kernels/
// batch_norm_pooled.rs), where the pool's windows tile the image: the pool's input gradient dy is
// never written. Appended to activation.wgsl, lanes_vec4.wgsl and batch_norm.wgsl (its Params,
// bindings and helpers; x's channels in vec4s). Of the pool: dY [windows, cols] (binding 10), its
// argmax (11, scalar x indices, as pool2d.wgsl writes them) and its output y (12), whose act'
// (ACT, SLOPE) is the pool input's at the maximum; binding 13 is x again, by scalars.
//   dy at cell i of window o's tile = dY[o]·act'(y[o]) where i = argmax[o], else 0
//   bn_backward_partials_pooled: per chunk k of windows: part[k, c] = Σ dy, part[K + k, c] = Σ dy·x̂
//                                (a window's one nonzero dy and x̂ at its argmax)
//   bn_backward_dx_pooled:       dx over each window's tile, as bn_backward_dx with that dy
// (bn_backward_finalize between them, as in the plain backward). The geometry is in override
// constants (the image H×W, the pool's output grid HO×WO, its strides and padding, the vec4
// columns), as the implicit GEMM's is: every division is by a constant.

@group(0) @binding(10) var<storage, read_write> dy_pool: array<V>;
@group(0) @binding(11) var<storage, read_write> argmax_pool: array<VU>;
@group(0) @binding(12) var<storage, read_write> y_pool: array<V>;
@group(0) @binding(13) var<storage, read_write> x_scalar: array<f32>;

override POOL_H: u32 = 1u;
override POOL_W: u32 = 1u;
override POOL_HO: u32 = 1u;
override POOL_WO: u32 = 1u;
override POOL_SH: u32 = 1u;
override POOL_SW: u32 = 1u;
override POOL_PAD_TOP: u32 = 0u;
override POOL_PAD_LEFT: u32 = 0u;
override POOL_COLS: u32 = 1u;  // p.cols, as a constant

// The pool's windows in the batch (p.rows counts x's cells).
fn pool_windows() -> u32 {
    return p.rows / (POOL_H * POOL_W) * POOL_HO * POOL_WO;
}

// Window o's gradient at its maximum: dY[o]·act'(y[o]) (o over windows × vec4 columns).
fn window_grad(j: u32) -> V {
    return dy_pool[j] * act_derivative_v(ACT, y_pool[j], SLOPE);
}

@compute @workgroup_size(WG)
fn bn_backward_partials_pooled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_id) lid: vec3<u32>) {
    let ck = column_chunk(wid, nwg, lid);
    let c = ck.x;
    let k = ck.y;
    if (k >= p.chunks) { return; }
    let o0 = k * p.chunk;
    let o1 = min(o0 + p.chunk, pool_windows());
    let m = mean[c];
    let s = inv_std[c];
    var s_dy = splat(0.0);
    var s_dyx = splat(0.0);
    for (var o = o0; o < o1; o++) {
        let j = o * p.cols + c;
        let g = window_grad(j);
        let at = argmax_pool[j];
        let xa = vec4<f32>(x_scalar[at.x], x_scalar[at.y], x_scalar[at.z], x_scalar[at.w]);
        s_dy += g;
        s_dyx += g * ((xa - m) * s);
    }
    part[k * p.cols + c] = s_dy;
    part[(p.chunks + k) * p.cols + c] = s_dyx;
}

// Windows per invocation of bn_backward_dx_pooled: OUTS consecutive windows of one channel
// (vec4), so that its five per-channel values are loaded once for them (on lavapipe every load is
// a loop over the SIMD lanes: they were 5 of a window's 16 memory accesses).
override OUTS: u32 = 4u;

@compute @workgroup_size(WG)
fn bn_backward_dx_pooled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = (wid.y * nwg.x + wid.x) * WG + lid.x;
    let c = j % POOL_COLS;
    let o0 = j / POOL_COLS * OUTS;
    let windows = pool_windows();
    if (o0 >= windows) { return; }
    let n = f32(p.rows);
    let s = inv_std[c];
    let m = mean[c];
    let gs = gamma[c] * s;
    let mean_dy = part[2u * p.chunks * p.cols + c] / n;
    let mean_dyx = part[(2u * p.chunks + 1u) * p.cols + c] / n;
    for (var q = 0u; q < min(OUTS, windows - o0); q++) {
        let o = o0 + q;
        // Window o = (image, oy, ox) and its tile: rows [oy·sh − pad_top, (oy + 1)·sh − pad_top)
        // clipped, the first from row 0 and the last to row H (columns alike), as pool2d.wgsl's.
        let ox = o % POOL_WO;
        let t = o / POOL_WO;
        let oy = t % POOL_HO;
        let img = t / POOL_HO;
        let y0 = select(oy * POOL_SH - POOL_PAD_TOP, 0u, oy == 0u);
        let y1 = select(min((oy + 1u) * POOL_SH - POOL_PAD_TOP, POOL_H), POOL_H, oy + 1u == POOL_HO);
        let x0 = select(ox * POOL_SW - POOL_PAD_LEFT, 0u, ox == 0u);
        let x1 = select(min((ox + 1u) * POOL_SW - POOL_PAD_LEFT, POOL_W), POOL_W, ox + 1u == POOL_WO);
        let jw = o * POOL_COLS + c;
        let g = window_grad(jw);
        let at = argmax_pool[jw];
        for (var yy = y0; yy < y1; yy++) {
            for (var xx = x0; xx < x1; xx++) {
                let i = ((img * POOL_H + yy) * POOL_W + xx) * p.cols + c;
                let dy = select(splat(0.0), g, vec4<u32>(i * 4u) + vec4<u32>(0u, 1u, 2u, 3u) == at);
                let xhat = (x[i] - m) * s;
                out[i] = gs * (dy - mean_dy - xhat * mean_dyx);
            }
        }
    }
}
