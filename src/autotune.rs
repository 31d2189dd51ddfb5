//! The matmul autotuner: the first time a product shape is planned on a device (with no variant
//! asked for), time each kernel the device can run at that shape, keep the fastest, and remember
//! the pick in memory (per device, in its tuner state: every later plan of that shape uses it, so
//! a plan built twice is the same plan) and on disk ([`crate::device::tune_cache`]: a later run
//! replays it without timing anything, so the same seed trains bit for bit the same).
//!
//! Candidates: the static choice ([`choose_variant`], timed first, since its pipeline is built
//! anyway), the register blockings, the subgroup kernel where it runs, and under the GPU policy
//! the workgroup-memory kernels (`Tiled` and the tiles of
//! [`matmul_register`](crate::internals::kernels::matmul_register::matmul_register)). Timing: one
//! warm-up run (where llvmpipe compiles), then the fastest of [`REPS`] runs, from timestamp
//! queries where the device has them, else a submit-and-wait on the host. Cost: candidates whose
//! pipelines are new are compiled only while the device's tuning budget lasts
//! ([`crate::DeviceProfile::tune_budget`]: compiles cost 0.15–2.8 s each on llvmpipe); past it a
//! shape is timed on the pipelines already built (at least the static choice's, which the plan
//! needs anyway). The static choice wins ties within [`TIE`], and a candidate that beats it is
//! timed against it once more and kept only if it wins again (a noisy first round on a shared
//! machine persisted a 3–5× slower pick). Rows that grow with the batch are
//! tuned by their power of two ([`MatmulShape::m`]), so a smaller last batch tunes nothing.
//!
//! Determinism: picks differ between devices and may differ between two cold tunes of one device
//! (timings are noisy); kernels sum K in different orders, so results can differ in the last bits
//! between a cold and a warm cache. With the same cache, the same picks.
//!
//! Where it sits: the tuner's state is the device's (below the kernels, keyed by plain shapes and
//! kernel names); this module builds and times the candidates. It does not call the matmul
//! wrappers itself: `matmul_kernel`'s caller, the matmul wrapper, hands it the function that
//! plans a candidate (`PlanCandidate`), so nothing here imports the kernels that import it.

use std::time::{Duration, Instant};

use crate::activation::Activation;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::matmul_choice::{choose_variant, subgroup_edges_ok, subgroup_ok};
use crate::kernels::matmul_options::{Epilogue, MatmulOptions};
use crate::kernels::matmul_register::matmul_register_supported;
use crate::matmul_kernel::{MatmulVariant, RegisterTile};
use crate::plan::Plan;
use crate::registry;
use crate::tensor::Tensor;

pub use crate::device::tuner::{EpilogueKind, MatmulShape, TunedPick, AUTOTUNE_ENV, TIE};
pub use crate::matmul_kernel::MatmulKernel;

/// Timed runs per candidate, after one warm-up run.
pub const REPS: usize = 3;

/// A run this long (seconds) is timed once: its noise is small against it, and the evaluation
/// products of a large batch take 30–60 ms a run on lavapipe.
pub const LONG_RUN: f64 = 5e-3;

// The tuner's shapes are plain data below the kernels; reading one off a product's options is
// here, beside the options.
impl EpilogueKind {
    fn of(e: &Epilogue) -> EpilogueKind {
        match e {
            Epilogue::None => EpilogueKind::None,
            // The epilogues that also keep the pre-activation or add a residual time as the one
            // they extend (a store or a load per output more): one pick serves both.
            Epilogue::BiasAct { bias: None, .. } | Epilogue::BiasActKeep { bias: None, .. } => EpilogueKind::Act,
            Epilogue::BiasAct { bias: Some(_), .. }
            | Epilogue::BiasActKeep { bias: Some(_), .. }
            | Epilogue::Residual { .. } => EpilogueKind::BiasAct,
            Epilogue::ActGrad { .. } => EpilogueKind::ActGrad,
        }
    }
}

impl MatmulShape {
    /// The shape of op(A)·op(B) with C `[m, n]`, inner dimension `k`, `opts`' form and epilogue,
    /// with or without column sums; M rounded up to a power of two where op(A) is not
    /// transposed (see [`MatmulShape::m`]).
    pub fn of(m: usize, n: usize, k: usize, opts: &MatmulOptions, col_sum: bool) -> MatmulShape {
        let (trans_a, trans_b, accumulate) = (opts.trans_a, opts.trans_b, opts.accumulate);
        let m = if trans_a { m } else { m.next_power_of_two() };
        MatmulShape { m, n, k, trans_a, trans_b, accumulate, epilogue: EpilogueKind::of(&opts.epilogue), col_sum }
    }
}

/// One candidate to plan for timing: zero-filled scratch operands, the product's form and
/// epilogue on them with the variant set (`None` for a tile), and the kernel.
pub(crate) struct Candidate<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub c: &'a Tensor,
    pub col_sum: Option<&'a Tensor>,
    pub opts: MatmulOptions<'a>,
    pub kernel: MatmulKernel,
}

/// Plans a [`Candidate`] with the matmul wrappers (given by the matmul wrapper, which this module
/// may not import: it calls [`matmul_kernel`]).
pub(crate) type PlanCandidate = fn(&Gpu, &Candidate) -> Result<Plan>;

/// Device seconds of one run of `plan`: the fastest of up to [`REPS`] after a warm-up run (where
/// llvmpipe compiles); one timed run where it takes longer than [`LONG_RUN`]. Where every
/// pipeline of the plan had run before (so the warm-up compiled nothing) and the warm-up took
/// longer than both [`LONG_RUN`] and twice `to_beat`, the candidate has lost: its warm-up's wall
/// time is returned untimed (on long products each run costs tens of milliseconds on lavapipe).
fn time_plan_briefly(gpu: &Gpu, plan: &Plan, to_beat: f64) -> Result<(f64, Duration)> {
    let warm = plan.dispatches.iter().all(|d| d.pipeline_ran());
    let started = Instant::now();
    gpu.run(&[plan])?;
    gpu.wait()?;
    let warm_up = started.elapsed();
    let warm_up_seconds = warm_up.as_secs_f64();
    if warm && warm_up_seconds > LONG_RUN && warm_up_seconds > 2.0 * to_beat {
        return Ok((warm_up_seconds, warm_up));
    }
    let mut best = f64::INFINITY;
    for _ in 0..REPS {
        let seconds = if gpu.profile().timestamps {
            gpu.time_plan(plan, 1)?[0]
        } else {
            let started = Instant::now();
            gpu.run(&[plan])?;
            gpu.wait()?;
            started.elapsed().as_secs_f64()
        };
        best = best.min(seconds);
        if seconds > LONG_RUN {
            break;
        }
    }
    Ok((best, warm_up))
}

/// Zero-filled operands of one shape for timing candidates on (never the caller's tensors: a
/// candidate run would overwrite them, or add to them under accumulate).
struct Scratch {
    a: Tensor,
    b: Tensor,
    c: Tensor,
    /// The bias `[N]` or Y `[M, N]` of the epilogue.
    aux: Option<Tensor>,
    col_sum: Option<Tensor>,
}

impl Scratch {
    /// Operands of `shape` with `m` rows of C (the product's own M: the shape's may be rounded up).
    fn new(gpu: &Gpu, shape: &MatmulShape, m: usize) -> Result<Scratch> {
        let MatmulShape { n, k, .. } = *shape;
        let a_shape = if shape.trans_a { [k, m] } else { [m, k] };
        let b_shape = if shape.trans_b { [n, k] } else { [k, n] };
        let aux = match shape.epilogue {
            EpilogueKind::BiasAct => Some(Tensor::zeros(gpu, &[n])?),
            EpilogueKind::ActGrad => Some(Tensor::zeros(gpu, &[m, n])?),
            EpilogueKind::None | EpilogueKind::Act => None,
        };
        Ok(Scratch {
            a: Tensor::zeros(gpu, &a_shape)?,
            b: Tensor::zeros(gpu, &b_shape)?,
            c: Tensor::zeros(gpu, &[m, n])?,
            aux,
            col_sum: if shape.col_sum { Some(Tensor::zeros(gpu, &[n])?) } else { None },
        })
    }

    /// The plan of `kernel` on these operands with `opts`' form and epilogue, by `plan`.
    fn plan(&self, gpu: &Gpu, kernel: MatmulKernel, opts: &MatmulOptions, plan: PlanCandidate) -> Result<Plan> {
        let act = |e: &Epilogue| match e {
            Epilogue::BiasAct { act, .. }
            | Epilogue::ActGrad { act, .. }
            | Epilogue::BiasActKeep { act, .. }
            | Epilogue::Residual { act, .. } => *act,
            Epilogue::None => Activation::Identity,
        };
        let epilogue = match (&opts.epilogue, &self.aux) {
            (Epilogue::None, _) => Epilogue::None,
            (e @ Epilogue::ActGrad { .. }, Some(y)) => Epilogue::ActGrad { y, act: act(e) },
            (e, aux) => Epilogue::BiasAct { bias: aux.as_ref(), act: act(e) },
        };
        let variant = match kernel {
            MatmulKernel::Variant(v) => Some(v),
            MatmulKernel::Tile(_) => None,
        };
        let opts = MatmulOptions { epilogue, variant, ..*opts };
        let operands = Candidate { a: &self.a, b: &self.b, c: &self.c, col_sum: self.col_sum.as_ref(), opts, kernel };
        plan(gpu, &operands)
    }
}

/// The kernels `gpu` may run op(A)·op(B) with at this shape: the register blockings always, the
/// subgroup kernel where it runs (by scalars where its vec4 views do not apply, under the policy
/// that prefers it), the workgroup-memory kernels where the policy times them.
fn candidates(gpu: &Gpu, shape: &MatmulShape) -> Vec<MatmulKernel> {
    let MatmulShape { m, n, k, trans_a, trans_b, .. } = *shape;
    let mut kernels = vec![MatmulVariant::Register, MatmulVariant::RegisterTall];
    let edges = subgroup_edges_ok(gpu) && gpu.profile().matmul.prefer_subgroup;
    if subgroup_ok(gpu, m, n, k, trans_a, trans_b) || edges {
        kernels.push(MatmulVariant::Subgroup);
    }
    let workgroup = gpu.profile().matmul.tune_workgroup_kernels;
    if workgroup {
        kernels.push(MatmulVariant::Tiled);
    }
    let mut kernels: Vec<MatmulKernel> = kernels.into_iter().map(MatmulKernel::Variant).collect();
    if workgroup {
        let tiles = RegisterTile::PRESETS.into_iter().filter(|&t| matmul_register_supported(gpu, t));
        kernels.extend(tiles.map(MatmulKernel::Tile));
    }
    kernels
}

/// The kernel the engine runs op(A)·op(B) with (A and the other operands stored, 16-byte aligned
/// views): the tuner's pick where it is on, else [`choose_variant`]'s. `plan` plans a candidate
/// where one is timed.
pub(crate) fn matmul_kernel(
    gpu: &Gpu,
    m: usize,
    n: usize,
    k: usize,
    opts: &MatmulOptions,
    col_sum: bool,
    plan: PlanCandidate,
) -> Result<MatmulKernel> {
    let static_pick = MatmulKernel::Variant(choose_variant(gpu, m, n, k, opts.trans_a, opts.trans_b));
    let tuner = gpu.tuner();
    if !tuner.enabled() {
        return Ok(static_pick);
    }
    let shape = MatmulShape::of(m, n, k, opts, col_sum);
    let candidates = candidates(gpu, &shape);
    let mut scratch: Option<Scratch> = None;
    tuner.pick(shape, static_pick, &candidates, |kernel, may_compile, to_beat| {
        let operands = match &scratch {
            Some(s) => s,
            None => scratch.insert(Scratch::new(gpu, &shape, m)?),
        };
        let plan = match may_compile {
            true => operands.plan(gpu, kernel, opts, plan)?,
            false => match registry::without_compiling(|| operands.plan(gpu, kernel, opts, plan))? {
                Some(plan) => plan,
                None => return Ok(None),
            },
        };
        time_plan_briefly(gpu, &plan, to_beat).map(Some)
    })
}
