//! The update rules a model is compiled with, and their Keras-style constructors.

use super::*;
use crate::config::optimizer::{EpsPlacement, LrSchedule};
use crate::config::UpdateRule;

/// The update rule, with its hyper-parameters. The formulas are PyTorch's, with Keras' placement
/// of ε as an option ([`EpsPlacement`]); each config documents its formula and has `torch(lr)`
/// and `keras(lr)` presets with that library's defaults and formula
/// (`Optimizer::RmsProp(RmsPropConfig::keras(1e-3))` updates as Keras' `RMSprop()` does).
/// The short constructors below ([`Optimizer::adam`], …) take Keras' default hyper-parameters in
/// PyTorch's formula, as wgnn always has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    Sgd(SgdConfig),
    /// Adam; `weight_decay` is an L2 penalty added to the gradient.
    Adam(AdamConfig),
    /// Adam with decoupled weight decay (p ← p·(1 − lr·wd) before the Adam step).
    AdamW(AdamConfig),
    RmsProp(RmsPropConfig),
    Adagrad(AdagradConfig),
    Adadelta(AdadeltaConfig),
}

impl Optimizer {
    /// Adam with Keras' defaults (β1 0.9, β2 0.999, ε 1e-7) in PyTorch's formula (ε added to
    /// √v̂). Keras' own: `Optimizer::Adam(AdamConfig::keras(lr))`; PyTorch's (ε 1e-8):
    /// `AdamConfig::torch(lr)`.
    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::Adam(AdamConfig { eps_placement: EpsPlacement::Torch, ..AdamConfig::keras(lr) })
    }
    /// This rule with its learning rate following `schedule` (Keras' `learning_rate=` schedule).
    pub fn with_schedule(self, schedule: LrSchedule) -> Optimizer {
        match self {
            Optimizer::Sgd(c) => Optimizer::Sgd(SgdConfig { schedule, ..c }),
            Optimizer::Adam(c) => Optimizer::Adam(AdamConfig { schedule, ..c }),
            Optimizer::AdamW(c) => Optimizer::AdamW(AdamConfig { schedule, ..c }),
            Optimizer::RmsProp(c) => Optimizer::RmsProp(RmsPropConfig { schedule, ..c }),
            Optimizer::Adagrad(c) => Optimizer::Adagrad(AdagradConfig { schedule, ..c }),
            Optimizer::Adadelta(c) => Optimizer::Adadelta(AdadeltaConfig { schedule, ..c }),
        }
    }
    /// AdamW with decoupled weight decay `weight_decay` (Keras' default 0.004, PyTorch's 0.01),
    /// otherwise [`Optimizer::adam`]'s settings.
    pub fn adamw(lr: f32, weight_decay: f32) -> Optimizer {
        match Optimizer::adam(lr) {
            Optimizer::Adam(c) => Optimizer::AdamW(AdamConfig { weight_decay, ..c }),
            other => other,
        }
    }
    /// RMSprop with Keras' ρ 0.9 and ε 1e-7, no momentum, in PyTorch's formula (ε outside the
    /// root: g/(√sq + ε)). Keras' own, g/√(sq + ε): `RmsPropConfig::keras(lr)`; PyTorch's
    /// defaults (ρ 0.99, ε 1e-8): `RmsPropConfig::torch(lr)`.
    pub fn rmsprop(lr: f32) -> Optimizer {
        Optimizer::RmsProp(RmsPropConfig { eps_placement: EpsPlacement::Torch, ..RmsPropConfig::keras(lr) })
    }
    /// Adagrad with Keras' initial accumulator 0.1 and ε 1e-7, in PyTorch's formula (ε outside
    /// the root). Keras' own: `AdagradConfig::keras(lr)`; PyTorch's (accumulator 0, ε 1e-10):
    /// `AdagradConfig::torch(lr)`.
    pub fn adagrad(lr: f32) -> Optimizer {
        Optimizer::Adagrad(AdagradConfig { eps_placement: EpsPlacement::Torch, ..AdagradConfig::keras(lr) })
    }
    /// Adadelta with Keras' ρ 0.95 and ε 1e-7 (the formula is both libraries'). `lr` scales the
    /// step, which already has the weights' units: PyTorch's default, and the paper's, is 1.0;
    /// Keras' 0.001 moves the weights a thousandth as far.
    pub fn adadelta(lr: f32) -> Optimizer {
        Optimizer::Adadelta(AdadeltaConfig::keras(lr))
    }
    /// Plain SGD with optional momentum.
    pub fn sgd(lr: f32, momentum: f32) -> Optimizer {
        Optimizer::Sgd(SgdConfig { momentum, ..SgdConfig::torch(lr) })
    }
    /// The optimizer named `name` (Keras' names: `sgd`, `adam`, `adamw`, `rmsprop`, `adagrad`,
    /// `adadelta`; any case) with learning rate `lr` and the constructors' defaults (SGD without
    /// momentum, AdamW's weight decay 0.004 as in Keras).
    pub fn by_name(name: &str, lr: f32) -> Result<Optimizer> {
        match name.trim().to_lowercase().as_str() {
            "sgd" => Ok(Optimizer::sgd(lr, 0.0)),
            "adam" => Ok(Optimizer::adam(lr)),
            "adamw" => Ok(Optimizer::adamw(lr, 0.004)),
            "rmsprop" => Ok(Optimizer::rmsprop(lr)),
            "adagrad" => Ok(Optimizer::adagrad(lr)),
            "adadelta" => Ok(Optimizer::adadelta(lr)),
            _ => Err(WgnnError::invalid(
                "optimizer",
                format!("unknown optimizer {name:?}; known: sgd, adam, adamw, rmsprop, adagrad, adadelta"),
            )),
        }
    }

    pub(super) fn lr(&self) -> f32 {
        match self {
            Optimizer::Sgd(c) => c.lr,
            Optimizer::Adam(c) | Optimizer::AdamW(c) => c.lr,
            Optimizer::RmsProp(c) => c.lr,
            Optimizer::Adagrad(c) => c.lr,
            Optimizer::Adadelta(c) => c.lr,
        }
    }
    /// An error naming the update kernel unless every hyper-parameter is in range.
    pub(super) fn validate(&self) -> Result<()> {
        match self {
            Optimizer::Sgd(c) => c.validate(),
            Optimizer::Adam(c) => c.validate(),
            Optimizer::AdamW(c) => c.validate_for("adamw_update"),
            Optimizer::RmsProp(c) => c.validate(),
            Optimizer::Adagrad(c) => c.validate(),
            Optimizer::Adadelta(c) => c.validate(),
        }
    }
    /// How many state tensors of the parameters' size the rule keeps: SGD's velocity, Adam's m
    /// and v, RMSprop's square average (and momentum buffer), Adagrad's sum, Adadelta's square
    /// average and accumulated delta.
    pub(crate) fn state_slots(&self) -> usize {
        self.rule().state_slots()
    }
    /// The rule as the update kernels and their CPU reference take it.
    pub(crate) fn rule(&self) -> UpdateRule {
        match *self {
            Optimizer::Sgd(c) => UpdateRule::Sgd(c),
            Optimizer::Adam(c) => UpdateRule::Adam(c),
            Optimizer::AdamW(c) => UpdateRule::AdamW(c),
            Optimizer::RmsProp(c) => UpdateRule::RmsProp(c),
            Optimizer::Adagrad(c) => UpdateRule::Adagrad(c),
            Optimizer::Adadelta(c) => UpdateRule::Adadelta(c),
        }
    }
}
