//! A batch-norm layer's hyper-parameters (PyTorch's BatchNorm1d/2d conventions; see
//! `crate::kernels::batch_norm`).

use super::hyper;
use crate::error::Result;

/// Hyper-parameters of a batch-norm layer, PyTorch's names, meaning and defaults (eps 1e-5,
/// momentum 0.1): in training y = γ·(x − μ_B)/√(σ²_B + eps) + β with the batch's mean μ_B and
/// biased variance σ²_B (÷ n), and running = (1 − momentum)·running + momentum·batch, where the
/// running variance takes the batch's unbiased variance (÷ (n − 1)); at inference the running
/// statistics replace the batch's. [`BatchNormConfig::keras`] gives Keras' defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Weight of the batch statistic in the running averages (PyTorch's meaning; Keras'
    /// `momentum` is the running average's weight, 1 − this).
    pub momentum: f32,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig::torch()
    }
}

impl BatchNormConfig {
    /// PyTorch's `BatchNorm1d`/`BatchNorm2d` defaults: eps 1e-5, momentum 0.1 (the default).
    pub fn torch() -> BatchNormConfig {
        BatchNormConfig { eps: 1e-5, momentum: 0.1 }
    }
    /// Keras' `BatchNormalization()` defaults: epsilon 1e-3, momentum 0.99, i.e. a batch weight of
    /// 0.01 here. Training steps then match Keras'; the running variance still averages the
    /// unbiased batch variance where Keras averages the biased one, so the inference-time
    /// variance is larger than Keras' by n/(n − 1), n the values a channel's statistics are taken
    /// over (the batch's rows, times h·w after a convolution): 3% for a dense layer at batches of 32.
    pub fn keras() -> BatchNormConfig {
        BatchNormConfig { eps: 1e-3, momentum: 0.01 }
    }
    /// An error naming `op` unless eps > 0 and momentum in [0, 1], both finite.
    pub fn validate(&self, op: &str) -> Result<()> {
        hyper(op, "eps", self.eps, "> 0", self.eps > 0.0)?;
        hyper(op, "momentum", self.momentum, "in [0, 1]", (0.0..=1.0).contains(&self.momentum))
    }
}
