//! CPU reference of shaders/optimizer.wgsl. Every state slice starts at zero; `t` is the 1-based
//! number of the update (0 is taken as 1), which sets the scheduled rate
//! [`LrSchedule::lr_at`](crate::config::LrSchedule::lr_at).

use crate::config::{
    AdadeltaConfig, AdagradConfig, AdamConfig, DecayMask, EpsPlacement, RmsPropConfig, SgdConfig, UpdateRule,
};
use crate::error::{Result, WgnnError};

/// One SGD step in place (PyTorch's definition, dampening 0), as update 1 of the schedule.
/// param, grad, velocity: `[len]`; velocity (zero before the first step) is required iff momentum ≠ 0.
pub fn sgd_update(param: &mut [f32], grad: &[f32], velocity: Option<&mut [f32]>, cfg: &SgdConfig) {
    sgd_update_with_step(param, grad, velocity, 1, cfg)
}

/// [`sgd_update`] as update `t` of the schedule.
pub fn sgd_update_with_step(
    param: &mut [f32],
    grad: &[f32],
    mut velocity: Option<&mut [f32]>,
    t: u32,
    cfg: &SgdConfig,
) {
    assert_eq!(param.len(), grad.len(), "sgd_update: param and grad lengths differ");
    let lr = cfg.schedule.lr_at(cfg.lr, t);
    for i in 0..param.len() {
        let mut g = grad[i] + cfg.weight_decay * param[i];
        if let Some(vel) = velocity.as_deref_mut() {
            vel[i] = cfg.momentum * vel[i] + g;
            g = if cfg.nesterov { g + cfg.momentum * vel[i] } else { vel[i] };
        }
        param[i] -= lr * g;
    }
}

/// One Adam step in place, the `t`-th.  param, grad, m, v: `[len]`.
pub fn adam_update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], t: u32, cfg: &AdamConfig) {
    adam_family(param, grad, m, v, t, cfg, false, None)
}

/// One AdamW step in place, the `t`-th: p ← p·(1 − lr·wd), then Adam on the plain gradient.
/// param, grad, m, v: `[len]`.
pub fn adamw_update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], t: u32, cfg: &AdamConfig) {
    adam_family(param, grad, m, v, t, cfg, true, None)
}

/// `decay_mask`: bit i % 32 of word i / 32 set where value i decays; None: every value does.
#[allow(clippy::too_many_arguments)]
fn adam_family(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    t: u32,
    cfg: &AdamConfig,
    decoupled: bool,
    decay_mask: Option<&[u32]>,
) {
    assert!(
        grad.len() == param.len() && m.len() == param.len() && v.len() == param.len(),
        "adam_update: lengths differ"
    );
    let lr = cfg.schedule.lr_at(cfg.lr, t);
    let bias1 = one_minus_pow(cfg.beta1, t);
    let bias2 = one_minus_pow(cfg.beta2, t);
    // Keras adds eps to √v before the bias correction: eps/√bias2 next to √v̂.
    let eps = match cfg.eps_placement {
        EpsPlacement::Torch => cfg.eps,
        EpsPlacement::Keras => cfg.eps / bias2.sqrt(),
    };
    let (l2, decay) = if decoupled { (0.0, 1.0 - lr * cfg.weight_decay) } else { (cfg.weight_decay, 1.0) };
    for i in 0..param.len() {
        let decays = decay_mask.is_none_or(|mask| (mask[i / 32] >> (i % 32)) & 1 == 1);
        let (l2, decay) = if decays { (l2, decay) } else { (0.0, 1.0) };
        let g = grad[i] + l2 * param[i];
        m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g;
        v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g * g;
        let m_hat = m[i] / bias1;
        let v_hat = v[i] / bias2;
        param[i] = param[i] * decay - lr * m_hat / (v_hat.sqrt() + eps);
    }
}

/// 1 − b^t (t = 0 taken as 1) in f64, rounded once: in f32, 1 − b.powi(t) would keep only b^t's
/// absolute error, 3e-5 of 1 − 0.999^2.
fn one_minus_pow(b: f32, t: u32) -> f32 {
    (1.0 - (b as f64).powf(t.max(1) as f64)) as f32
}

/// √avg + eps (PyTorch) or √(avg + eps) (Keras).
fn root_with_eps(avg: f32, eps: f32, placement: EpsPlacement) -> f32 {
    match placement {
        EpsPlacement::Torch => avg.sqrt() + eps,
        EpsPlacement::Keras => (avg + eps).sqrt(),
    }
}

/// One RMSprop step in place, the `t`-th.  param, grad, square_avg: `[len]`; momentum_buf: `[len]`,
/// required iff momentum ≠ 0.
pub fn rmsprop_update(
    param: &mut [f32],
    grad: &[f32],
    square_avg: &mut [f32],
    mut momentum_buf: Option<&mut [f32]>,
    t: u32,
    cfg: &RmsPropConfig,
) {
    assert!(grad.len() == param.len() && square_avg.len() == param.len(), "rmsprop_update: lengths differ");
    let lr = cfg.schedule.lr_at(cfg.lr, t);
    for i in 0..param.len() {
        let g = grad[i] + cfg.weight_decay * param[i];
        square_avg[i] = cfg.rho * square_avg[i] + (1.0 - cfg.rho) * g * g;
        let mut d = g / root_with_eps(square_avg[i], cfg.eps, cfg.eps_placement);
        if let Some(buf) = momentum_buf.as_deref_mut() {
            buf[i] = cfg.momentum * buf[i] + d;
            d = buf[i];
        }
        param[i] -= lr * d;
    }
}

/// One Adagrad step in place, the `t`-th.  param, grad, sum: `[len]`; at t = 1 the sum is taken to
/// be `initial_accumulator`.
pub fn adagrad_update(param: &mut [f32], grad: &[f32], sum: &mut [f32], t: u32, cfg: &AdagradConfig) {
    assert!(grad.len() == param.len() && sum.len() == param.len(), "adagrad_update: lengths differ");
    let lr = cfg.schedule.lr_at(cfg.lr, t);
    for i in 0..param.len() {
        let g = grad[i] + cfg.weight_decay * param[i];
        let before = if t.max(1) == 1 { cfg.initial_accumulator } else { sum[i] };
        sum[i] = before + g * g;
        param[i] -= lr * g / root_with_eps(sum[i], cfg.eps, cfg.eps_placement);
    }
}

/// One Adadelta step in place, the `t`-th.  param, grad, square_avg, acc_delta: `[len]`.
pub fn adadelta_update(
    param: &mut [f32],
    grad: &[f32],
    square_avg: &mut [f32],
    acc_delta: &mut [f32],
    t: u32,
    cfg: &AdadeltaConfig,
) {
    assert!(
        grad.len() == param.len() && square_avg.len() == param.len() && acc_delta.len() == param.len(),
        "adadelta_update: lengths differ"
    );
    let lr = cfg.schedule.lr_at(cfg.lr, t);
    for i in 0..param.len() {
        let g = grad[i] + cfg.weight_decay * param[i];
        square_avg[i] = cfg.rho * square_avg[i] + (1.0 - cfg.rho) * g * g;
        let delta = (acc_delta[i] + cfg.eps).sqrt() / (square_avg[i] + cfg.eps).sqrt() * g;
        acc_delta[i] = cfg.rho * acc_delta[i] + (1.0 - cfg.rho) * delta * delta;
        param[i] -= lr * delta;
    }
}

/// What an update reads beside its rule's own state, as in the kernel's `UpdateExtras`.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateExtras<'a> {
    /// The gradient is multiplied by this first (global-norm clipping's factor,
    /// [`crate::cpu::grad_norm::clip_factor`]).
    pub grad_scale: Option<f32>,
    /// `[⌈len/32⌉]`: bit i % 32 of word i / 32 set where value i decays (Adam, AdamW with
    /// [`DecayMask::Matrices`] only, and required there).
    pub decay_mask: Option<&'a [u32]>,
}

/// One update of `rule` in place, the `t`-th, with `extras`; `states` in [`UpdateRule`]'s order,
/// each `[len]`. Errors as the kernel's: a state count or a mask that does not fit the rule.
pub fn update_with(
    rule: &UpdateRule,
    param: &mut [f32],
    grad: &[f32],
    states: &mut [&mut [f32]],
    t: u32,
    extras: &UpdateExtras,
) -> Result<()> {
    let op = rule.op();
    if states.len() != rule.state_slots() {
        let (want, got) = (rule.state_slots(), states.len());
        return Err(WgnnError::invalid(op, format!("{want} state tensors expected, {got} given")));
    }
    let mask = extras.decay_mask;
    if let Some(m) = mask {
        if m.len() != param.len().div_ceil(32) {
            return Err(WgnnError::invalid(
                op,
                format!("decay_mask has {} words, param {} values", m.len(), param.len()),
            ));
        }
    }
    let scaled: Vec<f32>;
    let grad = match extras.grad_scale {
        Some(scale) => {
            scaled = grad.iter().map(|g| g * scale).collect();
            &scaled[..]
        }
        None => grad,
    };
    let adam_mask = |cfg: &AdamConfig| match (cfg.decay, mask) {
        (DecayMask::Matrices, None) => Err(WgnnError::invalid(op, "decay Matrices needs a decay_mask")),
        (DecayMask::All, Some(_)) => Err(WgnnError::invalid(op, "a decay_mask was given but decay is All")),
        _ => Ok(mask),
    };
    if mask.is_some() && !matches!(rule, UpdateRule::Adam(_) | UpdateRule::AdamW(_)) {
        return Err(WgnnError::invalid(op, "a decay_mask is for Adam and AdamW only"));
    }
    match (rule, states) {
        (UpdateRule::Adam(cfg), [m, v]) => adam_family(param, grad, m, v, t, cfg, false, adam_mask(cfg)?),
        (UpdateRule::AdamW(cfg), [m, v]) => adam_family(param, grad, m, v, t, cfg, true, adam_mask(cfg)?),
        (UpdateRule::Sgd(cfg), [velocity]) => sgd_update_with_step(param, grad, Some(velocity), t, cfg),
        (UpdateRule::Sgd(cfg), []) => sgd_update_with_step(param, grad, None, t, cfg),
        (UpdateRule::RmsProp(cfg), [sq, buf]) => rmsprop_update(param, grad, sq, Some(buf), t, cfg),
        (UpdateRule::RmsProp(cfg), [sq]) => rmsprop_update(param, grad, sq, None, t, cfg),
        (UpdateRule::Adagrad(cfg), [sum]) => adagrad_update(param, grad, sum, t, cfg),
        (UpdateRule::Adadelta(cfg), [sq, acc]) => adadelta_update(param, grad, sq, acc, t, cfg),
        _ => return Err(WgnnError::invalid(op, "the state tensors do not fit the rule (an internal error)")),
    }
    Ok(())
}
