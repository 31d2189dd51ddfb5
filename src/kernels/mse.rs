//! GPU wrapper of shaders/mse.wgsl; CPU reference in src/cpu/mse.rs.

use super::check::{disjoint, expect_len};
use super::totals::totals;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub(crate) const MSE: KernelFamily =
    KernelFamily { name: "mse", sources: &[include_str!("../../shaders/mse.wgsl")], storage: &[Access::ReadWrite; 5] };

const WG: u32 = 64;
/// Most outputs a row may have: one invocation loops D times, which must stay far below
/// the loop cap ([`crate::profile::LOOP_CAP`]).
pub const MAX_OUTPUTS: usize = 16_384;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MseParams {
    rows: u32,
    cols: u32,
    grad_scale: f32,
    _pad: u32,
}

/// Where [`mse`] writes.
pub struct MseOut<'a> {
    /// `[N]`: mean over D of (p − t)².
    pub loss_rows: &'a Tensor,
    /// The shape of predictions: 2(p − t)/D · grad_scale (overwritten); None for evaluation only.
    pub dpred: Option<&'a Tensor>,
    /// `[N]`: mean over D of |p − t| (the MAE metric; it takes the place of the classification
    /// losses' correct_rows).
    pub abs_rows: &'a Tensor,
    /// `[2]`: += (Σ loss_rows, Σ abs_rows), by a second, fixed-order reduction dispatch; None skips it.
    pub totals: Option<&'a Tensor>,
}

/// Mean squared error (regression) with its gradient.  predictions: [N, D] or `[N]` (D = 1) f32,
/// targets: f32 of the same shape. `grad_scale` is usually 1/N (the gradient of the batch mean of
/// the per-row losses).
pub fn mse(gpu: &Gpu, pred: &Tensor, targets: &Tensor, grad_scale: f32, out: &MseOut) -> Result<Plan> {
    const OP: &str = "mse";
    pred.expect_dtype(OP, DType::F32)?;
    let (n, d) = match pred.shape() {
        [n] => (*n, 1),
        [n, d] => (*n, *d),
        other => {
            return Err(WgnnError::shape_of(
                OP,
                &[("predictions", other)],
                format!("predictions must be [N, D] or [N], got {other:?}"),
            ))
        }
    };
    pred.expect_nonempty(OP)?;
    if d > MAX_OUTPUTS {
        return Err(WgnnError::invalid(
            OP,
            format!(
                "predictions {:?} have {d} outputs per row; at most {MAX_OUTPUTS} are supported \
                 (each row is one invocation's loop)",
                pred.shape()
            ),
        ));
    }
    targets.expect_dtype(OP, DType::F32)?;
    if targets.shape() != pred.shape() {
        return Err(WgnnError::shape_of(
            OP,
            &[("predictions", pred.shape()), ("targets", targets.shape())],
            format!("targets must have the shape of predictions {:?}, got {:?}", pred.shape(), targets.shape()),
        ));
    }
    if !grad_scale.is_finite() {
        return Err(WgnnError::invalid(OP, format!("grad_scale = {grad_scale} must be finite")));
    }
    expect_len(OP, "loss_rows", out.loss_rows, DType::F32, n, &format!("[{n}]"))?;
    expect_len(OP, "abs_rows", out.abs_rows, DType::F32, n, &format!("[{n}]"))?;
    let mut named =
        vec![("predictions", pred), ("targets", targets), ("loss_rows", out.loss_rows), ("abs_rows", out.abs_rows)];
    if let Some(dp) = out.dpred {
        dp.expect_dtype(OP, DType::F32)?;
        if dp.shape() != pred.shape() {
            return Err(WgnnError::shape_of(
                OP,
                &[("predictions", pred.shape()), ("dpred", dp.shape())],
                format!("dpred must have the shape of predictions {:?}, got {:?}", pred.shape(), dp.shape()),
            ));
        }
        named.push(("dpred", dp));
    }
    if let Some(t) = out.totals {
        expect_len(OP, "totals", t, DType::F32, 2, "[2]")?;
        named.push(("totals", t));
    }
    disjoint(OP, &named)?;

    let dummy = dummy(gpu)?;
    let params = MseParams { rows: n as u32, cols: d as u32, grad_scale, _pad: 0 };
    let constants = [("WG", WG as f64), ("HAS_DPRED", out.dpred.is_some() as u32 as f64)];
    let bindings = [pred, targets, out.loss_rows, out.dpred.unwrap_or(&dummy), out.abs_rows];
    let mut plan: Plan = dispatch(gpu, &MSE, OP, &constants, &params, &bindings, grid_1d(gpu, n, WG))?.into();
    if let Some(t) = out.totals {
        plan.extend(totals(gpu, out.loss_rows, out.abs_rows, t, true)?);
    }
    Ok(plan)
}
