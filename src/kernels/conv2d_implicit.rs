//! The convolution's products with x's patch matrix read in place (implicit GEMM): the forward
//! y = act(patches(x)·kernel + b) and the kernel gradient dK = patches(x)ᵀ·dZ (+ db = Σ dZ), on the
//! subgroup matmul with op(A) from shaders/matmul_conv_a.wgsl ([`super::matmul::matmul_conv_patches`]).
//! CPU reference: `crate::cpu::conv2d::{conv2d_forward, conv2d_backward_weights}`. At stride 1 the
//! input gradient too ([`input_gradient`]): dx is dz's "full" convolution with the kernel turned
//! 180° and its channels swapped, read from dz zero-padded (CPU reference
//! `crate::cpu::conv2d::conv2d_backward_input`).
//!
//! Why: the patch path writes the patch matrix (kh·kw times x) and reads it back, and a training
//! step keeps it from the forward for the kernel gradient. Read in place, the im2col pass, its
//! dispatch and the kept matrix go; the products' loads stay the same in number. Where it applies
//! (no padding, the profile preferring the subgroup kernel) the engine takes it for the kernel
//! gradient, and for the forward where C_in is a multiple of 4 and the direct kernel does not
//! take it (src/kernels/conv2d.rs picks); elsewhere the patch path stays.

use super::conv2d_patches::{copy, flip_kernel, im2col, kernel_matrix, padded_patch};
use super::matmul::{matmul_conv_patches, Epilogue, MatmulOptions};
use super::matmul_choice::subgroup_ok;
use super::matmul_conv_a::{matmul_conv_patches_supported, ConvPatchesA};
use crate::activation::Activation;
use crate::cpu::conv2d::{Conv2dDims, Window};
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

/// How the input gradient is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvInputGradKernel {
    /// dcol = dz·kernelᵀ by the engine's matmul, then col2im sums each pixel's entries.
    Col2im,
    /// The subgroup matmul reading the patches of dz zero-padded, times the kernel turned 180°
    /// (`input_gradient`): no dcol matrix, no col2im pass. Stride 1 only.
    Implicit,
}

/// dz zero-padded so that kh×kw windows over the H×W input grid read its "full" convolution:
/// kh − 1 − pad_top rows above, kw − 1 − pad_left columns left, [rows, H + kh − 1, W + kw − 1,
/// C_out'] (C_out' = C_out rounded up to a multiple of 4, the extra channels zero). Built as
/// im2col's patch matrix of dz for a 1×1 window over that grid; these are its dims.
fn padded_dz_dims(d: &Conv2dDims) -> Conv2dDims {
    let win = &d.window;
    let window = Window {
        h: win.ho,
        w: win.wo,
        kh: 1,
        kw: 1,
        sh: 1,
        sw: 1,
        ho: win.h + win.kh - 1,
        wo: win.w + win.kw - 1,
        pad_top: win.kh - 1 - win.pad_top,
        pad_left: win.kw - 1 - win.pad_left,
    };
    Conv2dDims { rows: d.rows, c_in: d.c_out, c_out: d.c_out, window }
}

/// Whether the implicit input gradient runs on `gpu` for `d`, the profile aside: stride 1 (a padding of at
/// most the window less one, as valid and same give), the padded dz within one binding and u32
/// indices, the input positions within one dispatch's grid, and the product on the subgroup
/// kernel (C_in a multiple of 4).
pub fn conv2d_implicit_input_fits(gpu: &Gpu, d: &Conv2dDims) -> bool {
    let win = &d.window;
    if win.sh != 1 || win.sw != 1 || win.pad_top >= win.kh || win.pad_left >= win.kw {
        return false;
    }
    let pd = padded_dz_dims(d);
    let c4 = d.c_out.next_multiple_of(4);
    let padded_len = pd.rows.checked_mul(pd.window.ho * pd.window.wo).and_then(|v| v.checked_mul(c4));
    let positions = d.rows * win.h * win.w;
    let binding = gpu.limits().max_storage_buffer_binding_size.min(gpu.limits().max_buffer_size);
    padded_len.is_some_and(|len| len <= u32::MAX as usize && len as u64 * 4 <= binding)
        && positions <= gpu.limits().max_compute_workgroups_per_dimension as usize * SUBGROUP_TILE_ROWS
        && subgroup_ok(gpu, positions, d.c_in, win.kh * win.kw * c4, false, false)
}

/// Columns of one subgroup kernel tile on a CPU adapter (8 lanes × 4): an input gradient to
/// fewer channels leaves lanes idle.
const SUBGROUP_TILE_COLUMNS: usize = 32;

/// The kernel the engine computes the input gradient with: [`ConvInputGradKernel::Implicit`]
/// where it runs, the profile prefers the subgroup kernel (a CPU adapter) and C_in fills a tile
/// of its columns; else col2im. On lavapipe (BENCHMARKS.md, 2026-12-07 (late night)) the implicit product
/// took 23.4 ms against col2im's 29.9 at 128×13×13×32 → 3×3 → 64, but 6.0 ms against 5.3 at
/// cnn_mnist's 64×13×13×16 → 32 (C_in 16: half the lanes idle, and the full convolution's K is
/// twice the patch's). With two 16-row halves filling the lanes (the subgroup kernel's NARROW
/// tiles) it took 4.8–5.3 ms against col2im's 4.5–5.4, and in cnn_mnist's step 5.1 ms (0.84 of
/// them padding dz) against 4.6: col2im stays there (BENCHMARKS.md, 2026-12-07 (before midnight)).
pub fn conv2d_backward_input_kernel(gpu: &Gpu, d: &Conv2dDims) -> ConvInputGradKernel {
    let pick = gpu.profile().matmul.prefer_subgroup && d.c_in >= SUBGROUP_TILE_COLUMNS;
    match pick && conv2d_implicit_input_fits(gpu, d) {
        true => ConvInputGradKernel::Implicit,
        false => ConvInputGradKernel::Col2im,
    }
}

/// dx = the input gradient (⊙ act′(below) where given), computed as dz's full convolution with
/// the kernel turned 180° and its channels swapped: the zero-padded dz (one im2col pass), the
/// turned kernel (one small pass), one product. Shapes checked by the caller; where it does not
/// fit ([`conv2d_implicit_input_fits`]), an error.
pub(super) fn input_gradient(
    op: &str,
    gpu: &Gpu,
    dz: &Tensor,
    kernel: &Tensor,
    dx: &Tensor,
    d: &Conv2dDims,
    below: Option<(&Tensor, Activation)>,
) -> Result<Plan> {
    if !conv2d_implicit_input_fits(gpu, d) {
        return Err(crate::error::WgnnError::invalid(
            op,
            format!(
                "the implicit input gradient needs stride 1, C_in a multiple of 4 and the subgroup matmul: dz {:?}, \
                 kernel {:?}, strides ({}, {})",
                dz.shape(),
                kernel.shape(),
                d.window.sh,
                d.window.sw
            ),
        ));
    }
    let (win, pd, c4) = (&d.window, padded_dz_dims(d), d.c_out.next_multiple_of(4));
    let (vh, vw) = (pd.window.ho, pd.window.wo);
    let padded = Tensor::zeros(gpu, &[d.rows, vh, vw, c4])?;
    let flipped = Tensor::zeros(gpu, &[win.kh * win.kw * c4, d.c_in])?;
    let mut plan = Plan::new();
    plan.push(im2col(gpu, dz, &padded.reshape(&[d.rows * vh * vw, c4])?, &pd, d.rows, 0)?);
    plan.push(flip_kernel(gpu, kernel, &flipped, d)?);
    let pixels = [d.rows * win.h * win.w, d.c_in];
    let below = below.map(|(y, act)| y.reshape(&pixels).map(|y| (y, act))).transpose()?;
    let epilogue = match &below {
        Some((y, act)) => Epilogue::ActGrad { y, act: *act },
        None => Epilogue::None,
    };
    let patches = ConvPatchesA { image: &padded, grid: (win.h, win.w), strides: (1, 1), window: (win.kh, win.kw) };
    let opts = MatmulOptions { epilogue, ..Default::default() };
    plan.extend(matmul_conv_patches(gpu, &patches, &flipped, &dx.reshape(&pixels)?, None, &opts)?);
    Ok(plan)
}
