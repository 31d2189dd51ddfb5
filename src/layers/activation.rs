//! The activation layer: an elementwise function, or softmax over a row. Its backward takes the
//! gradient w.r.t. its output and gives the one w.r.t. its input, from what the forward saved:
//! the output, or the input for the GELUs ([`Activation::saves_input`]).

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

/// dx = dy ⊙ act′ (softmax: its Jacobian), from `saved`: the output y, or the input z for the
/// GELUs.
pub(crate) fn backward_gpu(gpu: &Gpu, dy: &Tensor, saved: &Tensor, dx: &Tensor, act: Activation) -> Result<Plan> {
    match act {
        Activation::Softmax => softmax_backward(gpu, dy, saved, dx),
        act => bias_act_backward(gpu, dy, saved, dx, None, act, false),
    }
}

pub(crate) fn forward_cpu(x: &[f32], rows: usize, features: usize, act: Activation) -> Vec<f32> {
    match act {
        Activation::Softmax => cpu::softmax(x, rows, features),
        Activation::Identity => x.to_vec(),
        act => cpu::bias_act_forward(x, None, rows, features, act),
    }
}

/// As [`backward_gpu`]: `saved` is the output y, or the input z for the GELUs.
pub(crate) fn backward_cpu(dy: &[f32], saved: &[f32], rows: usize, features: usize, act: Activation) -> Vec<f32> {
    match act {
        Activation::Softmax => cpu::softmax_backward(dy, saved, rows, features),
        act => dy.iter().zip(saved).map(|(&g, &s)| g * act.derivative_from_saved(s)).collect(),
    }
}
