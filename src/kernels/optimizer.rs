//! GPU wrapper of shaders/optimizer.wgsl; CPU reference in src/cpu/optimizer.rs.
//!
//! Every update takes an [`LrSchedule`] in its config: the rate of update t is computed on the GPU
//! from the step tensor, so a scheduled run needs no per-step upload. [`LrSchedule::lr_at`] is the
//! host reference. Where an update does not otherwise read t (SGD, RMSprop, Adadelta) the step
//! tensor is optional, and required only for a schedule other than [`LrSchedule::Constant`].
//!
//! A step tensor of two values, [t, skip] (the counters [`super::step_guard::guard_step`] keeps),
//! makes the update conditional: it changes nothing when skip ≠ 0.

use super::check::{disjoint, expect_len, hyper};
use super::{dispatch, grid_1d, Access, Constant, KernelFamily, Plan};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::tensor::{DType, Tensor};

const OPTIMIZER_WGSL: &str = include_str!("../../shaders/optimizer.wgsl");

/// f32 values (PER_LANE per invocation): any length, any view offset.
pub(crate) const OPTIMIZER: KernelFamily = KernelFamily {
    name: "optimizer",
    sources: &["alias V = f32;\n", OPTIMIZER_WGSL],
    storage: &[Access::ReadWrite; 5],
};

/// vec4 values (PER_LANE per invocation), vec4 loads and stores: where the length and every view's offset
/// are multiples of 4 floats (the model's flat parameter buffer is padded to that). On lavapipe a
/// vec4 load costs what a scalar one does, so this moves ~4× the bytes per load.
pub(crate) const OPTIMIZER_VEC4: KernelFamily = KernelFamily {
    name: "optimizer_vec4",
    sources: &["alias V = vec4<f32>;\n", OPTIMIZER_WGSL],
    storage: &[Access::ReadWrite; 5],
};

const WG: u32 = 256;
/// Values (f32 or vec4) each invocation updates: `PER_LANE` in optimizer.wgsl.
const PER_LANE: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct OptimizerParams {
    len: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    sched_steps: u32,
    sched_value: f32,
    _pad: [u32; 3],
}

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
}

impl LrSchedule {
    /// The learning rate of update `t` (1-based, as in the step tensor; 0 is taken as 1), from the
    /// base rate. The CPU reference of the GPU's computation (which uses the same f32 formulas; its
    /// pow and cos may differ in the last bits).
    pub fn lr_at(&self, base_lr: f32, t: u32) -> f32 {
        let k = t.max(1) - 1;
        match *self {
            LrSchedule::Constant => base_lr,
            LrSchedule::Step { every, gamma } => base_lr * gamma.powi((k / every.max(1)) as i32),
            LrSchedule::Exponential { decay_steps, decay_rate } => {
                base_lr * decay_rate.powf(k as f32 / decay_steps.max(1) as f32)
            }
            LrSchedule::Cosine { total_steps, min_lr } => {
                let total = total_steps.max(1);
                let frac = k.min(total) as f32 / total as f32;
                min_lr + (base_lr - min_lr) * 0.5 * (1.0 + (std::f32::consts::PI * frac).cos())
            }
        }
    }

    /// An error naming `op` unless the numbers fit the schedule: every, decay_steps, total_steps
    /// ≥ 1; gamma, decay_rate > 0; 0 ≤ min_lr ≤ base_lr; all finite.
    pub fn validate(&self, op: &str, base_lr: f32) -> Result<()> {
        let positive_steps = |name: &str, n: u32| {
            if n == 0 {
                return Err(WgnnError::invalid(op, format!("schedule {name} = 0 must be at least 1")));
            }
            Ok(())
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
                hyper(
                    op,
                    "schedule min_lr",
                    min_lr,
                    &format!("in [0, lr = {base_lr}]"),
                    (0.0..=base_lr).contains(&min_lr),
                )
            }
        }
    }

    /// (SCHEDULE override, sched_steps, sched_value).
    fn encode(&self) -> (u32, u32, f32) {
        match *self {
            LrSchedule::Constant => (0, 1, 0.0),
            LrSchedule::Step { every, gamma } => (1, every, gamma),
            LrSchedule::Exponential { decay_steps, decay_rate } => (2, decay_steps, decay_rate),
            LrSchedule::Cosine { total_steps, min_lr } => (3, total_steps, min_lr),
        }
    }
}

/// Stochastic gradient descent, PyTorch's definition (dampening 0).
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

/// Adam, PyTorch's definition: bias-corrected moments. [`adam_update`] adds weight decay to the
/// gradient (L2); [`adamw_update`] applies it decoupled, p ← p·(1 − lr·weight_decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub schedule: LrSchedule,
}

impl AdamConfig {
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

/// RMSprop, PyTorch's definition (eps outside the square root; Keras puts it inside), not centered.
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
}

impl RmsPropConfig {
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

/// Adagrad, PyTorch's definition (eps outside the square root; no lr_decay).
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
}

impl AdagradConfig {
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

/// Adadelta, PyTorch's definition (lr scales the step; PyTorch's default lr is 1.0, Keras' 0.001).
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

/// param −= lr · (grad + wd·param), through the velocity when momentum ≠ 0.  param, grad,
/// velocity: `[len]` f32. `velocity` is required iff momentum ≠ 0, and must start at zero. With a
/// schedule other than `Constant`, use [`sgd_update_with_step`].
pub fn sgd_update(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    velocity: Option<&Tensor>,
    cfg: &SgdConfig,
) -> Result<Plan> {
    sgd_update_with_step(gpu, param, grad, velocity, None, cfg)
}

/// A momentum state tensor is given exactly when momentum is non-zero; it must match param.
fn momentum_state<'a>(
    op: &str,
    name: &'static str,
    state: Option<&'a Tensor>,
    momentum: f32,
    len: usize,
    named: &mut Vec<(&'static str, &'a Tensor)>,
) -> Result<()> {
    match (state, momentum != 0.0) {
        (Some(t), true) => {
            expect_len(op, name, t, DType::F32, len, &format!("[{len}] like param"))?;
            named.push((name, t));
            Ok(())
        }
        (None, false) => Ok(()),
        (None, true) => Err(WgnnError::invalid(op, format!("momentum = {momentum} needs a {name} tensor"))),
        (Some(_), false) => Err(WgnnError::invalid(op, format!("a {name} tensor was given but momentum is 0"))),
    }
}

/// [`sgd_update`] with an optional step: `[1]` u32 holding t, needed (only) by a schedule.
pub fn sgd_update_with_step(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    velocity: Option<&Tensor>,
    step: Option<&Tensor>,
    cfg: &SgdConfig,
) -> Result<Plan> {
    const OP: &str = "sgd_update";
    cfg.validate()?;
    let len = check_param_grad(OP, param, grad)?;
    let mut named = vec![("param", param), ("grad", grad)];
    momentum_state(OP, "velocity", velocity, cfg.momentum, len, &mut named)?;
    let step = schedule_step(OP, step, &cfg.schedule, false)?;
    let params = OptimizerParams {
        nesterov: cfg.nesterov as u32,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let states = [velocity, None];
    update(gpu, OP, param, grad, states, step, named, len, cfg.lr, &cfg.schedule, params, velocity.is_some())
}

/// One Adam update in place (weight decay as L2 on the gradient).  param, grad, m, v: `[len]` f32
/// (m and v start at zero); step: `[1]` u32 holding t, the 1-based number of this update, written by
/// the caller before the dispatch and only read here (t = 0 is taken as 1).
pub fn adam_update(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &Tensor,
    cfg: &AdamConfig,
) -> Result<Plan> {
    adam_family(gpu, "adam_update", param, grad, m, v, step, cfg)
}

/// One AdamW update in place: p ← p·(1 − lr·weight_decay), then Adam's update of the plain
/// gradient (PyTorch's `AdamW`; Keras' `AdamW`). The tensors are [`adam_update`]'s.
pub fn adamw_update(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &Tensor,
    cfg: &AdamConfig,
) -> Result<Plan> {
    adam_family(gpu, "adamw_update", param, grad, m, v, step, cfg)
}

#[allow(clippy::too_many_arguments)]
fn adam_family(
    gpu: &Gpu,
    op: &'static str,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &Tensor,
    cfg: &AdamConfig,
) -> Result<Plan> {
    cfg.validate_for(op)?;
    let len = check_param_grad(op, param, grad)?;
    expect_len(op, "m", m, DType::F32, len, &format!("[{len}] like param"))?;
    expect_len(op, "v", v, DType::F32, len, &format!("[{len}] like param"))?;
    let step = schedule_step(op, Some(step), &cfg.schedule, true)?;
    let named = vec![("param", param), ("grad", grad), ("m", m), ("v", v)];
    let params = OptimizerParams {
        momentum: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    update(gpu, op, param, grad, [Some(m), Some(v)], step, named, len, cfg.lr, &cfg.schedule, params, false)
}

/// One RMSprop update in place.  param, grad, square_avg: `[len]` f32; momentum_buf: `[len]` f32,
/// required iff momentum ≠ 0; all state starts at zero. step: `[1]` u32 holding t, needed (only)
/// by a schedule.
pub fn rmsprop_update(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    square_avg: &Tensor,
    momentum_buf: Option<&Tensor>,
    step: Option<&Tensor>,
    cfg: &RmsPropConfig,
) -> Result<Plan> {
    const OP: &str = "rmsprop_update";
    cfg.validate()?;
    let len = check_param_grad(OP, param, grad)?;
    expect_len(OP, "square_avg", square_avg, DType::F32, len, &format!("[{len}] like param"))?;
    let mut named = vec![("param", param), ("grad", grad), ("square_avg", square_avg)];
    momentum_state(OP, "momentum_buf", momentum_buf, cfg.momentum, len, &mut named)?;
    let step = schedule_step(OP, step, &cfg.schedule, false)?;
    let params = OptimizerParams {
        momentum: cfg.momentum,
        beta2: cfg.rho,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let states = [Some(square_avg), momentum_buf];
    update(gpu, OP, param, grad, states, step, named, len, cfg.lr, &cfg.schedule, params, momentum_buf.is_some())
}

/// One Adagrad update in place.  param, grad, sum: `[len]` f32 (at t = 1 the kernel takes the sum
/// to be `initial_accumulator`, whatever the tensor holds); step: `[1]` u32 holding t.
pub fn adagrad_update(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    sum: &Tensor,
    step: &Tensor,
    cfg: &AdagradConfig,
) -> Result<Plan> {
    const OP: &str = "adagrad_update";
    cfg.validate()?;
    let len = check_param_grad(OP, param, grad)?;
    expect_len(OP, "sum", sum, DType::F32, len, &format!("[{len}] like param"))?;
    let step = schedule_step(OP, Some(step), &cfg.schedule, true)?;
    let named = vec![("param", param), ("grad", grad), ("sum", sum)];
    let params = OptimizerParams {
        beta2: cfg.initial_accumulator,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    update(gpu, OP, param, grad, [Some(sum), None], step, named, len, cfg.lr, &cfg.schedule, params, false)
}

/// One Adadelta update in place.  param, grad, square_avg, acc_delta: `[len]` f32, the state
/// starting at zero; step: `[1]` u32 holding t, needed (only) by a schedule.
pub fn adadelta_update(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    square_avg: &Tensor,
    acc_delta: &Tensor,
    step: Option<&Tensor>,
    cfg: &AdadeltaConfig,
) -> Result<Plan> {
    const OP: &str = "adadelta_update";
    cfg.validate()?;
    let len = check_param_grad(OP, param, grad)?;
    expect_len(OP, "square_avg", square_avg, DType::F32, len, &format!("[{len}] like param"))?;
    expect_len(OP, "acc_delta", acc_delta, DType::F32, len, &format!("[{len}] like param"))?;
    let step = schedule_step(OP, step, &cfg.schedule, false)?;
    let named = vec![("param", param), ("grad", grad), ("square_avg", square_avg), ("acc_delta", acc_delta)];
    let params = OptimizerParams { beta2: cfg.rho, eps: cfg.eps, weight_decay: cfg.weight_decay, ..Default::default() };
    let states = [Some(square_avg), Some(acc_delta)];
    update(gpu, OP, param, grad, states, step, named, len, cfg.lr, &cfg.schedule, params, false)
}

/// Checks the step tensor: [1] u32 where given; required when the rule reads t (`rule_reads_t`)
/// or the schedule is not constant.
fn schedule_step<'a>(
    op: &str,
    step: Option<&'a Tensor>,
    schedule: &LrSchedule,
    rule_reads_t: bool,
) -> Result<Option<&'a Tensor>> {
    match step {
        // [t], or [t, skip] for an update that step_guard may skip.
        Some(s) if s.len() == 2 => {
            expect_len(op, "step", s, DType::U32, 2, "[1] or [2]")?;
            Ok(Some(s))
        }
        Some(s) => {
            expect_len(op, "step", s, DType::U32, 1, "[1] or [2] (t, skip)")?;
            Ok(Some(s))
        }
        None if rule_reads_t || *schedule != LrSchedule::Constant => {
            Err(WgnnError::invalid(op, format!("the schedule {schedule:?} needs a step tensor ([1] u32 holding t)")))
        }
        None => Ok(None),
    }
}

/// Fills the uniform's shared fields, checks that no two tensors share memory, and builds the
/// dispatch of entry `op`.
#[allow(clippy::too_many_arguments)]
fn update<'a>(
    gpu: &Gpu,
    op: &'static str,
    param: &'a Tensor,
    grad: &'a Tensor,
    states: [Option<&'a Tensor>; 2],
    step: Option<&'a Tensor>,
    mut named: Vec<(&'a str, &'a Tensor)>,
    len: usize,
    lr: f32,
    schedule: &LrSchedule,
    mut params: OptimizerParams,
    momentum: bool,
) -> Result<Plan> {
    if let Some(s) = step {
        named.push(("step", s));
    }
    disjoint(op, &named)?;
    let (kind, sched_steps, sched_value) = schedule.encode();
    // vec4 needs 16-byte aligned views (bindings of array<vec4<f32>>) and whole vec4s.
    let f32_bindings = [Some(param), Some(grad), states[0], states[1]];
    let vec4 = len.is_multiple_of(4) && f32_bindings.iter().flatten().all(|t| t.byte_offset() % 16 == 0);
    let (family, items) = if vec4 { (&OPTIMIZER_VEC4, len / 4) } else { (&OPTIMIZER, len) };
    params.len = items as u32;
    params.lr = lr;
    params.sched_steps = sched_steps;
    params.sched_value = sched_value;
    let dummy = super::dummy(gpu)?;
    let guarded = step.is_some_and(|s| s.len() == 2);
    let constants: [Constant; 5] = [
        ("WG", WG as f64),
        ("PER_LANE", PER_LANE as f64),
        ("MOMENTUM", momentum as u32 as f64),
        ("SCHEDULE", kind as f64),
        ("GUARDED", guarded as u32 as f64),
    ];
    let bindings = [param, grad, states[0].unwrap_or(&dummy), states[1].unwrap_or(&dummy), step.unwrap_or(&dummy)];
    Ok(dispatch(gpu, family, op, &constants, &params, &bindings, grid_1d(gpu, items.div_ceil(PER_LANE as usize), WG))?
        .into())
}

/// Length of non-empty f32 `param` with an f32 `grad` of the same length.
fn check_param_grad(op: &str, param: &Tensor, grad: &Tensor) -> Result<usize> {
    param.expect_dtype(op, DType::F32)?;
    param.expect_nonempty(op)?;
    let len = param.len();
    expect_len(op, "grad", grad, DType::F32, len, &format!("[{len}] like param {:?}", param.shape()))?;
    Ok(len)
}
