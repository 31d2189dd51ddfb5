//! The 2-D convolution layer (Keras' `Conv2D`), channels-last: `[H, W, C_in]` samples through a
//! kernel `[kh, kw, C_in, filters]` (+ a bias `[filters]`) and an activation to `[Ho, Wo,
//! filters]`. The kernels are `crate::kernels::conv2d` (the direct kernel, the implicit GEMM, or
//! im2col + the engine's matmul).

use super::step::{CoreBuffers, CpuCore, GpuCore, Placement, StepCore};
use super::{SlotInit, SlotSpec};
use crate::activation::Activation;
use crate::cpu;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::init::Initializer;
use crate::kernels::conv2d::{
    conv2d_backward_input, conv2d_backward_weights, conv2d_backward_weights_from_patches, conv2d_forward,
    conv2d_forward_keeping_patches, conv2d_step_patches, Conv2dConfig, Conv2dDims, ConvPatches, Padding,
};
use crate::plan::Plan;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Keras' `Conv2D(filters, kernel_size, strides, padding, activation, use_bias)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2D {
    pub filters: usize,
    /// (kh, kw).
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    pub padding: Padding,
    pub activation: Activation,
    pub use_bias: bool,
    pub init: Initializer,
}

impl Conv2D {
    /// `filters` kernels of `kh`×`kw`, stride 1, padding valid, a bias, Glorot-uniform weights
    /// (Keras' defaults).
    pub fn new(filters: usize, kernel: (usize, usize), activation: Activation) -> Conv2D {
        Conv2D {
            filters,
            kernel,
            strides: (1, 1),
            padding: Padding::Valid,
            activation,
            use_bias: true,
            init: Initializer::GlorotUniform,
        }
    }

    pub fn describe(&self) -> String {
        let (kh, kw) = self.kernel;
        let mut s = format!("conv2d({}, {kh}×{kw}, {}", self.filters, self.activation.name());
        if self.strides != (1, 1) {
            s.push_str(&format!(", strides {:?}", self.strides));
        }
        if self.padding == Padding::Same {
            s.push_str(", same");
        }
        if !self.use_bias {
            s.push_str(", no bias");
        }
        s + ")"
    }

    pub(crate) fn config(&self) -> Conv2dConfig {
        Conv2dConfig { strides: self.strides, padding: self.padding }
    }

    pub(super) fn validate(&self, op: &str) -> Result<()> {
        if self.filters == 0 {
            return Err(WgnnError::invalid(op, "filters must be at least 1"));
        }
        if self.activation == Activation::Softmax {
            return Err(WgnnError::invalid(
                op,
                "softmax runs over one axis, not over each value of an image: give the convolution another \
                 activation, and put the softmax on a dense layer after Flatten",
            ));
        }
        self.activation.validate_elementwise(op)
    }

    /// The sizes of a batch of `rows` samples of `input` `[H, W, C_in]`.
    pub(crate) fn dims(&self, op: &str, rows: usize, input: &[usize]) -> Result<Conv2dDims> {
        let [h, w, c] = image(op, input)?;
        let (kh, kw) = self.kernel;
        Conv2dDims::new(op, &[rows, h, w, c], &[kh, kw, c, self.filters], &self.config())
    }

    pub(super) fn output_shape(&self, op: &str, input: &[usize]) -> Result<Vec<usize>> {
        let y = self.dims(op, 1, input)?.y_shape();
        Ok(y[1..].to_vec())
    }

    /// The kernel `[kh, kw, C_in, filters]` (drawn; Keras' fans: kh·kw·C_in and kh·kw·filters),
    /// then the bias `[filters]` (zeros).
    pub(super) fn slots(&self, input: &[usize]) -> Vec<SlotSpec> {
        let c_in = input.last().copied().unwrap_or(1);
        let (kh, kw) = self.kernel;
        let field = kh * kw;
        let weight = SlotSpec {
            name: "weight",
            shape: vec![kh, kw, c_in, self.filters],
            init: SlotInit::Draw { init: self.init, fan_in: field * c_in, fan_out: field * self.filters },
            trainable: true,
        };
        let bias = SlotSpec { name: "bias", shape: vec![self.filters], init: SlotInit::Zeros, trainable: true };
        if self.use_bias {
            vec![weight, bias]
        } else {
            vec![weight]
        }
    }
}

/// A convolution in a saved file (`{"type": "conv2d", …}`): its settings as plain fields.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Saved {
    filters: usize,
    kernel: [usize; 2],
    strides: [usize; 2],
    /// `valid` or `same`.
    padding: String,
    activation: String,
    use_bias: bool,
}

impl Conv2D {
    pub(crate) fn saved(&self) -> Saved {
        Saved {
            filters: self.filters,
            kernel: [self.kernel.0, self.kernel.1],
            strides: [self.strides.0, self.strides.1],
            padding: padding_tag(self.padding),
            activation: self.activation.tag(),
            use_bias: self.use_bias,
        }
    }
}

impl Saved {
    /// The activation as saved ([`Activation::parse`] reads it).
    pub(crate) fn activation_tag(&self) -> &str {
        &self.activation
    }

    pub(crate) fn layer(&self) -> Result<Conv2D> {
        Ok(Conv2D {
            filters: self.filters,
            kernel: (self.kernel[0], self.kernel[1]),
            strides: (self.strides[0], self.strides[1]),
            padding: parse_padding(&self.padding)?,
            activation: Activation::parse(&self.activation)?,
            use_bias: self.use_bias,
            init: Initializer::GlorotUniform,
        })
    }
}

/// A padding as saved files write it.
pub(super) fn padding_tag(p: Padding) -> String {
    match p {
        Padding::Valid => "valid".into(),
        Padding::Same => "same".into(),
    }
}

pub(super) fn parse_padding(tag: &str) -> Result<Padding> {
    match tag {
        "valid" => Ok(Padding::Valid),
        "same" => Ok(Padding::Same),
        other => Err(WgnnError::invalid("load", format!("unknown padding {other:?} (known: valid, same)"))),
    }
}

/// `[H, W, C]`, or an error naming `op` that asks for an image.
pub(super) fn image(op: &str, input: &[usize]) -> Result<[usize; 3]> {
    match *input {
        [h, w, c] => Ok([h, w, c]),
        _ => {
            Err(WgnnError::shape_of(op, &[("input", input)], format!("takes images [H, W, C], got a {input:?} input")))
        }
    }
}

/// `t` `[rows, features]` as `[rows, H, W, C]`.
pub(crate) fn as_images(t: &Tensor, shape: [usize; 4]) -> Result<Tensor> {
    t.reshape(&shape)
}

/// y = act(conv(x, kernel) + b); x and y `[rows, features]` views of `d`'s shapes. `patches`:
/// where the forward keeps x's patch matrix for [`backward_params_gpu`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_gpu(
    gpu: &Gpu,
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    act: Activation,
    d: &Conv2dDims,
    cfg: &Conv2dConfig,
    patches: Option<&ConvPatches>,
) -> Result<Plan> {
    let (x4, y4) = (as_images(x, d.x_shape())?, as_images(y, d.y_shape())?);
    match patches {
        Some(kept) => conv2d_forward_keeping_patches(gpu, &x4, kernel, bias, &y4, act, cfg, kept),
        None => conv2d_forward(gpu, &x4, kernel, bias, &y4, act, cfg),
    }
}

/// The kernel's and bias's gradients from x and dz (the gradient at the convolution's output);
/// `patches`: x's patch matrix, as [`forward_gpu`] kept it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_params_gpu(
    gpu: &Gpu,
    x: &Tensor,
    dz: &Tensor,
    dkernel: &Tensor,
    dbias: Option<&Tensor>,
    d: &Conv2dDims,
    cfg: &Conv2dConfig,
    patches: Option<&ConvPatches>,
) -> Result<Plan> {
    let (x4, dz4) = (as_images(x, d.x_shape())?, as_images(dz, d.y_shape())?);
    match patches {
        Some(kept) => conv2d_backward_weights_from_patches(gpu, &x4, kept, &dz4, dkernel, dbias, cfg),
        None => conv2d_backward_weights(gpu, &x4, &dz4, dkernel, dbias, cfg),
    }
}

/// dx (overwritten) from dz; `below`: the activation that made x (its output and kind), whose
/// derivative the pass applies on the way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_input_gpu(
    gpu: &Gpu,
    dz: &Tensor,
    kernel: &Tensor,
    dx: &Tensor,
    d: &Conv2dDims,
    cfg: &Conv2dConfig,
    below: Option<(&Tensor, Activation)>,
) -> Result<Plan> {
    let below = below.map(|(y, act)| as_images(y, d.x_shape()).map(|y| (y, act))).transpose()?;
    let below = below.as_ref().map(|(y, act)| (y, *act));
    conv2d_backward_input(gpu, &as_images(dz, d.y_shape())?, kernel, &as_images(dx, d.x_shape())?, cfg, below)
}

pub(crate) fn forward_cpu(
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    d: &Conv2dDims,
    act: Activation,
) -> Vec<f32> {
    cpu::conv2d_forward(x, kernel, bias, d, act)
}

/// (dkernel, dbias).
pub(crate) fn backward_params_cpu(x: &[f32], dz: &[f32], d: &Conv2dDims) -> (Vec<f32>, Vec<f32>) {
    cpu::conv2d_backward_weights(x, dz, d)
}

pub(crate) fn backward_input_cpu(dz: &[f32], kernel: &[f32], d: &Conv2dDims) -> Vec<f32> {
    cpu::conv2d_backward_input(dz, kernel, d, None)
}

impl StepCore for Conv2D {
    fn has_epilogue(&self) -> bool {
        true
    }

    fn buffers(&self, gpu: &Gpu, at: &Placement, rows: usize, training: bool) -> Result<CoreBuffers> {
        let patches = match training {
            true => conv2d_step_patches(gpu, &self.dims("conv2d", rows, &at.input)?)?,
            false => None,
        };
        Ok(CoreBuffers { patches, ..Default::default() })
    }

    fn weights(&self, flat: &Tensor, at: &Placement) -> Result<Option<(Tensor, Option<Tensor>)>> {
        let c_in = at.input.last().copied().unwrap_or(1);
        let shape = [self.kernel.0, self.kernel.1, c_in, self.filters];
        let k = flat.view(at.weight.unwrap_or(0), &shape)?;
        Ok(Some((k, at.bias.map(|b| flat.view(b, &[self.filters])).transpose()?)))
    }

    fn forward_gpu(&self, c: &GpuCore, params: &Tensor, out: &Tensor, act: Activation) -> Result<Plan> {
        let Some((k, b)) = self.weights(params, c.at)? else { return Ok(Plan::new()) };
        let d = self.dims("conv2d", c.rows, &c.at.input)?;
        let kept = c.buffers.patches.as_ref();
        forward_gpu(c.gpu, c.input, &k, b.as_ref(), out, act, &d, &self.config(), kept)
    }

    fn backward_params_gpu(&self, c: &GpuCore, grads: &Tensor, dy: &Tensor) -> Result<Plan> {
        let Some((dk, db)) = self.weights(grads, c.at)? else { return Ok(Plan::new()) };
        let d = self.dims("conv2d", c.rows, &c.at.input)?;
        let kept = c.buffers.patches.as_ref();
        backward_params_gpu(c.gpu, c.input, dy, &dk, db.as_ref(), &d, &self.config(), kept)
    }

    fn backward_input_gpu(
        &self,
        c: &GpuCore,
        params: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan> {
        let Some((k, _)) = self.weights(params, c.at)? else { return Ok(Plan::new()) };
        let d = self.dims("conv2d", c.rows, &c.at.input)?;
        backward_input_gpu(c.gpu, dy, &k, dx, &d, &self.config(), below)
    }

    fn forward_cpu(&self, c: &CpuCore, act: Activation) -> Result<(Vec<f32>, Vec<u32>)> {
        let d = self.dims("conv2d", c.rows, &c.at.input)?;
        let weight = c.at.weight.unwrap_or(0);
        let k = &c.params[weight..weight + d.kernel_shape().iter().product::<usize>()];
        let b = c.at.bias.map(|o| &c.params[o..o + self.filters]);
        Ok((forward_cpu(c.input, k, b, &d, act), Vec::new()))
    }

    fn backward_cpu(
        &self,
        c: &CpuCore,
        grads: &mut [f32],
        dy: &[f32],
        _argmax: &[u32],
        input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let d = self.dims("conv2d", c.rows, &c.at.input)?;
        let weight = c.at.weight.unwrap_or(0);
        let (dk, db) = backward_params_cpu(c.input, dy, &d);
        grads[weight..weight + dk.len()].copy_from_slice(&dk);
        if let Some(o) = c.at.bias {
            grads[o..o + db.len()].copy_from_slice(&db);
        }
        let k = &c.params[weight..weight + dk.len()];
        Ok(input_grad.then(|| backward_input_cpu(dy, k, &d)))
    }
}
