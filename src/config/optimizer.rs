//! Optimizer hyper-parameters and the learning-rate schedule: what the update kernels
//! (`crate::kernels::optimizer`) and their CPU reference (`crate::cpu::optimizer`) both take.
//! [`LrSchedule::lr_at`] is the host reference of the rate the GPU computes from the step tensor.
//!
//! Whose conventions: every update is PyTorch's formula (`torch.optim`), with two switches where
//! Keras' formula differs: [`EpsPlacement`] (Adam, RMSprop, Adagrad) and nothing else that
//! matters at a constant rate without weight decay. Each config has `torch(lr)` and `keras(lr)`
//! presets with that library's defaults and formula, so a script ported from either gives the
//! same updates; the remaining differences are named in each preset's doc (Keras' `weight_decay`
//! is decoupled for every optimizer, and Keras folds lr into SGD's and RMSprop's momentum buffer,
//! which only differs from PyTorch's when the rate changes).

use super::hyper;
use crate::error::{Result, WgnnError};

/// How the learning rate changes with the update count, PyTorch/Keras definitions. Each is a
/// function of k = t − 1, the number of updates before update t (so update 1 uses the base rate).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum LrSchedule {
    /// lr.
    #[default]
    Constant,
    /// lr · gamma^⌊k / every⌋ (PyTorch `StepLR`, counted in updates).
    Step { every: u32, gamma: f32 },
    /// lr · decay_rate^(k / decay_steps), continuous (Keras `ExponentialDecay`, staircase=False).
    Exponential { decay_steps: u32, decay_rate: f32 },
    /// min_lr + (lr − min_lr)·(1 + cos(π·min(k, T)/T))/2 with T = total_steps: from lr down to
    /// min_lr, then held there (Keras `CosineDecay` with alpha = min_lr/lr; PyTorch's
    /// `CosineAnnealingLR` with eta_min = min_lr agrees for k ≤ T).
    Cosine { total_steps: u32, min_lr: f32 },
    /// Linear warmup, then cosine (nanoGPT's `get_lr`): lr·(k + 1)/W for k < W = warmup_steps,
    /// then min_lr + (lr − min_lr)·(1 + cos(π·(min(k, T) − W)/(T − W)))/2 with T = total_steps,
    /// so the rate reaches lr at update W and min_lr at update T + 1, and is held there.
    /// (nanoGPT's current code divides by W + 1 in the warmup, which never quite reaches lr;
    /// here the last warmup update uses lr, as Keras' `CosineDecay(warmup_steps=…)` does.)
    /// `warmup_steps` 0 is [`LrSchedule::Cosine`].
    WarmupCosine { warmup_steps: u32, total_steps: u32, min_lr: f32 },
}

impl LrSchedule {
    /// The learning rate of update `t` (1-based, as in the step tensor; 0 is taken as 1), from the
    /// base rate: computed in f64 and rounded once, the reference the GPU's f32 computation is held
    /// to (within 1e-6 relative, tests/optimizer_precision.rs).
    pub fn lr_at(&self, base_lr: f32, t: u32) -> f32 {
        let k = t.max(1) - 1;
        let lr = base_lr as f64;
        let scaled = match *self {
            LrSchedule::Constant => return base_lr,
            LrSchedule::Step { every, gamma } => lr * (gamma as f64).powf((k / every.max(1)) as f64),
            LrSchedule::Exponential { decay_steps, decay_rate } => {
                lr * (decay_rate as f64).powf(k as f64 / decay_steps.max(1) as f64)
            }
            LrSchedule::Cosine { total_steps, min_lr } => {
                let total = total_steps.max(1);
                let frac = k.min(total) as f64 / total as f64;
                let min_lr = min_lr as f64;
                min_lr + (lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
            }
            LrSchedule::WarmupCosine { warmup_steps, total_steps, min_lr } => {
                if k < warmup_steps {
                    lr * (k + 1) as f64 / warmup_steps as f64
                } else {
                    let span = total_steps.saturating_sub(warmup_steps).max(1);
                    let frac = (k.min(total_steps) - warmup_steps) as f64 / span as f64;
                    let min_lr = min_lr as f64;
                    min_lr + (lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
                }
            }
        };
        scaled as f32
    }

    /// An error naming `op` unless the numbers fit the schedule: every, decay_steps, total_steps
    /// ≥ 1; warmup_steps < total_steps; gamma, decay_rate > 0; 0 ≤ min_lr ≤ base_lr; all finite.
    pub fn validate(&self, op: &str, base_lr: f32) -> Result<()> {
        let positive_steps = |name: &str, n: u32| {
            if n == 0 {
                return Err(WgnnError::invalid(op, format!("schedule {name} = 0 must be at least 1")));
            }
            Ok(())
        };
        let min_lr_in_range = |min_lr: f32| {
            hyper(op, "schedule min_lr", min_lr, &format!("in [0, lr = {base_lr}]"), (0.0..=base_lr).contains(&min_lr))
        };
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { every, gamma } => {
                positive_steps("every", every)?;
                hyper(op, "schedule gamma", gamma, "> 0", gamma > 0.0)
            }
            LrSchedule::Exponential { decay_steps, decay_rate } => {
                positive_steps("decay_steps", decay_steps)?;
                hyper(op, "schedule decay_rate", decay_rate, "> 0", decay_rate > 0.0)
            }
            LrSchedule::Cosine { total_steps, min_lr } => {
                positive_steps("total_steps", total_steps)?;
                min_lr_in_range(min_lr)
            }
            LrSchedule::WarmupCosine { warmup_steps, total_steps, min_lr } => {
                positive_steps("total_steps", total_steps)?;
                if warmup_steps >= total_steps {
                    return Err(WgnnError::invalid(
                        op,
                        format!(
                            "schedule warmup_steps = {warmup_steps} must be less than total_steps = {total_steps} \
                             (the cosine needs at least one update)"
                        ),
                    ));
                }
                min_lr_in_range(min_lr)
            }
        }
    }
}

/// Where ε enters an adaptive update's denominator: the one place PyTorch's and Keras' formulas
/// for Adam, RMSprop and Adagrad differ with the same hyper-parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EpsPlacement {
    /// PyTorch's: added to the root of the (bias-corrected) average, √v̂ + ε.
    #[default]
    Torch,
    /// Keras': RMSprop and Adagrad divide by √(v + ε); Adam adds ε to √v before the bias
    /// correction, i.e. √v̂ + ε/√(1 − β2^t) (the Adam paper's ε̂).
    Keras,
}

/// Which parameters Adam's and AdamW's weight decay applies to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecayMask {
    /// Every parameter: PyTorch's and Keras' default for an optimizer given all the weights.
    #[default]
    All,
    /// Only tensors of two or more dimensions (dense and convolution kernels, embeddings), not
    /// biases, batch- or layer-norm gains and offsets: nanoGPT's `configure_optimizers`. The
    /// model builds the mask from its layers; a kernel call takes it as a tensor
    /// ([`UpdateExtras::decay_mask`](crate::kernels::optimizer::UpdateExtras)).
    Matrices,
}

/// Stochastic gradient descent, PyTorch's definition (dampening 0):
/// g = grad + weight_decay·p; with momentum μ: buf = μ·buf + g (buf = g at the first update) and
/// g = nesterov ? g + μ·buf : buf; then p −= lr·g.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    /// L2 penalty added to the gradient: g + weight_decay · param.
    pub weight_decay: f32,
    pub schedule: LrSchedule,
}

impl SgdConfig {
    /// PyTorch's `SGD(lr)` defaults: no momentum, no weight decay.
    pub fn torch(lr: f32) -> SgdConfig {
        SgdConfig { lr, momentum: 0.0, nesterov: false, weight_decay: 0.0, schedule: LrSchedule::Constant }
    }
    /// Keras' `SGD(learning_rate)` defaults (lr 0.01 there): the same as PyTorch's. Keras keeps
    /// v = μ·v − lr·g, p += v (lr inside the velocity): the same updates at a constant rate, not
    /// under a schedule; its `weight_decay` is decoupled (p −= lr·wd·p), not this L2 term.
    pub fn keras(lr: f32) -> SgdConfig {
        SgdConfig::torch(lr)
    }
    /// An error naming `sgd_update` unless lr > 0, 0 ≤ momentum < 1, weight_decay ≥ 0, all finite,
    /// nesterov only with momentum, and the schedule valid.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "sgd_update";
        hyper(OP, "lr", self.lr, "> 0", self.lr > 0.0)?;
        hyper(OP, "momentum", self.momentum, "in [0, 1)", (0.0..1.0).contains(&self.momentum))?;
        hyper(OP, "weight_decay", self.weight_decay, ">= 0", self.weight_decay >= 0.0)?;
        if self.nesterov && self.momentum == 0.0 {
            return Err(WgnnError::invalid(OP, "nesterov needs momentum > 0"));
        }
        self.schedule.validate(OP, self.lr)
    }
}

/// Adam, PyTorch's definition: g = grad + weight_decay·p (L2; `adamw_update` instead applies
/// p ← p·(1 − lr·weight_decay) first, PyTorch's and Keras' `AdamW`), m = β1·m + (1 − β1)·g,
/// v = β2·v + (1 − β2)·g², p −= lr·m̂/(√v̂ + ε) with m̂ = m/(1 − β1^t), v̂ = v/(1 − β2^t), or
/// Keras' ε placement ([`EpsPlacement`]).
/// [`adam_update`](crate::kernels::optimizer::adam_update),
/// [`adamw_update`](crate::kernels::optimizer::adamw_update).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub schedule: LrSchedule,
    pub eps_placement: EpsPlacement,
    /// Which parameters `weight_decay` applies to ([`DecayMask::All`] in both presets).
    pub decay: DecayMask,
}

impl AdamConfig {
    /// PyTorch's `Adam(lr)`: β1 0.9, β2 0.999, ε 1e-8 added to √v̂ (lr 1e-3 there).
    pub fn torch(lr: f32) -> AdamConfig {
        AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: LrSchedule::Constant,
            eps_placement: EpsPlacement::Torch,
            decay: DecayMask::All,
        }
    }
    /// Keras' `Adam(learning_rate)`: β1 0.9, β2 0.999, ε 1e-7 added to √v before the bias
    /// correction (lr 1e-3 there). For `AdamW`, set `weight_decay` (Keras' default 0.004).
    pub fn keras(lr: f32) -> AdamConfig {
        AdamConfig { eps: 1e-7, eps_placement: EpsPlacement::Keras, ..AdamConfig::torch(lr) }
    }
    /// An error naming `op` (`adam_update` or `adamw_update`) unless lr > 0, betas in [0, 1),
    /// eps > 0, weight_decay ≥ 0, all finite, and the schedule valid.
    pub fn validate_for(&self, op: &str) -> Result<()> {
        hyper(op, "lr", self.lr, "> 0", self.lr > 0.0)?;
        hyper(op, "beta1", self.beta1, "in [0, 1)", (0.0..1.0).contains(&self.beta1))?;
        hyper(op, "beta2", self.beta2, "in [0, 1)", (0.0..1.0).contains(&self.beta2))?;
        hyper(op, "eps", self.eps, "> 0", self.eps > 0.0)?;
        hyper(op, "weight_decay", self.weight_decay, ">= 0", self.weight_decay >= 0.0)?;
        self.schedule.validate(op, self.lr)
    }
    /// [`AdamConfig::validate_for`] naming `adam_update`.
    pub fn validate(&self) -> Result<()> {
        self.validate_for("adam_update")
    }
}

/// RMSprop, PyTorch's definition, not centered: g = grad + weight_decay·p,
/// sq = ρ·sq + (1 − ρ)·g², d = g/(√sq + ε) (Keras: g/√(sq + ε), [`EpsPlacement`]); with momentum
/// μ: buf = μ·buf + d, p −= lr·buf; else p −= lr·d.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    pub lr: f32,
    /// ρ (PyTorch's alpha): decay of the square average. PyTorch 0.99, Keras 0.9.
    pub rho: f32,
    pub eps: f32,
    /// 0 for none; else a momentum buffer of g/(√sq + eps).
    pub momentum: f32,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
    pub schedule: LrSchedule,
    pub eps_placement: EpsPlacement,
}

impl RmsPropConfig {
    /// PyTorch's `RMSprop(lr)`: α (ρ) 0.99, ε 1e-8 outside the root, no momentum (lr 1e-2 there).
    pub fn torch(lr: f32) -> RmsPropConfig {
        RmsPropConfig {
            lr,
            rho: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            weight_decay: 0.0,
            schedule: LrSchedule::Constant,
            eps_placement: EpsPlacement::Torch,
        }
    }
    /// Keras' `RMSprop(learning_rate)`: ρ 0.9, ε 1e-7 inside the root, no momentum (lr 1e-3
    /// there). With momentum Keras keeps lr inside the buffer: the same at a constant rate.
    pub fn keras(lr: f32) -> RmsPropConfig {
        RmsPropConfig { rho: 0.9, eps: 1e-7, eps_placement: EpsPlacement::Keras, ..RmsPropConfig::torch(lr) }
    }
    /// An error naming `rmsprop_update` unless lr > 0, rho and momentum in [0, 1), eps > 0,
    /// weight_decay ≥ 0, all finite, and the schedule valid.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "rmsprop_update";
        hyper(OP, "lr", self.lr, "> 0", self.lr > 0.0)?;
        hyper(OP, "rho", self.rho, "in [0, 1)", (0.0..1.0).contains(&self.rho))?;
        hyper(OP, "eps", self.eps, "> 0", self.eps > 0.0)?;
        hyper(OP, "momentum", self.momentum, "in [0, 1)", (0.0..1.0).contains(&self.momentum))?;
        hyper(OP, "weight_decay", self.weight_decay, ">= 0", self.weight_decay >= 0.0)?;
        self.schedule.validate(OP, self.lr)
    }
}

/// Adagrad, PyTorch's definition (no lr_decay): g = grad + weight_decay·p, sum = sum + g²
/// (starting from `initial_accumulator`), p −= lr·g/(√sum + ε) (Keras: g/√(sum + ε),
/// [`EpsPlacement`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdagradConfig {
    pub lr: f32,
    /// The accumulator's value before update 1 (PyTorch 0, Keras 0.1). The kernel uses it in
    /// place of the state at t = 1, so the state tensor may start at anything.
    pub initial_accumulator: f32,
    pub eps: f32,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
    pub schedule: LrSchedule,
    pub eps_placement: EpsPlacement,
}

impl AdagradConfig {
    /// PyTorch's `Adagrad(lr)`: initial accumulator 0, ε 1e-10 outside the root (lr 1e-2 there).
    pub fn torch(lr: f32) -> AdagradConfig {
        AdagradConfig {
            lr,
            initial_accumulator: 0.0,
            eps: 1e-10,
            weight_decay: 0.0,
            schedule: LrSchedule::Constant,
            eps_placement: EpsPlacement::Torch,
        }
    }
    /// Keras' `Adagrad(learning_rate)`: initial accumulator 0.1, ε 1e-7 inside the root (lr 1e-3
    /// there).
    pub fn keras(lr: f32) -> AdagradConfig {
        AdagradConfig {
            initial_accumulator: 0.1,
            eps: 1e-7,
            eps_placement: EpsPlacement::Keras,
            ..AdagradConfig::torch(lr)
        }
    }
    /// An error naming `adagrad_update` unless lr > 0, initial_accumulator ≥ 0, eps > 0,
    /// weight_decay ≥ 0, all finite, and the schedule valid.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "adagrad_update";
        hyper(OP, "lr", self.lr, "> 0", self.lr > 0.0)?;
        hyper(OP, "initial_accumulator", self.initial_accumulator, ">= 0", self.initial_accumulator >= 0.0)?;
        hyper(OP, "eps", self.eps, "> 0", self.eps > 0.0)?;
        hyper(OP, "weight_decay", self.weight_decay, ">= 0", self.weight_decay >= 0.0)?;
        self.schedule.validate(OP, self.lr)
    }
}

/// Adadelta, PyTorch's and Keras' formula (they agree): g = grad + weight_decay·p,
/// v = ρ·v + (1 − ρ)·g², δ = √(u + ε)/√(v + ε)·g, u = ρ·u + (1 − ρ)·δ², p −= lr·δ.
/// `lr` scales the step δ, which already has the parameters' units: PyTorch's default lr is 1.0
/// (the Adadelta paper's update), Keras' 0.001, which moves the weights a thousandth as far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdadeltaConfig {
    pub lr: f32,
    pub rho: f32,
    pub eps: f32,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
    pub schedule: LrSchedule,
}

impl AdadeltaConfig {
    /// PyTorch's `Adadelta(lr)`: ρ 0.9, ε 1e-6 (lr 1.0 there).
    pub fn torch(lr: f32) -> AdadeltaConfig {
        AdadeltaConfig { lr, rho: 0.9, eps: 1e-6, weight_decay: 0.0, schedule: LrSchedule::Constant }
    }
    /// Keras' `Adadelta(learning_rate)`: ρ 0.95, ε 1e-7 (lr 0.001 there).
    pub fn keras(lr: f32) -> AdadeltaConfig {
        AdadeltaConfig { rho: 0.95, eps: 1e-7, ..AdadeltaConfig::torch(lr) }
    }
    /// An error naming `adadelta_update` unless lr > 0, rho in [0, 1), eps > 0, weight_decay ≥ 0,
    /// all finite, and the schedule valid.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "adadelta_update";
        hyper(OP, "lr", self.lr, "> 0", self.lr > 0.0)?;
        hyper(OP, "rho", self.rho, "in [0, 1)", (0.0..1.0).contains(&self.rho))?;
        hyper(OP, "eps", self.eps, "> 0", self.eps > 0.0)?;
        hyper(OP, "weight_decay", self.weight_decay, ">= 0", self.weight_decay >= 0.0)?;
        self.schedule.validate(OP, self.lr)
    }
}
