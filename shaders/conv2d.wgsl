// The data movement of a 2-D convolution as a matrix product (src/kernels/conv2d.rs runs the
// products with matmul.wgsl). Channels-last: x [rows, H, W, C], kernel [kh, kw, C, C_out].
//   im2col: col[p, (ky·kw + kx)·C + c] = x[r, oy·sh + ky − pad_top, ox·sw + kx − pad_left, c], or 0
//           outside the image; p = (r·Ho + oy)·Wo + ox.    x: [rows, H, W, C] → col: [rows·Ho·Wo, K]
//   col2im: dx[r, y, x, c] = Σ dcol[p, (ky·kw + kx)·C + c] over the (p, ky, kx) that im2col read
//           x[r, y, x, c] into: the adjoint of im2col, a gather, so no atomics and a fixed order.
//           dcol: [rows·Ho·Wo, K] → dx: [rows, H, W, C]
//   copy:   dst[i] = src[i] for i < len (the kernel into its padded matrix, or the gradient back)
//   flip_kernel: the input gradient's kernel (src/kernels/conv2d_implicit.rs): the kernel turned
//           180° with its channels swapped, as the [kh·kw·C_out', C] matrix of that product
//           (C_out' = stride_k: C_out rounded up to a multiple of 4, the extra rows never written):
//           dst[((kh·kw − 1 − cell)·C_out' + o)·C + c] = src[(cell·C + c)·C_out + o], len = kh·kw·C·C_out.
//   col2im can also apply the derivative of the activation that made x (ACT ≠ 0; `below` is x,
//   that activation's output): dx ⊙= act'(below), so the layer below needs no pass of its own.
//   Needs activation.wgsl prepended.
// K, the col matrix's row stride, is kh·kw·C rounded up to a multiple of 4 (the matmul's vec4
// kernels need it); its last columns are never written, so they stay zero.
// Both work on a chunk of `rows` images starting at image `row0` of x / dx (the col matrix holds
// only the chunk). The `_vec4` entries move 4 channels at a time (C a multiple of 4), and the
// inner loops go 4 steps an iteration: on llvmpipe an iteration of a loop bounded by the uniform
// costs more than its loads and stores (the unrolled copy took the second mnist_convnet layer's
// im2col from 74 to 30 ms). Where a window's row lies inside the image, its kw·C values are one
// run in x as in col, copied as such.
// An invocation loops over at most `ky_per` kernel rows × `seg` channel units (im2col) or `seg`
// channel units × every window over one pixel (col2im): lavapipe silently stops a shader
// invocation's loops after 65,535 iterations, and the wrapper sizes both to stay far below that.

override WG: u32 = 64u;
// col2im: activation.wgsl's code of the activation below (0: none), a constant so that its
// derivative compiles to its own few instructions.
override ACT: u32 = 0u;

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
    seg: u32,       // channel units (channels, or groups of 4) per invocation
    ky_per: u32,    // im2col: kernel rows per invocation (z counts kernel-row blocks × segments)
    stride_k: u32,  // K
    len: u32,       // copy: values
    _unused: u32,
    slope: f32,     // col2im: ACT's leaky relu slope
    c_out: u32,     // flip_kernel: the kernel's output channels
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;          // im2col: x     col2im: dcol
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;    // im2col: col   col2im: dx
@group(0) @binding(3) var<storage, read> src4: array<vec4<f32>>;   // the same, 4 channels a value
@group(0) @binding(4) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> below: array<f32>;       // col2im: x (ACT ≠ 0)

// The factor dx[i] takes for the activation below: 1 where none is fused.
fn below_grad(i: u32) -> f32 {
    if (ACT == 0u) { return 1.0; }
    return act_derivative_from_saved(ACT, below[i], p.slope);
}

fn below_grad4(i: u32) -> vec4<f32> {
    if (ACT == 0u) { return vec4<f32>(1.0); }
    return vec4<f32>(below_grad(i), below_grad(i + 1u), below_grad(i + 2u), below_grad(i + 3u));
}

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// im2col's share of one output position: kernel rows [ky0, ky1) × channel units [c0, c1), the
// image row and the window's top-left cell (which may lie in the padding).
struct PatchPart {
    ky0: u32,
    ky1: u32,
    c0: u32,
    c1: u32,
    r: u32,
    top: i32,
    left: i32,
}

fn patch_part(pos: u32, z: u32, units: u32) -> PatchPart {
    let segments = (units + p.seg - 1u) / p.seg;
    var part: PatchPart;
    part.ky0 = z / segments * p.ky_per;
    part.ky1 = min(part.ky0 + p.ky_per, p.kh);
    part.c0 = (z % segments) * p.seg;
    part.c1 = min(part.c0 + p.seg, units);
    let ox = pos % p.wo;
    let t = pos / p.wo;
    part.r = p.row0 + t / p.ho;
    part.top = i32((t % p.ho) * p.sh) - i32(p.pad_top);
    part.left = i32(ox * p.sw) - i32(p.pad_left);
    return part;
}

fn inside(iy: i32, ix: i32) -> bool {
    return iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
}

@compute @workgroup_size(WG)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let pos = linear_index(wid, nwg, lid);
    if (pos >= p.rows * p.ho * p.wo) { return; }
    let part = patch_part(pos, wid.z, p.c);
    let whole_rows = part.c0 == 0u && part.c1 == p.c && part.left >= 0 && part.left + i32(p.kw) <= i32(p.w);
    for (var ky = part.ky0; ky < part.ky1; ky++) {
        let iy = part.top + i32(ky);
        if (whole_rows && iy >= 0 && iy < i32(p.h)) {
            // The window's row lies inside the image: kw·C values in a row, in x as in col.
            let o = pos * p.stride_k + ky * p.kw * p.c;
            let s = ((part.r * p.h + u32(iy)) * p.w + u32(part.left)) * p.c;
            let n = p.kw * p.c;
            var i = 0u;
            for (; i + 4u <= n; i += 4u) {
                dst[o + i] = src[s + i];
                dst[o + i + 1u] = src[s + i + 1u];
                dst[o + i + 2u] = src[s + i + 2u];
                dst[o + i + 3u] = src[s + i + 3u];
            }
            for (; i < n; i++) { dst[o + i] = src[s + i]; }
            continue;
        }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = part.left + i32(kx);
            let o = pos * p.stride_k + (ky * p.kw + kx) * p.c;
            if (inside(iy, ix)) {
                let s = ((part.r * p.h + u32(iy)) * p.w + u32(ix)) * p.c;
                var c = part.c0;
                for (; c + 4u <= part.c1; c += 4u) {
                    dst[o + c] = src[s + c];
                    dst[o + c + 1u] = src[s + c + 1u];
                    dst[o + c + 2u] = src[s + c + 2u];
                    dst[o + c + 3u] = src[s + c + 3u];
                }
                for (; c < part.c1; c++) { dst[o + c] = src[s + c]; }
            } else {
                for (var c = part.c0; c < part.c1; c++) { dst[o + c] = 0.0; }
            }
        }
    }
}

@compute @workgroup_size(WG)
fn im2col_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let pos = linear_index(wid, nwg, lid);
    if (pos >= p.rows * p.ho * p.wo) { return; }
    let c4 = p.c / 4u;
    let part = patch_part(pos, wid.z, c4);
    let whole_rows = part.c0 == 0u && part.c1 == c4 && part.left >= 0 && part.left + i32(p.kw) <= i32(p.w);
    for (var ky = part.ky0; ky < part.ky1; ky++) {
        let iy = part.top + i32(ky);
        if (whole_rows && iy >= 0 && iy < i32(p.h)) {
            let o = pos * (p.stride_k / 4u) + ky * p.kw * c4;
            let s = ((part.r * p.h + u32(iy)) * p.w + u32(part.left)) * c4;
            let n = p.kw * c4;
            var i = 0u;
            for (; i + 4u <= n; i += 4u) {
                dst4[o + i] = src4[s + i];
                dst4[o + i + 1u] = src4[s + i + 1u];
                dst4[o + i + 2u] = src4[s + i + 2u];
                dst4[o + i + 3u] = src4[s + i + 3u];
            }
            for (; i < n; i++) { dst4[o + i] = src4[s + i]; }
            continue;
        }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = part.left + i32(kx);
            let o = pos * (p.stride_k / 4u) + (ky * p.kw + kx) * c4;
            if (inside(iy, ix)) {
                let s = ((part.r * p.h + u32(iy)) * p.w + u32(ix)) * c4;
                var c = part.c0;
                for (; c + 4u <= part.c1; c += 4u) {
                    dst4[o + c] = src4[s + c];
                    dst4[o + c + 1u] = src4[s + c + 1u];
                    dst4[o + c + 2u] = src4[s + c + 2u];
                    dst4[o + c + 3u] = src4[s + c + 3u];
                }
                for (; c < part.c1; c++) { dst4[o + c] = src4[s + c]; }
            } else {
                for (var c = part.c0; c < part.c1; c++) { dst4[o + c] = vec4<f32>(); }
            }
        }
    }
}

// col2im's geometry as override constants (the wrapper sets them from the convolution's dims):
// its index arithmetic divides by them per pixel, and a division by a uniform is one per SIMD lane
// on lavapipe, by a constant a multiply and a shift.
override CI_H: u32 = 1u;
override CI_W: u32 = 1u;
override CI_HO: u32 = 1u;
override CI_WO: u32 = 1u;
override CI_KH: u32 = 1u;
override CI_KW: u32 = 1u;
override CI_SH: u32 = 1u;
override CI_SW: u32 = 1u;
override CI_PAD_TOP: u32 = 0u;
override CI_PAD_LEFT: u32 = 0u;
override CI_C: u32 = 1u;
override CI_STRIDE_K: u32 = 1u;

// col2im's pixel: the windows covering it, as [oy0, oy1) × [ox0, ox1), its offsets ys, xs in the
// padded image, and its image row within the chunk.
struct Covering {
    oy0: u32,
    oy1: u32,
    ox0: u32,
    ox1: u32,
    ys: u32,
    xs: u32,
    r: u32,
}

fn covering(q: u32) -> Covering {
    let x = q % CI_W;
    let t = q / CI_W;
    var cov: Covering;
    cov.r = t / CI_H;
    // Window (oy, ox) covers (y, x) where oy·sh + ky = y + pad_top for some 0 ≤ ky < kh.
    cov.ys = t % CI_H + CI_PAD_TOP;
    cov.xs = x + CI_PAD_LEFT;
    cov.oy0 = select(0u, (cov.ys + 1u - CI_KH + CI_SH - 1u) / CI_SH, cov.ys + 1u >= CI_KH);
    cov.oy1 = min(cov.ys / CI_SH + 1u, CI_HO);
    cov.ox0 = select(0u, (cov.xs + 1u - CI_KW + CI_SW - 1u) / CI_SW, cov.xs + 1u >= CI_KW);
    cov.ox1 = min(cov.xs / CI_SW + 1u, CI_WO);
    return cov;
}

@compute @workgroup_size(WG)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let q = linear_index(wid, nwg, lid);
    if (q >= p.rows * CI_H * CI_W) { return; }
    let c0 = wid.z * p.seg;
    let c1 = min(c0 + p.seg, CI_C);
    let cov = covering(q);
    let out = (p.row0 * CI_H * CI_W + q) * CI_C;
    var c = c0;
    // 4 channels per pass over the windows where there are 4 left (fewer loop iterations).
    for (; c + 4u <= c1; c += 4u) {
        var s = vec4<f32>();
        for (var oy = cov.oy0; oy < cov.oy1; oy++) {
            let ky = cov.ys - oy * CI_SH;
            let row = (cov.r * CI_HO + oy) * CI_WO;
            for (var ox = cov.ox0; ox < cov.ox1; ox++) {
                let i = (row + ox) * CI_STRIDE_K + (ky * CI_KW + cov.xs - ox * CI_SW) * CI_C + c;
                s += vec4<f32>(src[i], src[i + 1u], src[i + 2u], src[i + 3u]);
            }
        }
        let g = s * below_grad4(out + c);
        dst[out + c] = g.x;
        dst[out + c + 1u] = g.y;
        dst[out + c + 2u] = g.z;
        dst[out + c + 3u] = g.w;
    }
    for (; c < c1; c++) {
        var s = 0.0;
        for (var oy = cov.oy0; oy < cov.oy1; oy++) {
            let ky = cov.ys - oy * CI_SH;
            let row = (cov.r * CI_HO + oy) * CI_WO;
            for (var ox = cov.ox0; ox < cov.ox1; ox++) {
                s += src[(row + ox) * CI_STRIDE_K + (ky * CI_KW + cov.xs - ox * CI_SW) * CI_C + c];
            }
        }
        dst[out + c] = s * below_grad(out + c);
    }
}

@compute @workgroup_size(WG)
fn col2im_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let q = linear_index(wid, nwg, lid);
    if (q >= p.rows * CI_H * CI_W) { return; }
    let c4 = CI_C / 4u;
    let c0 = wid.z * p.seg;
    let c1 = min(c0 + p.seg, c4);
    let cov = covering(q);
    let out = (p.row0 * CI_H * CI_W + q) * c4;
    var c = c0;
    // 4 units per pass over the windows where there are 4 left (fewer loop iterations).
    for (; c + 4u <= c1; c += 4u) {
        var s: array<vec4<f32>, 4>;
        for (var oy = cov.oy0; oy < cov.oy1; oy++) {
            let ky = cov.ys - oy * CI_SH;
            let row = (cov.r * CI_HO + oy) * CI_WO;
            for (var ox = cov.ox0; ox < cov.ox1; ox++) {
                let i = (row + ox) * (CI_STRIDE_K / 4u) + (ky * CI_KW + cov.xs - ox * CI_SW) * c4 + c;
                s[0] += src4[i];
                s[1] += src4[i + 1u];
                s[2] += src4[i + 2u];
                s[3] += src4[i + 3u];
            }
        }
        dst4[out + c] = s[0] * below_grad4((out + c) * 4u);
        dst4[out + c + 1u] = s[1] * below_grad4((out + c + 1u) * 4u);
        dst4[out + c + 2u] = s[2] * below_grad4((out + c + 2u) * 4u);
        dst4[out + c + 3u] = s[3] * below_grad4((out + c + 3u) * 4u);
    }
    for (; c < c1; c++) {
        var s = vec4<f32>();
        for (var oy = cov.oy0; oy < cov.oy1; oy++) {
            let ky = cov.ys - oy * CI_SH;
            let row = (cov.r * CI_HO + oy) * CI_WO;
            for (var ox = cov.ox0; ox < cov.ox1; ox++) {
                s += src4[(row + ox) * (CI_STRIDE_K / 4u) + (ky * CI_KW + cov.xs - ox * CI_SW) * c4 + c];
            }
        }
        dst4[out + c] = s * below_grad4((out + c) * 4u);
    }
}

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i < p.len) { dst[i] = src[i]; }
}

@compute @workgroup_size(WG)
fn flip_kernel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let o = i % p.c_out;
    let t = i / p.c_out;
    let c = t % p.c;
    let cell = t / p.c;
    // Both axes turned: cell (ky, kx) = ky·kw + kx goes to (kh − 1 − ky)·kw + kw − 1 − kx.
    dst[((p.kh * p.kw - 1u - cell) * p.stride_k + o) * p.c + c] = src[i];
}
