//! GPU wrapper of shaders/attention.wgsl (multi-head self-attention, causal or not, every score written);
//! CPU reference in src/cpu/attention.rs.

use super::attention_dims::{AttentionDims, AttentionDropout};
use super::check::disjoint;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, Constant, KernelFamily};
use crate::tensor::Tensor;

pub(crate) const ATTENTION: KernelFamily = KernelFamily {
    name: "attention",
    sources: &[
        include_str!("../../shaders/attention.wgsl"),
        include_str!("../../shaders/dropout_hash.wgsl"),
        include_str!("../../shaders/attention_dropout.wgsl"),
    ],
    storage: &[Access::ReadWrite; 7],
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
    forward(gpu, qkv, out, probs, None, heads, causal)
}

/// [`attention_forward_masked`] with attention dropout (training): probs keeps P, `dropped`
/// `[B, NH, T, T]` gets P ⊙ M (M: `dropout`'s mask, 0 or 1/(1 − rate); 0 past the causal mask)
/// and out = (P ⊙ M)·v. [`attention_backward_dropout`] reads both.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_dropout(
    gpu: &Gpu,
    qkv: &Tensor,
    out: &Tensor,
    probs: &Tensor,
    dropped: &Tensor,
    heads: usize,
    causal: bool,
    dropout: &AttentionDropout,
) -> Result<Plan> {
    forward(gpu, qkv, out, probs, Some((dropped, dropout)), heads, causal)
}

/// The pipeline constants: DROPOUT only where it is on (so the plain pipelines stay as they were).
fn constants(dropout: bool) -> Vec<Constant> {
    let mut constants = vec![("WG", WG as f64)];
    if dropout {
        constants.push(("DROPOUT", 1.0));
    }
    constants
}

fn forward(
    gpu: &Gpu,
    qkv: &Tensor,
    out: &Tensor,
    probs: &Tensor,
    dropout: Option<(&Tensor, &AttentionDropout)>,
    heads: usize,
    causal: bool,
) -> Result<Plan> {
    const OP: &str = "attention_forward";
    let dims = AttentionDims { causal, ..clear_dims(OP, qkv, heads)? };
    dims.expect(OP, "out", out, &dims.out_shape())?;
    dims.expect(OP, "probs", probs, &dims.scores_shape())?;
    let dummy = dummy(gpu)?;
    let (dropped, step) = match dropout {
        Some((dropped, d)) => {
            d.check(OP)?;
            dims.expect(OP, "dropped", dropped, &dims.scores_shape())?;
            disjoint(OP, &[("qkv", qkv), ("out", out), ("probs", probs), ("dropped", dropped), ("step", d.step)])?;
            (dropped, d.step)
        }
        None => {
            disjoint(OP, &[("qkv", qkv), ("out", out), ("probs", probs)])?;
            (&dummy, &dummy)
        }
    };
    let params = dims.params(dropout.map(|(_, d)| d));
    let constants = constants(dropout.is_some());
    // With dropout the softmax also writes P ⊙ M (at dscores' slot), which the values read.
    let weights = if dropout.is_some() { dropped } else { probs };
    let (scores, rows) = (probs.len(), dims.batch * dims.heads * dims.seq);
    let mut plan = Plan::new();
    for (entry, items, weights) in [
        ("attention_scores", scores, probs),
        ("attention_softmax", rows, probs),
        ("attention_values", out.len(), weights),
    ] {
        let bindings = [qkv, out, weights, &dummy, dropped, &dummy, step];
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
    backward(gpu, [dout, qkv, probs, dscores, dqkv], None, heads, causal)
}

/// The gradient of [`attention_forward_dropout`] (the same `dropout`, step and lag: the same
/// mask): dP = (dout·vᵀ) ⊙ M, the softmax's gradient from probs (P), dv = droppedᵀ·dout.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_dropout(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    probs: &Tensor,
    dropped: &Tensor,
    dscores: &Tensor,
    dqkv: &Tensor,
    heads: usize,
    causal: bool,
    dropout: &AttentionDropout,
) -> Result<Plan> {
    backward(gpu, [dout, qkv, probs, dscores, dqkv], Some((dropped, dropout)), heads, causal)
}

/// `tensors`: dout, qkv, probs, dscores, dqkv.
fn backward(
    gpu: &Gpu,
    tensors: [&Tensor; 5],
    dropout: Option<(&Tensor, &AttentionDropout)>,
    heads: usize,
    causal: bool,
) -> Result<Plan> {
    const OP: &str = "attention_backward";
    let [dout, qkv, probs, dscores, dqkv] = tensors;
    let dims = AttentionDims { causal, ..clear_dims(OP, qkv, heads)? };
    dims.expect(OP, "dout", dout, &dims.out_shape())?;
    dims.expect(OP, "probs", probs, &dims.scores_shape())?;
    dims.expect(OP, "dscores", dscores, &dims.scores_shape())?;
    dims.expect(OP, "dqkv", dqkv, &dims.qkv_shape())?;
    let mut named = vec![("dout", dout), ("qkv", qkv), ("probs", probs), ("dscores", dscores), ("dqkv", dqkv)];
    let dummy = dummy(gpu)?;
    let (dropped, step) = match dropout {
        Some((dropped, d)) => {
            d.check(OP)?;
            dims.expect(OP, "dropped", dropped, &dims.scores_shape())?;
            named.extend([("dropped", dropped), ("step", d.step)]);
            (dropped, d.step)
        }
        None => (probs, &dummy),
    };
    disjoint(OP, &named)?;
    let params = dims.params(dropout.map(|(_, d)| d));
    let constants = constants(dropout.is_some());
    let (scores, rows) = (probs.len(), dims.batch * dims.heads * dims.seq);
    let mut plan = Plan::new();
    // dv reads P ⊙ M with dropout: `dropped` at probs' slot.
    for (entry, items, weights) in [
        ("attention_backward_scores", scores, probs),
        ("attention_backward_softmax", rows, probs),
        ("attention_backward_qkv", dqkv.len(), dropped),
    ] {
        let bindings = [qkv, &dummy, weights, dout, dscores, dqkv, step];
        plan.push(dispatch(gpu, &ATTENTION, entry, &constants, &params, &bindings, grid_1d(gpu, items, WG))?);
    }
    Ok(plan)
}
