//! The sizes of a self-attention (batch, sequence, channels, heads, causal or not), read off its qkv
//! tensor and checked once for both attention families (shaders/attention.wgsl and
//! shaders/flash_attention.wgsl), and the uniform both take.

use super::check::{expect_len, hyper};
use crate::cpu::dropout::dropout_constants;
use crate::error::{Result, WgnnError};
use crate::tensor::{DType, Tensor};

/// Attention dropout while training (PyTorch's `scaled_dot_product_attention(dropout_p=rate)`):
/// each probability P_ij is kept, scaled by 1/(1 − rate), or dropped, before it weighs v_j. The
/// mask is shaders/dropout_hash.wgsl's hash of (seed, t, score index ((b·NH + h)·T + i)·T + j)
/// with t = `step[0]` − `lag` (`step`: the global step counter, u32 `[1]`, read and never
/// written), as the dropout layer's: the same on the CPU ([`crate::cpu::AttentionDropout`]).
#[derive(Clone, Copy, Debug)]
pub struct AttentionDropout<'a> {
    pub rate: f32,
    pub seed: u32,
    pub step: &'a Tensor,
    pub lag: u32,
}

impl AttentionDropout<'_> {
    /// The rate in [0, 1) and the step a u32 `[1]`.
    pub(crate) fn check(&self, op: &str) -> Result<()> {
        hyper(op, "dropout rate", self.rate, "in [0, 1)", (0.0..1.0).contains(&self.rate))?;
        expect_len(op, "step", self.step, DType::U32, 1, "[1]")
    }
}

/// B, T, C and NH of an attention over qkv `[B, T, 3C]`; the head size is C / NH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    pub batch: usize,
    pub seq: usize,
    pub channels: usize,
    pub heads: usize,
    /// Each query attends to the keys at or before it (GPT's mask; what [`AttentionDims::new`]
    /// sets); false: to every key.
    pub causal: bool,
}

impl AttentionDims {
    /// hs = C / NH.
    pub fn head_size(&self) -> usize {
        self.channels / self.heads
    }

    /// The scores' scale, 1/√hs.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_size() as f32).sqrt()
    }

    /// qkv's shape, `[B, T, 3C]`.
    pub fn qkv_shape(&self) -> [usize; 3] {
        [self.batch, self.seq, 3 * self.channels]
    }

    /// The output's (and its gradient's) shape, `[B, T, C]`.
    pub fn out_shape(&self) -> [usize; 3] {
        [self.batch, self.seq, self.channels]
    }

    /// One value per score, `[B, NH, T, T]`: the clear kernels' probabilities and their gradient.
    pub fn scores_shape(&self) -> [usize; 4] {
        [self.batch, self.heads, self.seq, self.seq]
    }

    /// One value per query row, `[B, NH, T]`: the flash kernels' log-sum-exp and D.
    pub fn rows_shape(&self) -> [usize; 3] {
        [self.batch, self.heads, self.seq]
    }

    /// The dims of `qkv` (f32 `[B, T, 3C]`, non-empty) split into `heads` heads, each count of
    /// scores and values within a u32 (the kernels' indices).
    pub(crate) fn of_qkv(op: &str, qkv: &Tensor, heads: usize) -> Result<AttentionDims> {
        qkv.expect_dtype(op, DType::F32)?;
        let &[batch, seq, c3] = qkv.shape() else {
            return Err(WgnnError::shape_of(
                op,
                &[("qkv", qkv.shape())],
                format!("qkv must be [batch, seq, 3·channels], got {:?}", qkv.shape()),
            ));
        };
        qkv.expect_nonempty(op)?;
        if !c3.is_multiple_of(3) {
            return Err(WgnnError::shape_of(
                op,
                &[("qkv", qkv.shape())],
                format!("qkv {:?}: its last axis {c3} must be 3·channels (query, key and value)", qkv.shape()),
            ));
        }
        AttentionDims::new(op, batch, seq, c3 / 3, heads)
    }

    /// Checked dims: every size at least 1, `heads` dividing `channels`, and every count of
    /// scores and values within a u32 (the kernels' indices).
    pub fn new(op: &str, batch: usize, seq: usize, channels: usize, heads: usize) -> Result<AttentionDims> {
        let dims = AttentionDims { batch, seq, channels, heads, causal: true };
        let qkv = [batch, seq, 3usize.saturating_mul(channels)];
        if batch == 0 || seq == 0 || channels == 0 {
            return Err(WgnnError::EmptyTensor { op: op.into(), shape: qkv.to_vec() });
        }
        if heads == 0 || !channels.is_multiple_of(heads) {
            return Err(WgnnError::invalid(
                op,
                format!("qkv {qkv:?} has {channels} channels, which {heads} heads do not divide"),
            ));
        }
        let count = |sizes: &[usize]| sizes.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let (scores, values) = (count(&[batch, heads, seq, seq]), count(&qkv));
        if scores.is_none_or(|n| n > u32::MAX as usize) || values.is_none_or(|n| n > u32::MAX as usize) {
            return Err(WgnnError::invalid(
                op,
                format!("qkv {qkv:?} with {heads} heads has more than 2^32 values or scores (u32 indices)"),
            ));
        }
        Ok(dims)
    }

    /// `t` is f32 of shape `want`.
    pub(crate) fn expect(&self, op: &str, what: &str, t: &Tensor, want: &[usize]) -> Result<()> {
        t.expect_dtype(op, DType::F32)?;
        if t.shape() != want {
            return Err(WgnnError::shape_of(
                op,
                &[("qkv", &self.qkv_shape()), (what, t.shape())],
                format!(
                    "qkv {:?} with {} heads needs {what} {want:?}, got {:?}",
                    self.qkv_shape(),
                    self.heads,
                    t.shape()
                ),
            ));
        }
        Ok(())
    }

    /// The uniform, with `dropout`'s key and constants where it is given.
    pub(crate) fn params(&self, dropout: Option<&AttentionDropout>) -> AttentionParams {
        let (threshold, keep_scale) = dropout.map_or((0, 1.0), |d| dropout_constants(d.rate));
        AttentionParams {
            batch: self.batch as u32,
            seq: self.seq as u32,
            channels: self.channels as u32,
            heads: self.heads as u32,
            head_size: self.head_size() as u32,
            scale: self.scale(),
            causal: self.causal as u32,
            seed: dropout.map_or(0, |d| d.seed),
            threshold,
            keep_scale,
            lag: dropout.map_or(0, |d| d.lag),
            _pad: 0,
        }
    }
}

/// The uniform of both attention families.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct AttentionParams {
    batch: u32,
    seq: u32,
    channels: u32,
    heads: u32,
    head_size: u32,
    scale: f32,
    causal: u32,
    /// Dropout (read only by the pipelines built with it): the mask's seed, keep iff hash ≥
    /// threshold, the kept probabilities' scale 1/(1 − p), and t = `step[0]` − lag.
    seed: u32,
    threshold: u32,
    keep_scale: f32,
    lag: u32,
    _pad: u32,
}
