// Vector width 4 for the kernels written over `V` (batch_norm, pool2d): four neighbouring
// columns (or channels) a lane as one vec4, so that each load and store moves 16 bytes and each
// index is computed once for four values. Every value is computed by the same scalar operations
// as with lanes_scalar.wgsl, in the same order: the results are the same bits. The wrapper takes
// it where the innermost axis is a multiple of 4 and passes that axis divided by 4.

alias V = vec4<f32>;
alias VU = vec4<u32>;
alias VB = vec4<bool>;
const LANES: u32 = 4u;

fn splat(v: f32) -> V { return vec4<f32>(v); }
fn splat_u(v: u32) -> VU { return vec4<u32>(v); }
// The lane offsets of a value's elements: element j of vec4 index i is scalar index 4·i + j.
fn lane_offsets() -> VU { return vec4<u32>(0u, 1u, 2u, 3u); }
// s plus v's elements one at a time, in index order (a running sum along a row: the same bits
// as adding the scalars).
fn add_in_order(s: f32, v: V) -> f32 { return s + v.x + v.y + v.z + v.w; }
fn act_forward_v(code: u32, z: V, slope: f32) -> V {
    return vec4<f32>(act_forward(code, z.x, slope), act_forward(code, z.y, slope), act_forward(code, z.z, slope),
             act_forward(code, z.w, slope));
}
fn act_derivative_v(code: u32, y: V, slope: f32) -> V {
    return vec4<f32>(act_derivative_from_saved(code, y.x, slope), act_derivative_from_saved(code, y.y, slope),
             act_derivative_from_saved(code, y.z, slope), act_derivative_from_saved(code, y.w, slope));
}
