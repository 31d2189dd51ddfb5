//! The direct forward convolution for small patches (shaders/conv2d_direct.wgsl): y =
//! act(conv(x, kernel) + bias) read straight from x, one output position and all its output
//! channels an invocation, without the patch matrix of im2col + matmul. CPU reference:
//! `crate::cpu::conv2d::conv2d_forward`.
//!
//! Why: at the default CNN's first layer (28×28×1, 3×3 → 16, batch 64) im2col wrote a
//! [43264, 12] patch matrix and a matmul with N = 16, K = 12 read it back: 5.0 + 9.7 ms of a
//! 76 ms step on lavapipe, for 16.6 MFLOP. Here each x value is loaded once per patch cell and
//! each weight at a constant address (the shape is in override constants), so llvmpipe loads it
//! once for all SIMD lanes; a GPU gets the same: one pass over x and y, the kernel in cache.
//! Large patches (C_in·kh·kw past [`MAX_DIRECT_PATCH`]) keep im2col + matmul, whose register
//! tiles suit a long K better than a fully unrolled loop.

use crate::activation::Activation;
use crate::cpu::conv2d::Conv2dDims;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Dispatch;
use crate::registry::{dispatch, grid_1d, Access, Constant, KernelFamily};
use crate::tensor::Tensor;

use super::ACTIVATION_WGSL;

pub(crate) const CONV2D_DIRECT: KernelFamily = KernelFamily {
    name: "conv2d_direct",
    sources: &[ACTIVATION_WGSL, include_str!("../../shaders/conv2d_direct.wgsl")],
    // x, kernel (vec4s), bias (vec4s), y (vec4s), the kept patch matrix.
    storage: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite],
};

const WG: u32 = 64;
/// The longest patch (kh·kw·C_in) the direct kernel takes: its loops are unrolled per patch cell
/// and output vec4, so code size and registers grow with it (3×3×3, an RGB first layer).
pub const MAX_DIRECT_PATCH: usize = 27;
/// The most output channels: the shader's accumulators (8 vec4s).
pub const MAX_DIRECT_CHANNELS: usize = 32;
/// The most output channels for which the engine picks the direct kernel by itself. Measured on
/// lavapipe (2-core, loaded; `cargo bench --bench kernels conv2d_forward`, 3 runs, medians):
/// 28×28×1 → 16 at batch 64, direct 12.6 ms against 27.9 ms for im2col + matmul; 28×28×1 → 32 at
/// batch 128, direct 111 ms against 60 ms (8 vec4 accumulators a lane spill on llvmpipe). On a CPU
/// adapter exactly 16 channels go to the implicit GEMM where it applies (`conv2d_forward_kernel`).
pub const PICK_DIRECT_MAX_CHANNELS: usize = 16;

/// How the forward convolution is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvForwardKernel {
    /// The patch matrix (im2col, or x itself for a 1×1 kernel at stride 1) times the kernel by the
    /// engine's matmul.
    Im2colMatmul,
    /// shaders/conv2d_direct.wgsl: no patch matrix.
    Direct,
    /// The engine's subgroup matmul reading the patches straight from x (implicit GEMM,
    /// src/kernels/conv2d_implicit.rs): no patch matrix, none kept.
    Implicit,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DirectParams {
    rows: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    sh: u32,
    sw: u32,
    pad_top: u32,
    pad_left: u32,
    stride_k: u32,
    slope: f32,
    _pad: u32,
}

/// Whether the direct kernel runs this convolution: a patch of at most [`MAX_DIRECT_PATCH`]
/// values, C_out a multiple of 4 up to [`MAX_DIRECT_CHANNELS`], and the kernel, bias and y views
/// 16-byte aligned (they are read and written as vec4s).
pub fn conv2d_direct_fits(d: &Conv2dDims, kernel: &Tensor, bias: Option<&Tensor>, y: &Tensor) -> bool {
    let aligned = |t: &Tensor| t.byte_offset().is_multiple_of(16);
    d.patch_len() <= MAX_DIRECT_PATCH
        && d.c_out.is_multiple_of(4)
        && d.c_out <= MAX_DIRECT_CHANNELS
        && aligned(kernel)
        && aligned(y)
        && bias.is_none_or(aligned)
}

/// y = act(conv(x, kernel) + bias) in one dispatch; with `keep`, also x's patch matrix `[rows·Ho·Wo,
/// K]` into it (K ≥ the patch; the columns past it are left as they are). Shapes are the caller's
/// to check (src/kernels/conv2d.rs); this checks only what the kernel itself needs.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_direct(
    op: &str,
    gpu: &Gpu,
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    act: Activation,
    d: &Conv2dDims,
    keep: Option<&Tensor>,
) -> Result<Dispatch> {
    if !conv2d_direct_fits(d, kernel, bias, y) {
        return Err(WgnnError::invalid(
            op,
            format!(
                "the direct kernel needs a patch of at most {MAX_DIRECT_PATCH} values, C_out a multiple of 4 up to \
                 {MAX_DIRECT_CHANNELS} and 16-byte aligned kernel, bias and y: x {:?}, kernel {:?}",
                d.x_shape(),
                d.kernel_shape()
            ),
        ));
    }
    let win = &d.window;
    let u = |v: usize| v as u32;
    let stride_k = keep.map_or(0, |col| col.shape()[1]);
    let p = DirectParams {
        rows: u(d.rows),
        h: u(win.h),
        w: u(win.w),
        ho: u(win.ho),
        wo: u(win.wo),
        sh: u(win.sh),
        sw: u(win.sw),
        pad_top: u(win.pad_top),
        pad_left: u(win.pad_left),
        stride_k: u(stride_k),
        slope: act.slope(),
        _pad: 0,
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let constants: [Constant; 8] = [
        ("WG", WG as f64),
        ("KH", win.kh as f64),
        ("KW", win.kw as f64),
        ("CIN", d.c_in as f64),
        ("COUT4", (d.c_out / 4) as f64),
        ("HAS_BIAS", flag(bias.is_some())),
        ("KEEP", flag(keep.is_some())),
        ("ACT", act.code() as f64),
    ];
    // Unused bindings take a tensor already bound with the same access.
    let tensors = [x, kernel, bias.unwrap_or(kernel), y, keep.unwrap_or(y)];
    let grid = grid_1d(gpu, d.rows * win.ho * win.wo, WG);
    dispatch(gpu, &CONV2D_DIRECT, "conv2d_direct", &constants, &p, &tensors, grid)
}
