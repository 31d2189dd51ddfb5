// Vector width 1 for the kernels written over `V` (batch_norm, pool2d): one value per lane; the
// families prepend this or lanes_vec4.wgsl after activation.wgsl. See lanes_vec4.wgsl.

alias V = f32;
alias VU = u32;
alias VB = bool;
const LANES: u32 = 1u;

fn splat(v: f32) -> V { return v; }
fn splat_u(v: u32) -> VU { return v; }
// The lane offsets of a value's elements: 0.
fn lane_offsets() -> VU { return 0u; }
fn add_in_order(s: f32, v: V) -> f32 { return s + v; }
fn act_forward_v(code: u32, z: V, slope: f32) -> V { return act_forward(code, z, slope); }
fn act_derivative_v(code: u32, y: V, slope: f32) -> V { return act_derivative_from_saved(code, y, slope); }
