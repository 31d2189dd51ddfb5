//! GPU wrapper of shaders/grad_norm.wgsl: clipping by global norm with no readback; CPU
//! reference in src/cpu/grad_norm.rs.
//!
//! [`clip_factor`] writes `[min(1, max_norm/(‖grad‖ + 1e-6)), ‖grad‖]` (PyTorch's
//! `clip_grad_norm_`, Keras' `global_clipnorm`) into a 2-float tensor on the device; the update
//! kernels take its first value as [`UpdateExtras::grad_scale`](super::optimizer::UpdateExtras)
//! and multiply the gradient by it as they read it. That costs one read of the gradients (the
//! sum of squares) and no more, where scaling them in place before the update would read and
//! write them all once again.

use super::check::{disjoint, expect_len};
use crate::config::hyper;
use crate::device::Gpu;
use crate::error::Result;
use crate::plan::Plan;
use crate::registry::{dispatch, grid_1d, Access, Constant, KernelFamily};
use crate::tensor::{DType, Tensor};

const GRAD_NORM_WGSL: &str = include_str!("../../shaders/grad_norm.wgsl");

/// f32 elements: any length, any view offset.
pub(crate) const GRAD_NORM: KernelFamily = KernelFamily {
    name: "grad_norm",
    sources: &["alias V = f32;\nfn sq(v: V) -> f32 { return v * v; }\n", GRAD_NORM_WGSL],
    storage: &[Access::ReadWrite; 3],
};

/// vec4 elements, where the length and the view's offset are multiples of 4 floats (the model's
/// gradient arena is): a quarter of the loads, each costing on lavapipe what a scalar one does.
pub(crate) const GRAD_NORM_VEC4: KernelFamily = KernelFamily {
    name: "grad_norm_vec4",
    sources: &["alias V = vec4<f32>;\nfn sq(v: V) -> f32 { return dot(v, v); }\n", GRAD_NORM_WGSL],
    storage: &[Access::ReadWrite; 3],
};

/// Threads per workgroup (`WG` in the shader) and elements each sums (`PER_LANE`).
const WG: u32 = 256;
const PER_LANE: u32 = 16;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GradNormParams {
    len: u32,
    groups: u32,
    max_norm: f32,
    _pad: u32,
}

/// out ← [min(1, max_norm / (‖grad‖₂ + 1e-6)), ‖grad‖₂], in two dispatches (the partial sums
/// of squares per block, then their total in one workgroup) of a fixed order.
/// grad: `[len]` f32, non-empty; out: `[2]` f32; max_norm finite and > 0.
pub fn clip_factor(gpu: &Gpu, grad: &Tensor, out: &Tensor, max_norm: f32) -> Result<Plan> {
    const OP: &str = "clip_factor";
    hyper(OP, "max_norm", max_norm, "> 0", max_norm > 0.0)?;
    grad.expect_dtype(OP, DType::F32)?;
    grad.expect_nonempty(OP)?;
    expect_len(OP, "out", out, DType::F32, 2, "[2] (the factor, the norm)")?;
    disjoint(OP, &[("grad", grad), ("out", out)])?;
    let len = grad.len();
    let vec4 = len.is_multiple_of(4) && grad.byte_offset().is_multiple_of(16);
    let (family, items) = if vec4 { (&GRAD_NORM_VEC4, len / 4) } else { (&GRAD_NORM, len) };
    let groups = items.div_ceil((WG * PER_LANE) as usize);
    let partial = Tensor::zeros(gpu, &[groups])?;
    let params = GradNormParams { len: items as u32, groups: groups as u32, max_norm, _pad: 0 };
    let constants: [Constant; 1] = [("PER_LANE", PER_LANE as f64)];
    let bindings = [grad, &partial, out];
    let mut plan: Plan = dispatch(
        gpu,
        family,
        "grad_sum_squares",
        &constants,
        &params,
        &bindings,
        grid_1d(gpu, groups * WG as usize, WG),
    )?
    .into();
    plan.extend(dispatch(gpu, family, "clip_factor", &constants, &params, &bindings, [1, 1, 1])?.into());
    Ok(plan)
}
