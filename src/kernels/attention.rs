//! GPU wrapper of shaders/attention.wgsl (multi-head self-attention, causal or not, every score written);
//! CPU reference in src/cpu/attention.rs.

use super::attention_dims::AttentionDims;
use super::check::disjoint;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::Tensor;

pub(crate) const ATTENTION: KernelFamily = KernelFamily {
    name: "attention",
    sources: &[include_str!("../../shaders/attention.wgsl")],
    storage: &[Access::ReadWrite; 6],
};

const WG: u32 = 64;
/// Longest sequence: a row's softmax loops 3·T times, far below the loop cap
/// ([`crate::profile::LOOP_CAP`]). The scores' binding limit stops T far earlier on most devices.
pub const CLEAR_MAX_SEQ: usize = 16_384;
/// Largest head: a score loops hs times.
pub const CLEAR_MAX_HEAD_SIZE: usize = 16_384;

/// The dims of `qkv` with `heads` heads, within the clear kernels' loops.
fn clear_dims(op: &str, qkv: &Tensor, heads: usize) -> Result<AttentionDims> {
    let dims = AttentionDims::of_qkv(op, qkv, heads)?;
    if dims.seq > CLEAR_MAX_SEQ || dims.head_size() > CLEAR_MAX_HEAD_SIZE {
        return Err(WgnnError::invalid(
            op,
            format!(
                "qkv {:?} with {heads} heads: sequences of at most {CLEAR_MAX_SEQ} and heads of at most \
                 {CLEAR_MAX_HEAD_SIZE} values are supported (one invocation's loops)",
                qkv.shape()
            ),
        ));
    }
    Ok(dims)
}

/// Causal self-attention with `heads` heads.  qkv: [B, T, 3C] (each token's query | key | value)
/// → out: [B, T, C] and probs: [B, NH, T, T] (softmax of q·k/√hs over the keys at or before the
/// query, masked entries exactly 0; kept for [`attention_backward`]). Three dispatches: scores,
/// softmax (row maximum subtracted), values.
pub fn attention_forward(gpu: &Gpu, qkv: &Tensor, out: &Tensor, probs: &Tensor, heads: usize) -> Result<Plan> {
    attention_forward_masked(gpu, qkv, out, probs, heads, true)
}

/// [`attention_forward`] with the causal mask (`causal`) or without (every query attends to
/// every key; no entry of probs is masked).
pub fn attention_forward_masked(
    gpu: &Gpu,
    qkv: &Tensor,
    out: &Tensor,
    probs: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Plan> {
    const OP: &str = "attention_forward";
    let dims = AttentionDims { causal, ..clear_dims(OP, qkv, heads)? };
    dims.expect(OP, "out", out, &dims.out_shape())?;
    dims.expect(OP, "probs", probs, &dims.scores_shape())?;
    disjoint(OP, &[("qkv", qkv), ("out", out), ("probs", probs)])?;
    let dummy = dummy(gpu)?;
    let params = dims.params();
    let constants = [("WG", WG as f64)];
    let bindings = [qkv, out, probs, &dummy, &dummy, &dummy];
    let (scores, rows) = (probs.len(), dims.batch * dims.heads * dims.seq);
    let mut plan = Plan::new();
    for (entry, items) in [("attention_scores", scores), ("attention_softmax", rows), ("attention_values", out.len())] {
        plan.push(dispatch(gpu, &ATTENTION, entry, &constants, &params, &bindings, grid_1d(gpu, items, WG))?);
    }
    Ok(plan)
}

/// The gradient of [`attention_forward`].  dout: [B, T, C], qkv: [B, T, 3C], probs: [B, NH, T, T]
/// (the forward's) → dqkv: [B, T, 3C] (overwritten); dscores: [B, NH, T, T] is scratch (the
/// scores' gradient). Three dispatches: dP = dout·v, the softmax's gradient, then dq, dk and dv.
pub fn attention_backward(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    probs: &Tensor,
    dscores: &Tensor,
    dqkv: &Tensor,
    heads: usize,
) -> Result<Plan> {
    attention_backward_masked(gpu, dout, qkv, probs, dscores, dqkv, heads, true)
}

/// The gradient of [`attention_forward_masked`] (`causal` as there).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_masked(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    probs: &Tensor,
    dscores: &Tensor,
    dqkv: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Plan> {
    const OP: &str = "attention_backward";
    let dims = AttentionDims { causal, ..clear_dims(OP, qkv, heads)? };
    dims.expect(OP, "dout", dout, &dims.out_shape())?;
    dims.expect(OP, "probs", probs, &dims.scores_shape())?;
    dims.expect(OP, "dscores", dscores, &dims.scores_shape())?;
    dims.expect(OP, "dqkv", dqkv, &dims.qkv_shape())?;
    disjoint(OP, &[("dout", dout), ("qkv", qkv), ("probs", probs), ("dscores", dscores), ("dqkv", dqkv)])?;
    let dummy = dummy(gpu)?;
    let params = dims.params();
    let constants = [("WG", WG as f64)];
    let bindings = [qkv, &dummy, probs, dout, dscores, dqkv];
    let (scores, rows) = (probs.len(), dims.batch * dims.heads * dims.seq);
    let mut plan = Plan::new();
    for (entry, items) in [
        ("attention_backward_scores", scores),
        ("attention_backward_softmax", rows),
        ("attention_backward_qkv", dqkv.len()),
    ] {
        plan.push(dispatch(gpu, &ATTENTION, entry, &constants, &params, &bindings, grid_1d(gpu, items, WG))?);
    }
    Ok(plan)
}
