// matmul_conv_a.wgsl's patches where C is not a multiple of 4 (a first layer of 1 to 3
// channels): the same stored A, K = KH·KW·C rounded up to a multiple of 4 (the extra columns
// zero, as im2col pads them), each vec4 of a patch gathered from 4 scalars of the image (on
// lavapipe as many loads as one vec4: it loads per lane and component either way).
//   image [rows, IH, IW, C] (binding 1, the scalar view a); row bases in floats.

override CONV_GH: u32 = 1u;
override CONV_GW: u32 = 1u;
override CONV_IH: u32 = 1u;
override CONV_IW: u32 = 1u;
override CONV_SY: u32 = 1u;
override CONV_SX: u32 = 1u;
override CONV_KW: u32 = 1u;
override CONV_C: u32 = 1u;
override CONV_PATCH: u32 = 1u;  // KH·KW·C, before the padding

fn a_batch_start() -> u32 {
    return 0u;
}

fn a_row_base(r: u32, len4: u32, start: u32) -> u32 {
    let gx = r % CONV_GW;
    let t = r / CONV_GW;
    let gy = t % CONV_GH;
    let img = t / CONV_GH;
    return ((img * CONV_IH + gy * CONV_SY) * CONV_IW + gx * CONV_SX) * CONV_C;
}

// Patch value t = (ky·KW + kx)·C + c of the window starting at base; zero in the padding of K.
fn a_tap(base: u32, t: u32) -> f32 {
    let cell = t / CONV_C;
    let off = ((cell / CONV_KW) * CONV_IW + cell % CONV_KW) * CONV_C + t % CONV_C;
    let inside = t < CONV_PATCH;
    return select(0.0, a[select(base, base + off, inside)], inside);
}

fn a_at(base: u32, q: u32) -> vec4<f32> {
    let t = 4u * q;
    return vec4<f32>(a_tap(base, t), a_tap(base, t + 1u), a_tap(base, t + 2u), a_tap(base, t + 3u));
}

fn a_duties(wid: vec3<u32>, lane: u32, m0: u32, tile_rows: u32, start: u32) {}
