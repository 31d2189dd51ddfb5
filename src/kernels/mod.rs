//! The kernel wrappers: one module per `shaders/<family>.wgsl` family (its [`KernelFamily`]s are
//! registered through [`crate::registry`]).
//!
//! A kernel wrapper checks shapes, picks a variant (by the device's [`crate::profile`]) and
//! returns a [`Plan`]: dispatches with their bind groups already made. A plan is built once and
//! recorded as often as needed, many times into one compute pass; nothing in it reads back.

pub mod attention;
pub mod attention_choice;
pub mod attention_dims;
pub mod batch_norm;
pub mod batch_norm_pooled;
pub mod bias_act;
pub(crate) mod check;
pub mod conv2d;
mod conv2d_direct;
mod conv2d_implicit;
mod conv2d_patches;
pub mod dense_softmax_xent;
pub mod dropout;
pub mod embedding;
pub mod flash_attention;
pub mod flash_attention_subgroup;
pub mod gather;
pub mod grad_norm;
pub mod hinge;
pub mod layer_norm;
pub mod matmul;
pub(crate) mod matmul_check;
pub(crate) mod matmul_choice;
pub(crate) mod matmul_conv_a;
pub(crate) mod matmul_gathered_a;
pub(crate) mod matmul_options;
pub mod matmul_register;
pub mod mse;
pub mod optimizer;
pub mod pool2d;
pub mod pool2d_normalized;
pub mod positional;
pub mod reduce;
pub mod sigmoid_bce;
pub mod softmax_grad;
pub mod softmax_xent;
pub mod step_guard;
pub mod token_batch;
pub mod totals;

/// Shared WGSL: the activation functions, prepended to the families that apply one.
pub(crate) const ACTIVATION_WGSL: &str = include_str!("../../shaders/activation.wgsl");
/// Lane widths for the kernels written over `V` (batch_norm): one value, or a vec4 of four.
pub(crate) const LANES_SCALAR_WGSL: &str = include_str!("../../shaders/lanes_scalar.wgsl");
pub(crate) const LANES_VEC4_WGSL: &str = include_str!("../../shaders/lanes_vec4.wgsl");

/// Of a family written over `V` in its two lane widths: the vec4 one and 4 where rows of `cols`
/// floats allow vec4 views (cols a multiple of 4, every view in `views` 16-byte aligned), else the
/// scalar one and 1.
pub(crate) fn lane_family(
    cols: usize,
    views: &[&crate::tensor::Tensor],
    scalar: &'static KernelFamily,
    vec4: &'static KernelFamily,
) -> (&'static KernelFamily, usize) {
    match cols.is_multiple_of(4) && views.iter().all(|t| t.byte_offset().is_multiple_of(16)) {
        true => (vec4, 4),
        false => (scalar, 1),
    }
}

pub use crate::plan::{Dispatch, Plan};
pub use crate::registry::{Access, Constant, KernelFamily};
