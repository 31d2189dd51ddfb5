//! GPU wrapper of shaders/layer_norm.wgsl and shaders/layer_norm_lanes.wgsl; CPU reference in
//! src/cpu/layer_norm.rs.
//!
//! PyTorch's `LayerNorm(cols)` over the last axis of `[rows, cols]`: the biased variance, eps
//! inside the square root ([`LAYER_NORM_EPS`], PyTorch's default), γ and β each optional
//! (`elementwise_affine=False`, or nanoGPT's `bias=False`). The forward keeps each row's mean and
//! rstd = 1/√(σ² + eps) for the backward (as llm.c does). Gradients: dγ and dβ accumulate or
//! overwrite (`accumulate`), dx overwrites; all are deterministic (fixed summation order, no
//! atomics).

use super::check::{disjoint, expect_len};
use super::{ACTIVATION_WGSL, LANES_SCALAR_WGSL, LANES_VEC4_WGSL};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::{Dispatch, Plan};
use crate::profile::Policy;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub(crate) const LAYER_NORM: KernelFamily = KernelFamily {
    name: "layer_norm",
    sources: &[include_str!("../../shaders/layer_norm.wgsl")],
    storage: &[Access::ReadWrite; 8],
};

/// The per-row kernels for CPU adapters and the column partials (shaders/layer_norm_lanes.wgsl),
/// one value a lane.
const LAYER_NORM_LANES: KernelFamily = KernelFamily {
    name: "layer_norm_lanes",
    sources: &[ACTIVATION_WGSL, LANES_SCALAR_WGSL, LAYER_NORM_LANES_WGSL],
    storage: &[Access::ReadWrite; 7],
};

/// The same over vec4s of four columns, where cols is a multiple of 4: the same bits, a quarter of
/// the loads (on lavapipe, each a loop over the SIMD lanes whatever its width).
const LAYER_NORM_LANES_VEC4: KernelFamily = KernelFamily {
    name: "layer_norm_lanes_vec4",
    sources: &[ACTIVATION_WGSL, LANES_VEC4_WGSL, LAYER_NORM_LANES_WGSL],
    storage: &[Access::ReadWrite; 7],
};

const LAYER_NORM_LANES_WGSL: &str = include_str!("../../shaders/layer_norm_lanes.wgsl");

/// PyTorch's default eps of `nn.LayerNorm`.
pub const LAYER_NORM_EPS: f32 = 1e-5;
/// Widest row: the row kernels loop 3·⌈cols/WG⌉ times, far below the loop cap
/// ([`crate::profile::LOOP_CAP`]) with WG ≥ 32.
pub const MAX_COLS: usize = 1 << 19;
/// Invocations per workgroup of the column kernels (ln_backward_partials, ln_backward_finalize)
/// and of the one-invocation-per-row kernels.
const COLUMN_WG: usize = 64;
/// Widest row the one-invocation-per-row kernels take: they loop 3·cols times.
const ROWS_VARIANT_MAX_COLS: usize = 16_384;
/// Columns (of the lane width) per invocation of ln_backward_partials (the shader's PARTIAL_COLS).
const PARTIAL_COLS: usize = 4;
/// Its workgroup size (the shader's PARTIALS_WG).
const PARTIALS_WG: u32 = 16;
/// Rows per chunk of the column sums, at least (more chunks: more invocations busy).
const CHUNK_MIN: usize = 32;
/// At most this many chunks: ln_backward_finalize loops over them.
const MAX_CHUNKS: usize = 4096;
/// At most this many rows per chunk: ln_backward_partials loops over them.
const CHUNK_MAX: usize = 16_384;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LayerNormParams {
    rows: u32,
    cols: u32,
    chunk: u32,
    chunks: u32,
    eps: f32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

/// The shapes of one call.
struct Shapes {
    rows: usize,
    cols: usize,
    chunk: usize,
    chunks: usize,
}

/// x is a non-empty f32 [rows, cols] of at most 2³² − 1 values and cols ≤ [`MAX_COLS`]; each of
/// `like_x` has its shape, each of `per_row` is `[rows]`, each of `per_col` `[cols]`.
fn check(
    op: &str,
    x: &Tensor,
    like_x: &[(&str, &Tensor)],
    per_row: &[(&str, &Tensor)],
    per_col: &[(&str, &Tensor)],
) -> Result<Shapes> {
    x.expect_dtype(op, DType::F32)?;
    let (rows, cols) = x.dims2(op)?;
    x.expect_nonempty(op)?;
    if x.len() > u32::MAX as usize {
        return Err(WgnnError::invalid(op, format!("x {:?} has more than 2^32 - 1 values", x.shape())));
    }
    if cols > MAX_COLS {
        return Err(WgnnError::shape_of(
            op,
            &[("x", x.shape())],
            format!("x {:?} has rows of {cols} values; at most {MAX_COLS} are normalised together", x.shape()),
        ));
    }
    for (name, t) in like_x {
        expect_len(op, name, t, DType::F32, x.len(), &format!("{:?} like x", x.shape()))?;
        if t.shape() != x.shape() {
            return Err(WgnnError::shape_of(
                op,
                &[("x", x.shape()), (name, t.shape())],
                format!("x is {:?} but {name} is {:?}", x.shape(), t.shape()),
            ));
        }
    }
    for (name, t) in per_row {
        expect_len(op, name, t, DType::F32, rows, &format!("[{rows}], one per row of x {:?}", x.shape()))?;
    }
    for (name, t) in per_col {
        expect_len(op, name, t, DType::F32, cols, &format!("[{cols}], one per column of x {:?}", x.shape()))?;
    }
    let chunk = CHUNK_MIN.max(rows.div_ceil(MAX_CHUNKS));
    if chunk > CHUNK_MAX {
        return Err(WgnnError::shape_of(
            op,
            &[("x", x.shape())],
            format!("x {:?} has more than {} rows", x.shape(), CHUNK_MAX * MAX_CHUNKS),
        ));
    }
    Ok(Shapes { rows, cols, chunk, chunks: rows.div_ceil(chunk) })
}

impl Shapes {
    fn params(&self, eps: f32, accumulate: bool) -> LayerNormParams {
        LayerNormParams {
            rows: self.rows as u32,
            cols: self.cols as u32,
            chunk: self.chunk as u32,
            chunks: self.chunks as u32,
            eps,
            accumulate: accumulate as u32,
            _pad0: 0,
            _pad1: 0,
        }
    }

    /// The lanes family for these rows and its params (cols counted in its lane width).
    fn lanes(&self, eps: f32) -> (&'static KernelFamily, LayerNormParams) {
        let mut params = self.params(eps, false);
        if self.cols.is_multiple_of(4) {
            params.cols /= 4;
            (&LAYER_NORM_LANES_VEC4, params)
        } else {
            (&LAYER_NORM_LANES, params)
        }
    }

    /// Invocations per row: a power of two from 32 to 256, about a quarter of the row's width
    /// (each invocation then loads ~4 values per pass; fewer would idle lanes on short rows).
    fn row_workgroup(&self) -> u32 {
        self.cols.div_ceil(4).next_power_of_two().clamp(32, 256) as u32
    }

    /// One workgroup per row, rows past the per-dimension limit folded into y.
    fn row_grid(&self, gpu: &Gpu) -> [u32; 3] {
        let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
        [self.rows.min(max) as u32, self.rows.div_ceil(max) as u32, 1]
    }
}

fn check_eps(op: &str, eps: f32) -> Result<()> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(WgnnError::invalid(op, format!("eps must be finite and > 0, got {eps}")));
    }
    Ok(())
}

/// A dispatch of a row kernel (`ln_forward`, `ln_backward_dx`) with its slots 1–6: one workgroup
/// per row with a tree reduction on a GPU, one invocation per row (the `_rows` entries) under the
/// CPU-adapter policy, where workgroup barriers cost more than the loads they share (768 × 128,
/// lavapipe on the 2-core machine under load: forward 3.0 → 0.77 ms, backward 2.9 → 1.6 ms).
/// `addend`: added to dx (the backward's `ADD_TO_DX`).
#[allow(clippy::too_many_arguments)]
fn row_dispatch(
    gpu: &Gpu,
    entry: &'static str,
    s: &Shapes,
    params: &LayerNormParams,
    slots: [&Tensor; 6],
    has_gamma: bool,
    has_beta: bool,
    addend: Option<&Tensor>,
) -> Result<Dispatch> {
    let d = dummy(gpu)?;
    let [a, b, c, e, f, g] = slots;
    let affine = [
        ("HAS_GAMMA", has_gamma as u32 as f64),
        ("HAS_BETA", has_beta as u32 as f64),
        ("ADD_TO_DX", addend.is_some() as u32 as f64),
    ];
    if gpu.profile().policy == Policy::CpuAdapter && s.cols <= ROWS_VARIANT_MAX_COLS {
        let entry = match entry {
            "ln_forward" => "ln_forward_rows",
            _ => "ln_backward_dx_rows",
        };
        let (family, params) = s.lanes(params.eps);
        let slots = [a, b, c, e, f, g, addend.unwrap_or(&d)];
        return dispatch(gpu, family, entry, &affine, &params, &slots, grid_1d(gpu, s.rows, COLUMN_WG as u32));
    }
    let slots = [a, b, c, e, f, g, addend.unwrap_or(&d), &d];
    let constants = [("WG", s.row_workgroup() as f64), affine[0], affine[1], affine[2]];
    dispatch(gpu, &LAYER_NORM, entry, &constants, params, &slots, s.row_grid(gpu))
}

/// Forward: y = (x − μ)·rstd·γ + β per row, μ the row's mean, rstd = 1/√(σ² + eps) with σ² its
/// biased variance; writes μ and rstd (for [`layer_norm_backward`]). γ absent is 1, β absent 0.
/// x, y: [rows, cols]; gamma, beta: `[cols]`; mean, rstd: `[rows]`; eps > 0
/// ([`LAYER_NORM_EPS`] is PyTorch's). cols ≤ [`MAX_COLS`]. Cost: 3 reads and 1 write of x per
/// value, one dispatch.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: Option<&Tensor>,
    beta: Option<&Tensor>,
    y: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    eps: f32,
) -> Result<Plan> {
    const OP: &str = "layer_norm_forward";
    check_eps(OP, eps)?;
    let mut per_col = Vec::new();
    per_col.extend(gamma.map(|g| ("gamma", g)));
    per_col.extend(beta.map(|b| ("beta", b)));
    let s = check(OP, x, &[("y", y)], &[("mean", mean), ("rstd", rstd)], &per_col)?;
    let mut named = vec![("x", x), ("y", y), ("mean", mean), ("rstd", rstd)];
    named.extend(per_col.iter().copied());
    disjoint(OP, &named)?;
    let d = dummy(gpu)?;
    let params = s.params(eps, false);
    let slots = [x, gamma.unwrap_or(&d), beta.unwrap_or(&d), mean, rstd, y];
    Ok(row_dispatch(gpu, "ln_forward", &s, &params, slots, gamma.is_some(), beta.is_some(), None)?.into())
}

/// Backward of [`layer_norm_forward`], with x̂ = (x − μ)·rstd and g = dy·γ:
///   dx = rstd·(g − mean_cols(g) − x̂·mean_cols(g·x̂))      (overwrites dx)
///   dγ (+)= Σ_rows dy·x̂,  dβ (+)= Σ_rows dy                (`accumulate`: add, else overwrite)
/// dγ and dβ are computed only where given (a frozen or absent γ or β needs none). dy, x, dx:
/// [rows, cols]; gamma, dgamma, dbeta: `[cols]`; mean, rstd: `[rows]` from the forward.
/// Dispatches: one for dx, and two more (per-chunk column sums, then their fixed-order total)
/// where dγ or dβ is asked for: [`layer_norm_backward_params`]'s.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    gpu: &Gpu,
    dy: &Tensor,
    x: &Tensor,
    gamma: Option<&Tensor>,
    mean: &Tensor,
    rstd: &Tensor,
    dx: &Tensor,
    dgamma: Option<&Tensor>,
    dbeta: Option<&Tensor>,
    accumulate: bool,
) -> Result<Plan> {
    const OP: &str = "layer_norm_backward";
    let mut per_col = Vec::new();
    per_col.extend(gamma.map(|g| ("gamma", g)));
    per_col.extend(dgamma.map(|g| ("dgamma", g)));
    per_col.extend(dbeta.map(|b| ("dbeta", b)));
    let s = check(OP, x, &[("dy", dy), ("dx", dx)], &[("mean", mean), ("rstd", rstd)], &per_col)?;
    let mut named = vec![("dy", dy), ("x", x), ("dx", dx), ("mean", mean), ("rstd", rstd)];
    named.extend(per_col.iter().copied());
    disjoint(OP, &named)?;
    let d = dummy(gpu)?;
    let params = s.params(LAYER_NORM_EPS, accumulate);
    let mut plan = Plan::new();
    if dgamma.is_some() || dbeta.is_some() {
        plan.extend(layer_norm_backward_params(gpu, dy, x, mean, rstd, dgamma, dbeta, accumulate)?);
    }
    let slots = [x, gamma.unwrap_or(&d), dy, mean, rstd, dx];
    plan.push(row_dispatch(gpu, "ln_backward_dx", &s, &params, slots, gamma.is_some(), false, None)?);
    Ok(plan)
}

/// dx of [`layer_norm_backward`] plus `addend`: dx = addend + rstd·(g − mean_cols(g) −
/// x̂·mean_cols(g·x̂)), overwriting dx, in the one dispatch dx takes: the input gradient of a
/// layer norm whose input another reader has a gradient for (a residual stream read by the norm
/// and by a sum), summed without a pass of its own. dy, x, addend, dx: [rows, cols]; gamma:
/// `[cols]`; mean, rstd: `[rows]` from the forward.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_dx_add(
    gpu: &Gpu,
    dy: &Tensor,
    x: &Tensor,
    gamma: Option<&Tensor>,
    mean: &Tensor,
    rstd: &Tensor,
    addend: &Tensor,
    dx: &Tensor,
) -> Result<Plan> {
    const OP: &str = "layer_norm_backward_dx_add";
    let per_col: Vec<(&str, &Tensor)> = gamma.map(|g| ("gamma", g)).into_iter().collect();
    let like_x = [("dy", dy), ("addend", addend), ("dx", dx)];
    let s = check(OP, x, &like_x, &[("mean", mean), ("rstd", rstd)], &per_col)?;
    let mut named = vec![("dy", dy), ("x", x), ("addend", addend), ("dx", dx), ("mean", mean), ("rstd", rstd)];
    named.extend(per_col.iter().copied());
    disjoint(OP, &named)?;
    let d = dummy(gpu)?;
    let params = s.params(LAYER_NORM_EPS, false);
    let slots = [x, gamma.unwrap_or(&d), dy, mean, rstd, dx];
    Ok(row_dispatch(gpu, "ln_backward_dx", &s, &params, slots, gamma.is_some(), false, Some(addend))?.into())
}

/// The parameters' half of [`layer_norm_backward`]: dγ (+)= Σ_rows dy·x̂ and dβ (+)= Σ_rows dy,
/// each where given, without dx (what a layer norm reading the batch itself needs, or a step
/// that writes its input gradient apart). dy, x: [rows, cols]; dgamma, dbeta: `[cols]`; mean,
/// rstd: `[rows]` from the forward. Two dispatches (per-chunk column sums, then their fixed-order
/// total); none where neither is given.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_params(
    gpu: &Gpu,
    dy: &Tensor,
    x: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dgamma: Option<&Tensor>,
    dbeta: Option<&Tensor>,
    accumulate: bool,
) -> Result<Plan> {
    const OP: &str = "layer_norm_backward_params";
    let mut per_col = Vec::new();
    per_col.extend(dgamma.map(|g| ("dgamma", g)));
    per_col.extend(dbeta.map(|b| ("dbeta", b)));
    let s = check(OP, x, &[("dy", dy)], &[("mean", mean), ("rstd", rstd)], &per_col)?;
    let mut named = vec![("dy", dy), ("x", x), ("mean", mean), ("rstd", rstd)];
    named.extend(per_col.iter().copied());
    disjoint(OP, &named)?;
    if dgamma.is_none() && dbeta.is_none() {
        return Ok(Plan::new());
    }
    let d = dummy(gpu)?;
    let params = s.params(LAYER_NORM_EPS, accumulate);
    let part = Tensor::zeros(gpu, &[2 * s.chunks, s.cols])?;
    let column_groups = s.cols.div_ceil(COLUMN_WG) as u32;
    let constants = [("WRITE_DGAMMA", dgamma.is_some() as u32 as f64), ("WRITE_DBETA", dbeta.is_some() as u32 as f64)];
    let (family, lanes_params) = s.lanes(LAYER_NORM_EPS);
    let slots = [x, &d, dy, mean, rstd, &part, &d];
    // ln_backward_partials: one invocation per 4 columns (of V) and chunk.
    let invocations = (lanes_params.cols as usize).div_ceil(PARTIAL_COLS) * s.chunks;
    let mut plan = Plan::new();
    plan.push(dispatch(
        gpu,
        family,
        "ln_backward_partials",
        &[],
        &lanes_params,
        &slots,
        grid_1d(gpu, invocations, PARTIALS_WG),
    )?);
    let slots = [&d, &d, &d, &d, &d, &part, dgamma.unwrap_or(&d), dbeta.unwrap_or(&d)];
    plan.push(dispatch(gpu, &LAYER_NORM, "ln_backward_finalize", &constants, &params, &slots, [column_groups, 1, 1])?);
    Ok(plan)
}
