// Direct input gradient of a 2-D convolution into at most 16 input channels
// (src/kernels/conv2d_input_direct.rs): no dcol matrix written by a matmul and summed back by
// col2im. Channels-last, as conv2d.wgsl: dz [rows, Ho, Wo, COUT4] vec4s, the kernel read as
// [KH, KW, CIN, COUT4] vec4s, dx [rows, H, W, CIN]. Needs activation.wgsl prepended.
//   dx[r, iy, ix, c] = Σ over the taps (ky, kx) whose window covers (iy, ix) from output (oy, ox)
//                      of Σ_o dz[r, oy, ox, o] · kernel[ky, kx, c, o]
//   (oy·SH = iy + pad_top − ky, ox·SW = ix + pad_left − kx), times act'(below) where p.act ≠ 0.
// One invocation is one input pixel and all its channels, in a mat4x4's CIN/4 columns.
// Why no loops: llvmpipe loads a weight once for all SIMD lanes (a broadcast) only where its
// address is a compile-time constant, and Mesa unrolls a loop only while the unrolled body stays
// small (about 800 instructions), which KH·KW·COUT4·CIN dot products pass at once. So the taps
// and the output vec4s are written out as calls guarded by the override constants (at most 5×5
// taps and 8 vec4s: the wrapper checks), which fold to exactly the shape's calls: every weight
// load has a constant address, every dz load is one vec4 per lane. A GPU gets the same: one pass
// over dz and dx, the weights from its constant cache.

override WG: u32 = 64u;
override KH: u32 = 3u;
override KW: u32 = 3u;
override CIN: u32 = 16u;
override COUT4: u32 = 8u;
// The strides: divisions by constants.
override SH: u32 = 1u;
override SW: u32 = 1u;
struct Params {
    rows: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    sh: u32,
    sw: u32,
    pad_top: u32,
    pad_left: u32,
    act: u32,       // activation.wgsl's code of the activation below (0: none)
    slope: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dz4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kernel4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read> below: array<f32>;

// Σ_o over output vec4 q of dz · kernel[tap, c, o] (0 past CIN: a constant test).
fn kdot(tap: u32, c: u32, q: u32, d: vec4<f32>) -> f32 {
    if (c >= CIN) { return 0.0; }
    return dot(d, kernel4[(tap * CIN + c) * COUT4 + q]);
}

// One output vec4 q of one tap: column j holds channels 4j .. 4j + 3 (0 past CIN). Sums travel
// as return values, not through pointers: an accumulator behind a pointer may stay in memory.
fn quad(tap: u32, q: u32, base: u32, inside: bool) -> mat4x4<f32> {
    // Outside dz (no output covers the pixel through this tap) the terms are zero; dz4[q] stands
    // in for the load.
    let d = select(vec4<f32>(), dz4[base + q], inside);
    var m = mat4x4<f32>();
    m[0] = vec4<f32>(kdot(tap, 0u, q, d), kdot(tap, 1u, q, d), kdot(tap, 2u, q, d), kdot(tap, 3u, q, d));
    if (CIN > 4u) {
        m[1] = vec4<f32>(kdot(tap, 4u, q, d), kdot(tap, 5u, q, d), kdot(tap, 6u, q, d), kdot(tap, 7u, q, d));
    }
    if (CIN > 8u) {
        m[2] = vec4<f32>(kdot(tap, 8u, q, d), kdot(tap, 9u, q, d), kdot(tap, 10u, q, d), kdot(tap, 11u, q, d));
    }
    if (CIN > 12u) {
        m[3] = vec4<f32>(kdot(tap, 12u, q, d), kdot(tap, 13u, q, d), kdot(tap, 14u, q, d), kdot(tap, 15u, q, d));
    }
    return m;
}

// Tap (ky, kx) of the pixel at image row r, (iy, ix): the output it comes from, if any, and its
// COUT4 output vec4s.
fn tap(ky: u32, kx: u32, r: u32, iy: u32, ix: u32) -> mat4x4<f32> {
    let ny = i32(iy + p.pad_top) - i32(ky);
    let nx = i32(ix + p.pad_left) - i32(kx);
    let oy = u32(max(ny, 0)) / SH;
    let ox = u32(max(nx, 0)) / SW;
    let inside = ny >= 0 && nx >= 0 && u32(ny) == oy * SH && u32(nx) == ox * SW && oy < p.ho && ox < p.wo;
    let base = select(0u, ((r * p.ho + oy) * p.wo + ox) * COUT4, inside);
    let t = ky * KW + kx;
    var s = quad(t, 0u, base, inside);
    if (COUT4 > 1u) { s += quad(t, 1u, base, inside); }
    if (COUT4 > 2u) { s += quad(t, 2u, base, inside); }
    if (COUT4 > 3u) { s += quad(t, 3u, base, inside); }
    if (COUT4 > 4u) { s += quad(t, 4u, base, inside); }
    if (COUT4 > 5u) { s += quad(t, 5u, base, inside); }
    if (COUT4 > 6u) { s += quad(t, 6u, base, inside); }
    if (COUT4 > 7u) { s += quad(t, 7u, base, inside); }
    return s;
}

// Kernel row ky: its KW (at most 5) taps.
fn row(ky: u32, r: u32, iy: u32, ix: u32) -> mat4x4<f32> {
    var s = tap(ky, 0u, r, iy, ix);
    if (KW > 1u) { s += tap(ky, 1u, r, iy, ix); }
    if (KW > 2u) { s += tap(ky, 2u, r, iy, ix); }
    if (KW > 3u) { s += tap(ky, 3u, r, iy, ix); }
    if (KW > 4u) { s += tap(ky, 4u, r, iy, ix); }
    return s;
}

fn below_grad(i: u32) -> f32 {
    if (p.act == 0u) { return 1.0; }
    return act_derivative_from_saved(p.act, below[i], p.slope);
}

fn store(pix: u32, j: u32, a: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let ch = 4u * j + c;
        if (ch < CIN) {
            let i = pix * CIN + ch;
            dx[i] = a[c] * below_grad(i);
        }
    }
}

@compute @workgroup_size(WG)
fn conv2d_input_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let pix = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (pix >= p.rows * p.h * p.w) { return; }
    let ix = pix % p.w;
    let t = pix / p.w;
    let iy = t % p.h;
    let r = t / p.h;
    var a = row(0u, r, iy, ix);
    if (KH > 1u) { a += row(1u, r, iy, ix); }
    if (KH > 2u) { a += row(2u, r, iy, ix); }
    if (KH > 3u) { a += row(3u, r, iy, ix); }
    if (KH > 4u) { a += row(4u, r, iy, ix); }
    store(pix, 0u, a[0]);
    if (CIN > 4u) { store(pix, 1u, a[1]); }
    if (CIN > 8u) { store(pix, 2u, a[2]); }
    if (CIN > 12u) { store(pix, 3u, a[3]); }
}
