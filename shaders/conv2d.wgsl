// The data movement of a 2-D convolution as a matrix product (src/kernels/conv2d.rs runs the
// products with matmul.wgsl). Channels-last: x [rows, H, W, C], kernel [kh, kw, C, C_out].
//   im2col: col[p, (ky·kw + kx)·C + c] = x[r, oy·sh + ky − pad_top, ox·sw + kx − pad_left, c], or 0
//           outside the image; p = (r·Ho + oy)·Wo + ox.    x: [rows, H, W, C] → col: [rows·Ho·Wo, kh·kw·C]
//   col2im: dx[r, y, x, c] = Σ dcol[p, (ky·kw + kx)·C + c] over the (p, ky, kx) that im2col read
//           x[r, y, x, c] into: the adjoint of im2col, a gather, so no atomics and a fixed order.
//           dcol: [rows·Ho·Wo, kh·kw·C] → dx: [rows, H, W, C]
// Both work on a chunk of `rows` images starting at image `row0` of x / dx (the col matrix holds
// only the chunk). An invocation loops over at most `seg` channels of one kernel row (im2col) or
// of every window over one pixel (col2im): lavapipe silently stops a shader invocation's loops
// after 65,535 iterations, and the wrapper sizes `seg` to stay far below that.

override WG: u32 = 64u;

struct Params {
    rows: u32,
    row0: u32,
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
    seg: u32,   // channels per invocation (the grid's z counts the segments)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;         // im2col: x     col2im: dcol
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;   // im2col: col   col2im: dx

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// One output position and one kernel row ky (z = ky·segments + segment): kw cells × a segment of
// channels.
@compute @workgroup_size(WG)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let pos = linear_index(wid, nwg, lid);
    if (pos >= p.rows * p.ho * p.wo) { return; }
    let segments = (p.c + p.seg - 1u) / p.seg;
    let ky = wid.z / segments;
    let c0 = (wid.z % segments) * p.seg;
    let c1 = min(c0 + p.seg, p.c);
    let ox = pos % p.wo;
    let t = pos / p.wo;
    let oy = t % p.ho;
    let r = p.row0 + t / p.ho;
    let iy = i32(oy * p.sh + ky) - i32(p.pad_top);
    let row_inside = iy >= 0 && iy < i32(p.h);
    let ix0 = i32(ox * p.sw) - i32(p.pad_left);
    let out_row = pos * (p.kh * p.kw * p.c) + ky * p.kw * p.c;
    for (var kx = 0u; kx < p.kw; kx++) {
        let ix = ix0 + i32(kx);
        let o = out_row + kx * p.c;
        if (row_inside && ix >= 0 && ix < i32(p.w)) {
            let s = ((r * p.h + u32(iy)) * p.w + u32(ix)) * p.c;
            for (var c = c0; c < c1; c++) { dst[o + c] = src[s + c]; }
        } else {
            for (var c = c0; c < c1; c++) { dst[o + c] = 0.0; }
        }
    }
}

// One input pixel of the chunk (z: a segment of channels): the sum over the windows covering it.
@compute @workgroup_size(WG)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let q = linear_index(wid, nwg, lid);
    if (q >= p.rows * p.h * p.w) { return; }
    let c0 = wid.z * p.seg;
    let c1 = min(c0 + p.seg, p.c);
    let x = q % p.w;
    let t = q / p.w;
    let y = t % p.h;
    let r = t / p.h;
    // Window (oy, ox) covers (y, x) where oy·sh + ky = y + pad_top for some 0 ≤ ky < kh.
    let ys = y + p.pad_top;
    let xs = x + p.pad_left;
    let oy_begin = select(0u, (ys + 1u - p.kh + p.sh - 1u) / p.sh, ys + 1u >= p.kh);
    let oy_end = min(ys / p.sh + 1u, p.ho);
    let ox_begin = select(0u, (xs + 1u - p.kw + p.sw - 1u) / p.sw, xs + 1u >= p.kw);
    let ox_end = min(xs / p.sw + 1u, p.wo);
    let patch_len = p.kh * p.kw * p.c;
    let out = (p.row0 * p.h * p.w + q) * p.c;
    for (var c = c0; c < c1; c++) {
        var s = 0.0;
        for (var oy = oy_begin; oy < oy_end; oy++) {
            let ky = ys - oy * p.sh;
            let row = (r * p.ho + oy) * p.wo;
            for (var ox = ox_begin; ox < ox_end; ox++) {
                let kx = xs - ox * p.sw;
                s += src[(row + ox) * patch_len + (ky * p.kw + kx) * p.c + c];
            }
        }
        dst[out + c] = s;
    }
}
