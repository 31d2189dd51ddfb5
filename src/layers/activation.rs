//! The activation layer: an elementwise function, or softmax over a row. Its backward takes the
//! gradient w.r.t. its output and gives the one w.r.t. its input, from the output alone.

use crate::activation::Activation;
use crate::cpu;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::bias_act::{bias_act_backward, bias_act_forward};
use crate::kernels::softmax_grad::softmax_backward;
use crate::kernels::softmax_xent::softmax;
use crate::plan::Plan;
use crate::tensor::Tensor;

/// y = act(x), x and y `[rows, features]`.
pub(crate) fn forward_gpu(gpu: &Gpu, x: &Tensor, y: &Tensor, act: Activation) -> Result<Plan> {
    match act {
        Activation::Softmax => softmax(gpu, x, y),
        act => bias_act_forward(gpu, x, None, y, act),
    }
}

/// dx = dy ⊙ act′ (softmax: its Jacobian), from the output y.
pub(crate) fn backward_gpu(gpu: &Gpu, dy: &Tensor, y: &Tensor, dx: &Tensor, act: Activation) -> Result<Plan> {
    match act {
        Activation::Softmax => softmax_backward(gpu, dy, y, dx),
        act => bias_act_backward(gpu, dy, y, dx, None, act, false),
    }
}

pub(crate) fn forward_cpu(x: &[f32], rows: usize, features: usize, act: Activation) -> Vec<f32> {
    match act {
        Activation::Softmax => cpu::softmax(x, rows, features),
        Activation::Identity => x.to_vec(),
        act => cpu::bias_act_forward(x, None, rows, features, act),
    }
}

pub(crate) fn backward_cpu(dy: &[f32], y: &[f32], rows: usize, features: usize, act: Activation) -> Vec<f32> {
    match act {
        Activation::Softmax => cpu::softmax_backward(dy, y, rows, features),
        act => dy.iter().zip(y).map(|(&g, &o)| g * act.derivative_from_saved(o)).collect(),
    }
}
