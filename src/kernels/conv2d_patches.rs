//! The patch matrix of a 2-D convolution (shaders/conv2d.wgsl's im2col, col2im and copy), for
//! [`super::conv2d`]'s products: its row length (the patch padded for the vec4 kernels), the
//! chunks of images a batch is cut into where the whole matrix passes a binding or a grid
//! dimension, and [`ConvPatches`], the batch's matrix kept from the forward for the kernel
//! gradient.

use bytemuck::Zeroable;

use super::matmul::min_rows_per_workgroup;
use super::ACTIVATION_WGSL;
use crate::activation::Activation;
use crate::cpu::conv2d::Conv2dDims;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::{Dispatch, Plan};
use crate::registry::{dispatch, grid_1d, Access, KernelFamily};
use crate::tensor::Tensor;

pub(crate) const CONV2D: KernelFamily = KernelFamily {
    name: "conv2d",
    sources: &[ACTIVATION_WGSL, include_str!("../../shaders/conv2d.wgsl")],
    // src and dst, then the same two as vec4 arrays (the `_vec4` entries), then col2im's `below`.
    storage: &[Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite, Access::Read],
};

const WG: u32 = 64;
/// Loop iterations one invocation of conv2d.wgsl runs at most: far below lavapipe's 65,535.
const MAX_INVOCATION_LOOP: usize = 8192;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Conv2dParams {
    rows: u32,
    row0: u32,
    h: u32,
    w: u32,
    c: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    pad_top: u32,
    pad_left: u32,
    seg: u32,
    ky_per: u32,
    stride_k: u32,
    len: u32,
    _unused: u32,
    slope: f32,
    c_out: u32,
}

/// The col matrix's row length: the patch rounded up to a multiple of 4, so that the products
/// take the matmul's vec4 kernels (at the mnist_convnet's first layer, 3·3·1 → 12: the forward
/// and kernel-gradient products ran ~2.7× faster on lavapipe).
pub(super) fn padded_patch(d: &Conv2dDims) -> usize {
    d.patch_len().next_multiple_of(4)
}

fn params(d: &Conv2dDims, rows: usize, row0: usize, seg: usize, ky_per: usize) -> Conv2dParams {
    let win = &d.window;
    let u = |v: usize| v as u32;
    Conv2dParams {
        rows: u(rows),
        row0: u(row0),
        h: u(win.h),
        w: u(win.w),
        c: u(d.c_in),
        ho: u(win.ho),
        wo: u(win.wo),
        kh: u(win.kh),
        kw: u(win.kw),
        sh: u(win.sh),
        sw: u(win.sw),
        pad_top: u(win.pad_top),
        pad_left: u(win.pad_left),
        seg: u(seg),
        ky_per: u(ky_per),
        stride_k: u(padded_patch(d)),
        len: 0,
        _unused: 0,
        slope: 0.0,
        c_out: u(d.c_out),
    }
}

/// dst[..len] ← src[..len].
pub(super) fn copy(gpu: &Gpu, src: &Tensor, dst: &Tensor, len: usize) -> Result<Dispatch> {
    let p = Conv2dParams { len: len as u32, ..Zeroable::zeroed() };
    dispatch(gpu, &CONV2D, "copy", &[("WG", WG as f64)], &p, &[src, dst, src, dst, src], grid_1d(gpu, len, WG))
}

/// The kernel as the `[K, C_out]` matrix of the products: a reshape, or where the patch is padded,
/// a copy (pushed to `plan`) into a zeroed matrix owned by the plan.
pub(super) fn kernel_matrix(gpu: &Gpu, kernel: &Tensor, d: &Conv2dDims, plan: &mut Plan) -> Result<Tensor> {
    let (patch, k) = (d.patch_len(), padded_patch(d));
    if k == patch {
        return kernel.reshape(&[patch, d.c_out]);
    }
    let padded = Tensor::zeros(gpu, &[k, d.c_out])?;
    plan.push(copy(gpu, kernel, &padded, kernel.len())?);
    Ok(padded)
}

/// The input gradient's kernel `[kh·kw·C_out', C_in]` (C_out' = C_out rounded up to a multiple
/// of 4; the extra rows zero): the kernel turned 180° with its channels swapped, written into
/// `flipped` (zeroed by its owner, shape checked by the caller).
pub(super) fn flip_kernel(gpu: &Gpu, kernel: &Tensor, flipped: &Tensor, d: &Conv2dDims) -> Result<Dispatch> {
    let len = kernel.len();
    let p = Conv2dParams { len: len as u32, stride_k: d.c_out.next_multiple_of(4) as u32, ..params(d, 0, 0, 0, 0) };
    let bindings = [kernel, flipped, kernel, flipped, kernel];
    dispatch(gpu, &CONV2D, "flip_kernel", &[("WG", WG as f64)], &p, &bindings, grid_1d(gpu, len, WG))
}

/// Whether the `_vec4` entries apply: whole groups of 4 channels, 16-byte aligned views.
fn vec4_channels(d: &Conv2dDims, image: &Tensor, col: &Tensor) -> bool {
    d.c_in.is_multiple_of(4) && image.byte_offset().is_multiple_of(16) && col.byte_offset().is_multiple_of(16)
}

/// col `[rows·Ho·Wo, K]` ← the patches of images row0..row0 + rows of x.
pub(super) fn im2col(
    gpu: &Gpu,
    x: &Tensor,
    col: &Tensor,
    d: &Conv2dDims,
    rows: usize,
    row0: usize,
) -> Result<Dispatch> {
    let win = &d.window;
    let vec4 = vec4_channels(d, x, col);
    let units = if vec4 { d.c_in / 4 } else { d.c_in };
    // Per kernel row: kw cells of (units + 1) steps. Whole kernel rows where they fit the budget
    // (fewer invocations, each setting up once), else one row and a segment of its channels.
    let row_steps = win.kw * (units + 1);
    let (ky_per, seg) = if row_steps <= MAX_INVOCATION_LOOP {
        ((MAX_INVOCATION_LOOP / row_steps).min(win.kh), units)
    } else {
        (1, (MAX_INVOCATION_LOOP / win.kw).saturating_sub(1).max(1))
    };
    let mut grid = grid_1d(gpu, rows * win.ho * win.wo, WG);
    grid[2] = (win.kh.div_ceil(ky_per) * units.div_ceil(seg)) as u32;
    let p = params(d, rows, row0, seg, ky_per);
    let entry = if vec4 { "im2col_vec4" } else { "im2col" };
    dispatch(gpu, &CONV2D, entry, &[("WG", WG as f64)], &p, &[x, col, x, col, x], grid)
}

/// Images row0..row0 + rows of dx ← the col2im sums of dcol `[rows·Ho·Wo, K]`, ⊙ act'(below) where
/// the activation below is given.
pub(super) fn col2im(
    gpu: &Gpu,
    dcol: &Tensor,
    dx: &Tensor,
    d: &Conv2dDims,
    (rows, row0): (usize, usize),
    below: Option<(&Tensor, Activation)>,
) -> Result<Dispatch> {
    let win = &d.window;
    let vec4 = vec4_channels(d, dx, dcol);
    let units = if vec4 { d.c_in / 4 } else { d.c_in };
    // Per channel unit: the window rows and cells covering one pixel, at most kh·(kw + 1) + 1 steps.
    let seg = (MAX_INVOCATION_LOOP / (win.kh * (win.kw + 1) + 1)).clamp(1, units);
    let mut grid = grid_1d(gpu, rows * win.h * win.w, WG);
    grid[2] = units.div_ceil(seg) as u32;
    let (y, p, act) = match below {
        Some((y, act)) => (y, Conv2dParams { slope: act.slope(), ..params(d, rows, row0, seg, 1) }, act.code()),
        None => (dcol, params(d, rows, row0, seg, 1), 0),
    };
    let entry = if vec4 { "col2im_vec4" } else { "col2im" };
    // The geometry as constants too: the shader divides by it per pixel (see conv2d.wgsl).
    let u = |v: usize| v as f64;
    let constants = [
        ("WG", WG as f64),
        ("ACT", act as f64),
        ("CI_H", u(win.h)),
        ("CI_W", u(win.w)),
        ("CI_HO", u(win.ho)),
        ("CI_WO", u(win.wo)),
        ("CI_KH", u(win.kh)),
        ("CI_KW", u(win.kw)),
        ("CI_SH", u(win.sh)),
        ("CI_SW", u(win.sw)),
        ("CI_PAD_TOP", u(win.pad_top)),
        ("CI_PAD_LEFT", u(win.pad_left)),
        ("CI_C", u(d.c_in)),
        ("CI_STRIDE_K", u(padded_patch(d))),
    ];
    dispatch(gpu, &CONV2D, entry, &constants, &p, &[dcol, dx, dcol, dx, y], grid)
}

/// A 1×1 kernel at stride 1: x itself is the patch matrix.
fn pointwise(d: &Conv2dDims) -> bool {
    let win = &d.window;
    win.kh == 1 && win.kw == 1 && win.sh == 1 && win.sw == 1
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The most rows the products' M (the patch matrix's rows) may have: a matmul's grid covers M in
/// workgroups of at least [`min_rows_per_workgroup`] rows, along one grid dimension.
fn max_product_rows(gpu: &Gpu) -> usize {
    gpu.limits().max_compute_workgroups_per_dimension as usize * min_rows_per_workgroup(gpu)
}

/// Images per chunk of the patch matrix: all of them where it fits one binding; else the most that
/// fit, a multiple of the count that keeps views of `[rows, Ho, Wo, C_out]` tensors aligned.
pub(super) fn images_per_chunk(op: &str, gpu: &Gpu, d: &Conv2dDims) -> Result<usize> {
    let limits = gpu.limits();
    let (max_bytes, limit_name) = if limits.max_storage_buffer_binding_size <= limits.max_buffer_size {
        (limits.max_storage_buffer_binding_size, "max_storage_buffer_binding_size")
    } else {
        (limits.max_buffer_size, "max_buffer_size")
    };
    let positions = d.window.ho * d.window.wo;
    let per_image = (positions * padded_patch(d)) as u64 * 4;
    let max_rows = max_product_rows(gpu);
    if per_image * d.rows as u64 <= max_bytes && d.rows * positions <= max_rows {
        return Ok(d.rows);
    }
    let align = limits.min_storage_buffer_offset_alignment.max(4) as usize;
    let view_bytes = positions * d.c_out * 4;
    let step = align / gcd(align, view_bytes);
    let by_bytes = (max_bytes / per_image) as usize;
    let chunk = by_bytes.min(max_rows / positions) / step * step;
    if chunk == 0 && by_bytes >= step {
        return Err(WgnnError::shape_of(
            op,
            &[("x", &d.x_shape()), ("kernel", &d.kernel_shape())],
            format!(
                "{step} image(s) of {positions} output positions each (x {:?}, kernel {:?}) pass the {max_rows} rows a \
                 matmul's dispatch grid covers",
                d.x_shape(),
                d.kernel_shape()
            ),
        ));
    }
    if chunk == 0 {
        let bytes = per_image * step as u64;
        return Err(WgnnError::DeviceLimit {
            op: op.into(),
            what: format!(
                "the patch matrix of {step} image(s), [{}, {}] for x {:?} and kernel {:?},",
                step * positions,
                padded_patch(d),
                d.x_shape(),
                d.kernel_shape()
            ),
            amount: bytes,
            unit: "bytes",
            limit: max_bytes,
            limit_name,
        });
    }
    Ok(chunk.min(d.rows))
}

/// Whether the products can read x as the patch matrix itself (a 1×1 kernel at stride 1) in one
/// go: M = rows·H·W within the rows a matmul's grid covers.
pub(super) fn direct(gpu: &Gpu, d: &Conv2dDims) -> bool {
    pointwise(d) && d.rows * d.window.h * d.window.w <= max_product_rows(gpu)
}

/// Chunks of images: (first image, images).
pub(super) fn chunks(rows: usize, per_chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows).step_by(per_chunk).map(move |r0| (r0, per_chunk.min(rows - r0)))
}

/// A batch's patch matrix `[rows·Ho·Wo, K]` (K: the patch kh·kw·C_in rounded up to a multiple of
/// 4), kept from the forward ([`super::conv2d::conv2d_forward_keeping_patches`] writes it) for
/// the kernel gradient ([`super::conv2d::conv2d_backward_weights_from_patches`] reads it). Created zeroed: the columns that
/// pad K are never written and must stay zero.
pub struct ConvPatches {
    col: Tensor,
    dims: Conv2dDims,
}

impl ConvPatches {
    /// The patch matrix for `d`, where the convolution builds it in one piece; `None` where x is
    /// its own patch matrix (a 1×1 kernel at stride 1) or the batch is cut into chunks. (A training
    /// step asks [`super::conv2d::conv2d_step_patches`], which also keeps none where the products
    /// read x in place.)
    pub fn new(gpu: &Gpu, d: &Conv2dDims) -> Result<Option<ConvPatches>> {
        if direct(gpu, d) || images_per_chunk("conv2d_patches", gpu, d)? < d.rows {
            return Ok(None);
        }
        let col = Tensor::zeros(gpu, &[d.rows * d.window.ho * d.window.wo, padded_patch(d)])?;
        Ok(Some(ConvPatches { col, dims: *d }))
    }

    /// The matrix itself.
    pub fn tensor(&self) -> &Tensor {
        &self.col
    }

    /// The patches are of `d`'s x and kernel shapes and config (op's error otherwise).
    pub(super) fn expect_dims(&self, op: &str, d: &Conv2dDims) -> Result<()> {
        if self.dims == *d {
            return Ok(());
        }
        let (kept, given) = (self.dims, d);
        Err(WgnnError::shape_of(
            op,
            &[("patches' x", &kept.x_shape()), ("x", &given.x_shape()), ("kernel", &given.kernel_shape())],
            format!(
                "the patches were made for x {:?} and kernel {:?} ({:?}), not x {:?} and kernel {:?} ({:?})",
                kept.x_shape(),
                kept.kernel_shape(),
                kept.window,
                given.x_shape(),
                given.kernel_shape(),
                given.window
            ),
        ))
    }
}
