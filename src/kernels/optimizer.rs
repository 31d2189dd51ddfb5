//! GPU wrapper of shaders/optimizer.wgsl; CPU reference in src/cpu/optimizer.rs.

use super::check::{disjoint, expect_len, hyper};
use super::{dispatch, grid_1d, Access, KernelFamily, Plan};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::tensor::{DType, Tensor};

pub(crate) const OPTIMIZER: KernelFamily = KernelFamily {
    name: "optimizer",
    sources: &[include_str!("../../shaders/optimizer.wgsl")],
    storage: &[Access::ReadWrite; 5],
};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct OptimizerParams {
    len: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    _pad: u32,
}

/// Stochastic gradient descent, PyTorch's definition (dampening 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    /// L2 penalty added to the gradient: g + weight_decay · param.
    pub weight_decay: f32,
}

impl SgdConfig {
    /// An error naming `sgd_update` unless lr > 0, 0 ≤ momentum < 1, weight_decay ≥ 0, all finite,
    /// and nesterov only with momentum.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "sgd_update";
        hyper(OP, "lr", self.lr, "> 0", self.lr > 0.0)?;
        hyper(OP, "momentum", self.momentum, "in [0, 1)", (0.0..1.0).contains(&self.momentum))?;
        hyper(OP, "weight_decay", self.weight_decay, ">= 0", self.weight_decay >= 0.0)?;
        if self.nesterov && self.momentum == 0.0 {
            return Err(WgnnError::invalid(OP, "nesterov needs momentum > 0"));
        }
        Ok(())
    }
}

/// Adam, PyTorch's definition: bias-corrected moments, weight decay as L2 added to the gradient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl AdamConfig {
    /// An error naming `adam_update` unless lr > 0, betas in [0, 1), eps > 0, weight_decay ≥ 0,
    /// all finite.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "adam_update";
        hyper(OP, "lr", self.lr, "> 0", self.lr > 0.0)?;
        hyper(OP, "beta1", self.beta1, "in [0, 1)", (0.0..1.0).contains(&self.beta1))?;
        hyper(OP, "beta2", self.beta2, "in [0, 1)", (0.0..1.0).contains(&self.beta2))?;
        hyper(OP, "eps", self.eps, "> 0", self.eps > 0.0)?;
        hyper(OP, "weight_decay", self.weight_decay, ">= 0", self.weight_decay >= 0.0)
    }
}

/// param −= lr · (grad + wd·param), through the velocity when momentum ≠ 0.  param, grad,
/// velocity: [len] f32. `velocity` is required iff momentum ≠ 0, and must start at zero.
pub fn sgd_update(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    velocity: Option<&Tensor>,
    cfg: &SgdConfig,
) -> Result<Plan> {
    const OP: &str = "sgd_update";
    cfg.validate()?;
    let len = check_param_grad(OP, param, grad)?;
    let mut named = vec![("param", param), ("grad", grad)];
    match (velocity, cfg.momentum != 0.0) {
        (Some(vel), true) => {
            expect_len(OP, "velocity", vel, DType::F32, len, &format!("[{len}] like param"))?;
            named.push(("velocity", vel));
        }
        (None, false) => {}
        (None, true) => {
            return Err(WgnnError::invalid(OP, format!("momentum = {} needs a velocity tensor", cfg.momentum)))
        }
        (Some(_), false) => return Err(WgnnError::invalid(OP, "a velocity tensor was given but momentum is 0")),
    }
    disjoint(OP, &named)?;
    let dummy = super::dummy(gpu)?;
    let params = OptimizerParams {
        len: len as u32,
        nesterov: cfg.nesterov as u32,
        lr: cfg.lr,
        momentum: cfg.momentum,
        beta2: 0.0,
        eps: 0.0,
        weight_decay: cfg.weight_decay,
        _pad: 0,
    };
    let constants = [("WG", WG as f64), ("MOMENTUM", velocity.is_some() as u32 as f64)];
    let bindings = [param, grad, velocity.unwrap_or(&dummy), &dummy, &dummy];
    Ok(dispatch(gpu, &OPTIMIZER, OP, &constants, &params, &bindings, grid_1d(gpu, len, WG))?.into())
}

/// One Adam update in place.  param, grad, m, v: [len] f32 (m and v start at zero); step: [1] u32
/// holding t, the 1-based number of this update, written by the caller before the dispatch and
/// only read here (t = 0 is taken as 1).
pub fn adam_update(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &Tensor,
    cfg: &AdamConfig,
) -> Result<Plan> {
    const OP: &str = "adam_update";
    cfg.validate()?;
    let len = check_param_grad(OP, param, grad)?;
    expect_len(OP, "m", m, DType::F32, len, &format!("[{len}] like param"))?;
    expect_len(OP, "v", v, DType::F32, len, &format!("[{len}] like param"))?;
    expect_len(OP, "step", step, DType::U32, 1, "[1]")?;
    disjoint(OP, &[("param", param), ("grad", grad), ("m", m), ("v", v), ("step", step)])?;
    let params = OptimizerParams {
        len: len as u32,
        nesterov: 0,
        lr: cfg.lr,
        momentum: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: cfg.weight_decay,
        _pad: 0,
    };
    let constants = [("WG", WG as f64)];
    Ok(dispatch(gpu, &OPTIMIZER, OP, &constants, &params, &[param, grad, m, v, step], grid_1d(gpu, len, WG))?.into())
}

/// Length of non-empty f32 `param` with an f32 `grad` of the same length.
fn check_param_grad(op: &str, param: &Tensor, grad: &Tensor) -> Result<usize> {
    param.expect_dtype(op, DType::F32)?;
    param.expect_nonempty(op)?;
    let len = param.len();
    expect_len(op, "grad", grad, DType::F32, len, &format!("[{len}] like param {:?}", param.shape()))?;
    Ok(len)
}
