//! CPU reference of shaders/optimizer.wgsl.

use crate::kernels::optimizer::{AdamConfig, SgdConfig};

/// One SGD step in place (PyTorch's definition, dampening 0).  param, grad, velocity: [len];
/// velocity (zero before the first step) is required iff momentum ≠ 0.
pub fn sgd_update(param: &mut [f32], grad: &[f32], mut velocity: Option<&mut [f32]>, cfg: &SgdConfig) {
    assert_eq!(param.len(), grad.len(), "sgd_update: param and grad lengths differ");
    for i in 0..param.len() {
        let mut g = grad[i] + cfg.weight_decay * param[i];
        if let Some(vel) = velocity.as_deref_mut() {
            vel[i] = cfg.momentum * vel[i] + g;
            g = if cfg.nesterov { g + cfg.momentum * vel[i] } else { vel[i] };
        }
        param[i] -= cfg.lr * g;
    }
}

/// One Adam step in place, the `t`-th (1-based; 0 is taken as 1).  param, grad, m, v: [len];
/// m and v are zero before the first step.
pub fn adam_update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], t: u32, cfg: &AdamConfig) {
    assert!(
        grad.len() == param.len() && m.len() == param.len() && v.len() == param.len(),
        "adam_update: lengths differ"
    );
    let t = t.max(1) as i32;
    let bias1 = 1.0 - cfg.beta1.powi(t);
    let bias2 = 1.0 - cfg.beta2.powi(t);
    for i in 0..param.len() {
        let g = grad[i] + cfg.weight_decay * param[i];
        m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g;
        v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g * g;
        let m_hat = m[i] / bias1;
        let v_hat = v[i] / bias2;
        param[i] -= cfg.lr * m_hat / (v_hat.sqrt() + cfg.eps);
    }
}
