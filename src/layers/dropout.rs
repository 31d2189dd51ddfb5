//! The dropout layer: inverted dropout of a rate while training (kept values scaled by
//! 1/(1 − rate)), the identity in `evaluate` and `predict`. The mask of step t is a hash of
//! (the layer's seed, t, element), the same on the GPU and the CPU.

use crate::cpu;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::kernels::dropout::{dropout_backward, dropout_forward};
use crate::plan::Plan;
use crate::tensor::Tensor;

pub(super) fn validate(op: &str, rate: f32) -> Result<()> {
    if (0.0..1.0).contains(&rate) {
        Ok(())
    } else {
        Err(WgnnError::invalid(op, format!("rate must be in [0, 1), got {rate}")))
    }
}

/// The seed of the masks of dropout layer `index` in `layers`, of a model seeded `model_seed`.
/// The first dropout after the k-th layer with weights keys on k, as a dense layer's own dropout
/// did before dropout was a layer (so older checkpoints resume with the same masks); any other
/// keys on its own index, past those.
pub(crate) fn seed(model_seed: u64, layers: &[super::Layer], index: usize) -> u32 {
    let weighted = |l: &super::Layer| !l.slots(&[1]).is_empty() && !matches!(l, super::Layer::BatchNorm(_));
    let before = &layers[..index];
    let owner = before.iter().rposition(weighted);
    let first_since = owner.is_some_and(|w| !before[w + 1..].iter().any(|l| matches!(l, super::Layer::Dropout(_))));
    let key = match (owner, first_since) {
        (Some(_), true) => before.iter().filter(|l| weighted(l)).count() - 1,
        _ => (1 << 20) + index,
    };
    let mixed = model_seed ^ (key as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed ^ (mixed >> 32)) as u32
}

/// The seed of the masks layer `index` draws itself (multi-head attention's dropout), in a model
/// seeded `model_seed`: keyed past every dropout layer's keys.
pub(crate) fn own_seed(model_seed: u64, index: usize) -> u32 {
    let mixed = model_seed ^ (((1u64 << 21) + index as u64) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed ^ (mixed >> 32)) as u32
}

/// One training batch's dropout tensors, each `[rows, features]`.
pub(crate) struct DropoutBuffers {
    pub(crate) dropped: Tensor,
    pub(crate) mask: Tensor,
    /// The gradient w.r.t. the dropped output, before the mask.
    pub(crate) before_mask: Tensor,
}

/// x → `buf.dropped`, masks keyed on t − `lag` (t: u32 `[1]`).
pub(crate) fn forward_gpu(
    gpu: &Gpu,
    x: &Tensor,
    buf: &DropoutBuffers,
    rate: f32,
    seed: u32,
    t: &Tensor,
    lag: u32,
) -> Result<Plan> {
    dropout_forward(gpu, x, &buf.dropped, &buf.mask, rate, seed, t, lag)
}

/// `buf.before_mask` ⊙ mask → dx.
pub(crate) fn backward_gpu(gpu: &Gpu, buf: &DropoutBuffers, dx: &Tensor) -> Result<Plan> {
    dropout_backward(gpu, &buf.before_mask, &buf.mask, dx)
}

/// (dropped, mask) of step t on the CPU.
pub(crate) fn forward_cpu(x: &[f32], rate: f32, seed: u32, t: u32) -> (Vec<f32>, Vec<f32>) {
    cpu::dropout_forward(x, rate, seed, t)
}

pub(crate) fn backward_cpu(dy: &[f32], mask: &[f32]) -> Vec<f32> {
    cpu::dropout_backward(dy, mask)
}
