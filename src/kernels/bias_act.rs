//! GPU wrapper of shaders/bias_act.wgsl; CPU reference in src/cpu/bias_act.rs.

use super::ACTIVATION_WGSL;
use crate::activation::Activation;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::kernels::reduce::column_sum;
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::Tensor;

pub(crate) const BIAS_ACT: KernelFamily = KernelFamily {
    name: "bias_act",
    sources: &[ACTIVATION_WGSL, include_str!("../../shaders/bias_act.wgsl")],
    storage: &[Access::Read, Access::Read, Access::ReadWrite],
};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BiasActParams {
    rows: u32,
    cols: u32,
    slope: f32,
    _pad: u32,
}

/// Y = act(X + b), b broadcast over rows.  x, y: [rows, cols], bias: `[cols]` (or none).
pub fn bias_act_forward(gpu: &Gpu, x: &Tensor, bias: Option<&Tensor>, y: &Tensor, act: Activation) -> Result<Plan> {
    const OP: &str = "bias_act_forward";
    act.validate_elementwise(OP)?;
    let (rows, cols) = x.dims2(OP)?;
    x.expect_nonempty(OP)?;
    if y.shape() != x.shape() {
        return Err(WgnnError::shape_of(
            OP,
            &[("x", x.shape()), ("y", y.shape())],
            format!("x is {:?} but y is {:?}", x.shape(), y.shape()),
        ));
    }
    if let Some(b) = bias {
        if b.len() != cols {
            return Err(WgnnError::shape_of(
                OP,
                &[("x", x.shape()), ("bias", b.shape())],
                format!("x is {:?}, so bias must have {cols} values, got {:?}", x.shape(), b.shape()),
            ));
        }
    }
    if x.overlaps(y) {
        return Err(WgnnError::invalid(OP, "x and y share memory (in-place is not supported)"));
    }
    let dummy = dummy(gpu)?;
    let params = BiasActParams { rows: rows as u32, cols: cols as u32, slope: act.slope(), _pad: 0 };
    let constants = [("ACT", act.code() as f64), ("HAS_BIAS", bias.is_some() as u32 as f64), ("WG", WG as f64)];
    let d = dispatch(
        gpu,
        &BIAS_ACT,
        OP,
        &constants,
        &params,
        &[x, bias.unwrap_or(&dummy), y],
        grid_1d(gpu, rows * cols, WG),
    )?;
    Ok(d.into())
}

/// dZ = dY ⊙ act′(Y) and, when `db` is given, db (+)= column sums of dZ. Y is what the forward
/// saved: its output, or its input for the GELUs ([`Activation::saves_input`]).
/// dy, y, dz: [rows, cols]; db: `[cols]`. `y` is the forward output.
pub fn bias_act_backward(
    gpu: &Gpu,
    dy: &Tensor,
    y: &Tensor,
    dz: &Tensor,
    db: Option<&Tensor>,
    act: Activation,
    accumulate_db: bool,
) -> Result<Plan> {
    const OP: &str = "bias_act_backward";
    act.validate_elementwise(OP)?;
    let (rows, cols) = dy.dims2(OP)?;
    dy.expect_nonempty(OP)?;
    if y.shape() != dy.shape() || dz.shape() != dy.shape() {
        return Err(WgnnError::shape_of(
            OP,
            &[("dy", dy.shape()), ("y", y.shape()), ("dz", dz.shape())],
            format!("dy {:?}, y {:?} and dz {:?} must match", dy.shape(), y.shape(), dz.shape()),
        ));
    }
    if dz.overlaps(dy) || dz.overlaps(y) {
        return Err(WgnnError::invalid(OP, "dz shares memory with dy or y"));
    }
    let params = BiasActParams { rows: rows as u32, cols: cols as u32, slope: act.slope(), _pad: 0 };
    let constants = [("ACT", act.code() as f64), ("HAS_BIAS", 1.0), ("WG", WG as f64)];
    let mut plan: Plan =
        dispatch(gpu, &BIAS_ACT, OP, &constants, &params, &[dy, y, dz], grid_1d(gpu, rows * cols, WG))?.into();
    if let Some(db) = db {
        plan.extend(column_sum(gpu, dz, db, accumulate_db)?);
    }
    Ok(plan)
}
