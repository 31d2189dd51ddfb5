//! GPU wrapper of shaders/dropout.wgsl; CPU reference in src/cpu/dropout.rs.

use super::check::{disjoint, expect_len, hyper};
use crate::cpu::dropout::dropout_constants;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub(crate) const DROPOUT: KernelFamily = KernelFamily {
    name: "dropout",
    sources: &[include_str!("../../shaders/dropout_hash.wgsl"), include_str!("../../shaders/dropout.wgsl")],
    storage: &[Access::ReadWrite, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite],
};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DropoutParams {
    len: u32,
    seed: u32,
    threshold: u32,
    scale: f32,
    lag: u32,
    _pad: [u32; 3],
}

/// `x` is a non-empty f32 tensor of at most 2³² − 1 values and each of `others` has its shape.
fn check_like(op: &str, x_name: &str, x: &Tensor, others: &[(&str, &Tensor)]) -> Result<usize> {
    x.expect_dtype(op, DType::F32)?;
    x.expect_nonempty(op)?;
    if x.len() > u32::MAX as usize {
        return Err(WgnnError::invalid(op, format!("{x_name} {:?} has more than 2^32 - 1 values", x.shape())));
    }
    for (name, t) in others {
        expect_len(op, name, t, DType::F32, x.len(), &format!("{:?} like {x_name}", x.shape()))?;
        if t.shape() != x.shape() {
            return Err(WgnnError::shape_of(
                op,
                &[(x_name, x.shape()), (name, t.shape())],
                format!("{x_name} is {:?} but {name} is {:?}", x.shape(), t.shape()),
            ));
        }
    }
    Ok(x.len())
}

/// Inverted dropout (training only): mask = 0 with probability `rate`, else 1/(1 − rate);
/// y = x ⊙ mask.  x, y, mask: [N, D] (any shape, all equal) f32; step: `[1]` u32, the global step
/// counter on the GPU, read and never written. The keep decision is a hash of (seed, t, element
/// index) with t = `step[0]` − `lag` (a training step whose gather already advanced the counter
/// passes lag 1, so the mask still belongs to the updates before it), computed on the GPU: the
/// same seed and t give the same mask (bit-identical to `cpu::dropout_forward` at t), and nothing
/// is uploaded per step (lag must not exceed the counter: t would wrap). rate must be in [0, 1);
/// 0 gives y = x and a mask of ones.
#[allow(clippy::too_many_arguments)]
pub fn dropout_forward(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    mask: &Tensor,
    rate: f32,
    seed: u32,
    step: &Tensor,
    lag: u32,
) -> Result<Plan> {
    const OP: &str = "dropout_forward";
    hyper(OP, "rate", rate, "in [0, 1)", (0.0..1.0).contains(&rate))?;
    let len = check_like(OP, "x", x, &[("y", y), ("mask", mask)])?;
    expect_len(OP, "step", step, DType::U32, 1, "[1]")?;
    disjoint(OP, &[("x", x), ("y", y), ("mask", mask), ("step", step)])?;
    let (threshold, scale) = dropout_constants(rate);
    let params = DropoutParams { len: len as u32, seed, threshold, scale, lag, _pad: [0; 3] };
    let d = dispatch(gpu, &DROPOUT, OP, &[("WG", WG as f64)], &params, &[x, step, y, mask], grid_1d(gpu, len, WG))?;
    Ok(d.into())
}

/// dX = dY ⊙ mask, with the mask written by [`dropout_forward`].  dy, mask, dx: [N, D] f32.
pub fn dropout_backward(gpu: &Gpu, dy: &Tensor, mask: &Tensor, dx: &Tensor) -> Result<Plan> {
    const OP: &str = "dropout_backward";
    let len = check_like(OP, "dy", dy, &[("mask", mask), ("dx", dx)])?;
    disjoint(OP, &[("dy", dy), ("mask", mask), ("dx", dx)])?;
    let dummy = dummy(gpu)?;
    let params = DropoutParams { len: len as u32, seed: 0, threshold: 0, scale: 0.0, lag: 0, _pad: [0; 3] };
    let d = dispatch(gpu, &DROPOUT, OP, &[("WG", WG as f64)], &params, &[dy, &dummy, dx, mask], grid_1d(gpu, len, WG))?;
    Ok(d.into())
}
