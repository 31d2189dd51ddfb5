//! The JSON a saved model and a checkpoint carry in their safetensors metadata, as serde types.
//!
//! These mirror the in-memory configs field for field but are their own types: the file's
//! schema is a promise to files already written, so it changes only here and on purpose. Format 1
//! files written before the compile settings were saved (no `compile` key) still load.

use serde::{Deserialize, Serialize};

use super::{Loss, Optimizer};
use crate::activation::Activation;
use crate::error::{Result, WgnnError};
use crate::kernels::batch_norm::BatchNormConfig;
use crate::kernels::optimizer::{AdadeltaConfig, AdagradConfig, AdamConfig, LrSchedule, RmsPropConfig, SgdConfig};

/// The version of [`SavedModel`] this wgnn writes and reads.
pub(super) const FORMAT: u64 = 1;

/// `wgnn.model`: enough to rebuild the model and, where it was compiled, to predict and evaluate
/// as it did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedModel {
    pub(super) format: u64,
    pub(super) input_dim: usize,
    pub(super) seed: u64,
    pub(super) layers: Vec<SavedDense>,
    /// The loss and optimizer of a compiled model (absent in files of uncompiled models, and in
    /// files written before wgnn saved them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) compile: Option<SavedCompile>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedDense {
    pub(super) units: usize,
    /// As [`Activation::parse`] reads it (`leaky_relu:0.01` with its slope).
    pub(super) activation: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) dropout: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) batch_norm: Option<SavedBatchNorm>,
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub(super) struct SavedBatchNorm {
    pub(super) eps: f32,
    pub(super) momentum: f32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedCompile {
    /// [`Loss::name`].
    pub(super) loss: String,
    pub(super) optimizer: SavedOptimizer,
}

/// `wgnn.checkpoint`: where training stopped. `epoch`: the epochs completed; `step`: the global
/// step t.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedCheckpoint {
    pub(super) epoch: usize,
    pub(super) step: u32,
    pub(super) loss: String,
    pub(super) optimizer: SavedOptimizer,
}

/// An optimizer and its hyper-parameters, tagged by `kind`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum SavedOptimizer {
    Adam(SavedAdam),
    AdamW(SavedAdam),
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
        #[serde(default)]
        schedule: SavedSchedule,
    },
    RmsProp {
        lr: f32,
        rho: f32,
        eps: f32,
        momentum: f32,
        weight_decay: f32,
        #[serde(default)]
        schedule: SavedSchedule,
    },
    Adagrad {
        lr: f32,
        initial_accumulator: f32,
        eps: f32,
        weight_decay: f32,
        #[serde(default)]
        schedule: SavedSchedule,
    },
    Adadelta {
        lr: f32,
        rho: f32,
        eps: f32,
        weight_decay: f32,
        #[serde(default)]
        schedule: SavedSchedule,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub(super) struct SavedAdam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    /// A checkpoint without one had a constant rate.
    #[serde(default)]
    schedule: SavedSchedule,
}

/// The learning-rate schedule, so a resumed run keeps decaying where it stopped.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum SavedSchedule {
    #[default]
    Constant,
    Step {
        every: u32,
        gamma: f32,
    },
    Exponential {
        decay_steps: u32,
        decay_rate: f32,
    },
    Cosine {
        total_steps: u32,
        min_lr: f32,
    },
}

impl From<LrSchedule> for SavedSchedule {
    fn from(s: LrSchedule) -> Self {
        match s {
            LrSchedule::Constant => SavedSchedule::Constant,
            LrSchedule::Step { every, gamma } => SavedSchedule::Step { every, gamma },
            LrSchedule::Exponential { decay_steps, decay_rate } => {
                SavedSchedule::Exponential { decay_steps, decay_rate }
            }
            LrSchedule::Cosine { total_steps, min_lr } => SavedSchedule::Cosine { total_steps, min_lr },
        }
    }
}

impl From<SavedSchedule> for LrSchedule {
    fn from(s: SavedSchedule) -> Self {
        match s {
            SavedSchedule::Constant => LrSchedule::Constant,
            SavedSchedule::Step { every, gamma } => LrSchedule::Step { every, gamma },
            SavedSchedule::Exponential { decay_steps, decay_rate } => {
                LrSchedule::Exponential { decay_steps, decay_rate }
            }
            SavedSchedule::Cosine { total_steps, min_lr } => LrSchedule::Cosine { total_steps, min_lr },
        }
    }
}

impl From<AdamConfig> for SavedAdam {
    fn from(c: AdamConfig) -> Self {
        let AdamConfig { lr, beta1, beta2, eps, weight_decay, schedule } = c;
        SavedAdam { lr, beta1, beta2, eps, weight_decay, schedule: schedule.into() }
    }
}

impl From<SavedAdam> for AdamConfig {
    fn from(c: SavedAdam) -> Self {
        let SavedAdam { lr, beta1, beta2, eps, weight_decay, schedule } = c;
        AdamConfig { lr, beta1, beta2, eps, weight_decay, schedule: schedule.into() }
    }
}

impl From<Optimizer> for SavedOptimizer {
    fn from(o: Optimizer) -> Self {
        match o {
            Optimizer::Adam(c) => SavedOptimizer::Adam(c.into()),
            Optimizer::AdamW(c) => SavedOptimizer::AdamW(c.into()),
            Optimizer::Sgd(SgdConfig { lr, momentum, nesterov, weight_decay, schedule }) => {
                SavedOptimizer::Sgd { lr, momentum, nesterov, weight_decay, schedule: schedule.into() }
            }
            Optimizer::RmsProp(RmsPropConfig { lr, rho, eps, momentum, weight_decay, schedule }) => {
                SavedOptimizer::RmsProp { lr, rho, eps, momentum, weight_decay, schedule: schedule.into() }
            }
            Optimizer::Adagrad(AdagradConfig { lr, initial_accumulator, eps, weight_decay, schedule }) => {
                SavedOptimizer::Adagrad { lr, initial_accumulator, eps, weight_decay, schedule: schedule.into() }
            }
            Optimizer::Adadelta(AdadeltaConfig { lr, rho, eps, weight_decay, schedule }) => {
                SavedOptimizer::Adadelta { lr, rho, eps, weight_decay, schedule: schedule.into() }
            }
        }
    }
}

impl From<SavedOptimizer> for Optimizer {
    fn from(o: SavedOptimizer) -> Self {
        match o {
            SavedOptimizer::Adam(c) => Optimizer::Adam(c.into()),
            SavedOptimizer::AdamW(c) => Optimizer::AdamW(c.into()),
            SavedOptimizer::Sgd { lr, momentum, nesterov, weight_decay, schedule } => {
                Optimizer::Sgd(SgdConfig { lr, momentum, nesterov, weight_decay, schedule: schedule.into() })
            }
            SavedOptimizer::RmsProp { lr, rho, eps, momentum, weight_decay, schedule } => {
                Optimizer::RmsProp(RmsPropConfig { lr, rho, eps, momentum, weight_decay, schedule: schedule.into() })
            }
            SavedOptimizer::Adagrad { lr, initial_accumulator, eps, weight_decay, schedule } => {
                Optimizer::Adagrad(AdagradConfig {
                    lr,
                    initial_accumulator,
                    eps,
                    weight_decay,
                    schedule: schedule.into(),
                })
            }
            SavedOptimizer::Adadelta { lr, rho, eps, weight_decay, schedule } => {
                Optimizer::Adadelta(AdadeltaConfig { lr, rho, eps, weight_decay, schedule: schedule.into() })
            }
        }
    }
}

impl SavedDense {
    /// The layer's activation, dropout rate and batch norm, checked.
    pub(super) fn parts(&self) -> Result<(Activation, f32, Option<BatchNormConfig>)> {
        let activation = Activation::parse(&self.activation)?;
        let norm = self.batch_norm.map(|b| BatchNormConfig { eps: b.eps, momentum: b.momentum });
        Ok((activation, self.dropout, norm))
    }
}

impl SavedCompile {
    pub(super) fn new(loss: Loss, optimizer: Optimizer) -> SavedCompile {
        SavedCompile { loss: loss.name().to_string(), optimizer: optimizer.into() }
    }

    pub(super) fn parts(&self) -> Result<(Loss, Optimizer)> {
        Ok((Loss::parse(&self.loss)?, self.optimizer.into()))
    }
}

/// The activation as [`Activation::parse`] reads it back (with leaky relu's slope).
pub(super) fn activation_tag(a: Activation) -> String {
    match a {
        Activation::LeakyRelu(slope) => format!("leaky_relu:{slope}"),
        a => a.name().to_string(),
    }
}

/// Parses one of the metadata's JSON values, naming the key and the text on failure.
pub(super) fn from_json<T: for<'de> Deserialize<'de>>(key: &str, text: &str) -> std::result::Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("bad `{key}` metadata ({e}): {text}"))
}

/// The JSON text of a metadata value (these types always serialise).
pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| WgnnError::invalid("save", format!("could not write metadata: {e}")))
}
