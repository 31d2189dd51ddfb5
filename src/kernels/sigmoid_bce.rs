//! GPU wrapper of shaders/sigmoid_bce.wgsl; CPU reference in src/cpu/sigmoid_bce.rs.

use super::check::{disjoint, expect_len};
use super::totals::totals;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub(crate) const SIGMOID_BCE: KernelFamily = KernelFamily {
    name: "sigmoid_bce",
    sources: &[include_str!("../../shaders/sigmoid_bce.wgsl")],
    storage: &[Access::ReadWrite; 5],
};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SingleOutputLossParams {
    rows: u32,
    grad_scale: f32,
    _pad0: u32,
    _pad1: u32,
}

/// Where [`sigmoid_bce`] writes.
pub struct SigmoidBceOut<'a> {
    /// `[N]`: max(z, 0) − z·t + log(1 + exp(−|z|)).
    pub loss_rows: &'a Tensor,
    /// `[N]` (or the shape of logits): (σ(z) − t) · grad_scale (overwritten); None for evaluation only.
    pub dlogits: Option<&'a Tensor>,
    /// `[N]`: 1.0 where (z > 0) == (t > 0.5), else 0.0.
    pub correct_rows: &'a Tensor,
    /// `[2]`: += (Σ loss_rows, Σ correct_rows), by a second, fixed-order reduction dispatch; None skips it.
    pub totals: Option<&'a Tensor>,
}

/// Sigmoid + binary cross-entropy with its gradient, for a single-output model.  logits: [N, 1]
/// or `[N]` f32, targets: `[N]` f32 in [0, 1], or `[N]` u32 labels 0/1 converted in the kernel (not
/// checked: that would need a readback). `grad_scale` is usually 1/N.
pub fn sigmoid_bce(gpu: &Gpu, logits: &Tensor, targets: &Tensor, grad_scale: f32, out: &SigmoidBceOut) -> Result<Plan> {
    single_output_loss(gpu, &SIGMOID_BCE, "sigmoid_bce", true, logits, targets, grad_scale, out)
}

/// The checks and dispatches shared by the single-output losses (sigmoid_bce.wgsl, hinge.wgsl):
/// the same bindings, uniform and outputs, only the family differs. `accepts_labels`: the family
/// can read u32 0/1 labels in place of f32 targets.
#[allow(clippy::too_many_arguments)]
pub(crate) fn single_output_loss(
    gpu: &Gpu,
    family: &'static KernelFamily,
    op: &'static str,
    accepts_labels: bool,
    logits: &Tensor,
    targets: &Tensor,
    grad_scale: f32,
    out: &SigmoidBceOut,
) -> Result<Plan> {
    logits.expect_dtype(op, DType::F32)?;
    let n = match logits.shape() {
        [n] | [n, 1] => *n,
        other => {
            return Err(WgnnError::shape_of(
                op,
                &[("logits", other)],
                format!("logits must be [N, 1] or [N], got {other:?}"),
            ))
        }
    };
    logits.expect_nonempty(op)?;
    // Integer labels only where the shader has the conversion (sigmoid_bce.wgsl's TARGETS_U32).
    let targets_u32 = accepts_labels && targets.dtype() == DType::U32;
    let target_dtype = if targets_u32 { DType::U32 } else { DType::F32 };
    expect_len(op, "targets", targets, target_dtype, n, &format!("[{n}]"))?;
    if let Some(max) = targets.max_u32().filter(|&m| targets_u32 && m > 1) {
        return Err(WgnnError::invalid(op, format!("binary labels must be 0 or 1; the largest is {max}")));
    }
    if !grad_scale.is_finite() {
        return Err(WgnnError::invalid(op, format!("grad_scale = {grad_scale} must be finite")));
    }
    expect_len(op, "loss_rows", out.loss_rows, DType::F32, n, &format!("[{n}]"))?;
    expect_len(op, "correct_rows", out.correct_rows, DType::F32, n, &format!("[{n}]"))?;
    let mut named = vec![
        ("logits", logits),
        ("targets", targets),
        ("loss_rows", out.loss_rows),
        ("correct_rows", out.correct_rows),
    ];
    if let Some(d) = out.dlogits {
        expect_len(op, "dlogits", d, DType::F32, n, &format!("[{n}] or {:?} like logits", logits.shape()))?;
        named.push(("dlogits", d));
    }
    if let Some(t) = out.totals {
        expect_len(op, "totals", t, DType::F32, 2, "[2]")?;
        named.push(("totals", t));
    }
    disjoint(op, &named)?;

    let dummy = dummy(gpu)?;
    let params = SingleOutputLossParams { rows: n as u32, grad_scale, _pad0: 0, _pad1: 0 };
    let mut constants = vec![("WG", WG as f64), ("HAS_DLOGITS", out.dlogits.is_some() as u32 as f64)];
    if accepts_labels {
        constants.push(("TARGETS_U32", targets_u32 as u32 as f64));
    }
    let bindings = [logits, targets, out.loss_rows, out.dlogits.unwrap_or(&dummy), out.correct_rows];
    let mut plan: Plan = dispatch(gpu, family, op, &constants, &params, &bindings, grid_1d(gpu, n, WG))?.into();
    if let Some(t) = out.totals {
        plan.extend(totals(gpu, out.loss_rows, out.correct_rows, t, true)?);
    }
    Ok(plan)
}
