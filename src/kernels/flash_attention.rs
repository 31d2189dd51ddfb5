//! GPU wrapper of shaders/flash_attention.wgsl (multi-head self-attention, causal or not, tiled as
//! FlashAttention-2: the scores never written, each row's log-sum-exp kept instead); CPU reference
//! in src/cpu/flash_attention.rs. The same function as [`super::attention`], in O(B·NH·T) memory
//! besides its operands instead of O(B·NH·T²).

use super::attention_dims::{AttentionDims, AttentionDropout};
use super::check::disjoint;
use super::flash_attention_subgroup::{backward_subgroup_plan, flash_subgroup_runs, forward_subgroup_plan};
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
        include_str!("../../shaders/dropout_hash.wgsl"),
        include_str!("../../shaders/attention_dropout.wgsl"),
    ],
    storage: &[Access::ReadWrite; 7],
};

/// Heads of a multiple of 4 values in 16-byte aligned views: the head loaded and stored by vec4,
/// one load per 4 values instead of 4 clamped ones.
pub(crate) const FLASH_ATTENTION_VEC4: KernelFamily = KernelFamily {
    name: "flash_attention_vec4",
    sources: &[
        include_str!("../../shaders/flash_attention.wgsl"),
        include_str!("../../shaders/flash_attention_vec4.wgsl"),
        include_str!("../../shaders/dropout_hash.wgsl"),
        include_str!("../../shaders/attention_dropout.wgsl"),
    ],
    storage: &[Access::ReadWrite; 7],
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

/// Loop iterations of the dq dispatch's longest invocation with `rows` query rows each (per key
/// its load, then per row the score and dP and the row's share of dq; D and the stores).
fn dq_loop_count(dims: &AttentionDims, rows: usize) -> usize {
    let (t, hs4) = (dims.seq, dims.head_size().div_ceil(4));
    t * (hs4 + 1 + rows * (2 * hs4 + 3)) + 2 * rows * (hs4 + 1) + 4
}

/// Loop iterations of the dk/dv dispatch's longest invocation, one key row each (the first: per
/// query its load, the score and dP, then the two gradients).
fn dkv_loop_count(dims: &AttentionDims) -> usize {
    let (t, hs4) = (dims.seq, dims.head_size().div_ceil(4));
    t * (3 * hs4 + 3) + 2 * hs4 + 4
}

/// Query rows per forward invocation: as many as the loop budget allows, up to 4.
fn forward_rows(dims: &AttentionDims) -> usize {
    [4, 2, 1].into_iter().find(|&rows| forward_loop_count(dims, rows) <= FLASH_LOOP_BUDGET).unwrap_or(1)
}

/// Query rows per dq invocation: 2 where the loop budget allows (4 measured slower: the rows'
/// three head-sized arrays spill).
fn dq_rows(dims: &AttentionDims) -> usize {
    [2, 1].into_iter().find(|&rows| dq_loop_count(dims, rows) <= FLASH_LOOP_BUDGET).unwrap_or(1)
}

/// The most loop iterations any flash invocation at `dims` runs, each kernel at one row.
fn loop_count(dims: &AttentionDims) -> usize {
    forward_loop_count(dims, 1).max(dq_loop_count(dims, 1)).max(dkv_loop_count(dims))
}

/// Whether the flash kernels take these dims: heads of at most [`FLASH_MAX_HEAD_SIZE`] and
/// sequences short enough that an invocation stays within the loop budget (T ≤ 1,336 at hs 32,
/// 708 at hs 64).
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

/// The family (vec4 where the head and every view allow) and its constants (DROPOUT only where
/// it is on, so the plain pipelines stay as they were).
fn specialise(
    dims: &AttentionDims,
    bindings: &[&Tensor],
    rows: usize,
    dropout: bool,
) -> (&'static KernelFamily, Vec<Constant>) {
    let hs = dims.head_size();
    // The step counter (the last binding) is u32 [1]: not a head's view.
    let views = &bindings[..bindings.len() - 1];
    let vec4 = hs.is_multiple_of(4) && views.iter().all(|t| t.byte_offset().is_multiple_of(16));
    let family = if vec4 { &FLASH_ATTENTION_VEC4 } else { &FLASH_ATTENTION };
    let mut constants = vec![("WG", WG as f64), ("HS4", hs.div_ceil(4) as f64), ("ROWS", rows as f64)];
    if dropout {
        constants.push(("DROPOUT", 1.0));
    }
    (family, constants)
}

/// Causal self-attention with `heads` heads, tiled.  qkv: [B, T, 3C] → out: [B, T, C] and lse:
/// [B, NH, T] (each query row's log Σ exp(score), kept for [`flash_attention_backward`]). One
/// dispatch, up to 4 query rows per invocation (as the loop budget allows at T): on devices that
/// prefer subgroups (CPU adapters), the subgroup kernel where it runs
/// (`kernels::flash_attention_subgroup`). Only where [`flash_attention_supported`].
pub fn flash_attention_forward(gpu: &Gpu, qkv: &Tensor, out: &Tensor, lse: &Tensor, heads: usize) -> Result<Plan> {
    flash_attention_forward_masked(gpu, qkv, out, lse, heads, true)
}

/// [`flash_attention_forward`] with the causal mask (`causal`) or without (every query attends
/// to every key).
pub fn flash_attention_forward_masked(
    gpu: &Gpu,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Plan> {
    let dims = flash_dims("flash_attention_forward", qkv, heads)?;
    forward_rows_masked(gpu, qkv, out, lse, heads, chosen_forward(&dims), causal, None)
}

/// [`flash_attention_forward_masked`] with attention dropout (training): out = Σ_j P_ij M_ij v_j
/// (M: `dropout`'s mask, 0 or 1/(1 − rate)), lse the softmax's as without (the mask weighs the
/// values, not the running sum). [`flash_attention_backward_dropout`] redraws the same mask.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_forward_dropout(
    gpu: &Gpu,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    heads: usize,
    causal: bool,
    dropout: &AttentionDropout,
) -> Result<Plan> {
    let dims = flash_dims("flash_attention_forward", qkv, heads)?;
    forward_rows_masked(gpu, qkv, out, lse, heads, chosen_forward(&dims), causal, Some(dropout))
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
    forward_rows_masked(gpu, qkv, out, lse, heads, FlashKernels::Plain { rows }, true, None)
}

/// [`flash_attention_forward_rows`] on the subgroup kernel (`kernels::flash_attention_subgroup`),
/// causal or not: an error where it does not run on `gpu` (subgroups under 8, heads not a
/// multiple of 4 values, unaligned views).
pub fn flash_attention_forward_subgroup(
    gpu: &Gpu,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    heads: usize,
    rows: usize,
    causal: bool,
) -> Result<Plan> {
    forward_rows_masked(gpu, qkv, out, lse, heads, FlashKernels::Subgroup { rows }, causal, None)
}

/// [`flash_attention_forward_rows`], causal or not, with dropout or without.
#[allow(clippy::too_many_arguments)]
fn forward_rows_masked(
    gpu: &Gpu,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    heads: usize,
    kernels: FlashKernels,
    causal: bool,
    dropout: Option<&AttentionDropout>,
) -> Result<Plan> {
    const OP: &str = "flash_attention_forward";
    let dims = AttentionDims { causal, ..flash_dims(OP, qkv, heads)? };
    check_rows(OP, &dims, kernels.most_rows(), forward_loop_count(&dims, kernels.most_rows()))?;
    dims.expect(OP, "out", out, &dims.out_shape())?;
    dims.expect(OP, "lse", lse, &dims.rows_shape())?;
    let dummy = dummy(gpu)?;
    let step = match dropout {
        Some(d) => {
            d.check(OP)?;
            disjoint(OP, &[("qkv", qkv), ("out", out), ("lse", lse), ("step", d.step)])?;
            d.step
        }
        None => {
            disjoint(OP, &[("qkv", qkv), ("out", out), ("lse", lse)])?;
            &dummy
        }
    };
    let bindings = [qkv, out, lse, &dummy, &dummy, &dummy, step];
    let params = dims.params(dropout);
    let picked = kernels.pick(gpu, &dims, &bindings);
    let rows = picked.rows();
    if let Picked::Subgroup(rows) = picked {
        return forward_subgroup_plan(OP, gpu, &dims, &bindings, &params, rows, dropout.is_some());
    }
    let grid = grid_1d(gpu, dims.batch * dims.heads * dims.seq.div_ceil(rows), WG);
    let (family, constants) = specialise(&dims, &bindings, rows, dropout.is_some());
    Ok(dispatch(gpu, family, OP, &constants, &params, &bindings, grid)?.into())
}

/// The gradient of [`flash_attention_forward`].  dout, out: [B, T, C], qkv: [B, T, 3C], lse:
/// [B, NH, T] (the forward's) → dqkv: [B, T, 3C] (overwritten); delta: [B, NH, T] is scratch
/// (D = rowsum(dout ⊙ out)). Two dispatches: dq (which writes D first; 2 query rows per invocation
/// where the loop budget allows), then dk and dv (one key row per invocation: 2 or 4 measured
/// 3–7× slower on lavapipe, their four head-sized arrays per row spilling). On devices that
/// prefer subgroups, the subgroup kernels where they run (one query row per dq lane).
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
    flash_attention_backward_masked(gpu, dout, qkv, out, lse, delta, dqkv, heads, true)
}

/// The gradient of [`flash_attention_forward_masked`] (`causal` as there).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward_masked(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    delta: &Tensor,
    dqkv: &Tensor,
    heads: usize,
    causal: bool,
) -> Result<Plan> {
    let dims = flash_dims("flash_attention_backward", qkv, heads)?;
    backward_rows_masked(gpu, [dout, qkv, out, lse, delta, dqkv], heads, chosen_backward(&dims), causal, None)
}

/// The gradient of [`flash_attention_forward_dropout`] (the same `dropout`, step and lag: the
/// same mask): dP = (dout_i·v_j) M_ij, dS = P (dP − D_i) with D_i = dout_i·out_i as without,
/// dv_j = Σ_i P M dout_i.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward_dropout(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    delta: &Tensor,
    dqkv: &Tensor,
    heads: usize,
    causal: bool,
    dropout: &AttentionDropout,
) -> Result<Plan> {
    let dims = flash_dims("flash_attention_backward", qkv, heads)?;
    let kernels = chosen_backward(&dims);
    backward_rows_masked(gpu, [dout, qkv, out, lse, delta, dqkv], heads, kernels, causal, Some(dropout))
}

/// [`flash_attention_backward`] with `rows` (1, 2 or 4) query rows per dq invocation, within the
/// loop budget.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward_rows(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    delta: &Tensor,
    dqkv: &Tensor,
    heads: usize,
    rows: usize,
) -> Result<Plan> {
    let kernels = FlashKernels::Plain { rows };
    backward_rows_masked(gpu, [dout, qkv, out, lse, delta, dqkv], heads, kernels, true, None)
}

/// [`flash_attention_backward_rows`] on the subgroup kernels (`kernels::flash_attention_subgroup`),
/// causal or not: an error where they do not run on `gpu` (subgroups under 8, heads not a
/// multiple of 4 values, unaligned views).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward_subgroup(
    gpu: &Gpu,
    dout: &Tensor,
    qkv: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    delta: &Tensor,
    dqkv: &Tensor,
    heads: usize,
    rows: usize,
    causal: bool,
) -> Result<Plan> {
    let kernels = FlashKernels::Subgroup { rows };
    backward_rows_masked(gpu, [dout, qkv, out, lse, delta, dqkv], heads, kernels, causal, None)
}

/// Which kernels a forward or backward runs: the plain ones with `rows` query rows per invocation
/// (per dq invocation in the backward), the subgroup ones with as many per lane, or whichever the
/// device prefers.
#[derive(Clone, Copy, Debug)]
enum FlashKernels {
    Plain {
        rows: usize,
    },
    Subgroup {
        rows: usize,
    },
    /// The subgroup kernels where the device profile prefers subgroups (CPU adapters) and they
    /// run on the bindings, the plain ones otherwise; `rows` for each.
    Preferred {
        plain_rows: usize,
        subgroup_rows: usize,
    },
}

/// What [`FlashKernels::pick`] picked, with its rows.
enum Picked {
    Plain(usize),
    Subgroup(usize),
}

impl Picked {
    fn rows(&self) -> usize {
        match *self {
            Picked::Plain(rows) | Picked::Subgroup(rows) => rows,
        }
    }
}

impl FlashKernels {
    /// The most rows any of its kernels takes: what the loop budget must allow (the preferred
    /// kernels' rows are chosen within it).
    fn most_rows(self) -> usize {
        match self {
            FlashKernels::Plain { rows } | FlashKernels::Subgroup { rows } => rows,
            FlashKernels::Preferred { plain_rows, subgroup_rows } => plain_rows.max(subgroup_rows),
        }
    }

    fn pick(self, gpu: &Gpu, dims: &AttentionDims, bindings: &[&Tensor]) -> Picked {
        match self {
            FlashKernels::Plain { rows } => Picked::Plain(rows),
            FlashKernels::Subgroup { rows } => Picked::Subgroup(rows),
            FlashKernels::Preferred { plain_rows, subgroup_rows } => {
                match gpu.profile().matmul.prefer_subgroup && flash_subgroup_runs(gpu, dims, bindings) {
                    true => Picked::Subgroup(subgroup_rows),
                    false => Picked::Plain(plain_rows),
                }
            }
        }
    }
}

/// The forward's kernels at `dims`: the subgroup one where preferred, the plain one elsewhere,
/// each with as many query rows (up to 4) as the loop budget allows (BENCHMARKS.md, 2026-12-07:
/// on subgroups 4 rows as fast as 2 at T 64, faster at 256).
fn chosen_forward(dims: &AttentionDims) -> FlashKernels {
    FlashKernels::Preferred { plain_rows: forward_rows(dims), subgroup_rows: forward_rows(dims) }
}

/// The backward's kernels at `dims`: the subgroup ones with a query row per dq lane where
/// preferred (2 measured 3× slower: three head-sized arrays per row spill), the plain ones with 2
/// rows per dq invocation where the loop budget allows elsewhere.
fn chosen_backward(dims: &AttentionDims) -> FlashKernels {
    FlashKernels::Preferred { plain_rows: dq_rows(dims), subgroup_rows: 1 }
}

/// [`flash_attention_backward_rows`], causal or not; `tensors`: dout, qkv, out, lse, delta, dqkv.
fn backward_rows_masked(
    gpu: &Gpu,
    tensors: [&Tensor; 6],
    heads: usize,
    kernels: FlashKernels,
    causal: bool,
    dropout: Option<&AttentionDropout>,
) -> Result<Plan> {
    const OP: &str = "flash_attention_backward";
    let [dout, qkv, out, lse, delta, dqkv] = tensors;
    let dims = AttentionDims { causal, ..flash_dims(OP, qkv, heads)? };
    check_rows(OP, &dims, kernels.most_rows(), dq_loop_count(&dims, kernels.most_rows()))?;
    dims.expect(OP, "dout", dout, &dims.out_shape())?;
    dims.expect(OP, "out", out, &dims.out_shape())?;
    dims.expect(OP, "lse", lse, &dims.rows_shape())?;
    dims.expect(OP, "delta", delta, &dims.rows_shape())?;
    dims.expect(OP, "dqkv", dqkv, &dims.qkv_shape())?;
    let mut named = vec![("dout", dout), ("qkv", qkv), ("out", out), ("lse", lse), ("delta", delta), ("dqkv", dqkv)];
    let dummy = dummy(gpu)?;
    let step = match dropout {
        Some(d) => {
            d.check(OP)?;
            named.push(("step", d.step));
            d.step
        }
        None => &dummy,
    };
    disjoint(OP, &named)?;
    let bindings = [qkv, out, lse, dout, delta, dqkv, step];
    let params = dims.params(dropout);
    let picked = kernels.pick(gpu, &dims, &bindings);
    let rows = picked.rows();
    if let Picked::Subgroup(rows) = picked {
        return backward_subgroup_plan(OP, gpu, &dims, &bindings, &params, rows, dropout.is_some());
    }
    let mut plan = Plan::new();
    let (family, constants) = specialise(&dims, &bindings, rows, dropout.is_some());
    let grid = grid_1d(gpu, dims.batch * dims.heads * dims.seq.div_ceil(rows), WG);
    plan.push(dispatch(gpu, family, "flash_attention_backward_dq", &constants, &params, &bindings, grid)?);
    let (family, constants) = specialise(&dims, &bindings, 1, dropout.is_some());
    let grid = grid_1d(gpu, lse.len(), WG);
    plan.push(dispatch(gpu, family, "flash_attention_backward_dkv", &constants, &params, &bindings, grid)?);
    Ok(plan)
}

/// `rows` is 1, 2 or 4 and keeps an invocation within the loop budget (`loops` at `rows`).
fn check_rows(op: &str, dims: &AttentionDims, rows: usize, loops: usize) -> Result<()> {
    if ![1, 2, 4].contains(&rows) || loops > FLASH_LOOP_BUDGET {
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
