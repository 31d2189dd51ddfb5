//! GPU wrapper of shaders/hinge.wgsl; CPU reference in src/cpu/hinge.rs.

use super::check::{disjoint, expect_len};
use super::totals::totals;
use super::{dispatch, grid_1d, Access, KernelFamily, Plan};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::tensor::{DType, Tensor};

pub(crate) const HINGE: KernelFamily = KernelFamily {
    name: "hinge",
    sources: &[include_str!("../../shaders/hinge.wgsl")],
    storage: &[Access::ReadWrite; 5],
};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct HingeParams {
    rows: u32,
    grad_scale: f32,
    _pad0: u32,
    _pad1: u32,
}

/// Where [`hinge`] writes.
pub struct HingeOut<'a> {
    /// [N]: max(0, 1 − y·z).
    pub loss_rows: &'a Tensor,
    /// [N] (or the shape of logits): (y·z < 1 ? −y : 0) · grad_scale (overwritten); None for
    /// evaluation only.
    pub dlogits: Option<&'a Tensor>,
    /// [N]: 1.0 where (z > 0) == (y > 0), else 0.0.
    pub correct_rows: &'a Tensor,
    /// [2]: += (Σ loss_rows, Σ correct_rows), by a second, fixed-order reduction dispatch; None skips it.
    pub totals: Option<&'a Tensor>,
}

/// Binary hinge loss with its (sub)gradient, for a single-output model.  logits: [N, 1] or [N]
/// f32, targets: [N] f32 labels in {−1, +1} or {0, 1}: y = +1 where t > 0, else −1 (so 0 maps to
/// −1, as in Keras). `grad_scale` is usually 1/N.
pub fn hinge(gpu: &Gpu, logits: &Tensor, targets: &Tensor, grad_scale: f32, out: &HingeOut) -> Result<Plan> {
    const OP: &str = "hinge";
    logits.expect_dtype(OP, DType::F32)?;
    let n = match logits.shape() {
        [n] | [n, 1] => *n,
        other => return Err(WgnnError::shape(OP, format!("logits must be [N, 1] or [N], got {other:?}"))),
    };
    logits.expect_nonempty(OP)?;
    expect_len(OP, "targets", targets, DType::F32, n, &format!("[{n}]"))?;
    if !grad_scale.is_finite() {
        return Err(WgnnError::invalid(OP, format!("grad_scale = {grad_scale} must be finite")));
    }
    expect_len(OP, "loss_rows", out.loss_rows, DType::F32, n, &format!("[{n}]"))?;
    expect_len(OP, "correct_rows", out.correct_rows, DType::F32, n, &format!("[{n}]"))?;
    let mut named = vec![
        ("logits", logits),
        ("targets", targets),
        ("loss_rows", out.loss_rows),
        ("correct_rows", out.correct_rows),
    ];
    if let Some(d) = out.dlogits {
        expect_len(OP, "dlogits", d, DType::F32, n, &format!("[{n}] or {:?} like logits", logits.shape()))?;
        named.push(("dlogits", d));
    }
    if let Some(t) = out.totals {
        expect_len(OP, "totals", t, DType::F32, 2, "[2]")?;
        named.push(("totals", t));
    }
    disjoint(OP, &named)?;

    let dummy = super::dummy(gpu)?;
    let params = HingeParams { rows: n as u32, grad_scale, _pad0: 0, _pad1: 0 };
    let constants = [("WG", WG as f64), ("HAS_DLOGITS", out.dlogits.is_some() as u32 as f64)];
    let bindings = [logits, targets, out.loss_rows, out.dlogits.unwrap_or(&dummy), out.correct_rows];
    let mut plan: Plan = dispatch(gpu, &HINGE, OP, &constants, &params, &bindings, grid_1d(gpu, n, WG))?.into();
    if let Some(t) = out.totals {
        plan.extend(totals(gpu, out.loss_rows, out.correct_rows, t, true)?);
    }
    Ok(plan)
}
