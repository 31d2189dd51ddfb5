// 2-D pooling, channels-last: x [rows, H, W, C] → y [rows, Ho, Wo, C] (window kh × kw, strides
// sh, sw, pad_top / pad_left cells before the image, as src/cpu/conv2d.rs's Window computes them).
//   max_pool2d_forward:  y[o] = max of x over window o's cells inside the image, argmax[o] = the x
//                        index of the first maximum in row-major window order (a NaN wins)
//   max_pool2d_backward: dx[i] = Σ dy[o] over the windows o covering i whose argmax is i
//   avg_pool2d_forward:  y[o] = mean of x over window o's cells inside the image
//   avg_pool2d_backward: dx[i] = Σ dy[o] / cells(o) over the windows o covering i
//   global_avg_pool2d_partial: out[r, k, c] = Σ x[r, q, c] over q in chunk k of the n positions, / divisor
//   global_avg_pool2d_backward: dx[r, q, c] = dy[r, c] / divisor
//   *_backward_tiles:   the same where windows do not overlap (strides ≥ pool): each output writes
//                        its tile, the cells only its window can cover (and those no window covers
//                        nearest it), so that the tiles partition dx: a quarter of the invocations
//                        of the gather at pool 2, each writing its cells without a search.
//   max_pool2d_backward_tiles_at_max: the max one with act' read once a window, from the forward's
//                        output y (bound as `below`, indexed by output): y[o] is the pool's input
//                        at argmax[o], the one cell that takes dy[o], so dx is the same to the bit.
//                        Its loop over the tile only selects: a quarter of the plain pass's reads
//                        of `below` and of its act' at pool 2.
// Every backward pass can also apply the derivative of the activation that made the pool's input
// (ACT ≠ 0; `below` is that input, the activation's output): dx[i] ⊙= act'(below[i]), so the
// layer below needs no pass of its own for it. Needs activation.wgsl and a lane width prepended
// (lanes_scalar.wgsl, or lanes_vec4.wgsl where C is a multiple of 4: then every index below counts
// vec4s of four channels, p.c = C / 4, while argmax values stay scalar x indices).
// The backward passes gather over the windows covering a cell (no atomics, a fixed order). An
// invocation loops over one window or one chunk: lavapipe silently stops a shader invocation's
// loops after 65,535 iterations, so the wrapper refuses larger windows and sums a long image in
// chunks, then the chunks' sums.

override WG: u32 = 64u;
// Backward: activation.wgsl's code of the activation below (0: none), a constant so that its
// derivative compiles to its own few instructions (read per cell at run time, lavapipe ran every
// activation's code for each).
override ACT: u32 = 0u;

struct Params {
    rows: u32,
    h: u32,
    w: u32,
    c: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    pad_top: u32,
    pad_left: u32,
    n: u32,        // global: positions per row of the input of this pass
    chunk: u32,    // global: positions per invocation
    chunks: u32,   // global: chunks per row (the output's middle axis)
    divisor: f32,  // global: the final pass's h·w, 1 before it
    slope: f32,    // backward: ACT's leaky relu slope
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<V>;           // x, or dy
@group(0) @binding(2) var<storage, read> argmax_in: array<VU>;    // max backward: the forward's argmax
@group(0) @binding(3) var<storage, read_write> dst: array<V>;     // y, or dx
@group(0) @binding(4) var<storage, read_write> argmax_out: array<VU>; // max forward
@group(0) @binding(5) var<storage, read> below: array<V>;        // backward: the pool's input (ACT ≠ 0)

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// The factor dx[i] takes for the activation below: 1 where none is fused.
fn below_grad(i: u32) -> V {
    if (ACT == 0u) { return splat(1.0); }
    return act_derivative_v(ACT, below[i], p.slope);
}

// The scalar x indices of the values at index i (a vec4's four, or i itself).
fn scalar_indices(i: u32) -> VU {
    return splat_u(i * LANES) + lane_offsets();
}

// By its bits: a compiler may assume comparisons never see a NaN.
fn is_nan(v: V) -> VB {
    return (bitcast<VU>(v) & splat_u(0x7fffffffu)) > splat_u(0x7f800000u);
}

// Output o = ((r·Ho + oy)·Wo + ox)·C + c: its window's rows and columns inside the image, as
// [begin, end) in image coordinates, and the index of x's (r, 0, 0, c).
struct Cells {
    y0: u32,
    y1: u32,
    x0: u32,
    x1: u32,
    base: u32,
}

fn window_cells(o: u32) -> Cells {
    let c = o % p.c;
    let t = o / p.c;
    let ox = t % p.wo;
    let t2 = t / p.wo;
    let oy = t2 % p.ho;
    let r = t2 / p.ho;
    return cells_at(r, oy, ox, c);
}

// The same for window (r, oy, ox) at channel c.
fn cells_at(r: u32, oy: u32, ox: u32, c: u32) -> Cells {
    let ys = i32(oy * p.sh) - i32(p.pad_top);
    let xs = i32(ox * p.sw) - i32(p.pad_left);
    var cells: Cells;
    cells.y0 = u32(max(ys, 0));
    cells.y1 = u32(min(ys + i32(p.kh), i32(p.h)));
    cells.x0 = u32(max(xs, 0));
    cells.x1 = u32(min(xs + i32(p.kw), i32(p.w)));
    cells.base = r * p.h * p.w * p.c + c;
    return cells;
}

// Input i = ((r·H + y)·W + x)·C + c: the outputs whose windows cover it, as [begin, end) ranges of
// oy and ox, and the index of y's (r, 0, 0, c).
struct Covering {
    oy0: u32,
    oy1: u32,
    ox0: u32,
    ox1: u32,
    base: u32,
}

fn covering(i: u32) -> Covering {
    let c = i % p.c;
    let t = i / p.c;
    let x = t % p.w;
    let t2 = t / p.w;
    let y = t2 % p.h;
    let r = t2 / p.h;
    // Window oy covers y where oy·sh ≤ y + pad_top < oy·sh + kh.
    let ys = y + p.pad_top;
    let xs = x + p.pad_left;
    var cov: Covering;
    cov.oy0 = select(0u, (ys + 1u - p.kh + p.sh - 1u) / p.sh, ys + 1u >= p.kh);
    cov.oy1 = min(ys / p.sh + 1u, p.ho);
    cov.ox0 = select(0u, (xs + 1u - p.kw + p.sw - 1u) / p.sw, xs + 1u >= p.kw);
    cov.ox1 = min(xs / p.sw + 1u, p.wo);
    cov.base = r * p.ho * p.wo * p.c + c;
    return cov;
}

@compute @workgroup_size(WG)
fn max_pool2d_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = linear_index(wid, nwg, lid);
    if (o >= p.rows * p.ho * p.wo * p.c) { return; }
    let cells = window_cells(o);
    let first = cells.base + (cells.y0 * p.w + cells.x0) * p.c;
    var best = src[first];
    var best_i = scalar_indices(first);
    for (var y = cells.y0; y < cells.y1; y++) {
        for (var x = cells.x0; x < cells.x1; x++) {
            let i = cells.base + (y * p.w + x) * p.c;
            let v = src[i];
            let take = !is_nan(best) & (is_nan(v) | (v > best));
            best = select(best, v, take);
            best_i = select(best_i, scalar_indices(i), take);
        }
    }
    dst[o] = best;
    argmax_out[o] = best_i;
}

@compute @workgroup_size(WG)
fn max_pool2d_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.rows * p.h * p.w * p.c) { return; }
    let cov = covering(i);
    let here = scalar_indices(i);
    var s = splat(0.0);
    for (var oy = cov.oy0; oy < cov.oy1; oy++) {
        for (var ox = cov.ox0; ox < cov.ox1; ox++) {
            let o = cov.base + (oy * p.wo + ox) * p.c;
            // Adding +0 where the argmax is elsewhere leaves s's bits as they were (s starts +0).
            s += select(splat(0.0), src[o], argmax_in[o] == here);
        }
    }
    dst[i] = s * below_grad(i);
}

@compute @workgroup_size(WG)
fn avg_pool2d_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = linear_index(wid, nwg, lid);
    if (o >= p.rows * p.ho * p.wo * p.c) { return; }
    let cells = window_cells(o);
    var s = splat(0.0);
    for (var y = cells.y0; y < cells.y1; y++) {
        for (var x = cells.x0; x < cells.x1; x++) {
            s += src[cells.base + (y * p.w + x) * p.c];
        }
    }
    dst[o] = s / f32((cells.y1 - cells.y0) * (cells.x1 - cells.x0));
}

@compute @workgroup_size(WG)
fn avg_pool2d_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.rows * p.h * p.w * p.c) { return; }
    let cov = covering(i);
    var s = splat(0.0);
    for (var oy = cov.oy0; oy < cov.oy1; oy++) {
        let ys = i32(oy * p.sh) - i32(p.pad_top);
        let rows_in = min(ys + i32(p.kh), i32(p.h)) - max(ys, 0);
        for (var ox = cov.ox0; ox < cov.ox1; ox++) {
            let xs = i32(ox * p.sw) - i32(p.pad_left);
            let cols_in = min(xs + i32(p.kw), i32(p.w)) - max(xs, 0);
            s += src[cov.base + (oy * p.wo + ox) * p.c] / f32(rows_in * cols_in);
        }
    }
    dst[i] = s * below_grad(i);
}

// Where strides ≥ pool: output o's tile, rows [oy·sh − pad_top, (oy + 1)·sh − pad_top) clipped
// to the image, the first from row 0 and the last to row H (columns alike); its window lies inside.
fn tile_cells(o: u32) -> Cells {
    let c = o % p.c;
    let t = o / p.c;
    let ox = t % p.wo;
    let t2 = t / p.wo;
    let oy = t2 % p.ho;
    let r = t2 / p.ho;
    var cells: Cells;
    cells.y0 = select(oy * p.sh - p.pad_top, 0u, oy == 0u);
    cells.y1 = select(min((oy + 1u) * p.sh - p.pad_top, p.h), p.h, oy + 1u == p.ho);
    cells.x0 = select(ox * p.sw - p.pad_left, 0u, ox == 0u);
    cells.x1 = select(min((ox + 1u) * p.sw - p.pad_left, p.w), p.w, ox + 1u == p.wo);
    cells.base = r * p.h * p.w * p.c + c;
    return cells;
}

@compute @workgroup_size(WG)
fn max_pool2d_backward_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = linear_index(wid, nwg, lid);
    if (o >= p.rows * p.ho * p.wo * p.c) { return; }
    let tile = tile_cells(o);
    let at = argmax_in[o];
    let g = src[o];
    for (var y = tile.y0; y < tile.y1; y++) {
        for (var x = tile.x0; x < tile.x1; x++) {
            let i = tile.base + (y * p.w + x) * p.c;
            // below at i where i is the argmax: per lane, each lane's argmax may be another cell.
            dst[i] = select(splat(0.0), g * below_grad(i), scalar_indices(i) == at);
        }
    }
}

@compute @workgroup_size(WG)
fn max_pool2d_backward_tiles_at_max(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = linear_index(wid, nwg, lid);
    if (o >= p.rows * p.ho * p.wo * p.c) { return; }
    let tile = tile_cells(o);
    let at = argmax_in[o];
    let g = src[o] * below_grad(o);
    for (var y = tile.y0; y < tile.y1; y++) {
        for (var x = tile.x0; x < tile.x1; x++) {
            let i = tile.base + (y * p.w + x) * p.c;
            dst[i] = select(splat(0.0), g, scalar_indices(i) == at);
        }
    }
}

@compute @workgroup_size(WG)
fn avg_pool2d_backward_tiles(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = linear_index(wid, nwg, lid);
    if (o >= p.rows * p.ho * p.wo * p.c) { return; }
    let tile = tile_cells(o);
    let win = window_cells(o);
    let g = src[o] / f32((win.y1 - win.y0) * (win.x1 - win.x0));
    for (var y = tile.y0; y < tile.y1; y++) {
        let row_in = y >= win.y0 && y < win.y1;
        for (var x = tile.x0; x < tile.x1; x++) {
            let in_window = row_in && x >= win.x0 && x < win.x1;
            let i = tile.base + (y * p.w + x) * p.c;
            dst[i] = select(splat(0.0), g * below_grad(i), in_window);
        }
    }
}

@compute @workgroup_size(WG)
fn global_avg_pool2d_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = linear_index(wid, nwg, lid);
    if (o >= p.rows * p.chunks * p.c) { return; }
    let c = o % p.c;
    let t = o / p.c;
    let k = t % p.chunks;
    let r = t / p.chunks;
    let begin = k * p.chunk;
    let end = min(begin + p.chunk, p.n);
    var s = splat(0.0);
    for (var q = begin; q < end; q++) {
        s += src[(r * p.n + q) * p.c + c];
    }
    dst[o] = s / p.divisor;
}

@compute @workgroup_size(WG)
fn global_avg_pool2d_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.rows * p.n * p.c) { return; }
    dst[i] = src[i / (p.n * p.c) * p.c + i % p.c] / p.divisor * below_grad(i);
}
