//! The pooling layers, channels-last: Keras' `MaxPooling2D`, `AveragePooling2D` (`[H, W, C]` →
//! `[Ho, Wo, C]`) and `GlobalAveragePooling2D` (`[H, W, C]` → `[C]`). No parameters.

use super::conv2d::{as_images, image, padding_tag, parse_padding};
use super::step::{CoreBuffers, CpuCore, GpuCore, Placement, StepCore};
use crate::activation::Activation;
use crate::cpu;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::pool2d::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward, global_avg_pool2d_forward,
    max_pool2d_backward_with_output, max_pool2d_forward, Pool2dConfig, Pool2dDims,
};
use crate::kernels::pool2d_normalized::{max_pool2d_forward_normalized, ChannelNorm};
use crate::plan::Plan;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which pooling a layer does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pooling {
    Max(Pool2dConfig),
    Average(Pool2dConfig),
    GlobalAverage,
}

impl Pooling {
    pub fn describe(&self) -> String {
        let window = |c: &Pool2dConfig| {
            let strides = c.strides.filter(|&s| s != c.pool_size).map_or(String::new(), |s| format!(", strides {s:?}"));
            let same = if c.padding == crate::kernels::pool2d::Padding::Same { ", same" } else { "" };
            format!("{}×{}{strides}{same}", c.pool_size.0, c.pool_size.1)
        };
        match self {
            Pooling::Max(c) => format!("max_pool2d({})", window(c)),
            Pooling::Average(c) => format!("average_pooling2d({})", window(c)),
            Pooling::GlobalAverage => "global_average_pooling2d".to_string(),
        }
    }

    /// The sizes of a batch of `rows` samples of `input` `[H, W, C]` (a window the input cannot
    /// hold, or a stride of 0, is an error naming `op`).
    pub(crate) fn dims(&self, op: &str, rows: usize, input: &[usize]) -> Result<Pool2dDims> {
        let [h, w, c] = image(op, input)?;
        let cfg = match self {
            Pooling::Max(c) | Pooling::Average(c) => *c,
            Pooling::GlobalAverage => Pool2dConfig::new((h, w)),
        };
        Pool2dDims::new(op, &[rows, h, w, c], &cfg)
    }

    pub(super) fn output_shape(&self, op: &str, input: &[usize]) -> Result<Vec<usize>> {
        let y = self.dims(op, 1, input)?.y_shape();
        Ok(match self {
            Pooling::GlobalAverage => vec![y[3]],
            _ => y[1..].to_vec(),
        })
    }

    fn config(&self, d: &Pool2dDims) -> Pool2dConfig {
        match self {
            Pooling::Max(c) | Pooling::Average(c) => *c,
            Pooling::GlobalAverage => Pool2dConfig::new((d.window.h, d.window.w)),
        }
    }

    /// x → y (`[rows, features]` views); max pooling also writes each window's argmax (u32,
    /// `[rows · Ho · Wo · C]`).
    pub(crate) fn forward_gpu(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        y: &Tensor,
        argmax: Option<&Tensor>,
        d: &Pool2dDims,
    ) -> Result<Plan> {
        let (x4, cfg) = (as_images(x, d.x_shape())?, self.config(d));
        match (self, argmax) {
            (Pooling::Max(_), Some(argmax)) => {
                max_pool2d_forward(gpu, &x4, &as_images(y, d.y_shape())?, &as_images(argmax, d.y_shape())?, &cfg)
            }
            (Pooling::Max(_), None) => {
                Err(crate::error::WgnnError::invalid("max_pool2d", "no argmax buffer (an internal error)"))
            }
            (Pooling::Average(_), _) => avg_pool2d_forward(gpu, &x4, &as_images(y, d.y_shape())?, &cfg),
            (Pooling::GlobalAverage, _) => global_avg_pool2d_forward(gpu, &x4, y),
        }
    }

    /// Max pooling's forward of act(batch norm of `x`) with the batch's statistics, normalised on
    /// the way (`x` `[rows, features]`, the norm's input; `norm` its factors): the y and argmax
    /// of the norm's own pass and then [`Pooling::forward_gpu`], to the bit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_normalized_gpu(
        &self,
        gpu: &Gpu,
        x: &Tensor,
        norm: &ChannelNorm<&Tensor>,
        act: Activation,
        y: &Tensor,
        argmax: &Tensor,
        d: &Pool2dDims,
    ) -> Result<Plan> {
        let (x4, y4, argmax4) =
            (as_images(x, d.x_shape())?, as_images(y, d.y_shape())?, as_images(argmax, d.y_shape())?);
        max_pool2d_forward_normalized(gpu, &x4, norm, &y4, &argmax4, &self.config(d), act)
    }

    /// dx (overwritten) from dy; `below`: the activation that made the pool's input (its output
    /// and kind), whose derivative the pass applies on the way; `y`: the forward's output, where
    /// max pooling may read that derivative at its maxima instead.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_gpu(
        &self,
        gpu: &Gpu,
        dy: &Tensor,
        dx: &Tensor,
        argmax: Option<&Tensor>,
        d: &Pool2dDims,
        below: Option<(&Tensor, Activation)>,
        y: &Tensor,
    ) -> Result<Plan> {
        let below = below.map(|(y, act)| as_images(y, d.x_shape()).map(|y| (y, act))).transpose()?;
        let below = below.as_ref().map(|(y, act)| (y, *act));
        let (dx4, cfg) = (as_images(dx, d.x_shape())?, self.config(d));
        match (self, argmax) {
            (Pooling::Max(_), Some(argmax)) => {
                let (dy4, argmax4) = (as_images(dy, d.y_shape())?, as_images(argmax, d.y_shape())?);
                let y4 = as_images(y, d.y_shape())?;
                max_pool2d_backward_with_output(gpu, &dy4, &argmax4, &y4, &dx4, &cfg, below)
            }
            (Pooling::Max(_), None) => {
                Err(crate::error::WgnnError::invalid("max_pool2d", "no argmax buffer (an internal error)"))
            }
            (Pooling::Average(_), _) => avg_pool2d_backward(gpu, &as_images(dy, d.y_shape())?, &dx4, &cfg, below),
            (Pooling::GlobalAverage, _) => global_avg_pool2d_backward(gpu, dy, &dx4, below),
        }
    }

    /// (y, argmax for max pooling).
    pub(crate) fn forward_cpu(&self, x: &[f32], d: &Pool2dDims) -> (Vec<f32>, Option<Vec<u32>>) {
        match self {
            Pooling::Max(_) => {
                let (y, argmax) = cpu::max_pool2d_forward(x, d);
                (y, Some(argmax))
            }
            Pooling::Average(_) => (cpu::avg_pool2d_forward(x, d), None),
            Pooling::GlobalAverage => (cpu::global_avg_pool2d_forward(x, d.x_shape()), None),
        }
    }

    /// dx from dy (`argmax`: the forward's, for max pooling; empty for the others).
    pub(crate) fn backward_cpu(&self, dy: &[f32], argmax: &[u32], d: &Pool2dDims) -> Vec<f32> {
        match self {
            Pooling::Max(_) => cpu::max_pool2d_backward(dy, argmax, d, None),
            Pooling::Average(_) => cpu::avg_pool2d_backward(dy, d, None),
            Pooling::GlobalAverage => cpu::global_avg_pool2d_backward(dy, d.x_shape(), None),
        }
    }
}

impl StepCore for Pooling {
    fn buffers(&self, gpu: &Gpu, at: &Placement, rows: usize, _training: bool) -> Result<CoreBuffers> {
        let argmax = match self {
            Pooling::Max(_) => Some(Tensor::zeros_u32(gpu, &[rows * at.outputs])?),
            _ => None,
        };
        Ok(CoreBuffers { argmax, ..Default::default() })
    }

    fn forward_gpu(&self, c: &GpuCore, _params: &Tensor, out: &Tensor, _act: Activation) -> Result<Plan> {
        let d = self.dims("pool2d", c.rows, &c.at.input)?;
        Pooling::forward_gpu(self, c.gpu, c.input, out, c.buffers.argmax.as_ref(), &d)
    }

    fn backward_input_gpu(
        &self,
        c: &GpuCore,
        _params: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan> {
        let d = self.dims("pool2d", c.rows, &c.at.input)?;
        Pooling::backward_gpu(self, c.gpu, dy, dx, c.buffers.argmax.as_ref(), &d, below, c.output)
    }

    fn forward_cpu(&self, c: &CpuCore, _act: Activation) -> Result<(Vec<f32>, Vec<u32>)> {
        let (y, argmax) = Pooling::forward_cpu(self, c.input, &self.dims("pool2d", c.rows, &c.at.input)?);
        Ok((y, argmax.unwrap_or_default()))
    }

    fn backward_cpu(
        &self,
        c: &CpuCore,
        _grads: &mut [f32],
        dy: &[f32],
        argmax: &[u32],
        input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let d = self.dims("pool2d", c.rows, &c.at.input)?;
        Ok(input_grad.then(|| Pooling::backward_cpu(self, dy, argmax, &d)))
    }
}

/// A max or average pooling's settings in a saved file (`{"type": "max_pool2d", …}`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Saved {
    pool_size: [usize; 2],
    /// Absent: the pool size (Keras' default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    strides: Option<[usize; 2]>,
    padding: String,
}

impl From<&Pool2dConfig> for Saved {
    fn from(c: &Pool2dConfig) -> Self {
        Saved {
            pool_size: [c.pool_size.0, c.pool_size.1],
            strides: c.strides.map(|s| [s.0, s.1]),
            padding: padding_tag(c.padding),
        }
    }
}

impl Saved {
    pub(crate) fn config(&self) -> Result<Pool2dConfig> {
        Ok(Pool2dConfig {
            pool_size: (self.pool_size[0], self.pool_size[1]),
            strides: self.strides.map(|s| (s[0], s[1])),
            padding: parse_padding(&self.padding)?,
        })
    }
}
