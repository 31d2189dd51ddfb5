//! GPU wrapper of shaders/token_batch.wgsl: a token data set resident on the device and its
//! batches of random windows drawn there; CPU reference in src/cpu/token_batch.rs (the same
//! windows, from the same counter-based hash).

use super::check::{disjoint, expect_len};
use crate::cpu::token_batch::window_seed;
use crate::data::{check_first_row, check_windows, TokenDataset};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, grid_1d, Access, Constant, KernelFamily};
use crate::tensor::{DType, Tensor};

const TOKEN_BATCH_WGSL: &str = include_str!("../../shaders/token_batch.wgsl");

pub(crate) const TOKEN_BATCH: KernelFamily =
    KernelFamily { name: "token_batch", sources: &[TOKEN_BATCH_WGSL], storage: &[Access::ReadWrite; 4] };

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct TokenBatchParams {
    len: u32,
    block: u32,
    batch: u32,
    seed: u32,
    first: u32,
    _pad: [u32; 3],
}

/// x[b, j] = tokens[o_b + j], y[b, j] = tokens[o_b + j + 1] for the `batch` windows drawn at
/// (`seed`, t = `step[0]`): o_b uniform in `[0, len − block)` from a counter-based hash of
/// (seed, t, `first` + b), so a plan built once draws a new batch whenever the step tensor
/// changes, with nothing uploaded. `first` > 0 draws rows `first..first + batch` of a larger batch
/// (a data-parallel rank's shard: 2 ranks at `first` 0 and b draw what one process draws at 2b).
/// tokens: `[len]` u32; step: `[1]` or `[2]` u32 (t first, as the optimizer's step);
/// x, y: `[batch, block]` u32, block + 1 ≤ len; first + batch ≤ 2³².
pub fn token_windows(
    gpu: &Gpu,
    tokens: &Tensor,
    step: &Tensor,
    seed: u64,
    first: usize,
    x: &Tensor,
    y: &Tensor,
) -> Result<Plan> {
    const OP: &str = "token_windows";
    tokens.expect_dtype(OP, DType::U32)?;
    tokens.expect_nonempty(OP)?;
    if step.len() != 2 {
        expect_len(OP, "step", step, DType::U32, 1, "[1] or [2] (t first)")?;
    }
    step.expect_dtype(OP, DType::U32)?;
    x.expect_dtype(OP, DType::U32)?;
    let &[batch, block] = x.shape() else {
        return Err(WgnnError::shape_of(OP, &[("x", x.shape())], "x must be [batch, block]"));
    };
    expect_len(OP, "y", y, DType::U32, batch * block, &format!("[{batch}, {block}] like x"))?;
    let len = tokens.len();
    if len > u32::MAX as usize {
        return Err(WgnnError::invalid(OP, format!("{len} tokens are more than 2^32 − 1")));
    }
    check_windows(OP, len, batch, block)?;
    check_first_row(OP, first, batch)?;
    disjoint(OP, &[("tokens", tokens), ("step", step), ("x", x), ("y", y)])?;
    let params = TokenBatchParams {
        len: len as u32,
        block: block as u32,
        batch: batch as u32,
        seed: window_seed(seed),
        first: first as u32,
        _pad: [0; 3],
    };
    let constants: [Constant; 1] = [("WG", WG as f64)];
    let grid = grid_1d(gpu, batch * block, WG);
    Ok(dispatch(gpu, &TOKEN_BATCH, OP, &constants, &params, &[tokens, step, x, y], grid)?.into())
}

/// `step[0] += 1` (u32, wrapping): the counter [`token_windows`] draws at, advanced after the
/// windows are drawn (one invocation, a dispatch of its own: no invocation of the windows' reads
/// a value another writes). step: `[1]` or `[2]` u32.
pub fn advance_step(gpu: &Gpu, step: &Tensor) -> Result<Plan> {
    const OP: &str = "advance_step";
    if step.len() != 2 {
        expect_len(OP, "step", step, DType::U32, 1, "[1] or [2] (the counter first)")?;
    }
    step.expect_dtype(OP, DType::U32)?;
    let constants: [Constant; 1] = [("WG", WG as f64)];
    // The family binds four buffers; this entry touches only `step`.
    Ok(dispatch(gpu, &TOKEN_BATCH, OP, &constants, &TokenBatchParams::default(), &[step, step, step, step], [1, 1, 1])?
        .into())
}

/// A [`TokenDataset`]'s tokens on the device, uploaded once.
pub struct GpuTokens {
    /// `[len]` u32.
    pub tokens: Tensor,
    pub vocab_size: usize,
}

/// A batch's buffers and the plan that fills them (see [`GpuTokens::batch`]).
pub struct TokenBatch {
    /// `[batch, block]` u32: the windows' first `block` tokens.
    pub x: Tensor,
    /// `[batch, block]` u32: the next token after each of x's.
    pub y: Tensor,
    pub plan: Plan,
}

impl GpuTokens {
    /// Uploads `data`'s tokens; an error names the data set where they do not fit one binding.
    pub fn upload(gpu: &Gpu, data: &TokenDataset) -> Result<GpuTokens> {
        let limits = gpu.limits();
        let limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let bytes = (data.len() as u64).saturating_mul(4);
        if bytes > limit {
            return Err(WgnnError::DeviceLimit {
                op: "GpuTokens::upload".into(),
                what: format!("the {} tokens of {}, u32,", data.len(), data.source()),
                amount: bytes,
                unit: "bytes",
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        Ok(GpuTokens { tokens: Tensor::from_u32(gpu, &[data.len()], data.tokens())?, vocab_size: data.vocab_size() })
    }

    /// Buffers for `batch` windows of `block` + 1 tokens and the plan drawing them at (`seed`,
    /// t = `step[0]`): each run of the plan after the step tensor changes is a new batch, the one
    /// [`TokenDataset::windows`] gives for that step.
    pub fn batch(&self, gpu: &Gpu, step: &Tensor, seed: u64, batch: usize, block: usize) -> Result<TokenBatch> {
        check_windows("GpuTokens::batch", self.tokens.len(), batch, block)?;
        let x = Tensor::zeros_u32(gpu, &[batch, block])?;
        let y = Tensor::zeros_u32(gpu, &[batch, block])?;
        let plan = token_windows(gpu, &self.tokens, step, seed, 0, &x, &y)?;
        Ok(TokenBatch { x, y, plan })
    }
}
