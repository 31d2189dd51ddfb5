//! The dense (fully connected) layer: y = act(x·W + b), W `[inputs, units]`, b `[units]`.

use super::step::{CpuCore, EpilogueExtra, GpuCore, Placement, StepCore};
use super::{SlotInit, SlotSpec};
use crate::activation::Activation;
use crate::cpu;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::init::Initializer;
use crate::kernels::matmul::{matmul, matmul_column_sum, matmul_gathered, Epilogue, GatheredA, MatmulOptions};
use crate::plan::Plan;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Keras' `Dense`: `units` outputs, an activation applied to them (the identity for a linear
/// layer), a bias unless `use_bias` is false (the usual choice before a batch norm, whose shift
/// takes the bias's place), W drawn by `init`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dense {
    pub units: usize,
    pub activation: Activation,
    pub use_bias: bool,
    pub init: Initializer,
}

impl Dense {
    pub fn describe(&self) -> String {
        let bias = if self.use_bias { "" } else { ", no bias" };
        format!("dense({}, {}{bias})", self.units, self.activation.name())
    }

    pub(super) fn validate(&self, op: &str) -> Result<()> {
        if self.units == 0 {
            return Err(WgnnError::invalid(op, "units must be at least 1"));
        }
        self.activation.validate()
    }

    /// `[inputs]` → `[units]`; a `[T, inputs]` sample (a token model's) → `[T, units]`, the layer
    /// applied to each position's last axis as Keras' `Dense` is. More axes are an error asking
    /// for Flatten (an image's pixels one by one are rarely what a user of an image model meant).
    pub(super) fn output_shape(&self, op: &str, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [0] | [_, 0] | [0, _] => Err(WgnnError::shape_of(op, &[("input", input)], "the input has no features")),
            [_] => Ok(vec![self.units]),
            // Row-wise softmax would run over the sample's T·units values, not per position.
            [_, _] if self.activation == Activation::Softmax => Err(WgnnError::shape_of(
                op,
                &[("input", input)],
                format!(
                    "a dense layer on [T, C] works per position, and softmax runs over one axis: give it no \
                     activation (the cross-entropy applies the softmax per position), or add Flatten before it, \
                     got a {input:?} input"
                ),
            )),
            &[t, _] => Ok(vec![t, self.units]),
            _ => Err(WgnnError::shape_of(
                op,
                &[("input", input)],
                format!(
                    "a dense layer takes one axis, or [T, C] per position, got a {input:?} input: add Flatten \
                     before it"
                ),
            )),
        }
    }

    /// W `[inputs, units]` (drawn; inputs: the input's last axis), then b `[units]` (zeros).
    pub(super) fn slots(&self, input: &[usize]) -> Vec<SlotSpec> {
        let inputs = input.last().copied().unwrap_or(1);
        let weight = SlotSpec {
            name: "weight",
            shape: vec![inputs, self.units],
            init: SlotInit::Draw { init: self.init, fan_in: inputs, fan_out: self.units },
            trainable: true,
        };
        let bias = SlotSpec { name: "bias", shape: vec![self.units], init: SlotInit::Zeros, trainable: true };
        if self.use_bias {
            vec![weight, bias]
        } else {
            vec![weight]
        }
    }
}

/// A dense layer in a saved file (`{"type": "dense", …}`): its settings as plain fields (the
/// initialiser is not saved: the weights are).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Saved {
    units: usize,
    /// As [`Activation::parse`] reads it.
    activation: String,
    use_bias: bool,
}

impl Dense {
    pub(crate) fn saved(&self) -> Saved {
        Saved { units: self.units, activation: self.activation.tag(), use_bias: self.use_bias }
    }
}

impl Saved {
    /// The activation as saved ([`Activation::parse`] reads it).
    pub(crate) fn activation_tag(&self) -> &str {
        &self.activation
    }

    pub(crate) fn layer(&self) -> Result<Dense> {
        let activation = Activation::parse(&self.activation)?;
        Ok(Dense { units: self.units, activation, use_bias: self.use_bias, init: Initializer::GlorotUniform })
    }
}

/// What a dense layer reads: a tensor `[rows, inputs]`, or (the first layer of a training step
/// on a device whose profile says it pays) the batch's rows straight from the data set.
#[derive(Clone, Copy)]
pub(crate) enum DenseInput<'a> {
    Stored(&'a Tensor),
    Gathered(&'a GatheredA<'a>),
}

/// out = act(input·W + b), the bias and activation in the matmul's epilogue.
pub(crate) fn forward_gpu(
    gpu: &Gpu,
    input: DenseInput,
    w: &Tensor,
    b: Option<&Tensor>,
    out: &Tensor,
    act: Activation,
) -> Result<Plan> {
    forward_gpu_with(gpu, input, w, b, out, act, None)
}

/// [`forward_gpu`] whose epilogue also keeps input·W + b (a GELU's backward reads it) or adds a
/// residual before the activation (`extra`).
pub(crate) fn forward_gpu_with(
    gpu: &Gpu,
    input: DenseInput,
    w: &Tensor,
    b: Option<&Tensor>,
    out: &Tensor,
    act: Activation,
    extra: Option<EpilogueExtra>,
) -> Result<Plan> {
    let epilogue = match (b, act, extra) {
        (None, Activation::Identity, None) => Epilogue::None,
        (_, _, None) => Epilogue::BiasAct { bias: b, act },
        (_, _, Some(EpilogueExtra::KeepPre(pre))) => Epilogue::BiasActKeep { bias: b, act, pre },
        (_, _, Some(EpilogueExtra::Residual(residual))) => Epilogue::Residual { bias: b, residual, act },
    };
    let options = MatmulOptions { epilogue, ..Default::default() };
    match input {
        DenseInput::Stored(x) => matmul(gpu, x, w, out, &options),
        DenseInput::Gathered(x) => matmul_gathered(gpu, x, w, out, None, &options),
    }
}

/// dW = inputᵀ·dY, with db = Σ_rows dY in the same dispatch where the kernel allows. `input` and
/// `dy` span the padded rows (zero past the batch), which the fast kernels need.
pub(crate) fn backward_params_gpu(
    gpu: &Gpu,
    input: DenseInput,
    dy: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
) -> Result<Plan> {
    let options = MatmulOptions { trans_a: true, ..Default::default() };
    match (input, db) {
        (DenseInput::Gathered(x), db) => matmul_gathered(gpu, x, dy, dw, db, &options),
        (DenseInput::Stored(x), Some(db)) => matmul_column_sum(gpu, x, dy, dw, db, &options),
        (DenseInput::Stored(x), None) => matmul(gpu, x, dy, dw, &options),
    }
}

/// dX = dY·Wᵀ, times act′(y) where the layer below asks for its activation's gradient to be
/// fused (`grad_act`: that layer's output and activation).
pub(crate) fn backward_input_gpu(
    gpu: &Gpu,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    grad_act: Option<(&Tensor, Activation)>,
) -> Result<Plan> {
    let epilogue = match grad_act {
        Some((y, act)) => Epilogue::ActGrad { y, act },
        None => Epilogue::None,
    };
    matmul(gpu, dy, w, dx, &MatmulOptions { trans_b: true, epilogue, ..Default::default() })
}

/// The CPU forward: act(x·W + b) for `rows` rows (softmax is the activation layer's, not this).
pub(crate) fn forward_cpu(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    rows: usize,
    units: usize,
    act: Activation,
) -> Vec<f32> {
    let inputs = w.len() / units;
    let linear = cpu::matmul(x, w, rows, inputs, units, false, false);
    match (b, act) {
        (None, Activation::Identity) => linear,
        _ => cpu::bias_act_forward(&linear, b, rows, units, act),
    }
}

/// (dW, db) of the CPU backward; db only with a bias.
pub(crate) fn backward_params_cpu(
    x: &[f32],
    dy: &[f32],
    rows: usize,
    units: usize,
    bias: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let inputs = x.len() / rows.max(1);
    let dw = cpu::matmul(x, dy, inputs, rows, units, true, false);
    (dw, bias.then(|| cpu::column_sum(dy, rows, units)))
}

/// dX = dY·Wᵀ on the CPU (the layer below applies its own activation's gradient).
pub(crate) fn backward_input_cpu(dy: &[f32], w: &[f32], rows: usize, units: usize) -> Vec<f32> {
    let inputs = w.len() / units;
    cpu::matmul(dy, w, rows, units, inputs, false, true)
}

/// (positions per sample, features per position) of a core's input: (1, inputs) for a 1-D
/// sample, (T, C) for a `[T, C]` one.
fn positions(at: &Placement) -> (usize, usize) {
    let width = at.input.last().copied().unwrap_or(at.inputs).max(1);
    (at.inputs / width, width)
}

/// `t` `[rows, positions·n]` as `[rows·positions, n]`: the matmul's M is rows·T. A 1-D sample's
/// tensor is returned as it is (today's dispatches, bit for bit).
fn per_position(t: &Tensor, positions: usize, n: usize) -> Result<Tensor> {
    match positions {
        1 => Ok(t.clone()),
        _ => t.reshape(&[t.len() / n, n]),
    }
}

impl Dense {
    /// The step's forward over `[rows·T, C]`, with `extra` in the epilogue.
    fn forward(
        &self,
        c: &GpuCore,
        params: &Tensor,
        out: &Tensor,
        act: Activation,
        extra: Option<EpilogueExtra>,
    ) -> Result<Plan> {
        let Some((w, b)) = self.weights(params, c.at)? else { return Ok(Plan::new()) };
        let (t, n) = positions(c.at);
        let (x, out) = (per_position(c.input, t, n)?, per_position(out, t, self.units)?);
        let extra_tensor = match extra {
            Some(EpilogueExtra::KeepPre(e) | EpilogueExtra::Residual(e)) => Some(per_position(e, t, self.units)?),
            None => None,
        };
        let extra = match (extra, &extra_tensor) {
            (Some(EpilogueExtra::KeepPre(_)), Some(e)) => Some(EpilogueExtra::KeepPre(e)),
            (Some(EpilogueExtra::Residual(_)), Some(e)) => Some(EpilogueExtra::Residual(e)),
            _ => None,
        };
        let input = c.gathered.map_or(DenseInput::Stored(&x), DenseInput::Gathered);
        forward_gpu_with(c.gpu, input, &w, b.as_ref(), &out, act, extra)
    }
}

impl StepCore for Dense {
    fn has_epilogue(&self) -> bool {
        true
    }

    fn weights(&self, flat: &Tensor, at: &Placement) -> Result<Option<(Tensor, Option<Tensor>)>> {
        let w = flat.view(at.weight.unwrap_or(0), &[positions(at).1, self.units])?;
        Ok(Some((w, at.bias.map(|b| flat.view(b, &[self.units])).transpose()?)))
    }

    fn forward_gpu(&self, c: &GpuCore, params: &Tensor, out: &Tensor, act: Activation) -> Result<Plan> {
        self.forward(c, params, out, act, None)
    }

    fn has_extra_epilogues(&self) -> bool {
        true
    }

    fn forward_gpu_with(
        &self,
        c: &GpuCore,
        params: &Tensor,
        out: &Tensor,
        act: Activation,
        extra: EpilogueExtra,
    ) -> Result<Plan> {
        self.forward(c, params, out, act, Some(extra))
    }

    fn backward_params_gpu(&self, c: &GpuCore, grads: &Tensor, dy: &Tensor) -> Result<Plan> {
        let Some((dw, db)) = self.weights(grads, c.at)? else { return Ok(Plan::new()) };
        let (t, n) = positions(c.at);
        let input_rows = per_position(&c.padded(c.input)?, t, n)?;
        let input = c.gathered.map_or(DenseInput::Stored(&input_rows), DenseInput::Gathered);
        backward_params_gpu(c.gpu, input, &per_position(&c.padded(dy)?, t, self.units)?, &dw, db.as_ref())
    }

    fn backward_input_gpu(
        &self,
        c: &GpuCore,
        params: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan> {
        let Some((w, _)) = self.weights(params, c.at)? else { return Ok(Plan::new()) };
        let (t, n) = positions(c.at);
        let (dy, dx) = (per_position(dy, t, self.units)?, per_position(dx, t, n)?);
        let below = below.map(|(y, act)| per_position(y, t, n).map(|y| (y, act))).transpose()?;
        backward_input_gpu(c.gpu, &dy, &w, &dx, below.as_ref().map(|(y, act)| (y, *act)))
    }

    fn forward_cpu(&self, c: &CpuCore, act: Activation) -> Result<(Vec<f32>, Vec<u32>)> {
        let (t, n) = positions(c.at);
        let weight = c.at.weight.unwrap_or(0);
        let w = &c.params[weight..weight + n * self.units];
        let b = c.at.bias.map(|o| &c.params[o..o + self.units]);
        Ok((forward_cpu(c.input, w, b, c.rows * t, self.units, act), Vec::new()))
    }

    fn backward_cpu(
        &self,
        c: &CpuCore,
        grads: &mut [f32],
        dy: &[f32],
        _argmax: &[u32],
        input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let (t, n) = positions(c.at);
        let weight = c.at.weight.unwrap_or(0);
        let (dw, db) = backward_params_cpu(c.input, dy, c.rows * t, self.units, c.at.bias.is_some());
        grads[weight..weight + dw.len()].copy_from_slice(&dw);
        if let (Some(o), Some(db)) = (c.at.bias, &db) {
            grads[o..o + self.units].copy_from_slice(db);
        }
        let w = &c.params[weight..weight + n * self.units];
        Ok(input_grad.then(|| backward_input_cpu(dy, w, c.rows * t, self.units)))
    }
}
