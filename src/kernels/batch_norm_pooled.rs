//! Batch norm's backward through the max pooling that reads its output
//! (shaders/batch_norm_pooled.wgsl), where the pool's windows tile the image and C is a multiple
//! of 4: the pool's input gradient dy, zero but at each window's maximum, is never written. The
//! partial sums Σ dy and Σ dy·x̂ run over the windows (a nonzero a window), dx over each
//! window's tile. CPU reference: `crate::cpu::batch_norm::batch_norm_backward_through_max_pool`.
//!
//! Why: at cnn_mnist's first layer dy is 692,224 values a batch, written by the pool's backward
//! and read twice by the norm's (its partials and dx): the pool's and the norm's passes took 3.2
//! ms of a step on lavapipe, these two 2.1 (BENCHMARKS.md, 2026-12-07 (late night)). The sums add in another order than the plain
//! backward's (by windows, not by rows), so results agree with it within rounding, not to the bit.

use super::batch_norm::{check, BatchNormConfig, BATCH_NORM_WGSL, CHUNK_MIN, MAX_CHUNKS, WG};
use super::check::disjoint;
use super::conv2d::expect_shape;
use super::pool2d::max_pool2d_tiles;
use super::{ACTIVATION_WGSL, LANES_VEC4_WGSL};
use crate::activation::Activation;
use crate::cpu::pool2d::Pool2dDims;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

const POOLED_WGSL: &str = include_str!("../../shaders/batch_norm_pooled.wgsl");
/// Windows per invocation of `bn_backward_dx_pooled` (its OUTS): a channel's values loaded once
/// for them.
const DX_WINDOWS: usize = 4;

pub(crate) const BATCH_NORM_POOLED: KernelFamily = KernelFamily {
    name: "batch_norm_pooled",
    sources: &[ACTIVATION_WGSL, LANES_VEC4_WGSL, BATCH_NORM_WGSL, POOLED_WGSL],
    storage: &[Access::ReadWrite; 13],
};

/// The max pooling that reads a batch norm's output, as the norm's backward needs it: the
/// gradient at the pool's output `dy`, its `argmax` (u32) and output `y` (each `[rows, Ho, Wo,
/// C]`), the activation between the norm and the pool (act′ read from y at each maximum, so not
/// a GELU), and the pool's dims.
pub struct PoolAbove {
    pub dy: Tensor,
    pub argmax: Tensor,
    pub y: Tensor,
    pub act: Activation,
    pub dims: Pool2dDims,
}

/// Whether [`batch_norm_backward_through_max_pool`] takes this pool: windows that tile the
/// image, C a multiple of 4, an activation whose act′ reads its output.
pub fn batch_norm_backward_through_max_pool_fits(dims: &Pool2dDims, act: Activation) -> bool {
    max_pool2d_tiles(dims) && dims.channels.is_multiple_of(4) && act.is_elementwise() && !act.saves_input()
}

/// [`super::batch_norm::batch_norm_backward`] (dx, dγ, dβ overwritten) where dy is the input
/// gradient of the max pooling above, through the activation between: dy = pool.dy·act′(pool.y)
/// at each window's maximum, 0 elsewhere (`max_pool2d_backward_with_output`'s), never written.
/// x, dx `[rows·H·W, C]` (the pool's input grid); gamma, saved_mean, saved_inv_std, dgamma,
/// dbeta `[C]`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_through_max_pool(
    gpu: &Gpu,
    pool: &PoolAbove,
    x: &Tensor,
    gamma: &Tensor,
    saved_mean: &Tensor,
    saved_inv_std: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) -> Result<Plan> {
    const OP: &str = "batch_norm_backward_through_max_pool";
    let d = &pool.dims;
    let win = &d.window;
    if !batch_norm_backward_through_max_pool_fits(d, pool.act) {
        return Err(WgnnError::invalid(
            OP,
            format!(
                "needs pool windows that tile the image, C a multiple of 4 and an activation whose derivative \
                 reads its output: x {:?}, pool {}x{} every {}x{}, C {}, {:?}",
                x.shape(),
                win.kh,
                win.kw,
                win.sh,
                win.sw,
                d.channels,
                pool.act
            ),
        ));
    }
    let per_feature = [
        ("gamma", gamma),
        ("saved_mean", saved_mean),
        ("saved_inv_std", saved_inv_std),
        ("dgamma", dgamma),
        ("dbeta", dbeta),
    ];
    let s = check(OP, x, &[("dx", dx)], &per_feature)?;
    let pixels = [d.rows * win.h * win.w, d.channels];
    if x.shape() != pixels {
        return Err(WgnnError::shape_of(
            OP,
            &[("x", x.shape()), ("pool input", &d.x_shape())],
            format!("x must be the pool's input grid as {pixels:?}, got {:?}", x.shape()),
        ));
    }
    let given = [("x", x.shape())];
    let context = format!("pool output {:?}", d.y_shape());
    expect_shape(OP, "dy", &pool.dy, &d.y_shape(), &given, &context)?;
    expect_shape(OP, "y", &pool.y, &d.y_shape(), &given, &context)?;
    pool.argmax.expect_dtype(OP, DType::U32)?;
    if pool.argmax.shape() != d.y_shape() {
        return Err(WgnnError::shape_of(
            OP,
            &[("argmax", pool.argmax.shape()), ("y", &d.y_shape())],
            format!("argmax must be {:?}, got {:?}", d.y_shape(), pool.argmax.shape()),
        ));
    }
    let mut named = vec![("x", x), ("dx", dx), ("dy", &pool.dy), ("argmax", &pool.argmax), ("y", &pool.y)];
    named.extend(per_feature);
    disjoint(OP, &named)?;
    let views = [x, dx, &pool.dy, &pool.argmax, &pool.y, gamma, saved_mean, saved_inv_std, dgamma, dbeta];
    if !views.iter().all(|t| t.byte_offset().is_multiple_of(16)) {
        return Err(WgnnError::invalid(OP, "every view must start 16-byte aligned (vec4s of channels)"));
    }
    // Chunks of windows for the partial sums.
    let windows = d.rows * win.ho * win.wo;
    let chunk = CHUNK_MIN.max(windows.div_ceil(MAX_CHUNKS));
    let chunks = windows.div_ceil(chunk);
    let part = Tensor::zeros(gpu, &[2 * chunks + 2, d.channels])?;
    let mut params = s.params(&BatchNormConfig::default(), false);
    (params.chunk, params.chunks) = (chunk as u32, chunks as u32);
    let u = |v: usize| v as f64;
    let constants = [
        ("WG", WG as f64),
        ("ACT", pool.act.code() as f64),
        ("SLOPE", pool.act.slope() as f64),
        ("POOL_H", u(win.h)),
        ("POOL_W", u(win.w)),
        ("POOL_HO", u(win.ho)),
        ("POOL_WO", u(win.wo)),
        ("POOL_SH", u(win.sh)),
        ("POOL_SW", u(win.sw)),
        ("POOL_PAD_TOP", u(win.pad_top)),
        ("POOL_PAD_LEFT", u(win.pad_left)),
        ("POOL_COLS", u(s.cols)),
    ];
    let dm = &dummy(gpu)?;
    let (dy, argmax, y) = (&pool.dy, &pool.argmax, &pool.y);
    let cols = s.cols;
    let mut plan = Plan::new();
    let slots = [x, dm, dm, saved_mean, saved_inv_std, &part, dm, dm, dm, dy, argmax, y, x];
    let grid = grid_1d(gpu, cols * chunks, WG);
    plan.push(dispatch(gpu, &BATCH_NORM_POOLED, "bn_backward_partials_pooled", &constants, &params, &slots, grid)?);
    let slots = [dm, dm, dm, dm, dm, &part, dgamma, dbeta, dm, dm, dm, dm, dm];
    plan.push(dispatch(gpu, &BATCH_NORM_POOLED, "bn_backward_finalize", &constants, &params, &slots, s.column_grid())?);
    let slots = [x, gamma, dm, saved_mean, saved_inv_std, &part, dx, dm, dm, dy, argmax, y, x];
    // One invocation per DX_WINDOWS windows of a channel (vec4).
    let grid = grid_1d(gpu, windows.div_ceil(DX_WINDOWS) * cols, WG);
    let mut dx_constants = constants.to_vec();
    dx_constants.push(("OUTS", DX_WINDOWS as f64));
    plan.push(dispatch(gpu, &BATCH_NORM_POOLED, "bn_backward_dx_pooled", &dx_constants, &params, &slots, grid)?);
    Ok(plan)
}
