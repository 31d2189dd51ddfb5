//! The convolution's products with x's patch matrix read in place (implicit GEMM): the forward
//! y = act(patches(x)·kernel + b) and the kernel gradient dK = patches(x)ᵀ·dZ (+ db = Σ dZ), on the
//! subgroup matmul with op(A) from shaders/matmul_conv_a.wgsl ([`super::matmul::matmul_conv_patches`]).
//! CPU reference: `crate::cpu::conv2d::{conv2d_forward, conv2d_backward_weights}`.
//!
//! Why: the patch path writes the patch matrix (kh·kw times x) and reads it back, and a training
//! step keeps it from the forward for the kernel gradient. Read in place, the im2col pass, its
//! dispatch and the kept matrix go; the products' loads stay the same in number. Where it applies
//! (no padding, the profile preferring the subgroup kernel) the engine takes it for the kernel
//! gradient, and for the forward where C_in is a multiple of 4 and the direct kernel does not
//! take it (src/kernels/conv2d.rs picks); elsewhere the patch path stays.

use super::conv2d_patches::{copy, kernel_matrix, padded_patch};
use super::matmul::{matmul_conv_patches, Epilogue, MatmulOptions};
use super::matmul_choice::subgroup_ok;
use super::matmul_conv_a::{matmul_conv_patches_supported, ConvPatchesA};
use crate::activation::Activation;
use crate::cpu::conv2d::Conv2dDims;
use crate::device::Gpu;
use crate::error::Result;
use crate::plan::Plan;
use crate::tensor::Tensor;

/// x's patches as the product's op(A): the output grid, the strides and the window.
fn patches_of<'a>(x: &'a Tensor, d: &Conv2dDims) -> ConvPatchesA<'a> {
    let win = &d.window;
    ConvPatchesA { image: x, grid: (win.ho, win.wo), strides: (win.sh, win.sw), window: (win.kh, win.kw) }
}

/// The subgroup kernel's smallest tile of rows: a forward's rows·Ho·Wo positions must fit the
/// grid's one dimension of workgroups in tiles of this many (the patch path cuts the batch into
/// chunks instead).
const SUBGROUP_TILE_ROWS: usize = 16;

/// One dispatch's grid covers the forward's positions.
fn grid_covers(gpu: &Gpu, d: &Conv2dDims) -> bool {
    let positions = d.rows * d.window.ho * d.window.wo;
    positions <= gpu.limits().max_compute_workgroups_per_dimension as usize * SUBGROUP_TILE_ROWS
}

/// No window reaches past the image (valid padding, or same where it pads nothing).
fn unpadded(d: &Conv2dDims) -> bool {
    let win = &d.window;
    win.pad_top == 0
        && win.pad_left == 0
        && (win.ho - 1) * win.sh + win.kh <= win.h
        && (win.wo - 1) * win.sw + win.kw <= win.w
}

/// Whether the engine computes this convolution's forward and kernel gradient by implicit GEMM
/// (16-byte aligned views granted): no padding, the positions within one dispatch's grid, both
/// products on the subgroup kernel, and the device profile preferring it (a CPU adapter: its
/// patch products take it too). On other devices the patch path stays until measured there.
pub fn conv2d_implicit_applies(gpu: &Gpu, d: &Conv2dDims) -> bool {
    let (positions, patch) = (d.rows * d.window.ho * d.window.wo, padded_patch(d));
    gpu.profile().matmul.prefer_subgroup
        && unpadded(d)
        && grid_covers(gpu, d)
        && subgroup_ok(gpu, positions, d.c_out, patch, false, false)
        && subgroup_ok(gpu, patch, d.c_out, positions, true, false)
}

/// Whether [`forward`] runs with this x (its view aligned, no padding, the
/// product on the subgroup kernel; the profile aside): what forcing it needs.
pub(super) fn forward_fits(gpu: &Gpu, x: &Tensor, d: &Conv2dDims) -> bool {
    unpadded(d) && grid_covers(gpu, d) && matmul_conv_patches_supported(gpu, &patches_of(x, d), d.c_out, false, false)
}

/// Whether [`kernel_gradient`] runs with this x.
pub(super) fn kernel_gradient_fits(gpu: &Gpu, x: &Tensor, d: &Conv2dDims) -> bool {
    unpadded(d) && matmul_conv_patches_supported(gpu, &patches_of(x, d), d.c_out, true, false)
}

/// Whether both implicit products run on `gpu` with this x, the device profile aside (so on a
/// GPU profile too, when forced): for tests and benchmarks.
pub fn conv2d_implicit_runs(gpu: &Gpu, x: &Tensor, d: &Conv2dDims) -> bool {
    forward_fits(gpu, x, d) && kernel_gradient_fits(gpu, x, d)
}

/// y = act(patches(x)·kernel + bias), y `[rows, Ho, Wo, C_out]` (shapes checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    gpu: &Gpu,
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    act: Activation,
    d: &Conv2dDims,
) -> Result<Plan> {
    let positions = d.rows * d.window.ho * d.window.wo;
    let opts = MatmulOptions { epilogue: Epilogue::BiasAct { bias, act }, ..Default::default() };
    let mut plan = Plan::new();
    let k2 = kernel_matrix(gpu, kernel, d, &mut plan)?;
    plan.extend(matmul_conv_patches(gpu, &patches_of(x, d), &k2, &y.reshape(&[positions, d.c_out])?, None, &opts)?);
    Ok(plan)
}

/// dkernel = patches(x)ᵀ·dz, and dbias = Σ dz where given (shapes checked by the caller).
pub(super) fn kernel_gradient(
    gpu: &Gpu,
    x: &Tensor,
    dz: &Tensor,
    dkernel: &Tensor,
    dbias: Option<&Tensor>,
    d: &Conv2dDims,
) -> Result<Plan> {
    let (positions, patch, k) = (d.rows * d.window.ho * d.window.wo, d.patch_len(), padded_patch(d));
    let opts = MatmulOptions { trans_a: true, ..Default::default() };
    let dz2 = dz.reshape(&[positions, d.c_out])?;
    if k == patch {
        return matmul_conv_patches(gpu, &patches_of(x, d), &dz2, &dkernel.reshape(&[patch, d.c_out])?, dbias, &opts);
    }
    // The padded patch's last rows are the zero columns' gradients: written apart, copied back.
    let dk2 = Tensor::zeros(gpu, &[k, d.c_out])?;
    let mut plan = matmul_conv_patches(gpu, &patches_of(x, d), &dz2, &dk2, dbias, &opts)?;
    plan.push(copy(gpu, &dk2, dkernel, dkernel.len())?);
    Ok(plan)
}
