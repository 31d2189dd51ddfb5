// Direct 2-D convolution for small patches (src/kernels/conv2d_direct.rs): no patch matrix
// written and read back. Channels-last, as conv2d.wgsl: x [rows, H, W, CIN], the kernel read as
// [KH·KW·CIN, COUT4] vec4s, y [rows, Ho, Wo, COUT4] vec4s. Needs activation.wgsl prepended.
//   y[p, o] = act(Σ_t patch(p)[t] · kernel[t, o] + bias[o]),  t = (ky·KW + kx)·CIN + c
// One invocation is one output position and all its output channels (at most 32), in COUT4
// vec4 registers.
// The kernel's shape travels as override constants, so every loop has a constant trip count and
// every kernel load a constant address once the loops are unrolled: llvmpipe then loads each
// weight once for all SIMD lanes (a broadcast) instead of once per lane, and a GPU keeps them in
// its constant cache. Each x value of the patch is loaded once and used COUT4 × 4 times.
// KEEP: the patch is also written to col [rows·Ho·Wo, stride_k] for the kernel gradient (what
// im2col would have written; the columns past the patch stay as they are, zero).
// The wrapper keeps KH·KW·CIN·COUT4 far below lavapipe's 65,535-iteration loop cap.

override WG: u32 = 64u;
override KH: u32 = 3u;
override KW: u32 = 3u;
override CIN: u32 = 1u;
override COUT4: u32 = 4u;
override HAS_BIAS: bool = false;
override KEEP: bool = false;
override ACT: u32 = 0u;  // activation.wgsl's code of the activation applied to y (0: none)
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
    stride_k: u32,  // col's row length (KEEP)
    slope: f32,     // ACT's leaky relu slope
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> kernel4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> col: array<f32>;

// y's vec4 j of the output position starting at vec4 `out`: the bias and activation applied.
fn finish(out: u32, j: u32, sum: vec4<f32>) {
    var z = sum;
    if (HAS_BIAS) { z += bias4[j]; }
    if (ACT != 0u) {
        z = vec4<f32>(act_forward(ACT, z.x, p.slope), act_forward(ACT, z.y, p.slope),
                      act_forward(ACT, z.z, p.slope), act_forward(ACT, z.w, p.slope));
    }
    y4[out + j] = z;
}

@compute @workgroup_size(WG)
fn conv2d_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let pos = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (pos >= p.rows * p.ho * p.wo) { return; }
    let ox = pos % p.wo;
    let t = pos / p.wo;
    let r = t / p.ho;
    let top = i32((t % p.ho) * p.sh) - i32(p.pad_top);
    let left = i32(ox * p.sw) - i32(p.pad_left);
    // Up to 8 accumulators, named rather than an array: an array indexed in a loop may live in
    // memory (on llvmpipe, a gather per lane); the `COUT4 > j` tests are constants, so the unused
    // ones compile away.
    var a0 = vec4<f32>();
    var a1 = vec4<f32>();
    var a2 = vec4<f32>();
    var a3 = vec4<f32>();
    var a4 = vec4<f32>();
    var a5 = vec4<f32>();
    var a6 = vec4<f32>();
    var a7 = vec4<f32>();
    for (var ky = 0u; ky < KH; ky++) {
        let iy = top + i32(ky);
        for (var kx = 0u; kx < KW; kx++) {
            let ix = left + i32(kx);
            let inside = iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w);
            // Outside the image (padding) the patch holds zeros; x[0 ..] stands in for the load.
            let base = select(0u, ((r * p.h + u32(iy)) * p.w + u32(ix)) * CIN, inside);
            for (var c = 0u; c < CIN; c++) {
                let v = select(0.0, x[base + c], inside);
                let tap = (ky * KW + kx) * CIN + c;
                if (KEEP) { col[pos * p.stride_k + tap] = v; }
                let w = tap * COUT4;
                a0 += v * kernel4[w];
                if (COUT4 > 1u) { a1 += v * kernel4[w + 1u]; }
                if (COUT4 > 2u) { a2 += v * kernel4[w + 2u]; }
                if (COUT4 > 3u) { a3 += v * kernel4[w + 3u]; }
                if (COUT4 > 4u) { a4 += v * kernel4[w + 4u]; }
                if (COUT4 > 5u) { a5 += v * kernel4[w + 5u]; }
                if (COUT4 > 6u) { a6 += v * kernel4[w + 6u]; }
                if (COUT4 > 7u) { a7 += v * kernel4[w + 7u]; }
            }
        }
    }
    let out = pos * COUT4;
    finish(out, 0u, a0);
    if (COUT4 > 1u) { finish(out, 1u, a1); }
    if (COUT4 > 2u) { finish(out, 2u, a2); }
    if (COUT4 > 3u) { finish(out, 3u, a3); }
    if (COUT4 > 4u) { finish(out, 4u, a4); }
    if (COUT4 > 5u) { finish(out, 5u, a5); }
    if (COUT4 > 6u) { finish(out, 6u, a6); }
    if (COUT4 > 7u) { finish(out, 7u, a7); }
}
