//! GPU wrapper of shaders/flash_attention.wgsl (causal multi-head self-attention tiled as
//! FlashAttention-2: the scores never written, each row's log-sum-exp kept instead); CPU reference
//! in src/cpu/flash_attention.rs. The same function as [`super::attention`], in O(B·NH·T) memory
//! besides its operands instead of O(B·NH·T²).

use super::attention_dims::AttentionDims;
use super::check::disjoint;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::profile::LOOP_CAP;
use crate::registry::{dispatch, dummy, grid_1d, Access, Constant, KernelFamily};
use crate::tensor::Tensor;

/// Any head size: the head loaded and stored value by value.
pub(crate) const FLASH_ATTENTION: KernelFamily = KernelFamily {
    name: "flash_attention",
    sources: &[
        include_str!("../../shaders/flash_attention.wgsl"),
        include_str!("../../shaders/flash_attention_scalar.wgsl"),
    ],
    storage: &[Access::ReadWrite; 6],
};

/// Heads of a multiple of 4 values in 16-byte aligned views: the head loaded and stored by vec4,
/// one load per 4 values instead of 4 clamped ones.
pub(crate) const FLASH_ATTENTION_VEC4: KernelFamily = KernelFamily {
    name: "flash_attention_vec4",
    sources: &[
        include_str!("../../shaders/flash_attention.wgsl"),
        include_str!("../../shaders/flash_attention_vec4.wgsl"),
    ],
    storage: &[Access::ReadWrite; 6],
};

const WG: u32 = 64;
/// Largest head the kernels hold in registers (the shader's HS4_MAX vec4s).
pub const FLASH_MAX_HEAD_SIZE: usize = 64;
/// Keys per tile of the forward's online softmax (the shader's BC).
const BC: usize = 16;
/// Most loop iterations one invocation may run: three quarters of the loop cap.
const FLASH_LOOP_BUDGET: usize = LOOP_CAP / 4 * 3;

/// Loop iterations of the forward's longest invocation with `rows` query rows each (its last
/// rows: per key a load and a dot product per row for the score, then for the value; per tile of
/// BC keys a rescale per row; the heads' loads and stores).
fn forward_loop_count(dims: &AttentionDims, rows: usize) -> usize {
    let (t, hs4) = (dims.seq, dims.head_size().div_ceil(4));
    let per_key = 2 * (hs4 + rows * (hs4 + 1)) + 2;
    t * per_key + t.div_ceil(BC) * (rows * (hs4 + 2) + 2) + 2 * rows * (hs4 + 1) + 4
}

/// Loop iterations of the backward's longest invocation (the first key row's dk/dv: per query
/// the score and dP, then the two gradients; the dq rows loop as long, plus D).
fn backward_loop_count(dims: &AttentionDims) -> usize {
    let (t, hs4) = (dims.seq, dims.head_size().div_ceil(4));
    t * (2 * hs4 + 2) + 3 * hs4 + 4
}

/// Query rows per forward invocation: as many as the loop budget allows, up to 4.
fn forward_rows(dims: &AttentionDims) -> usize {
    [4, 2, 1].into_iter().find(|&rows| forward_loop_count(dims, rows) <= FLASH_LOOP_BUDGET).unwrap_or(1)
}

/// Whether the flash kernels take these dims: heads of at most [`FLASH_MAX_HEAD_SIZE`] and
/// sequences short enough that an invocation stays within the loop budget (T ≤ 1,336 at hs 32,
/// 708 at hs 64).
pub fn flash_attention_supported(dims: &AttentionDims) -> bool {
    dims.head_size() <= FLASH_MAX_HEAD_SIZE
        && forward_loop_count(dims, 1).max(backward_loop_count(dims)) <= FLASH_LOOP_BUDGET
}

fn flash_dims(op: &str, qkv: &Tensor, heads: usize) -> Result<AttentionDims> {
    let dims = AttentionDims::of_qkv(op, qkv, heads)?;
    if !flash_attention_supported(&dims) {
        return Err(WgnnError::invalid(
            op,
            format!(
                "qkv {:?} with {heads} heads (head size {}): the flash kernels take heads of at most \
                 {FLASH_MAX_HEAD_SIZE} values and sequences whose rows loop at most {FLASH_LOOP_BUDGET} times \
                 ({} here); the clear kernels (attention_forward) take it",
                qkv.shape(),
                dims.head_size(),
                forward_loop_count(&dims, 1).max(backward_loop_count(&dims))
            ),
        ));
    }
    Ok(dims)
}

/// The family (vec4 where the head and every view allow) and its constants.
fn specialise(dims: &AttentionDims, bindings: &[&Tensor], rows: usize) -> (&'static KernelFamily, [Constant; 3]) {
    let hs = dims.head_size();
    let vec4 = hs.is_multiple_of(4) && bindings.iter().all(|t| t.byte_offset().is_multiple_of(16));
    let family = if vec4 { &FLASH_ATTENTION_VEC4 } else { &FLASH_ATTENTION };
    (family, [("WG", WG as f64), ("HS4", hs.div_ceil(4) as f64), ("ROWS", rows as f64)])
}

/// Causal self-attention with `heads` heads, tiled.  qkv: [B, T, 3C] → out: [B, T, C] and lse:
/// [B, NH, T] (each query row's log Σ exp(score), kept for [`flash_attention_backward`]). One
/// dispatch, up to 4 query rows per invocation (as the loop budget allows at T). Only where
/// [`flash_attention_supported`].
pub fn flash_attention_forward(gpu: &Gpu, qkv: &Tensor, out: &Tensor, lse: &Tensor, heads: usize) -> Result<Plan> {
    let dims = flash_dims("flash_attention_forward", qkv, heads)?;
    flash_attention_forward_rows(gpu, qkv, out, lse, heads, forward_rows(&dims))
}

/// [`flash_attention_forward`] with `rows` (1, 2 or 4) query rows per invocation, within the loop
/// budget: each key and value loaded serves every row.
pub fn flash_attention_forward_rows(
    gpu: &Gpu,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    heads: usize,
    rows: usize,
) -> Result<Plan> {
    const OP: &str = "flash_attention_forward";
    let dims = flash_dims(OP, qkv, heads)?;
    check_rows(OP, &dims, rows)?;
    dims.expect(OP, "out", out, &dims.out_shape())?;
    dims.expect(OP, "lse", lse, &dims.rows_shape())?;
    disjoint(OP, &[("qkv", qkv), ("out", out), ("lse", lse)])?;
    let dummy = dummy(gpu)?;
    let bindings = [qkv, out, lse, &dummy, &dummy, &dummy];
    let grid = grid_1d(gpu, dims.batch * dims.heads * dims.seq.div_ceil(rows), WG);
    let (family, constants) = specialise(&dims, &bindings, rows);
    Ok(dispatch(gpu, family, OP, &constants, &dims.params(), &bindings, grid)?.into())
}

/// The gradient of [`flash_attention_forward`].  dout, out: [B, T, C], qkv: [B, T, 3C], lse:
/// [B, NH, T] (the forward's) → dqkv: [B, T, 3C] (overwritten); delta: [B, NH, T] is scratch
/// (D = rowsum(dout ⊙ out)). Two dispatches, one row per invocation: dq (which writes D first),
/// then dk and dv. (Several rows per invocation, as the forward, measured slower here: 4 rows
/// 1.5–2.5× the time on lavapipe, the registers spilling.)
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    delta: &Tensor,
    dqkv: &Tensor,
    heads: usize,
) -> Result<Plan> {
    const OP: &str = "flash_attention_backward";
    let dims = flash_dims(OP, qkv, heads)?;
    dims.expect(OP, "dout", dout, &dims.out_shape())?;
    dims.expect(OP, "out", out, &dims.out_shape())?;
    dims.expect(OP, "lse", lse, &dims.rows_shape())?;
    dims.expect(OP, "delta", delta, &dims.rows_shape())?;
    dims.expect(OP, "dqkv", dqkv, &dims.qkv_shape())?;
    let named = [("dout", dout), ("qkv", qkv), ("out", out), ("lse", lse), ("delta", delta), ("dqkv", dqkv)];
    disjoint(OP, &named)?;
    let bindings = [qkv, out, lse, dout, delta, dqkv];
    let grid = grid_1d(gpu, lse.len(), WG);
    let (family, constants) = specialise(&dims, &bindings, 1);
    let mut plan = Plan::new();
    for entry in ["flash_attention_backward_dq", "flash_attention_backward_dkv"] {
        plan.push(dispatch(gpu, family, entry, &constants, &dims.params(), &bindings, grid)?);
    }
    Ok(plan)
}

/// `rows` is 1, 2 or 4 and keeps an invocation within the loop budget.
fn check_rows(op: &str, dims: &AttentionDims, rows: usize) -> Result<()> {
    if ![1, 2, 4].contains(&rows) || forward_loop_count(dims, rows) > FLASH_LOOP_BUDGET {
        return Err(WgnnError::invalid(
            op,
            format!(
                "{rows} rows per invocation: 1, 2 or 4 within the loop budget (qkv {:?}, {} heads)",
                dims.qkv_shape(),
                dims.heads
            ),
        ));
    }
    Ok(())
}
