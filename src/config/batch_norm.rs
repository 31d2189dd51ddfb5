//! A batch-norm layer's hyper-parameters (PyTorch's BatchNorm1d conventions; see
//! `crate::kernels::batch_norm`).

use super::hyper;
use crate::error::Result;

/// Hyper-parameters of a batch-norm layer (PyTorch's names and defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Weight of the batch statistic in the running averages.
    pub momentum: f32,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig { eps: 1e-5, momentum: 0.1 }
    }
}

impl BatchNormConfig {
    /// An error naming `op` unless eps > 0 and momentum in [0, 1], both finite.
    pub fn validate(&self, op: &str) -> Result<()> {
        hyper(op, "eps", self.eps, "> 0", self.eps > 0.0)?;
        hyper(op, "momentum", self.momentum, "in [0, 1]", (0.0..=1.0).contains(&self.momentum))
    }
}
