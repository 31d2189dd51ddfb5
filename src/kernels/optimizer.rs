//! GPU wrapper of shaders/optimizer.wgsl; CPU reference in src/cpu/optimizer.rs.
//!
//! Every update takes an [`LrSchedule`] in its config: the rate of update t is computed on the GPU
//! from the step tensor, so a scheduled run needs no per-step upload. [`LrSchedule::lr_at`] is the
//! host reference. Where an update does not otherwise read t (SGD, RMSprop, Adadelta) the step
//! tensor is optional, and required only for a schedule other than [`LrSchedule::Constant`].
//!
//! A step tensor of two values, [t, skip] (the counters [`super::step_guard::guard_step`] keeps),
//! makes the update conditional: it changes nothing when skip ≠ 0.

use super::check::{disjoint, expect_len};
pub use crate::config::optimizer::{
    AdadeltaConfig, AdagradConfig, AdamConfig, DecayMask, EpsPlacement, LrSchedule, RmsPropConfig, SgdConfig,
};
pub use crate::config::UpdateRule;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, Constant, KernelFamily};
use crate::tensor::{DType, Tensor};

const OPTIMIZER_WGSL: &str = include_str!("../../shaders/optimizer.wgsl");

/// The f32 module's element type, and its decay-mask bit for value i.
const SCALAR_ELEMENT: &str = "alias V = f32;
fn decay_bits(i: u32) -> V { return f32((decay_mask[i / 32u] >> (i % 32u)) & 1u); }
";

/// The vec4 module's: element i holds values 4i … 4i + 3, four bits of word i / 8 (whole vec4s
/// never straddle a word).
const VEC4_ELEMENT: &str = "alias V = vec4<f32>;
fn decay_bits(i: u32) -> V {
    let bits = (decay_mask[i / 8u] >> ((i % 8u) * 4u)) & 15u;
    return vec4<f32>(vec4<u32>(bits, bits >> 1u, bits >> 2u, bits >> 3u) & vec4<u32>(1u));
}
";

/// f32 values (PER_LANE per invocation): any length, any view offset.
pub(crate) const OPTIMIZER: KernelFamily =
    KernelFamily { name: "optimizer", sources: &[SCALAR_ELEMENT, OPTIMIZER_WGSL], storage: &[Access::ReadWrite; 7] };

/// vec4 values (PER_LANE per invocation), vec4 loads and stores: where the length and every view's offset
/// are multiples of 4 floats (the model's flat parameter buffer is padded to that). On lavapipe a
/// vec4 load costs what a scalar one does, so this moves ~4× the bytes per load.
pub(crate) const OPTIMIZER_VEC4: KernelFamily =
    KernelFamily { name: "optimizer_vec4", sources: &[VEC4_ELEMENT, OPTIMIZER_WGSL], storage: &[Access::ReadWrite; 7] };

/// What an update reads beside its rule's own tensors; none by default.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateExtras<'a> {
    /// f32 `[1]` or longer: every rule takes the gradient times its first value (global-norm
    /// clipping's factor, [`crate::kernels::grad_norm::clip_factor`]'s output), as PyTorch's
    /// `clip_grad_norm_` before the step, with no pass over the gradients to rescale them.
    pub grad_scale: Option<&'a Tensor>,
    /// u32 `[⌈len/32⌉]`: bit i % 32 of word i / 32 set where value i is decayed. Adam and AdamW
    /// with [`DecayMask::Matrices`] only, and required there.
    pub decay_mask: Option<&'a Tensor>,
}

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
    log2_hi: f32,
    log2_lo: f32,
    eps_keras: u32,
    ln_beta1: f32,
    ln_beta2: f32,
    warmup_steps: u32,
    _pad: u32,
}

/// ln β for the shader's bias corrections (computed in f64, rounded once), at least −100 so that
/// β = 0 gives 1 − 0^t = 1 through an exp that underflows rather than an infinity.
fn ln_beta(beta: f32) -> f32 {
    ((beta as f64).ln().max(-100.0)) as f32
}

/// log2(value) as (hi, lo) with hi rounded to 7 significant bits (so the shader's q·hi is exact
/// for q < 2^17) and lo the f32 rest: together ~31 bits, for `schedule_pow` in optimizer.wgsl.
fn log2_parts(value: f32) -> (f32, f32) {
    let l = (value as f64).log2();
    if l == 0.0 || !l.is_finite() {
        return (0.0, 0.0);
    }
    let scale = (6.0 - l.abs().log2().floor()).exp2();
    let hi = (l * scale).round() / scale;
    (hi as f32, (l - hi) as f32)
}

/// The schedule as the shader takes it: (SCHEDULE override, sched_steps, sched_value,
/// warmup_steps).
fn schedule_code(schedule: &LrSchedule) -> (u32, u32, f32, u32) {
    match *schedule {
        LrSchedule::Constant => (0, 1, 0.0, 0),
        LrSchedule::Step { every, gamma } => (1, every, gamma, 0),
        LrSchedule::Exponential { decay_steps, decay_rate } => (2, decay_steps, decay_rate, 0),
        LrSchedule::Cosine { total_steps, min_lr } => (3, total_steps, min_lr, 0),
        LrSchedule::WarmupCosine { warmup_steps, total_steps, min_lr } => (4, total_steps, min_lr, warmup_steps),
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
    sgd_ext(gpu, param, grad, velocity, step, cfg, &UpdateExtras::default())
}

fn sgd_ext(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    velocity: Option<&Tensor>,
    step: Option<&Tensor>,
    cfg: &SgdConfig,
    extras: &UpdateExtras,
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
    let momentum = velocity.is_some();
    update(gpu, OP, param, grad, states, step, named, len, cfg.lr, &cfg.schedule, params, momentum, extras)
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
    adam_family(gpu, "adam_update", param, grad, m, v, step, cfg, &UpdateExtras::default())
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
    adam_family(gpu, "adamw_update", param, grad, m, v, step, cfg, &UpdateExtras::default())
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
    extras: &UpdateExtras,
) -> Result<Plan> {
    cfg.validate_for(op)?;
    let len = check_param_grad(op, param, grad)?;
    match (cfg.decay, extras.decay_mask) {
        (DecayMask::Matrices, None) => {
            return Err(WgnnError::invalid(op, "decay Matrices needs a decay_mask tensor (a bit per value)"))
        }
        (DecayMask::All, Some(_)) => {
            return Err(WgnnError::invalid(op, "a decay_mask was given but decay is All (set DecayMask::Matrices)"))
        }
        _ => {}
    }
    expect_len(op, "m", m, DType::F32, len, &format!("[{len}] like param"))?;
    expect_len(op, "v", v, DType::F32, len, &format!("[{len}] like param"))?;
    let step = schedule_step(op, Some(step), &cfg.schedule, true)?;
    let named = vec![("param", param), ("grad", grad), ("m", m), ("v", v)];
    let params = OptimizerParams {
        momentum: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        eps_keras: (cfg.eps_placement == EpsPlacement::Keras) as u32,
        ln_beta1: ln_beta(cfg.beta1),
        ln_beta2: ln_beta(cfg.beta2),
        ..Default::default()
    };
    update(gpu, op, param, grad, [Some(m), Some(v)], step, named, len, cfg.lr, &cfg.schedule, params, false, extras)
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
    rmsprop_ext(gpu, param, grad, square_avg, momentum_buf, step, cfg, &UpdateExtras::default())
}

#[allow(clippy::too_many_arguments)]
fn rmsprop_ext(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    square_avg: &Tensor,
    momentum_buf: Option<&Tensor>,
    step: Option<&Tensor>,
    cfg: &RmsPropConfig,
    extras: &UpdateExtras,
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
        eps_keras: (cfg.eps_placement == EpsPlacement::Keras) as u32,
        ..Default::default()
    };
    let states = [Some(square_avg), momentum_buf];
    let momentum = momentum_buf.is_some();
    update(gpu, OP, param, grad, states, step, named, len, cfg.lr, &cfg.schedule, params, momentum, extras)
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
    adagrad_ext(gpu, param, grad, sum, step, cfg, &UpdateExtras::default())
}

fn adagrad_ext(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    sum: &Tensor,
    step: &Tensor,
    cfg: &AdagradConfig,
    extras: &UpdateExtras,
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
        eps_keras: (cfg.eps_placement == EpsPlacement::Keras) as u32,
        ..Default::default()
    };
    update(gpu, OP, param, grad, [Some(sum), None], step, named, len, cfg.lr, &cfg.schedule, params, false, extras)
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
    adadelta_ext(gpu, param, grad, square_avg, acc_delta, step, cfg, &UpdateExtras::default())
}

#[allow(clippy::too_many_arguments)]
fn adadelta_ext(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    square_avg: &Tensor,
    acc_delta: &Tensor,
    step: Option<&Tensor>,
    cfg: &AdadeltaConfig,
    extras: &UpdateExtras,
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
    update(gpu, OP, param, grad, states, step, named, len, cfg.lr, &cfg.schedule, params, false, extras)
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
    extras: &UpdateExtras<'a>,
) -> Result<Plan> {
    if let Some(s) = step {
        named.push(("step", s));
    }
    if let Some(scale) = extras.grad_scale {
        scale.expect_dtype(op, DType::F32)?;
        scale.expect_nonempty(op)?;
        named.push(("grad_scale", scale));
    }
    if let Some(mask) = extras.decay_mask {
        let words = len.div_ceil(32);
        expect_len(op, "decay_mask", mask, DType::U32, words, &format!("[{words}]: a bit per value of param [{len}]"))?;
        named.push(("decay_mask", mask));
    }
    disjoint(op, &named)?;
    let (kind, sched_steps, sched_value, warmup_steps) = schedule_code(schedule);
    // vec4 needs 16-byte aligned views (bindings of array<vec4<f32>>) and whole vec4s.
    let f32_bindings = [Some(param), Some(grad), states[0], states[1]];
    let vec4 = len.is_multiple_of(4) && f32_bindings.iter().flatten().all(|t| t.byte_offset() % 16 == 0);
    let (family, items) = if vec4 { (&OPTIMIZER_VEC4, len / 4) } else { (&OPTIMIZER, len) };
    params.len = items as u32;
    params.lr = lr;
    params.sched_steps = sched_steps;
    params.sched_value = sched_value;
    params.warmup_steps = warmup_steps;
    (params.log2_hi, params.log2_lo) = log2_parts(sched_value);
    let dummy = dummy(gpu)?;
    let guarded = step.is_some_and(|s| s.len() == 2);
    let constants: [Constant; 7] = [
        ("WG", WG as f64),
        ("PER_LANE", PER_LANE as f64),
        ("MOMENTUM", momentum as u32 as f64),
        ("SCHEDULE", kind as f64),
        ("GUARDED", guarded as u32 as f64),
        ("CLIPPED", extras.grad_scale.is_some() as u32 as f64),
        ("MASKED", extras.decay_mask.is_some() as u32 as f64),
    ];
    let bindings = [
        param,
        grad,
        states[0].unwrap_or(&dummy),
        states[1].unwrap_or(&dummy),
        step.unwrap_or(&dummy),
        extras.decay_mask.unwrap_or(&dummy),
        extras.grad_scale.unwrap_or(&dummy),
    ];
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

/// One update of `rule` in place, with `extras` (clipping's gradient scale, the decay mask):
/// the rule's own function with its state tensors from `states`, in [`UpdateRule`]'s order
/// (`state_slots` of them, each `[len]` like param). step: `[1]` u32 holding t, or the guarded
/// `[t, skip]`. CPU reference: [`crate::cpu::optimizer::update_with`].
pub fn update_with(
    gpu: &Gpu,
    rule: &UpdateRule,
    param: &Tensor,
    grad: &Tensor,
    states: &[Tensor],
    step: &Tensor,
    extras: &UpdateExtras,
) -> Result<Plan> {
    let op = rule.op();
    if states.len() != rule.state_slots() {
        let (want, got) = (rule.state_slots(), states.len());
        return Err(WgnnError::invalid(op, format!("{want} state tensors expected, {got} given")));
    }
    let adam_only = |has_mask: bool| match has_mask {
        true => Err(WgnnError::invalid(op, "a decay_mask is for Adam and AdamW only")),
        false => Ok(()),
    };
    let s = states;
    match rule {
        UpdateRule::Adam(cfg) => adam_family(gpu, op, param, grad, &s[0], &s[1], step, cfg, extras),
        UpdateRule::AdamW(cfg) => adam_family(gpu, op, param, grad, &s[0], &s[1], step, cfg, extras),
        UpdateRule::Sgd(cfg) => {
            adam_only(extras.decay_mask.is_some())?;
            sgd_ext(gpu, param, grad, s.first(), Some(step), cfg, extras)
        }
        UpdateRule::RmsProp(cfg) => {
            adam_only(extras.decay_mask.is_some())?;
            rmsprop_ext(gpu, param, grad, &s[0], s.get(1), Some(step), cfg, extras)
        }
        UpdateRule::Adagrad(cfg) => {
            adam_only(extras.decay_mask.is_some())?;
            adagrad_ext(gpu, param, grad, &s[0], step, cfg, extras)
        }
        UpdateRule::Adadelta(cfg) => {
            adam_only(extras.decay_mask.is_some())?;
            adadelta_ext(gpu, param, grad, &s[0], &s[1], Some(step), cfg, extras)
        }
    }
}
