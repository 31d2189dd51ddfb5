//! GPU wrapper of shaders/softmax_grad.wgsl; CPU reference in src/cpu/softmax_grad.rs.

use super::check::disjoint;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub(crate) const SOFTMAX_GRAD: KernelFamily = KernelFamily {
    name: "softmax_grad",
    sources: &[include_str!("../../shaders/softmax_grad.wgsl")],
    storage: &[Access::ReadWrite; 3],
};

const WG: u32 = 64;
/// Most columns a row may have: one invocation loops 2·C times, far below the loop cap
/// ([`crate::profile::LOOP_CAP`]).
pub const MAX_COLS: usize = 16_384;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxGradParams {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

/// dz = y ⊙ (dy − Σ_row dy ⊙ y): the gradient through a row-wise softmax whose output is `y`.
/// dy, y, dz: [rows, cols] f32; dz must not share memory with dy or y.
pub fn softmax_backward(gpu: &Gpu, dy: &Tensor, y: &Tensor, dz: &Tensor) -> Result<Plan> {
    const OP: &str = "softmax_backward";
    for t in [dy, y, dz] {
        t.expect_dtype(OP, DType::F32)?;
    }
    let (rows, cols) = dy.dims2(OP)?;
    dy.expect_nonempty(OP)?;
    if y.shape() != dy.shape() || dz.shape() != dy.shape() {
        return Err(WgnnError::shape_of(
            OP,
            &[("dy", dy.shape()), ("y", y.shape()), ("dz", dz.shape())],
            format!("dy {:?}, y {:?} and dz {:?} must match", dy.shape(), y.shape(), dz.shape()),
        ));
    }
    if cols > MAX_COLS {
        return Err(WgnnError::invalid(
            OP,
            format!("dy {:?} has {cols} columns; at most {MAX_COLS} are supported (one invocation's loop)", dy.shape()),
        ));
    }
    disjoint(OP, &[("dz", dz), ("dy", dy)])?;
    disjoint(OP, &[("dz", dz), ("y", y)])?;
    let params = SoftmaxGradParams { rows: rows as u32, cols: cols as u32, _pad0: 0, _pad1: 0 };
    let constants = [("WG", WG as f64)];
    Ok(dispatch(gpu, &SOFTMAX_GRAD, OP, &constants, &params, &[dy, y, dz], grid_1d(gpu, rows, WG))?.into())
}
