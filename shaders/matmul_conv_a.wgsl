// The subgroup matmul's A source for an implicit-GEMM convolution (src/kernels/matmul_conv_a.rs;
// matmul_subgroup.wgsl says what each function gives): stored A is the patch matrix of an image
// batch, read where the image lies instead of from a patch matrix written by im2col.
//   image [rows, IH, IW, C4 vec4s] (binding 1, the a4 view), channels-last;
//   stored A's row r = the patch at grid position r = (img, gy, gx) over [rows, GH, GW]: the
//     window of KH×KW pixels whose corner is pixel (gy·SY, gx·SX), as im2col lays it out
//     (t = (ky·KW + kx)·C + c), K = KH·KW·C. Every window lies inside the image (no padding:
//     the wrapper checks), and C is a multiple of 4, so a vec4 of the patch is one of the image
//     (other C: matmul_conv_a_scalar.wgsl).
// A forward convolution reads x over its output grid; the input gradient reads the zero-padded,
// dilated dZ over the input grid (its "full" convolution with the flipped kernel).
// Geometry in override constants: one pipeline per layer shape, divisions by constants.

override CONV_GH: u32 = 1u;
override CONV_GW: u32 = 1u;
override CONV_IH: u32 = 1u;
override CONV_IW: u32 = 1u;
override CONV_SY: u32 = 1u;
override CONV_SX: u32 = 1u;
override CONV_KW: u32 = 1u;
override CONV_C4: u32 = 1u;

fn a_batch_start() -> u32 {
    return 0u;
}

// The vec4 index of the window's first pixel: row r's patch starts there.
fn a_row_base(r: u32, len4: u32, start: u32) -> u32 {
    let gx = r % CONV_GW;
    let t = r / CONV_GW;
    let gy = t % CONV_GH;
    let img = t / CONV_GH;
    return ((img * CONV_IH + gy * CONV_SY) * CONV_IW + gx * CONV_SX) * CONV_C4;
}

// Patch vec4 q = (ky, kx, c4) lies ky image rows below the window's first, kx·C4 + c4 along.
fn a_col(q: u32) -> u32 {
    let ky = q / (CONV_KW * CONV_C4);
    return q + ky * (CONV_IW - CONV_KW) * CONV_C4;
}

fn a_at(base: u32, q: u32) -> vec4<f32> {
    return a4[base + a_col(q)];
}

fn a_duties(wid: vec3<u32>, lane: u32, m0: u32, tile_rows: u32, start: u32) {}
