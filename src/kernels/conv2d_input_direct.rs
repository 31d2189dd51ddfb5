//! The direct input gradient of a convolution into at most 16 channels
//! (shaders/conv2d_input_direct.wgsl): dx = Σ over the taps of dz · kernelᵀ, read straight from
//! dz, one input pixel and all its channels an invocation, without the dcol matrix of the patch
//! path (a matmul writing `[rows·Ho·Wo, kh·kw·C_in]`, col2im reading it back). CPU reference:
//! `crate::cpu::conv2d::conv2d_backward_input`.
//!
//! Why: the default CNN's second layer (13×13×16 → 3×3 → 32, batch 64) spent 5.2 ms of a 27.5 ms
//! step on lavapipe on its input gradient (dcol 3.7 + col2im 1.5). Its product has N = C_in = 16:
//! as a transposed implicit GEMM half the subgroup matmul's lanes would idle (BENCHMARKS.md,
//! 2026-12-07). Here the weights come at constant addresses (the shape in override constants,
//! every tap and output vec4 written out), and a pixel's 16 sums stay in registers: one pass over
//! dz and dx, no scratch. Measured, it lost: on lavapipe 2.4–7× slower than dcol + col2im at that
//! shape (figures at [`super::conv2d::conv2d_backward_input_using`]), so the engine does not take
//! it; it stays for the devices where it may win (a GPU: unmeasured), run by asking for it.

use crate::activation::Activation;
use crate::cpu::conv2d::Conv2dDims;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Dispatch;
use crate::registry::{dispatch, grid_1d, Access, KernelFamily};
use crate::tensor::Tensor;

use super::ACTIVATION_WGSL;

pub(crate) const CONV2D_INPUT_DIRECT: KernelFamily = KernelFamily {
    name: "conv2d_input_direct",
    sources: &[ACTIVATION_WGSL, include_str!("../../shaders/conv2d_input_direct.wgsl")],
    // dz (vec4s), kernel (vec4s), dx, below.
    storage: &[Access::Read, Access::Read, Access::ReadWrite, Access::Read],
};

const WG: u32 = 64;
/// The most input channels (the shader's 4 vec4 accumulators).
pub const MAX_INPUT_DIRECT_CHANNELS: usize = 16;
/// The most output channels (8 output vec4s written out per tap).
pub const MAX_INPUT_DIRECT_FILTERS: usize = 32;
/// The largest kernel side (5×5 taps written out).
pub const MAX_INPUT_DIRECT_SIDE: usize = 5;

/// How the input gradient is computed ([`super::conv2d::conv2d_backward_input_using`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvInputKernel {
    /// dcol = dZ·kernelᵀ by the engine's matmul, then col2im (or one matmul for a 1×1 kernel at
    /// stride 1).
    Patches,
    /// shaders/conv2d_input_direct.wgsl: no dcol matrix.
    Direct,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct InputDirectParams {
    rows: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    sh: u32,
    sw: u32,
    pad_top: u32,
    pad_left: u32,
    act: u32,
    slope: f32,
    _pad: u32,
}

/// Whether the direct kernel computes this input gradient: at most
/// [`MAX_INPUT_DIRECT_CHANNELS`] input channels, C_out a multiple of 4 up to
/// [`MAX_INPUT_DIRECT_FILTERS`], a kernel at most [`MAX_INPUT_DIRECT_SIDE`] on a side, and the dz
/// and kernel views 16-byte aligned (read as vec4s).
pub fn conv2d_input_direct_fits(d: &Conv2dDims, dz: &Tensor, kernel: &Tensor) -> bool {
    let aligned = |t: &Tensor| t.byte_offset().is_multiple_of(16);
    let win = &d.window;
    d.c_in <= MAX_INPUT_DIRECT_CHANNELS
        && d.c_out.is_multiple_of(4)
        && d.c_out <= MAX_INPUT_DIRECT_FILTERS
        && win.kh <= MAX_INPUT_DIRECT_SIDE
        && win.kw <= MAX_INPUT_DIRECT_SIDE
        && aligned(dz)
        && aligned(kernel)
}

/// dx = the input gradient (⊙ act′(below) with `below`) in one dispatch. Shapes are the caller's
/// to check (src/kernels/conv2d.rs); this checks only what the kernel itself needs.
pub(super) fn conv2d_input_direct(
    op: &str,
    gpu: &Gpu,
    dz: &Tensor,
    kernel: &Tensor,
    dx: &Tensor,
    d: &Conv2dDims,
    below: Option<(&Tensor, Activation)>,
) -> Result<Dispatch> {
    if !conv2d_input_direct_fits(d, dz, kernel) {
        return Err(WgnnError::invalid(
            op,
            format!(
                "the direct input gradient needs at most {MAX_INPUT_DIRECT_CHANNELS} input channels, C_out a \
                 multiple of 4 up to {MAX_INPUT_DIRECT_FILTERS}, a kernel at most {MAX_INPUT_DIRECT_SIDE} on a side \
                 and 16-byte aligned dz and kernel: dx {:?}, kernel {:?}",
                d.x_shape(),
                d.kernel_shape()
            ),
        ));
    }
    let win = &d.window;
    let u = |v: usize| v as u32;
    let (act, slope) = below.map_or((0, 0.0), |(_, a)| (a.code(), a.slope()));
    let p = InputDirectParams {
        rows: u(d.rows),
        h: u(win.h),
        w: u(win.w),
        ho: u(win.ho),
        wo: u(win.wo),
        sh: u(win.sh),
        sw: u(win.sw),
        pad_top: u(win.pad_top),
        pad_left: u(win.pad_left),
        act,
        slope,
        _pad: 0,
    };
    let constants = [
        ("WG", WG as f64),
        ("KH", win.kh as f64),
        ("KW", win.kw as f64),
        ("CIN", d.c_in as f64),
        ("COUT4", (d.c_out / 4) as f64),
        ("SH", win.sh as f64),
        ("SW", win.sw as f64),
    ];
    // Without `below`, dz stands in for it (read, never used).
    let tensors = [dz, kernel, dx, below.map_or(dz, |(y, _)| y)];
    let grid = grid_1d(gpu, d.rows * win.h * win.w, WG);
    dispatch(gpu, &CONV2D_INPUT_DIRECT, "conv2d_input_direct", &constants, &p, &tensors, grid)
}
