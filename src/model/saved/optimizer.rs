//! The optimizer's part of the saved schema: its kind and hyper-parameters, Adam's epsilon
//! placement and the learning-rate schedule, as a checkpoint and a compiled model's file carry
//! them (`wgnn.checkpoint`'s and `wgnn.model`'s `optimizer`).

use serde::{Deserialize, Serialize};

use crate::kernels::optimizer::{
    AdadeltaConfig, AdagradConfig, AdamConfig, DecayMask, EpsPlacement, LrSchedule, RmsPropConfig, SgdConfig,
};
use crate::model::Optimizer;

/// An optimizer and its hyper-parameters, tagged by `kind`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(in crate::model) enum SavedOptimizer {
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
        #[serde(default, skip_serializing_if = "SavedEpsPlacement::is_torch")]
        eps_placement: SavedEpsPlacement,
    },
    Adagrad {
        lr: f32,
        initial_accumulator: f32,
        eps: f32,
        weight_decay: f32,
        #[serde(default)]
        schedule: SavedSchedule,
        #[serde(default, skip_serializing_if = "SavedEpsPlacement::is_torch")]
        eps_placement: SavedEpsPlacement,
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
pub(in crate::model) struct SavedAdam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    /// A checkpoint without one had a constant rate.
    #[serde(default)]
    schedule: SavedSchedule,
    /// Written only when Keras' (a file without one predates the choice: PyTorch's).
    #[serde(default, skip_serializing_if = "SavedEpsPlacement::is_torch")]
    eps_placement: SavedEpsPlacement,
    /// [`DecayMask::Matrices`]: written only when set (a file without it decays every value).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    decay_matrices_only: bool,
}

/// [`EpsPlacement`] as saved: `"torch"` or `"keras"`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(in crate::model) enum SavedEpsPlacement {
    #[default]
    Torch,
    Keras,
}

impl SavedEpsPlacement {
    fn is_torch(&self) -> bool {
        *self == SavedEpsPlacement::Torch
    }
}

impl From<EpsPlacement> for SavedEpsPlacement {
    fn from(e: EpsPlacement) -> Self {
        match e {
            EpsPlacement::Torch => SavedEpsPlacement::Torch,
            EpsPlacement::Keras => SavedEpsPlacement::Keras,
        }
    }
}

impl From<SavedEpsPlacement> for EpsPlacement {
    fn from(e: SavedEpsPlacement) -> Self {
        match e {
            SavedEpsPlacement::Torch => EpsPlacement::Torch,
            SavedEpsPlacement::Keras => EpsPlacement::Keras,
        }
    }
}

/// The learning-rate schedule, so a resumed run keeps decaying where it stopped.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(in crate::model) enum SavedSchedule {
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
    #[serde(rename = "warmup_cosine")]
    WarmupCosine {
        warmup_steps: u32,
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
            LrSchedule::WarmupCosine { warmup_steps, total_steps, min_lr } => {
                SavedSchedule::WarmupCosine { warmup_steps, total_steps, min_lr }
            }
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
            SavedSchedule::WarmupCosine { warmup_steps, total_steps, min_lr } => {
                LrSchedule::WarmupCosine { warmup_steps, total_steps, min_lr }
            }
        }
    }
}

impl From<AdamConfig> for SavedAdam {
    fn from(c: AdamConfig) -> Self {
        let AdamConfig { lr, beta1, beta2, eps, weight_decay, schedule, eps_placement, decay } = c;
        SavedAdam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            schedule: schedule.into(),
            eps_placement: eps_placement.into(),
            decay_matrices_only: decay == DecayMask::Matrices,
        }
    }
}

impl From<SavedAdam> for AdamConfig {
    fn from(c: SavedAdam) -> Self {
        let SavedAdam { lr, beta1, beta2, eps, weight_decay, schedule, eps_placement, decay_matrices_only } = c;
        AdamConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            schedule: schedule.into(),
            eps_placement: eps_placement.into(),
            decay: if decay_matrices_only { DecayMask::Matrices } else { DecayMask::All },
        }
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
            Optimizer::RmsProp(RmsPropConfig { lr, rho, eps, momentum, weight_decay, schedule, eps_placement }) => {
                let (schedule, eps_placement) = (schedule.into(), eps_placement.into());
                SavedOptimizer::RmsProp { lr, rho, eps, momentum, weight_decay, schedule, eps_placement }
            }
            Optimizer::Adagrad(AdagradConfig {
                lr,
                initial_accumulator,
                eps,
                weight_decay,
                schedule,
                eps_placement,
            }) => {
                let (schedule, eps_placement) = (schedule.into(), eps_placement.into());
                SavedOptimizer::Adagrad { lr, initial_accumulator, eps, weight_decay, schedule, eps_placement }
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
            SavedOptimizer::RmsProp { lr, rho, eps, momentum, weight_decay, schedule, eps_placement } => {
                let (schedule, eps_placement) = (schedule.into(), eps_placement.into());
                Optimizer::RmsProp(RmsPropConfig { lr, rho, eps, momentum, weight_decay, schedule, eps_placement })
            }
            SavedOptimizer::Adagrad { lr, initial_accumulator, eps, weight_decay, schedule, eps_placement } => {
                let (schedule, eps_placement) = (schedule.into(), eps_placement.into());
                Optimizer::Adagrad(AdagradConfig {
                    lr,
                    initial_accumulator,
                    eps,
                    weight_decay,
                    schedule,
                    eps_placement,
                })
            }
            SavedOptimizer::Adadelta { lr, rho, eps, weight_decay, schedule } => {
                Optimizer::Adadelta(AdadeltaConfig { lr, rho, eps, weight_decay, schedule: schedule.into() })
            }
        }
    }
}
