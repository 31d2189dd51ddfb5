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

/// Heads of a multiple of 4 values in 16-byte aligned views: the head loaded and stored by vec4
/// (at B 12, T 64, C 128, NH 4 on lavapipe: see BENCHMARKS.md).
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

/// Loop iterations of the longest invocation (the forward's last row: every key, a tile rescale per
/// BC keys, the head's loads and stores); the backward's are fewer.
fn loop_count(dims: &AttentionDims) -> usize {
    let (t, hs4) = (dims.seq, dims.head_size().div_ceil(4));
    t * (2 * hs4 + 2) + t.div_ceil(BC) * (hs4 + 1) + 3 * hs4 + 2
}

/// Whether the flash kernels take these dims: heads of at most [`FLASH_MAX_HEAD_SIZE`] and
/// sequences short enough that an invocation stays within the loop budget (T ≤ 2,646 at hs 32,
/// 1,400 at hs 64).
pub fn flash_attention_supported(dims: &AttentionDims) -> bool {
    dims.head_size() <= FLASH_MAX_HEAD_SIZE && loop_count(dims) <= FLASH_LOOP_BUDGET
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
                loop_count(&dims)
            ),
        ));
    }
    Ok(dims)
}

/// The family (vec4 where the head and every view allow) and its constants.
fn specialise(dims: &AttentionDims, bindings: &[&Tensor]) -> (&'static KernelFamily, [Constant; 2]) {
    let hs = dims.head_size();
    let vec4 = hs.is_multiple_of(4) && bindings.iter().all(|t| t.byte_offset().is_multiple_of(16));
    let family = if vec4 { &FLASH_ATTENTION_VEC4 } else { &FLASH_ATTENTION };
    (family, [("WG", WG as f64), ("HS4", hs.div_ceil(4) as f64)])
}

/// Causal self-attention with `heads` heads, tiled.  qkv: [B, T, 3C] → out: [B, T, C] and lse:
/// [B, NH, T] (each query row's log Σ exp(score), kept for [`flash_attention_backward`]). One
/// dispatch, one invocation per query row. Only where [`flash_attention_supported`].
pub fn flash_attention_forward(gpu: &Gpu, qkv: &Tensor, out: &Tensor, lse: &Tensor, heads: usize) -> Result<Plan> {
    const OP: &str = "flash_attention_forward";
    let dims = flash_dims(OP, qkv, heads)?;
    dims.expect(OP, "out", out, &dims.out_shape())?;
    dims.expect(OP, "lse", lse, &dims.rows_shape())?;
    disjoint(OP, &[("qkv", qkv), ("out", out), ("lse", lse)])?;
    let dummy = dummy(gpu)?;
    let bindings = [qkv, out, lse, &dummy, &dummy, &dummy];
    let grid = grid_1d(gpu, lse.len(), WG);
    let (family, constants) = specialise(&dims, &bindings);
    Ok(dispatch(gpu, family, OP, &constants, &dims.params(), &bindings, grid)?.into())
}

/// The gradient of [`flash_attention_forward`].  dout, out: [B, T, C], qkv: [B, T, 3C], lse:
/// [B, NH, T] (the forward's) → dqkv: [B, T, 3C] (overwritten); delta: [B, NH, T] is scratch
/// (D = rowsum(dout ⊙ out)). Two dispatches: dq (which writes D first), then dk and dv.
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
    let (family, constants) = specialise(&dims, &bindings);
    let mut plan = Plan::new();
    for entry in ["flash_attention_backward_dq", "flash_attention_backward_dkv"] {
        plan.push(dispatch(gpu, family, entry, &constants, &dims.params(), &bindings, grid)?);
    }
    Ok(plan)
}
