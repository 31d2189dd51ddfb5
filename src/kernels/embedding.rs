//! GPU wrapper of shaders/embedding.wgsl; CPU reference in src/cpu/embedding.rs.
//!
//! Keras' `Embedding(vocab, cols)` / PyTorch's `nn.Embedding`: token ids pick rows of a
//! `[vocab, cols]` table. An id ≥ vocab is not an error here (the kernel cannot report one
//! without a readback; checking ids against the vocabulary is the data set's job): the forward
//! gives a row of zeros for it and the backward leaves the table's gradient untouched by it. No
//! kernel reads out of bounds, whatever the ids.
//!
//! The backward sums the gradients of repeated ids without atomics, in token order: one
//! invocation per channel walks the tokens, so two runs give the same bits. Its cost is
//! O(tokens · cols) work in `cols` parallel invocations (plus a clear of the table's gradient
//! unless accumulating) and ⌈tokens / 16,384⌉ dispatches: cheap for a batch of a few thousand
//! tokens, and independent of the vocabulary.

use super::check::{disjoint, expect_len};
use super::{lane_family, ACTIVATION_WGSL, LANES_SCALAR_WGSL, LANES_VEC4_WGSL};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

const EMBEDDING_WGSL: &str = include_str!("../../shaders/embedding.wgsl");
const STORAGE: &[Access] = &[Access::Read, Access::ReadWrite, Access::ReadWrite];

pub(crate) const EMBEDDING: KernelFamily = KernelFamily {
    name: "embedding",
    sources: &[ACTIVATION_WGSL, LANES_SCALAR_WGSL, EMBEDDING_WGSL],
    storage: STORAGE,
};

/// The same over vec4s of four columns, where cols is a multiple of 4 and the views 16-byte
/// aligned: a quarter of the loads and stores, and of the id reads.
pub(crate) const EMBEDDING_VEC4: KernelFamily = KernelFamily {
    name: "embedding_vec4",
    sources: &[ACTIVATION_WGSL, LANES_VEC4_WGSL, EMBEDDING_WGSL],
    storage: STORAGE,
};

const WG: u32 = 64;
/// The backward's workgroup: its invocations are the columns (vec4s), few (char_gpt's 128 are 32
/// vec4s), and a CPU adapter runs a workgroup on one thread.
const BACKWARD_WG: u32 = 16;

/// The family and lane width for rows of `cols` in `views`: vec4s where they fit.
fn lanes(cols: usize, views: &[&Tensor]) -> (&'static KernelFamily, usize) {
    lane_family(cols, views, &EMBEDDING, &EMBEDDING_VEC4)
}
/// Tokens one backward dispatch walks: far below the loop cap ([`crate::profile::LOOP_CAP`]).
pub const BACKWARD_TOKENS_PER_DISPATCH: usize = 16_384;

/// Token ids as a kernel reads them.
#[derive(Clone, Copy, Debug)]
pub enum TokenIds<'a> {
    /// u32 `[tokens]` (any shape: its values in order).
    U32(&'a Tensor),
    /// `tokens` byte-sized ids packed 4 to a u32 word (byte n % 4 of word n / 4, least
    /// significant first), as a u8 token data set is stored: read in place, no widening copy.
    /// `words` holds at least ⌈tokens / 4⌉ words.
    U8 { words: &'a Tensor, tokens: usize },
}

impl TokenIds<'_> {
    fn tensor(&self) -> &Tensor {
        match self {
            TokenIds::U32(t) | TokenIds::U8 { words: t, .. } => t,
        }
    }

    fn tokens(&self) -> usize {
        match self {
            TokenIds::U32(t) => t.len(),
            TokenIds::U8 { tokens, .. } => *tokens,
        }
    }

    /// u32, with the words the token count needs.
    fn check(&self, op: &str) -> Result<usize> {
        let t = self.tensor();
        t.expect_dtype(op, DType::U32)?;
        let tokens = self.tokens();
        if tokens == 0 {
            return Err(WgnnError::EmptyTensor { op: op.into(), shape: t.shape().to_vec() });
        }
        if let TokenIds::U8 { words, tokens } = self {
            if words.len() < tokens.div_ceil(4) {
                return Err(WgnnError::shape_of(
                    op,
                    &[("ids", words.shape())],
                    format!("{tokens} u8 ids need {} packed words, got {:?}", tokens.div_ceil(4), words.shape()),
                ));
            }
        }
        Ok(tokens)
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbeddingParams {
    tokens: u32,
    cols: u32,
    vocab: u32,
    first: u32,
    count: u32,
    _pad: [u32; 3],
}

/// (tokens, vocab, cols) of a call: table `[vocab, cols]` f32 of at most 2³² − 1 values; `per_token`
/// (out or dy) f32 of tokens·cols values whose last axis is cols.
fn check(op: &str, ids: &TokenIds, table_name: &str, table: &Tensor, per_token: (&str, &Tensor)) -> Result<[usize; 3]> {
    let tokens = ids.check(op)?;
    table.expect_dtype(op, DType::F32)?;
    let (vocab, cols) = table.dims2(op)?;
    table.expect_nonempty(op)?;
    if table.len() > u32::MAX as usize {
        return Err(WgnnError::invalid(op, format!("{table_name} {:?} has more than 2^32 - 1 values", table.shape())));
    }
    let (name, t) = per_token;
    let want = tokens.checked_mul(cols).filter(|&n| n <= u32::MAX as usize).ok_or_else(|| {
        WgnnError::shape_of(
            op,
            &[(name, t.shape()), (table_name, table.shape())],
            format!("{tokens} tokens × {cols} columns is more than 2^32 - 1 values"),
        )
    })?;
    expect_len(
        op,
        name,
        t,
        DType::F32,
        want,
        &format!("[{tokens}, {cols}] ({tokens} tokens of {table_name} {:?})", table.shape()),
    )?;
    if t.shape().last() != Some(&cols) {
        return Err(WgnnError::shape_of(
            op,
            &[(name, t.shape()), (table_name, table.shape())],
            format!(
                "{name}'s last axis must be {cols}, the width of {table_name} {:?}, got {:?}",
                table.shape(),
                t.shape()
            ),
        ));
    }
    Ok([tokens, vocab, cols])
}

fn constants(ids: &TokenIds, wg: u32) -> [(&'static str, f64); 2] {
    [("IDS_U8", matches!(ids, TokenIds::U8 { .. }) as u32 as f64), ("WG", wg as f64)]
}

/// `out[n, :] = table[ids[n], :]`, a row of zeros where `ids[n] ≥ vocab`. table: `[vocab, cols]`;
/// out: tokens × cols values, last axis cols (`[tokens, cols]` or `[batch, block, cols]`).
/// One dispatch, one invocation per output value (per vec4 of them where cols is a multiple of 4).
pub fn embedding_forward(gpu: &Gpu, ids: TokenIds, table: &Tensor, out: &Tensor) -> Result<Plan> {
    const OP: &str = "embedding_forward";
    let [tokens, vocab, cols] = check(OP, &ids, "table", table, ("out", out))?;
    disjoint(OP, &[("ids", ids.tensor()), ("table", table), ("out", out)])?;
    let (family, lanes) = lanes(cols, &[table, out]);
    let units = cols / lanes;
    let params = params(tokens, vocab, units, 0, 0);
    // A workgroup no wider than a row (rounded up to a power of two): char_gpt's 32 vec4s left
    // half of a 64-wide one idle.
    let wg = (units.next_power_of_two() as u32).min(WG);
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let grid = [units.div_ceil(wg as usize) as u32, tokens.min(max) as u32, tokens.div_ceil(max) as u32];
    let slots = [ids.tensor(), table, out];
    Ok(dispatch(gpu, family, "embedding_forward", &constants(&ids, wg), &params, &slots, grid)?.into())
}

/// `dtable[v, :] (+)= Σ_{n: ids[n] = v} dy[n, :]`, in order of n (`accumulate`: add to dtable,
/// else overwrite it: rows of ids absent from the batch become 0). Ids ≥ vocab contribute
/// nothing. dy: tokens × cols values, last axis cols; dtable: `[vocab, cols]`. Deterministic; cost
/// in the module's doc.
pub fn embedding_backward(gpu: &Gpu, ids: TokenIds, dy: &Tensor, dtable: &Tensor, accumulate: bool) -> Result<Plan> {
    const OP: &str = "embedding_backward";
    let [tokens, vocab, cols] = check(OP, &ids, "dtable", dtable, ("dy", dy))?;
    disjoint(OP, &[("ids", ids.tensor()), ("dy", dy), ("dtable", dtable)])?;
    let (family, lanes) = lanes(cols, &[dy, dtable]);
    let units = cols / lanes;
    let mut plan = Plan::new();
    if !accumulate {
        let d = dummy(gpu)?;
        let params = params(tokens, vocab, units, 0, 0);
        let grid = grid_1d(gpu, vocab * units, WG);
        let slots = [ids.tensor(), &d, dtable];
        plan.push(dispatch(gpu, family, "embedding_clear", &constants(&ids, WG), &params, &slots, grid)?);
    }
    let grid = [units.div_ceil(BACKWARD_WG as usize) as u32, 1, 1];
    for first in (0..tokens).step_by(BACKWARD_TOKENS_PER_DISPATCH) {
        let count = BACKWARD_TOKENS_PER_DISPATCH.min(tokens - first);
        let params = params(tokens, vocab, units, first, count);
        let slots = [ids.tensor(), dy, dtable];
        plan.push(dispatch(gpu, family, "embedding_backward", &constants(&ids, BACKWARD_WG), &params, &slots, grid)?);
    }
    Ok(plan)
}

fn params(tokens: usize, vocab: usize, cols: usize, first: usize, count: usize) -> EmbeddingParams {
    EmbeddingParams {
        tokens: tokens as u32,
        cols: cols as u32,
        vocab: vocab as u32,
        first: first as u32,
        count: count as u32,
        _pad: [0; 3],
    }
}
