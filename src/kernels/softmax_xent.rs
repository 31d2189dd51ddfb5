//! GPU wrapper of shaders/softmax_xent.wgsl; CPU reference in src/cpu/softmax_xent.rs.

use super::check::{disjoint, expect_len};
use super::totals::totals;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub(crate) const SOFTMAX_XENT: KernelFamily = KernelFamily {
    name: "softmax_xent",
    sources: &[include_str!("../../shaders/softmax_xent.wgsl")],
    storage: &[Access::ReadWrite; 6],
};

const WG: u32 = 64;
/// Batches of at most this many rows add their totals in the loss dispatch itself (one
/// workgroup loops over the rows), saving the second dispatch; larger ones use totals.wgsl, whose
/// workgroups share the work.
const FUSED_TOTALS_MAX_ROWS: usize = 2048;
/// ... and only while one invocation's loops stay this short (rows per invocation × 4·C), far
/// below the loop cap ([`crate::profile::LOOP_CAP`]).
const FUSED_TOTALS_MAX_LOOP: usize = 16_384;
/// Most classes a row may have: one invocation loops 3·C times, which must stay far below
/// the loop cap ([`crate::profile::LOOP_CAP`]; 4·C for [`softmax_xent_dense`]).
pub const MAX_CLASSES: usize = 8192;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxXentParams {
    rows: u32,
    cols: u32,
    grad_scale: f32,
    _pad: u32,
}

/// Where [`softmax_xent`] writes.
pub struct SoftmaxXentOut<'a> {
    /// `[N]`: −log softmax(logits)`[label]`, by a stable log-sum-exp.
    pub loss_rows: &'a Tensor,
    /// [N, C]: (softmax − onehot) · grad_scale (overwritten); None for evaluation only.
    pub dlogits: Option<&'a Tensor>,
    /// `[N]`: 1.0 where the row's first argmax is the label, else 0.0.
    pub correct_rows: &'a Tensor,
    /// `[2]`: += (Σ loss_rows, Σ correct_rows), in a fixed order: in the loss dispatch for small
    /// batches, else by a second reduction dispatch; None skips it.
    pub totals: Option<&'a Tensor>,
}

/// Softmax cross-entropy with its gradient.  logits: [N, C] f32, labels: `[N]` u32 (each < C).
/// `grad_scale` is usually 1/N (the gradient of the mean loss). Labels uploaded from the host are
/// range-checked here; a label the host cannot see (written by a kernel) that is ≥ C gives NaN loss.
pub fn softmax_xent(
    gpu: &Gpu,
    logits: &Tensor,
    labels: &Tensor,
    grad_scale: f32,
    out: &SoftmaxXentOut,
) -> Result<Plan> {
    const OP: &str = "softmax_xent";
    let (n, c) = check_logits(OP, logits)?;
    labels.expect_dtype(OP, DType::U32)?;
    if labels.shape() != [n] {
        return Err(WgnnError::shape_of(
            OP,
            &[("logits", logits.shape()), ("labels", labels.shape())],
            format!("logits are {:?}, so labels must be [{n}], got {:?}", logits.shape(), labels.shape()),
        ));
    }
    if let Some(max) = labels.max_u32() {
        if max as usize >= c {
            return Err(WgnnError::LabelOutOfRange { op: OP.into(), label: max, classes: c });
        }
    }
    if !grad_scale.is_finite() {
        return Err(WgnnError::invalid(OP, format!("grad_scale = {grad_scale} must be finite")));
    }
    check_out(OP, logits, n, out, vec![("logits", logits), ("labels", labels)])?;
    plan(gpu, OP, logits, labels, grad_scale, out)
}

/// Categorical cross-entropy on one-hot or soft targets, fused with softmax; the same outputs as
/// [`softmax_xent`].  logits: [N, C] f32, targets: [N, C] f32 (rows usually sum to 1; not
/// checked). loss_rows `[N]` = Σ_c t_c·(logsumexp − z_c), dlogits [N, C] = (softmax·Σt − t) ·
/// grad_scale, correct_rows `[N]` = 1.0 where the first argmax of the logits is the first argmax of
/// the targets. Keras' `categorical_crossentropy(from_logits=True)`.
pub fn softmax_xent_dense(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    grad_scale: f32,
    out: &SoftmaxXentOut,
) -> Result<Plan> {
    const OP: &str = "softmax_xent_dense";
    let (n, _) = check_logits(OP, logits)?;
    expect_same_shape(OP, "targets", targets, logits)?;
    if !grad_scale.is_finite() {
        return Err(WgnnError::invalid(OP, format!("grad_scale = {grad_scale} must be finite")));
    }
    check_out(OP, logits, n, out, vec![("logits", logits), ("targets", targets)])?;
    plan(gpu, OP, logits, targets, grad_scale, out)
}

/// Checks the outputs' shapes and that no two tensors share memory.
fn check_out<'a>(
    op: &str,
    logits: &Tensor,
    n: usize,
    out: &'a SoftmaxXentOut,
    mut named: Vec<(&'a str, &'a Tensor)>,
) -> Result<()> {
    expect_len(op, "loss_rows", out.loss_rows, DType::F32, n, &format!("[{n}]"))?;
    expect_len(op, "correct_rows", out.correct_rows, DType::F32, n, &format!("[{n}]"))?;
    named.extend([("loss_rows", out.loss_rows), ("correct_rows", out.correct_rows)]);
    if let Some(d) = out.dlogits {
        expect_same_shape(op, "dlogits", d, logits)?;
        named.push(("dlogits", d));
    }
    if let Some(t) = out.totals {
        expect_len(op, "totals", t, DType::F32, 2, "[2]")?;
        named.push(("totals", t));
    }
    disjoint(op, &named)
}

/// The loss dispatch (entry `op`, targets or labels at binding 2) and the optional totals.
fn plan(
    gpu: &Gpu,
    op: &'static str,
    logits: &Tensor,
    targets: &Tensor,
    grad_scale: f32,
    out: &SoftmaxXentOut,
) -> Result<Plan> {
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    let dummy = dummy(gpu)?;
    let params = SoftmaxXentParams { rows: n as u32, cols: c as u32, grad_scale, _pad: 0 };
    let fused =
        out.totals.is_some() && n <= FUSED_TOTALS_MAX_ROWS && n.div_ceil(WG as usize) * 4 * c <= FUSED_TOTALS_MAX_LOOP;
    let constants = [
        ("WG", WG as f64),
        ("HAS_DLOGITS", out.dlogits.is_some() as u32 as f64),
        ("FUSED_TOTALS", fused as u32 as f64),
    ];
    let totals_out = if fused { out.totals.unwrap_or(&dummy) } else { &dummy };
    let bindings = [logits, targets, out.loss_rows, out.dlogits.unwrap_or(&dummy), out.correct_rows, totals_out];
    let grid = if fused { [1, 1, 1] } else { grid_1d(gpu, n, WG) };
    let mut plan: Plan = dispatch(gpu, &SOFTMAX_XENT, op, &constants, &params, &bindings, grid)?.into();
    if let (Some(t), false) = (out.totals, fused) {
        plan.extend(totals(gpu, out.loss_rows, out.correct_rows, t, true)?);
    }
    Ok(plan)
}

/// probs = softmax(logits) row-wise.  logits, probs: [N, C].
pub fn softmax(gpu: &Gpu, logits: &Tensor, probs: &Tensor) -> Result<Plan> {
    const OP: &str = "softmax";
    let (n, c) = check_logits(OP, logits)?;
    expect_same_shape(OP, "probs", probs, logits)?;
    disjoint(OP, &[("logits", logits), ("probs", probs)])?;
    let dummy = dummy(gpu)?;
    let params = SoftmaxXentParams { rows: n as u32, cols: c as u32, grad_scale: 1.0, _pad: 0 };
    let constants = [("WG", WG as f64)];
    let bindings = [logits, &dummy, &dummy, probs, &dummy, &dummy];
    Ok(dispatch(gpu, &SOFTMAX_XENT, OP, &constants, &params, &bindings, grid_1d(gpu, n, WG))?.into())
}

/// `t` is f32 of exactly the shape of `logits`.
fn expect_same_shape(op: &str, what: &str, t: &Tensor, logits: &Tensor) -> Result<()> {
    t.expect_dtype(op, DType::F32)?;
    if t.shape() != logits.shape() {
        return Err(WgnnError::shape_of(
            op,
            &[("logits", logits.shape()), (what, t.shape())],
            format!("{what} must have the shape of logits {:?}, got {:?}", logits.shape(), t.shape()),
        ));
    }
    Ok(())
}

/// (N, C) of f32 logits [N, C], non-empty, with C within [`MAX_CLASSES`].
fn check_logits(op: &str, logits: &Tensor) -> Result<(usize, usize)> {
    logits.expect_dtype(op, DType::F32)?;
    let (n, c) = logits.dims2(op)?;
    logits.expect_nonempty(op)?;
    if c > MAX_CLASSES {
        return Err(WgnnError::invalid(
            op,
            format!(
                "logits {:?} have {c} classes; at most {MAX_CLASSES} are supported (each row is one invocation's loop)",
                logits.shape()
            ),
        ));
    }
    Ok((n, c))
}
