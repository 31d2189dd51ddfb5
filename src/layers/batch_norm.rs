//! The batch-norm layer: y = γ·(x − μ)/√(σ² + eps) + β over the last axis (the features, or the
//! channels of an image, whose other axes count as rows), with the batch's statistics while
//! training and the running ones in `evaluate` and `predict`.

use super::{SlotInit, SlotSpec};
use crate::activation::Activation;
use crate::config::batch_norm::BatchNormConfig;
use crate::cpu;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::batch_norm::{
    batch_norm_backward, batch_norm_commit_running, batch_norm_forward_inference, batch_norm_forward_train_deferred,
    batch_norm_statistics_deferred,
};
use crate::kernels::batch_norm_pooled::{batch_norm_backward_through_max_pool, PoolAbove};
use crate::plan::Plan;
use crate::tensor::Tensor;

/// β and γ (trained; β first, where a dense layer's bias would sit), then the running mean and
/// variance (kept beside the weights, never trained), each `[channels]`.
pub(super) fn slots(input: &[usize]) -> Vec<SlotSpec> {
    let channels = input.last().copied().unwrap_or(1);
    let slot = |name, init, trainable| SlotSpec { name, shape: vec![channels], init, trainable };
    vec![
        slot("beta", SlotInit::Zeros, true),
        slot("gamma", SlotInit::Ones, true),
        slot("running_mean", SlotInit::Zeros, false),
        slot("running_var", SlotInit::Ones, false),
    ]
}

/// A batch-norm layer's parameters, as views of the model's flat buffers.
pub(crate) struct NormParams {
    pub(crate) beta: Tensor,
    pub(crate) gamma: Tensor,
    pub(crate) running_mean: Tensor,
    pub(crate) running_var: Tensor,
}

/// One batch's intermediates, `[n, channels]` with n = rows × the sample's other axes.
pub(crate) struct NormBuffers {
    /// The normalised output.
    pub(crate) normed: Tensor,
    /// The gradient w.r.t. the input (training only; else a placeholder).
    pub(crate) dx: Tensor,
    /// The batch's mean and 1/√(σ² + eps) `[channels]`, saved by the forward for the backward.
    pub(crate) mean: Tensor,
    pub(crate) inv_std: Tensor,
    /// The batch's unbiased variance `[channels]`, folded into the running one after the step's
    /// guard (training only).
    pub(crate) pending_var: Tensor,
}

impl NormBuffers {
    /// `normed` `[n, channels]` and `dx` (the gradient w.r.t. the input): allocated by the
    /// caller, as they may be read beyond the batch's rows (a weight gradient's padded rows).
    pub(crate) fn new(gpu: &Gpu, normed: Tensor, dx: Tensor, channels: usize) -> Result<NormBuffers> {
        let per_channel = || Tensor::zeros(gpu, &[channels]);
        Ok(NormBuffers { normed, dx, mean: per_channel()?, inv_std: per_channel()?, pending_var: per_channel()? })
    }
}

/// x `[n, channels]` → `buf.normed`, through `act` (element-wise; the activation after the batch
/// norm, applied in the same pass): the batch's statistics when training (the running ones are
/// updated later, by [`commit_gpu`], once the step is known to be kept), the running ones
/// otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_gpu(
    gpu: &Gpu,
    x: &Tensor,
    p: &NormParams,
    buf: &NormBuffers,
    training: bool,
    cfg: &BatchNormConfig,
    act: Activation,
) -> Result<Plan> {
    let (gamma, beta, y) = (&p.gamma, &p.beta, &buf.normed);
    if training {
        let (mean, inv_std, var) = (&buf.mean, &buf.inv_std, &buf.pending_var);
        batch_norm_forward_train_deferred(gpu, x, gamma, beta, y, mean, inv_std, var, cfg, act)
    } else {
        let (mean, var) = (&p.running_mean, &p.running_var);
        batch_norm_forward_inference(gpu, x, gamma, beta, mean, var, y, cfg, act)
    }
}

/// The training forward's statistics only (`buf`'s mean, inv_std and pending variance), where the
/// pass that reads the output normalises x itself (max pooling's: see `crate::layers::pool2d`).
pub(crate) fn statistics_gpu(gpu: &Gpu, x: &Tensor, buf: &NormBuffers, cfg: &BatchNormConfig) -> Result<Plan> {
    batch_norm_statistics_deferred(gpu, x, &buf.mean, &buf.inv_std, &buf.pending_var, cfg)
}

/// dy (w.r.t. the output) → `buf.dx`, with dγ and dβ.
pub(crate) fn backward_gpu(
    gpu: &Gpu,
    dy: &Tensor,
    x: &Tensor,
    p: &NormParams,
    buf: &NormBuffers,
    dgamma: &Tensor,
    dbeta: &Tensor,
) -> Result<Plan> {
    batch_norm_backward(gpu, dy, x, &p.gamma, &buf.mean, &buf.inv_std, &buf.dx, dgamma, dbeta, false)
}

/// [`backward_gpu`] where dy is the input gradient of the max pooling above (never written):
/// see `batch_norm_backward_through_max_pool`.
pub(crate) fn backward_through_max_pool_gpu(
    gpu: &Gpu,
    pool: &PoolAbove,
    x: &Tensor,
    p: &NormParams,
    buf: &NormBuffers,
    dgamma: &Tensor,
    dbeta: &Tensor,
) -> Result<Plan> {
    batch_norm_backward_through_max_pool(gpu, pool, x, &p.gamma, &buf.mean, &buf.inv_std, &buf.dx, dgamma, dbeta)
}

/// Folds a kept step's batch statistics into the running ones (`counters`: the guarded step's
/// [t, skip], which leaves a skipped batch's out).
pub(crate) fn commit_gpu(
    gpu: &Gpu,
    p: &NormParams,
    buf: &NormBuffers,
    counters: Option<&Tensor>,
    cfg: &BatchNormConfig,
) -> Result<Plan> {
    batch_norm_commit_running(gpu, &buf.mean, &buf.pending_var, &p.running_mean, &p.running_var, counters, cfg)
}

/// What the CPU forward keeps for the backward: the batch's mean and 1/√(σ² + eps), and its
/// unbiased variance for the running statistics.
pub(crate) struct CpuNormSaved {
    pub(crate) mean: Vec<f32>,
    pub(crate) inv_std: Vec<f32>,
    pub(crate) pending_var: Vec<f32>,
}

/// The CPU forward over `n` rows of `channels`; `params`: (β, γ, running mean, running var).
pub(crate) fn forward_cpu(
    x: &[f32],
    params: [&[f32]; 4],
    n: usize,
    channels: usize,
    training: bool,
    cfg: &BatchNormConfig,
) -> (Vec<f32>, Option<CpuNormSaved>) {
    let [beta, gamma, running_mean, running_var] = params;
    if training {
        let identity = Activation::Identity;
        let (y, mean, inv_std, pending_var) =
            cpu::batch_norm_forward_train_deferred(x, gamma, beta, n, channels, cfg, identity);
        (y, Some(CpuNormSaved { mean, inv_std, pending_var }))
    } else {
        let identity = Activation::Identity;
        (cpu::batch_norm_forward_inference(x, gamma, beta, running_mean, running_var, n, channels, cfg, identity), None)
    }
}

/// (dx, dγ, dβ) of the CPU backward.
pub(crate) fn backward_cpu(
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    saved: &CpuNormSaved,
    n: usize,
    channels: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    cpu::batch_norm_backward(dy, x, gamma, &saved.mean, &saved.inv_std, n, channels)
}
