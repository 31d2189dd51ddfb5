//! Max pooling of a training batch norm's output, computed on the way
//! (shaders/pool2d_normalized.wgsl): batch norm → activation → max pool in one pass after the
//! norm's statistics, the normalised image neither written nor read back. CPU reference:
//! `crate::cpu::pool2d::max_pool2d_forward_normalized`.
//!
//! Why: the normalised image is as large as the convolution's output (cnn_mnist's first layer:
//! 692,224 values a batch); writing it and reading it back were a pass and a half over memory,
//! ~1.2 ms of bn_normalize and half of the pool's ~1.0 ms on lavapipe. The step's other readers
//! of that image are gone too: the norm's backward reads its input, and max pooling's backward
//! reads act′ at its maxima from the pool's output (see `max_pool2d_backward_with_output`).

use super::pool2d::{check_max_forward, window_params, POOL2D_WGSL, WG};
use super::{ACTIVATION_WGSL, LANES_SCALAR_WGSL, LANES_VEC4_WGSL};
use crate::activation::Activation;
use crate::device::Gpu;
use crate::error::Result;
use crate::plan::Plan;
use crate::registry::{dispatch, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub use crate::cpu::pool2d::ChannelNorm;
use crate::cpu::pool2d::Pool2dConfig;
use crate::kernels::check::expect_len;

const NORMALIZED_WGSL: &str = include_str!("../../shaders/pool2d_normalized.wgsl");
/// pool2d.wgsl's five bindings, then γ, β, the mean and inv_std.
const STORAGE: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::ReadWrite,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
    Access::Read,
];

/// Windows per invocation (the shader's OUTS): a channel's parameters loaded once for them.
const OUTS: usize = 4;

pub(crate) const POOL2D_NORMALIZED: KernelFamily = KernelFamily {
    name: "pool2d_normalized",
    sources: &[ACTIVATION_WGSL, LANES_SCALAR_WGSL, POOL2D_WGSL, NORMALIZED_WGSL],
    storage: STORAGE,
};

/// The same over vec4s of four channels, where C is a multiple of 4.
pub(crate) const POOL2D_NORMALIZED_VEC4: KernelFamily = KernelFamily {
    name: "pool2d_normalized_vec4",
    sources: &[ACTIVATION_WGSL, LANES_VEC4_WGSL, POOL2D_WGSL, NORMALIZED_WGSL],
    storage: STORAGE,
};

/// y and argmax as [`super::pool2d::max_pool2d_forward`] gives them for the image act(γ·((x −
/// mean)·inv_std) + β) (the batch norm's training output, `act` element-wise), in one pass over x.
/// x `[rows, H, W, C]`; `norm`'s tensors `[C]`; y, argmax `[rows, Ho, Wo, C]`.
pub fn max_pool2d_forward_normalized(
    gpu: &Gpu,
    x: &Tensor,
    norm: &ChannelNorm<&Tensor>,
    y: &Tensor,
    argmax: &Tensor,
    cfg: &Pool2dConfig,
    act: Activation,
) -> Result<Plan> {
    const OP: &str = "max_pool2d_forward_normalized";
    act.validate_elementwise(OP)?;
    let per_channel = [("gamma", norm.gamma), ("beta", norm.beta), ("mean", norm.mean), ("inv_std", norm.inv_std)];
    let d = check_max_forward(OP, x, y, argmax, cfg, &per_channel)?;
    let channels = format!("[{}] (x {:?})", d.channels, x.shape());
    for (name, t) in per_channel {
        expect_len(OP, name, t, DType::F32, d.channels, &channels)?;
    }
    let vec4 = d.channels.is_multiple_of(4) && per_channel.iter().all(|(_, t)| t.byte_offset().is_multiple_of(16));
    let (family, lanes) = if vec4 { (&POOL2D_NORMALIZED_VEC4, 4) } else { (&POOL2D_NORMALIZED, 1) };
    let mut params = window_params(&d);
    (params.c, params.slope) = ((d.channels / lanes) as u32, act.slope());
    let bindings = [x, x, y, argmax, x, norm.gamma, norm.beta, norm.mean, norm.inv_std];
    let constants = [("WG", WG as f64), ("ACT", act.code() as f64), ("OUTS", OUTS as f64)];
    // One invocation per OUTS windows of a channel (vec4).
    let windows = y.len() / d.channels;
    let grid = grid_1d(gpu, windows.div_ceil(OUTS) * (d.channels / lanes), WG);
    Ok(dispatch(gpu, family, "max_pool2d_forward_normalized", &constants, &params, &bindings, grid)?.into())
}
