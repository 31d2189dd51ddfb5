//! GPU wrapper of shaders/pool2d.wgsl; CPU reference in src/cpu/pool2d.rs.
//!
//! Keras' MaxPooling2D, AveragePooling2D and GlobalAveragePooling2D, channels-last
//! (`[rows, H, W, C]`), forward and backward. Max pooling writes the x index of each window's
//! maximum (u32, the first in row-major window order among ties) for its backward, which routes
//! each gradient there. The backward passes never scatter into a cell two windows share, so there
//! are no atomics and the order is fixed: where windows overlap, each x cell gathers over the
//! windows covering it; where they do not (strides ≥ pool, Keras' default), each output writes its
//! own tile of x cells (on lavapipe ~2–3× faster at pool 2: a quarter of the invocations).
//! The backward passes can also apply the derivative of the activation that made the pool's
//! input (`below`), which a layer below would otherwise apply in a pass of its own.

use super::conv2d::{check_bindings, expect_shape};
use super::{ACTIVATION_WGSL, LANES_SCALAR_WGSL, LANES_VEC4_WGSL};
use crate::activation::Activation;
use crate::cpu::conv2d::rank4;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub use crate::cpu::conv2d::{Padding, MAX_WINDOW_CELLS};
pub use crate::cpu::pool2d::{Pool2dConfig, Pool2dDims};

pub(crate) const POOL2D: KernelFamily = KernelFamily {
    name: "pool2d",
    sources: &[ACTIVATION_WGSL, LANES_SCALAR_WGSL, POOL2D_WGSL],
    storage: POOL2D_STORAGE,
};

/// The same kernels over vec4s of four channels, where C is a multiple of 4: a quarter of the
/// invocations, each computing its window's indices once for four outputs and moving 16 bytes a
/// load (same results, bit for bit: every channel's arithmetic is unchanged).
pub(crate) const POOL2D_VEC4: KernelFamily = KernelFamily {
    name: "pool2d_vec4",
    sources: &[ACTIVATION_WGSL, LANES_VEC4_WGSL, POOL2D_WGSL],
    storage: POOL2D_STORAGE,
};

pub(super) const POOL2D_WGSL: &str = include_str!("../../shaders/pool2d.wgsl");
const POOL2D_STORAGE: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::Read];

pub(super) const WG: u32 = 64;

/// Positions one invocation of the global average sums: far below lavapipe's 65,535-iteration
/// loop cap; longer images are summed in chunks, then the chunks' sums.
pub const GLOBAL_POOL_CHUNK: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct PoolParams {
    rows: u32,
    h: u32,
    w: u32,
    pub(super) c: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    pad_top: u32,
    pad_left: u32,
    n: u32,
    chunk: u32,
    chunks: u32,
    divisor: f32,
    pub(super) slope: f32,
    _pad: [u32; 3],
}

pub(super) fn window_params(d: &Pool2dDims) -> PoolParams {
    let win = &d.window;
    let u = |v: usize| v as u32;
    PoolParams {
        rows: u(d.rows),
        h: u(win.h),
        w: u(win.w),
        c: u(d.channels),
        ho: u(win.ho),
        wo: u(win.wo),
        kh: u(win.kh),
        kw: u(win.kw),
        sh: u(win.sh),
        sw: u(win.sw),
        pad_top: u(win.pad_top),
        pad_left: u(win.pad_left),
        ..Default::default()
    }
}

/// Bindings 1..=4: src, argmax in, dst, argmax out; binding 5 (`below`) is src where no
/// activation is fused. An entry's unused bindings take a tensor it already binds with the same
/// access.
fn pool_dispatch(
    gpu: &Gpu,
    entry: &'static str,
    params: &PoolParams,
    bindings: [&Tensor; 4],
    items: usize,
) -> Result<Plan> {
    backward_dispatch(gpu, entry, params, bindings, None, items)
}

/// [`pool_dispatch`] of a backward pass, with the activation below (its output, the pool's
/// input) whose derivative the pass applies.
fn backward_dispatch(
    gpu: &Gpu,
    entry: &'static str,
    params: &PoolParams,
    bindings: [&Tensor; 4],
    below: Option<(&Tensor, Activation)>,
    items: usize,
) -> Result<Plan> {
    let (below, params, act) = match below {
        Some((y, act)) => (y, PoolParams { slope: act.slope(), ..*params }, act.code()),
        None => (bindings[0], *params, 0),
    };
    let [src, argmax, dst, argmax_out] = bindings;
    let bindings = [src, argmax, dst, argmax_out, below];
    // Every pass runs over some [.., C] tensor: with C a multiple of 4, in vec4s of channels.
    let (family, params, items) = if params.c.is_multiple_of(4) {
        (&POOL2D_VEC4, PoolParams { c: params.c / 4, ..params }, items / 4)
    } else {
        (&POOL2D, params, items)
    };
    let constants = [("WG", WG as f64), ("ACT", act as f64)];
    Ok(dispatch(gpu, family, entry, &constants, &params, &bindings, grid_1d(gpu, items, WG))?.into())
}

/// The activation below is element-wise and its output `y` is dx's shape, apart from dx.
fn check_below(op: &str, below: Option<(&Tensor, Activation)>, dx: &Tensor, context: &str) -> Result<()> {
    let Some((y, act)) = below else { return Ok(()) };
    act.validate_elementwise(op)?;
    expect_shape(op, "below", y, dx.shape(), &[("dx", dx.shape())], context)?;
    check_bindings(op, &[("dx", dx)], &[("below", y)])
}

/// Loop steps one invocation of pool2d.wgsl's tile entries may take: far below lavapipe's 65,535.
const MAX_TILE_STEPS: usize = 8192;

/// Rows (or columns) of the largest tile along one axis: the stride, or what the last window
/// leaves after its start.
fn tile_extent(n: usize, stride: usize, out: usize, pad: usize) -> usize {
    if out == 1 {
        n
    } else {
        stride.max(n + pad - (out - 1) * stride).min(n)
    }
}

/// Whether the backward passes take the `_tiles` entries: windows that do not overlap (strides ≥
/// pool), tiles small enough for one invocation's loops; max pooling's may then read act′ at its
/// maxima, and a batch norm below fuse with it (`pool2d_normalized`, `batch_norm_pooled`).
pub fn max_pool2d_tiles(d: &Pool2dDims) -> bool {
    let win = &d.window;
    let rows = tile_extent(win.h, win.sh, win.ho, win.pad_top);
    let cols = tile_extent(win.w, win.sw, win.wo, win.pad_left);
    win.sh >= win.kh && win.sw >= win.kw && rows * (cols + 1) + rows <= MAX_TILE_STEPS
}

fn expect_argmax(op: &str, argmax: &Tensor, d: &Pool2dDims, context: &str) -> Result<()> {
    argmax.expect_dtype(op, DType::U32)?;
    if argmax.shape() != d.y_shape() {
        return Err(WgnnError::shape_of(
            op,
            &[("y", &d.y_shape()), ("argmax", argmax.shape())],
            format!("argmax must be {:?} like y, got {:?} ({context})", d.y_shape(), argmax.shape()),
        ));
    }
    Ok(())
}

/// y = the maximum of each window, argmax = its x index.  x `[rows, H, W, C]`, y and argmax (u32)
/// `[rows, Ho, Wo, C]` with Ho, Wo from `cfg` ([`Pool2dDims`]).
pub fn max_pool2d_forward(gpu: &Gpu, x: &Tensor, y: &Tensor, argmax: &Tensor, cfg: &Pool2dConfig) -> Result<Plan> {
    const OP: &str = "max_pool2d_forward";
    let d = check_max_forward(OP, x, y, argmax, cfg, &[])?;
    pool_dispatch(gpu, OP, &window_params(&d), [x, x, y, argmax], y.len())
}

/// The operands of a max pooling's forward, checked (`inputs`: others it reads, apart from y and
/// argmax): its dims.
pub(super) fn check_max_forward(
    op: &str,
    x: &Tensor,
    y: &Tensor,
    argmax: &Tensor,
    cfg: &Pool2dConfig,
    inputs: &[(&str, &Tensor)],
) -> Result<Pool2dDims> {
    let d = Pool2dDims::new(op, x.shape(), cfg)?;
    let given = [("x", x.shape())];
    let context = format!("x {:?}, {cfg:?}", x.shape());
    expect_shape(op, "x", x, &d.x_shape(), &given, &context)?;
    expect_shape(op, "y", y, &d.y_shape(), &given, &context)?;
    expect_argmax(op, argmax, &d, &context)?;
    let mut read = vec![("x", x)];
    read.extend(inputs);
    check_bindings(op, &[("y", y), ("argmax", argmax)], &read)?;
    Ok(d)
}

/// dx = each dy value routed to its window's argmax (from [`max_pool2d_forward`]), overwritten.
/// dy and argmax `[rows, Ho, Wo, C]`, dx `[rows, H, W, C]`. An argmax value that is not an index
/// of a cell of its own window routes nothing. `below`: the pool's input `[rows, H, W, C]` as
/// the output of an element-wise activation, whose derivative then multiplies dx.
pub fn max_pool2d_backward(
    gpu: &Gpu,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
    cfg: &Pool2dConfig,
    below: Option<(&Tensor, Activation)>,
) -> Result<Plan> {
    const OP: &str = "max_pool2d_backward";
    let d = check_max_backward(OP, dy, argmax, dx, cfg, below)?;
    max_backward_dispatch(gpu, &d, [dy, argmax, dx, dx], below, None)
}

/// The max backward's pass: by tiles where the windows tile the image, act′ read from `y` at each
/// window's maximum where given; else by gathers over the covering windows.
fn max_backward_dispatch(
    gpu: &Gpu,
    d: &Pool2dDims,
    bindings: [&Tensor; 4],
    below: Option<(&Tensor, Activation)>,
    y: Option<&Tensor>,
) -> Result<Plan> {
    let params = window_params(d);
    let (dy, dx) = (bindings[0], bindings[2]);
    match (below, y) {
        _ if !max_pool2d_tiles(d) => backward_dispatch(gpu, "max_pool2d_backward", &params, bindings, below, dx.len()),
        (Some((_, act)), Some(y)) if !act.saves_input() => {
            backward_dispatch(gpu, "max_pool2d_backward_tiles_at_max", &params, bindings, Some((y, act)), dy.len())
        }
        _ => backward_dispatch(gpu, "max_pool2d_backward_tiles", &params, bindings, below, dy.len()),
    }
}

/// The operands of a max pooling's backward, checked: its dims.
fn check_max_backward(
    op: &str,
    dy: &Tensor,
    argmax: &Tensor,
    dx: &Tensor,
    cfg: &Pool2dConfig,
    below: Option<(&Tensor, Activation)>,
) -> Result<Pool2dDims> {
    let d = Pool2dDims::new(op, dx.shape(), cfg)?;
    let given = [("dx", dx.shape())];
    let context = format!("dx {:?}, {cfg:?}", dx.shape());
    expect_shape(op, "dx", dx, &d.x_shape(), &given, &context)?;
    expect_shape(op, "dy", dy, &d.y_shape(), &given, &context)?;
    expect_argmax(op, argmax, &d, &context)?;
    if let Some(max) = argmax.max_u32().filter(|&m| m as usize >= dx.len()) {
        return Err(WgnnError::invalid(op, format!("argmax holds {max}, past dx's {} values ({context})", dx.len())));
    }
    check_bindings(op, &[("dx", dx)], &[("dy", dy), ("argmax", argmax)])?;
    check_below(op, below, dx, &context)?;
    Ok(d)
}

/// [`max_pool2d_backward`] given also the forward's output `y` `[rows, Ho, Wo, C]`: where the
/// windows tile the image (strides ≥ pool) and the activation below reads its output for act′
/// (not the GELUs), act′ comes from y, once a window, rather than from `below`, once a cell: y
/// at a window is the pool's input at its maximum, the one cell its gradient reaches, so dx is the
/// same to the bit with a quarter of `below`'s reads at pool 2 (cnn_mnist's first pool: BENCHMARKS.md,
/// 2026-12-07 (late night)). Elsewhere it is [`max_pool2d_backward`].
pub fn max_pool2d_backward_with_output(
    gpu: &Gpu,
    dy: &Tensor,
    argmax: &Tensor,
    y: &Tensor,
    dx: &Tensor,
    cfg: &Pool2dConfig,
    below: Option<(&Tensor, Activation)>,
) -> Result<Plan> {
    const OP: &str = "max_pool2d_backward_with_output";
    let d = check_max_backward(OP, dy, argmax, dx, cfg, below)?;
    let context = format!("dx {:?}, {cfg:?}", dx.shape());
    expect_shape(OP, "y", y, &d.y_shape(), &[("dx", dx.shape())], &context)?;
    check_bindings(OP, &[("dx", dx)], &[("y", y)])?;
    max_backward_dispatch(gpu, &d, [dy, argmax, dx, dx], below, Some(y))
}

/// y = the mean of each window's cells inside the image.  x `[rows, H, W, C]`, y `[rows, Ho, Wo,
/// C]`.
pub fn avg_pool2d_forward(gpu: &Gpu, x: &Tensor, y: &Tensor, cfg: &Pool2dConfig) -> Result<Plan> {
    const OP: &str = "avg_pool2d_forward";
    let d = Pool2dDims::new(OP, x.shape(), cfg)?;
    let given = [("x", x.shape())];
    let context = format!("x {:?}, {cfg:?}", x.shape());
    expect_shape(OP, "x", x, &d.x_shape(), &given, &context)?;
    expect_shape(OP, "y", y, &d.y_shape(), &given, &context)?;
    check_bindings(OP, &[("y", y)], &[("x", x)])?;
    pool_dispatch(gpu, OP, &window_params(&d), [x, x, y, y], y.len())
}

/// dx = each dy value spread evenly over its window's cells inside the image, overwritten.
/// dy `[rows, Ho, Wo, C]`, dx `[rows, H, W, C]`; `below` as in [`max_pool2d_backward`].
pub fn avg_pool2d_backward(
    gpu: &Gpu,
    dy: &Tensor,
    dx: &Tensor,
    cfg: &Pool2dConfig,
    below: Option<(&Tensor, Activation)>,
) -> Result<Plan> {
    const OP: &str = "avg_pool2d_backward";
    let d = Pool2dDims::new(OP, dx.shape(), cfg)?;
    let given = [("dx", dx.shape())];
    let context = format!("dx {:?}, {cfg:?}", dx.shape());
    expect_shape(OP, "dx", dx, &d.x_shape(), &given, &context)?;
    expect_shape(OP, "dy", dy, &d.y_shape(), &given, &context)?;
    check_bindings(OP, &[("dx", dx)], &[("dy", dy)])?;
    check_below(OP, below, dx, &context)?;
    let (params, bindings) = (window_params(&d), [dy, dy, dx, dx]);
    if max_pool2d_tiles(&d) {
        return backward_dispatch(gpu, "avg_pool2d_backward_tiles", &params, bindings, below, dy.len());
    }
    backward_dispatch(gpu, OP, &params, bindings, below, dx.len())
}

/// x's `[rows, H, W, C]` and the pooled `[rows, C]`, checked.
fn global_shapes(op: &str, image: &Tensor, pooled: &Tensor, names: (&str, &str)) -> Result<[usize; 4]> {
    let shape = rank4(op, names.0, image.shape(), "[rows, H, W, C]")?;
    image.expect_dtype(op, DType::F32)?;
    image.expect_nonempty(op)?;
    let context = format!("{} {:?}", names.0, image.shape());
    expect_shape(op, names.1, pooled, &[shape[0], shape[3]], &[(names.0, image.shape())], &context)?;
    Ok(shape)
}

/// y = the mean over each image's H·W positions.  x `[rows, H, W, C]`, y `[rows, C]`. More than
/// [`GLOBAL_POOL_CHUNK`] positions are summed in chunks (a scratch owned by the plan), then the
/// chunks' sums.
pub fn global_avg_pool2d_forward(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Plan> {
    const OP: &str = "global_avg_pool2d_forward";
    let [rows, h, w, c] = global_shapes(OP, x, y, ("x", "y"))?;
    check_bindings(OP, &[("y", y)], &[("x", x)])?;
    let mut plan = Plan::new();
    let mut input = x.clone();
    let mut n = h * w;
    loop {
        let chunks = n.div_ceil(GLOBAL_POOL_CHUNK);
        let last = chunks == 1;
        let out = if last { y.clone() } else { Tensor::zeros(gpu, &[rows, chunks, c])? };
        let params = PoolParams {
            rows: rows as u32,
            c: c as u32,
            n: n as u32,
            chunk: GLOBAL_POOL_CHUNK as u32,
            chunks: chunks as u32,
            divisor: if last { (h * w) as f32 } else { 1.0 },
            ..Default::default()
        };
        plan.extend(pool_dispatch(gpu, "global_avg_pool2d_partial", &params, [&input, &input, &out, &out], out.len())?);
        if last {
            return Ok(plan);
        }
        input = out;
        n = chunks;
    }
}

/// dx = dy / (H·W) at every position, overwritten.  dy `[rows, C]`, dx `[rows, H, W, C]`;
/// `below` as in [`max_pool2d_backward`].
pub fn global_avg_pool2d_backward(
    gpu: &Gpu,
    dy: &Tensor,
    dx: &Tensor,
    below: Option<(&Tensor, Activation)>,
) -> Result<Plan> {
    const OP: &str = "global_avg_pool2d_backward";
    let [rows, h, w, c] = global_shapes(OP, dx, dy, ("dx", "dy"))?;
    check_bindings(OP, &[("dx", dx)], &[("dy", dy)])?;
    check_below(OP, below, dx, &format!("dx {:?}", dx.shape()))?;
    let params =
        PoolParams { rows: rows as u32, c: c as u32, n: (h * w) as u32, divisor: (h * w) as f32, ..Default::default() };
    backward_dispatch(gpu, OP, &params, [dy, dy, dx, dx], below, dx.len())
}
