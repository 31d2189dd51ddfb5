//! GPU wrapper of shaders/batch_norm.wgsl; CPU reference in src/cpu/batch_norm.rs.
//!
//! Conventions are PyTorch's BatchNorm1d (training normalises with the biased batch variance; the
//! running variance takes the unbiased one; running = (1 − momentum)·running + momentum·batch,
//! momentum 0.1, eps 1e-5). Keras' BatchNormalization(momentum = 0.99) is momentum 0.01 here,
//! except that Keras puts the biased variance into its moving variance.

use super::check::{disjoint, expect_len};
use super::{ACTIVATION_WGSL, LANES_SCALAR_WGSL, LANES_VEC4_WGSL};
use crate::activation::Activation;
pub use crate::config::BatchNormConfig;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::{Dispatch, Plan};
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub(crate) const BATCH_NORM: KernelFamily = KernelFamily {
    name: "batch_norm",
    sources: &[ACTIVATION_WGSL, LANES_SCALAR_WGSL, BATCH_NORM_WGSL],
    storage: &[Access::ReadWrite; 9],
};

/// The same kernels over vec4s of four columns, where the column count is a multiple of 4: a
/// quarter of the invocations, each loading and storing 16 bytes at a time (same results, bit for
/// bit: every column's arithmetic is unchanged).
pub(crate) const BATCH_NORM_VEC4: KernelFamily = KernelFamily {
    name: "batch_norm_vec4",
    sources: &[ACTIVATION_WGSL, LANES_VEC4_WGSL, BATCH_NORM_WGSL],
    storage: &[Access::ReadWrite; 9],
};

pub(super) const BATCH_NORM_WGSL: &str = include_str!("../../shaders/batch_norm.wgsl");

/// The family for `cols` columns and the column count its kernels see (vec4s or columns).
fn family(cols: usize) -> (&'static KernelFamily, usize) {
    if cols.is_multiple_of(4) {
        (&BATCH_NORM_VEC4, cols / 4)
    } else {
        (&BATCH_NORM, cols)
    }
}

pub(super) const WG: u32 = 64;
/// Invocations per workgroup of the elementwise kernels (a TILE_X × TILE_Y tile).
const TILE: u32 = 256;
/// The elementwise kernels' entries, which take the tile's shape as constants.
const ELEMENTWISE: [&str; 3] = ["bn_normalize", "bn_inference", "bn_backward_dx"];

/// The elementwise tile's width for `cols` (kernel-visible) columns: up to 16, no wider than
/// the columns rounded up to a power of two (4 vec4s of 16 channels: a 16-wide tile idled 3/4).
fn tile_x(cols: usize) -> u32 {
    cols.next_power_of_two().min(16) as u32
}
/// Rows one invocation of the elementwise kernels runs (its column's parameters loaded once).
const ROWS: u32 = 4;
/// Rows per chunk of the column reductions, at least: keeps many invocations busy.
pub(super) const CHUNK_MIN: usize = 256;
/// At most this many chunks: the finalize kernels loop 2·K times.
pub(super) const MAX_CHUNKS: usize = 4096;
/// At most this many rows per chunk: the chunk kernels loop 2·chunk times, far below the loop cap
/// ([`crate::profile::LOOP_CAP`]).
const CHUNK_MAX: usize = 16_384;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct BatchNormParams {
    pub(super) rows: u32,
    pub(super) cols: u32,
    pub(super) chunk: u32,
    pub(super) chunks: u32,
    pub(super) eps: f32,
    pub(super) momentum: f32,
    pub(super) accumulate: u32,
    pub(super) blend: u32,
}

/// The shapes of one call: x is a non-empty f32 [rows, cols] of at most 2³² − 1 values; each of
/// `like_x` has its shape; each of `per_feature` is [cols].
pub(super) struct Shapes {
    pub(super) rows: usize,
    /// Columns as the kernels see them: vec4s of four in [`BATCH_NORM_VEC4`].
    pub(super) cols: usize,
    pub(super) family: &'static KernelFamily,
    /// The real column count.
    pub(super) features: usize,
    pub(super) chunk: usize,
    pub(super) chunks: usize,
}

pub(super) fn check(
    op: &str,
    x: &Tensor,
    like_x: &[(&str, &Tensor)],
    per_feature: &[(&str, &Tensor)],
) -> Result<Shapes> {
    x.expect_dtype(op, DType::F32)?;
    let (rows, cols) = x.dims2(op)?;
    x.expect_nonempty(op)?;
    if x.len() > u32::MAX as usize {
        return Err(WgnnError::invalid(op, format!("x {:?} has more than 2^32 - 1 values", x.shape())));
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
    for (name, t) in per_feature {
        expect_len(op, name, t, DType::F32, cols, &format!("[{cols}] (x is {:?})", x.shape()))?;
    }
    let chunk = CHUNK_MIN.max(rows.div_ceil(MAX_CHUNKS));
    if chunk > CHUNK_MAX {
        return Err(WgnnError::invalid(op, format!("x {:?} has more than {} rows", x.shape(), CHUNK_MAX * MAX_CHUNKS)));
    }
    let (family, lanes_cols) = family(cols);
    Ok(Shapes { rows, cols: lanes_cols, family, features: cols, chunk, chunks: rows.div_ceil(chunk) })
}

impl Shapes {
    pub(super) fn params(&self, cfg: &BatchNormConfig, accumulate: bool) -> BatchNormParams {
        BatchNormParams {
            rows: self.rows as u32,
            cols: self.cols as u32,
            chunk: self.chunk as u32,
            chunks: self.chunks as u32,
            eps: cfg.eps,
            momentum: cfg.momentum,
            accumulate: accumulate as u32,
            blend: 1,
        }
    }
    /// Grid of the per-(column, chunk) kernels: one invocation per pair, in a 1-D grid.
    fn chunk_grid(&self, gpu: &Gpu) -> [u32; 3] {
        grid_1d(gpu, self.cols * self.chunks, WG)
    }
    /// Grid of the per-column finalize kernels.
    pub(super) fn column_grid(&self) -> [u32; 3] {
        [self.cols.div_ceil(WG as usize) as u32, 1, 1]
    }
    /// Grid of the elementwise kernels: TILE_X × TILE_Y workgroups of ROWS rows an invocation, row
    /// tiles folded into z past the per-dimension limit.
    fn tile_grid(&self, gpu: &Gpu) -> [u32; 3] {
        let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
        let (tx, ty) = (tile_x(self.cols), TILE / tile_x(self.cols));
        let row_tiles = self.rows.div_ceil((ty * ROWS) as usize);
        [self.cols.div_ceil(tx as usize) as u32, row_tiles.min(max) as u32, row_tiles.div_ceil(max) as u32]
    }
    /// Scratch for the partials (2K rows) and the backward's two rows of sums.
    fn part(&self, gpu: &Gpu) -> Result<Tensor> {
        Tensor::zeros(gpu, &[2 * self.chunks + 2, self.features])
    }
}

/// A dispatch of `entry` with storage slots 1–8 (slot 9, the step guard, is a dummy).
fn bn(
    gpu: &Gpu,
    family: &'static KernelFamily,
    entry: &'static str,
    params: &BatchNormParams,
    slots: [&Tensor; 8],
    workgroups: [u32; 3],
) -> Result<Dispatch> {
    bn_act(gpu, family, entry, params, slots, workgroups, Activation::Identity)
}

/// [`bn`] of a normalising entry, which applies `act` to its output.
fn bn_act(
    gpu: &Gpu,
    family: &'static KernelFamily,
    entry: &'static str,
    params: &BatchNormParams,
    slots: [&Tensor; 8],
    workgroups: [u32; 3],
    act: Activation,
) -> Result<Dispatch> {
    let dummy = dummy(gpu)?;
    let [a, b, c, d, e, f, g, h] = slots;
    let slots = [a, b, c, d, e, f, g, h, &dummy];
    let mut constants = vec![("WG", WG as f64)];
    if ELEMENTWISE.contains(&entry) {
        let tx = tile_x(params.cols as usize);
        constants.extend([("TILE_X", tx as f64), ("TILE_Y", (TILE / tx) as f64), ("ROWS", ROWS as f64)]);
    }
    if act != Activation::Identity {
        constants.extend([("ACT", act.code() as f64), ("SLOPE", act.slope() as f64)]);
    }
    dispatch(gpu, family, entry, &constants, params, &slots, workgroups)
}

/// Training forward: per-feature batch mean μ and biased variance σ² over the rows,
/// y = act(γ·(x − μ)/√(σ² + eps) + β) (`act` element-wise, applied in the same pass; identity for
/// none); writes μ and inv_std = 1/√(σ² + eps) for the backward and
/// updates running_mean and running_var (unbiased σ²) in place.  x, y: [N ≥ 2, D];
/// gamma, beta, saved_mean, saved_inv_std, running_mean, running_var: `[D]`. One row is an error,
/// as in PyTorch: its variance is 0 and its unbiased variance undefined.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    saved_mean: &Tensor,
    saved_inv_std: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    cfg: &BatchNormConfig,
    act: Activation,
) -> Result<Plan> {
    let running = Running::Blend { mean: running_mean, var: running_var };
    let normalize = Some(Normalize { gamma, beta, y, act });
    forward_train("batch_norm_forward_train", gpu, x, normalize, saved_mean, saved_inv_std, running, cfg)
}

/// Where a training forward puts its statistics for the running averages.
enum Running<'a> {
    /// Folded into running_mean and running_var at once.
    Blend { mean: &'a Tensor, var: &'a Tensor },
    /// The batch's unbiased variance, kept in `pending_var` for [`batch_norm_commit_running`].
    Defer { pending_var: &'a Tensor },
}

/// The training forward of both public entries (they differ in `running` only).
#[allow(clippy::too_many_arguments)]
fn forward_train(
    op: &str,
    gpu: &Gpu,
    x: &Tensor,
    normalize: Option<Normalize>,
    saved_mean: &Tensor,
    saved_inv_std: &Tensor,
    running: Running,
    cfg: &BatchNormConfig,
) -> Result<Plan> {
    cfg.validate(op)?;
    let mut per_feature = vec![("saved_mean", saved_mean), ("saved_inv_std", saved_inv_std)];
    let mut like_x = vec![];
    if let Some(n) = &normalize {
        n.act.validate_elementwise(op)?;
        per_feature.extend([("gamma", n.gamma), ("beta", n.beta)]);
        like_x.push(("y", n.y));
    }
    match running {
        Running::Blend { mean, var } => per_feature.extend([("running_mean", mean), ("running_var", var)]),
        Running::Defer { pending_var } => per_feature.push(("pending_var", pending_var)),
    }
    let s = check(op, x, &like_x, &per_feature)?;
    if s.rows < 2 {
        return Err(WgnnError::invalid(
            op,
            format!("x is {:?}: training needs at least 2 rows per batch (the variance of one is 0)", x.shape()),
        ));
    }
    let mut named = vec![("x", x)];
    named.extend(like_x);
    named.extend(per_feature);
    disjoint(op, &named)?;
    let dummy = dummy(gpu)?;
    let part = s.part(gpu)?;
    let d = &dummy;
    // bn_finalize_stats writes out (running mean) and out2 (running or pending variance).
    let (blend, out, out2) = match running {
        Running::Blend { mean, var } => (1, mean, var),
        Running::Defer { pending_var } => (0, d, pending_var),
    };
    let params = BatchNormParams { blend, ..s.params(cfg, false) };
    let mut plan = Plan::new();
    plan.push(bn(gpu, s.family, "bn_stats", &params, [x, d, d, d, d, &part, d, d], s.chunk_grid(gpu))?);
    plan.push(bn(
        gpu,
        s.family,
        "bn_finalize_stats",
        &params,
        [d, d, d, saved_mean, saved_inv_std, &part, out, out2],
        s.column_grid(),
    )?);
    if let Some(Normalize { gamma, beta, y, act }) = normalize {
        let slots = [x, gamma, beta, saved_mean, saved_inv_std, d, y, d];
        plan.push(bn_act(gpu, s.family, "bn_normalize", &params, slots, s.tile_grid(gpu), act)?);
    }
    Ok(plan)
}

/// The training forward's normalising pass: y = act(γ·(x − μ)·inv_std + β).
struct Normalize<'a> {
    gamma: &'a Tensor,
    beta: &'a Tensor,
    y: &'a Tensor,
    act: Activation,
}

/// [`batch_norm_forward_train`] with the running statistics deferred: the same y, saved_mean and
/// saved_inv_std, and the batch's unbiased variance in `pending_var` `[D]`, for
/// [`batch_norm_commit_running`] to fold in once the step is known to be kept. running_* are
/// not touched. x, y: [N ≥ 2, D]; gamma, beta, saved_mean, saved_inv_std, pending_var: `[D]`;
/// `act` as in [`batch_norm_forward_train`].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train_deferred(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    saved_mean: &Tensor,
    saved_inv_std: &Tensor,
    pending_var: &Tensor,
    cfg: &BatchNormConfig,
    act: Activation,
) -> Result<Plan> {
    let running = Running::Defer { pending_var };
    let normalize = Some(Normalize { gamma, beta, y, act });
    forward_train("batch_norm_forward_train_deferred", gpu, x, normalize, saved_mean, saved_inv_std, running, cfg)
}

/// [`batch_norm_forward_train_deferred`] without its normalising pass: the batch's saved_mean,
/// saved_inv_std and pending_var only, for a pass that normalises on the way (max pooling's,
/// [`super::pool2d_normalized::max_pool2d_forward_normalized`]). x `[N ≥ 2, D]`, the rest `[D]`.
pub fn batch_norm_statistics_deferred(
    gpu: &Gpu,
    x: &Tensor,
    saved_mean: &Tensor,
    saved_inv_std: &Tensor,
    pending_var: &Tensor,
    cfg: &BatchNormConfig,
) -> Result<Plan> {
    let running = Running::Defer { pending_var };
    forward_train("batch_norm_statistics_deferred", gpu, x, None, saved_mean, saved_inv_std, running, cfg)
}

/// Folds a deferred batch's statistics into the running ones: running_mean = (1 − momentum)·
/// running_mean + momentum·batch_mean, running_var likewise with pending_var — unless
/// `counters` (the step's [t, skip], u32 `[2]`; see [`super::step_guard::guard_step`]) is given
/// and its skip flag is set, when nothing changes. All f32 tensors `[D]`.
pub fn batch_norm_commit_running(
    gpu: &Gpu,
    batch_mean: &Tensor,
    pending_var: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    counters: Option<&Tensor>,
    cfg: &BatchNormConfig,
) -> Result<Plan> {
    const OP: &str = "batch_norm_commit_running";
    cfg.validate(OP)?;
    batch_mean.expect_dtype(OP, DType::F32)?;
    batch_mean.expect_nonempty(OP)?;
    let cols = batch_mean.len();
    for (name, t) in [("pending_var", pending_var), ("running_mean", running_mean), ("running_var", running_var)] {
        expect_len(OP, name, t, DType::F32, cols, &format!("[{cols}] like batch_mean"))?;
    }
    let mut named = vec![
        ("batch_mean", batch_mean),
        ("pending_var", pending_var),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ];
    if let Some(c) = counters {
        expect_len(OP, "counters", c, DType::U32, 2, "[2] (t, skip)")?;
        named.push(("counters", c));
    }
    disjoint(OP, &named)?;
    let d = &dummy(gpu)?;
    let (family, cols) = family(cols);
    let params = BatchNormParams {
        rows: 0,
        cols: cols as u32,
        chunk: 1,
        chunks: 0,
        eps: cfg.eps,
        momentum: cfg.momentum,
        accumulate: 0,
        blend: 0,
    };
    let constants = [("WG", WG as f64), ("GUARDED", counters.is_some() as u32 as f64)];
    // The pending variance travels in inv_std's slot (5); see batch_norm.wgsl.
    let slots = [d, d, d, batch_mean, pending_var, d, running_mean, running_var, counters.unwrap_or(d)];
    let grid = [cols.div_ceil(WG as usize) as u32, 1, 1];
    Ok(dispatch(gpu, family, "bn_commit_running", &constants, &params, &slots, grid)?.into())
}

/// Inference forward with the running averages:
/// y = act(γ·(x − running_mean)/√(running_var + eps) + β).
/// x, y: [N, D] (any N ≥ 1); gamma, beta, running_mean, running_var: `[D]`, only read; `act` as
/// in [`batch_norm_forward_train`].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_inference(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    y: &Tensor,
    cfg: &BatchNormConfig,
    act: Activation,
) -> Result<Plan> {
    const OP: &str = "batch_norm_forward_inference";
    cfg.validate(OP)?;
    act.validate_elementwise(OP)?;
    let per_feature = [("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)];
    let s = check(OP, x, &[("y", y)], &per_feature)?;
    let mut named = vec![("y", y)];
    named.extend(per_feature);
    named.push(("x", x));
    disjoint(OP, &named)?;
    let d = &dummy(gpu)?;
    let params = s.params(cfg, false);
    let slots = [x, gamma, beta, running_mean, running_var, d, y, d];
    Ok(bn_act(gpu, s.family, "bn_inference", &params, slots, s.tile_grid(gpu), act)?.into())
}

/// Backward of [`batch_norm_forward_train`], with x̂ = (x − μ)·inv_std:
///   dβ (+)= Σ_rows dy,  dγ (+)= Σ_rows dy·x̂,  dx = γ·inv_std·(dy − Σdy/N − x̂·Σ(dy·x̂)/N).
/// Parameter gradients accumulate when `accumulate` is set (else overwrite); dx overwrites.
/// dy, x, dx: [N, D]; gamma, saved_mean, saved_inv_std (from the forward), dgamma, dbeta: `[D]`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    gpu: &Gpu,
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    saved_mean: &Tensor,
    saved_inv_std: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
    accumulate: bool,
) -> Result<Plan> {
    const OP: &str = "batch_norm_backward";
    let per_feature = [
        ("gamma", gamma),
        ("saved_mean", saved_mean),
        ("saved_inv_std", saved_inv_std),
        ("dgamma", dgamma),
        ("dbeta", dbeta),
    ];
    let s = check(OP, x, &[("dy", dy), ("dx", dx)], &per_feature)?;
    let mut named = vec![("dy", dy), ("x", x), ("dx", dx)];
    named.extend(per_feature);
    disjoint(OP, &named)?;
    let d = &dummy(gpu)?;
    let part = s.part(gpu)?;
    let params = s.params(&BatchNormConfig::default(), accumulate);
    let mut plan = Plan::new();
    plan.push(bn(
        gpu,
        s.family,
        "bn_backward_partials",
        &params,
        [x, d, dy, saved_mean, saved_inv_std, &part, d, d],
        s.chunk_grid(gpu),
    )?);
    plan.push(bn(
        gpu,
        s.family,
        "bn_backward_finalize",
        &params,
        [d, d, d, d, d, &part, dgamma, dbeta],
        s.column_grid(),
    )?);
    plan.push(bn(
        gpu,
        s.family,
        "bn_backward_dx",
        &params,
        [x, gamma, dy, saved_mean, saved_inv_std, &part, dx, d],
        s.tile_grid(gpu),
    )?);
    Ok(plan)
}
