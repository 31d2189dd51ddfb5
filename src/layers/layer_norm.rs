//! The layer-norm layer, PyTorch's `LayerNorm(C)` over a sample's last axis: each row of C values
//! (a `[F]` sample is one row, a `[T, C]` sample T rows) normalised by its own mean and biased
//! variance, then y = x̂·γ + β. γ is saved as `weight` and β as `bias` (PyTorch's names); β is
//! absent with `bias: false` (nanoGPT's `bias=False`). Neither decays under
//! `DecayMask::Matrices`: both are one-dimensional. The kernels are layer_norm.wgsl's
//! (`crate::kernels::layer_norm`); the forward keeps each row's mean and rstd for the backward.

use super::step::{CoreBuffers, CpuCore, GpuCore, Placement, StepCore};
use super::{SlotInit, SlotSpec};
use crate::activation::Activation;
use crate::cpu;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::kernels::layer_norm::{
    layer_norm_backward, layer_norm_backward_dx_add, layer_norm_backward_params, layer_norm_forward,
};
use crate::plan::Plan;
use crate::tensor::Tensor;

/// A layer norm's settings: PyTorch's `eps` (default 1e-5) and whether it has β (default true).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormConfig {
    /// Added to the variance before the square root.
    pub epsilon: f32,
    /// Whether the layer has a trained shift β.
    pub bias: bool,
}

impl Default for LayerNormConfig {
    fn default() -> Self {
        LayerNormConfig { epsilon: 1e-5, bias: true }
    }
}

impl LayerNormConfig {
    pub fn describe(&self) -> String {
        let mut settings = Vec::new();
        if self.epsilon != LayerNormConfig::default().epsilon {
            settings.push(format!("eps {}", self.epsilon));
        }
        if !self.bias {
            settings.push("no bias".to_string());
        }
        match settings.is_empty() {
            true => "layer_norm".to_string(),
            false => format!("layer_norm({})", settings.join(", ")),
        }
    }

    pub(super) fn validate(&self, op: &str) -> Result<()> {
        crate::config::hyper(op, "epsilon", self.epsilon, "> 0", self.epsilon > 0.0)
    }

    /// The same shape; a sample whose last axis is empty has nothing to normalise.
    pub(super) fn output_shape(&self, op: &str, input: &[usize]) -> Result<Vec<usize>> {
        match input.last() {
            Some(&c) if c > 0 => Ok(input.to_vec()),
            _ => Err(WgnnError::shape_of(
                op,
                &[("input", input)],
                "the input's last axis is empty: nothing to normalise",
            )),
        }
    }

    /// γ `weight` (ones), then β `bias` (zeros) unless `bias` is false, each `[C]`.
    pub(super) fn slots(&self, input: &[usize]) -> Vec<SlotSpec> {
        let channels = input.last().copied().unwrap_or(1);
        let slot = |name, init| SlotSpec { name, shape: vec![channels], init, trainable: true };
        let mut slots = vec![slot("weight", SlotInit::Ones)];
        if self.bias {
            slots.push(slot("bias", SlotInit::Zeros));
        }
        slots
    }
}

/// (rows of C the batch's `rows` samples hold, C).
fn rows_of(at: &Placement, rows: usize) -> (usize, usize) {
    let channels = at.input.last().copied().unwrap_or(1).max(1);
    (rows * (at.inputs / channels), channels)
}

/// The per-row statistics the forward keeps, as the GPU pass's buffers hold them: (mean, rstd).
fn statistics<'a>(c: &'a GpuCore) -> Result<(&'a Tensor, &'a Tensor)> {
    match c.buffers.own.as_slice() {
        [mean, rstd] => Ok((mean, rstd)),
        _ => Err(WgnnError::invalid("layer_norm", "no mean and rstd buffers (an internal error)")),
    }
}

impl StepCore for LayerNormConfig {
    /// Its input gradient takes no activation's gradient: the block below applies its own.
    fn fuses_act_grad(&self) -> bool {
        false
    }

    /// Each row's mean and rstd, `[rows · T]`.
    fn buffers(&self, gpu: &Gpu, at: &Placement, rows: usize, _training: bool) -> Result<CoreBuffers> {
        let (n, _) = rows_of(at, rows);
        Ok(CoreBuffers { own: vec![Tensor::zeros(gpu, &[n])?, Tensor::zeros(gpu, &[n])?], ..Default::default() })
    }

    /// γ and β (if any) as views of `flat`.
    fn weights(&self, flat: &Tensor, at: &Placement) -> Result<Option<(Tensor, Option<Tensor>)>> {
        let channels = at.input.last().copied().unwrap_or(1);
        let gamma = flat.view(at.weight.unwrap_or(0), &[channels])?;
        Ok(Some((gamma, at.bias.map(|b| flat.view(b, &[channels])).transpose()?)))
    }

    fn forward_gpu(&self, c: &GpuCore, params: &Tensor, out: &Tensor, _act: Activation) -> Result<Plan> {
        let Some((gamma, beta)) = self.weights(params, c.at)? else { return Ok(Plan::new()) };
        let shape = rows_of(c.at, c.rows);
        let (x, y) = (c.input.reshape(&[shape.0, shape.1])?, out.reshape(&[shape.0, shape.1])?);
        let (mean, rstd) = statistics(c)?;
        layer_norm_forward(c.gpu, &x, Some(&gamma), beta.as_ref(), &y, mean, rstd, self.epsilon)
    }

    fn backward_params_gpu(&self, c: &GpuCore, grads: &Tensor, dy: &Tensor) -> Result<Plan> {
        let Some((dgamma, dbeta)) = self.weights(grads, c.at)? else { return Ok(Plan::new()) };
        let shape = rows_of(c.at, c.rows);
        let (x, dy) = (c.input.reshape(&[shape.0, shape.1])?, dy.reshape(&[shape.0, shape.1])?);
        let (mean, rstd) = statistics(c)?;
        layer_norm_backward_params(c.gpu, &dy, &x, mean, rstd, Some(&dgamma), dbeta.as_ref(), false)
    }

    fn backward_input_gpu(
        &self,
        c: &GpuCore,
        params: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan> {
        if below.is_some() {
            return Err(WgnnError::invalid("layer_norm", "asked to fold an activation's gradient (an internal error)"));
        }
        let Some((gamma, _)) = self.weights(params, c.at)? else { return Ok(Plan::new()) };
        let (n, channels) = rows_of(c.at, c.rows);
        let [x, dy, dx] = [c.input, dy, dx].map(|t| t.reshape(&[n, channels]));
        let (mean, rstd) = statistics(c)?;
        layer_norm_backward(c.gpu, &dy?, &x?, Some(&gamma), mean, rstd, &dx?, None, None, false)
    }

    fn adds_to_input_grad(&self) -> bool {
        true
    }

    fn backward_input_adding_gpu(
        &self,
        c: &GpuCore,
        params: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        addend: &Tensor,
    ) -> Result<Plan> {
        let Some((gamma, _)) = self.weights(params, c.at)? else { return Ok(Plan::new()) };
        let (n, channels) = rows_of(c.at, c.rows);
        let [x, dy, dx, addend] = [c.input, dy, dx, addend].map(|t| t.reshape(&[n, channels]));
        let (mean, rstd) = statistics(c)?;
        layer_norm_backward_dx_add(c.gpu, &dy?, &x?, Some(&gamma), mean, rstd, &addend?, &dx?)
    }

    fn forward_cpu(&self, c: &CpuCore, _act: Activation) -> Result<(Vec<f32>, Vec<u32>)> {
        let (n, channels) = rows_of(c.at, c.rows);
        let (gamma, beta) = cpu_weights(c, channels);
        Ok((cpu::layer_norm_forward(c.input, Some(gamma), beta, n, channels, self.epsilon).0, Vec::new()))
    }

    /// The forward's mean and rstd are taken again from the input (the reference keeps nothing).
    fn backward_cpu(
        &self,
        c: &CpuCore,
        grads: &mut [f32],
        dy: &[f32],
        _argmax: &[u32],
        input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let (n, channels) = rows_of(c.at, c.rows);
        let (gamma, beta) = cpu_weights(c, channels);
        let (_, mean, rstd) = cpu::layer_norm_forward(c.input, Some(gamma), beta, n, channels, self.epsilon);
        let (dx, dgamma, dbeta) = cpu::layer_norm_backward(dy, c.input, Some(gamma), &mean, &rstd, n, channels);
        let weight = c.at.weight.unwrap_or(0);
        grads[weight..weight + channels].copy_from_slice(&dgamma);
        if let Some(b) = c.at.bias {
            grads[b..b + channels].copy_from_slice(&dbeta);
        }
        Ok(input_grad.then_some(dx))
    }
}

/// γ and β (if any) as slices of the CPU pass's parameters.
fn cpu_weights<'a>(c: &CpuCore<'a>, channels: usize) -> (&'a [f32], Option<&'a [f32]>) {
    let weight = c.at.weight.unwrap_or(0);
    let gamma = &c.params[weight..weight + channels];
    (gamma, c.at.bias.map(|b| &c.params[b..b + channels]))
}
