//! The matmul autotuner: the first time a product shape is planned on a device (with no variant
//! asked for), time each kernel the device can run at that shape, keep the fastest, and remember
//! the pick in memory (per device: every later plan of that shape uses it, so a plan built twice
//! is the same plan) and on disk ([`crate::device::tune_cache`]: a later run replays it without
//! timing anything, so the same seed trains bit for bit the same).
//!
//! Candidates: the static choice ([`choose_variant`], timed first, since its pipeline is built
//! anyway), the register blockings, the subgroup kernel where it runs, and under the GPU policy
//! the workgroup-memory kernels (`Tiled` and the tiles of [`matmul_register`]). Timing: one
//! warm-up run (where llvmpipe compiles), then the fastest of [`REPS`] runs, from timestamp
//! queries where the device has them, else a submit-and-wait on the host. Cost: candidates whose
//! pipelines are new are compiled only while the device's tuning budget lasts
//! ([`crate::DeviceProfile::tune_budget`]: compiles cost 0.15–2.8 s each on llvmpipe); past it a
//! shape is timed on the pipelines already built (at least the static choice's, which the plan
//! needs anyway). The static choice wins ties within [`TIE`]. Rows that grow with the batch are
//! tuned by their power of two ([`MatmulShape::m`]), so a smaller last batch tunes nothing.
//!
//! Determinism: picks differ between devices and may differ between two cold tunes of one device
//! (timings are noisy); kernels sum K in different orders, so results can differ in the last bits
//! between a cold and a warm cache. With the same cache, the same picks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::activation::Activation;
use crate::device::tune_cache::{StoredPick, TuneCache};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::kernels::matmul::{
    choose_variant, matmul, matmul_column_sum, subgroup_ok, Epilogue, MatmulOptions, MatmulVariant,
};
use crate::kernels::matmul_register::{matmul_register, matmul_register_column_sum, RegisterTile};
use crate::plan::Plan;
use crate::profile::DeviceProfile;
use crate::registry;
use crate::tensor::Tensor;

/// Environment variable that, set to `off` (or 0, false, no), turns the autotuner off whatever
/// [`crate::GpuOptions::autotune`] says: every product takes the static choice.
pub const AUTOTUNE_ENV: &str = "WGNN_AUTOTUNE";

/// Timed runs per candidate, after one warm-up run.
pub const REPS: usize = 3;

/// A run this long (seconds) is timed once: its noise is small against it, and the evaluation
/// products of a large batch take 30–60 ms a run on lavapipe.
pub const LONG_RUN: f64 = 5e-3;

/// A candidate must beat the static choice by more than this fraction to replace it: timings
/// within a few percent are noise, and the static choice is the one measured by hand.
pub const TIE: f64 = 0.02;

/// A kernel that can run a matmul: a [`MatmulVariant`] or a tile of the GPU-class
/// [`matmul_register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    Variant(MatmulVariant),
    Tile(RegisterTile),
}

impl MatmulKernel {
    /// The variant's name, or "tile BMxBNxBK/TMxTN".
    pub fn name(&self) -> String {
        match self {
            MatmulKernel::Variant(v) => v.name().to_string(),
            MatmulKernel::Tile(t) => format!("tile {}", t.name()),
        }
    }

    /// The kernel [`MatmulKernel::name`] names, if any.
    pub fn parse(name: &str) -> Option<MatmulKernel> {
        if let Some(v) = MatmulVariant::ALL.into_iter().find(|v| v.name() == name) {
            return Some(MatmulKernel::Variant(v));
        }
        let (block, thread) = name.strip_prefix("tile ")?.split_once('/')?;
        let numbers = |s: &str| s.split('x').map(|v| v.parse::<u32>().ok()).collect::<Option<Vec<u32>>>();
        match (numbers(block)?.as_slice(), numbers(thread)?.as_slice()) {
            (&[bm, bn, bk], &[tm, tn]) => Some(MatmulKernel::Tile(RegisterTile { bm, bn, bk, tm, tn })),
            _ => None,
        }
    }
}

/// The epilogue as far as the tuner tells products apart (the activation itself does not change
/// which kernel is fastest enough to tune each one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EpilogueKind {
    None,
    /// act(A·B), no bias.
    Act,
    BiasAct,
    ActGrad,
}

impl EpilogueKind {
    fn of(e: &Epilogue) -> EpilogueKind {
        match e {
            Epilogue::None => EpilogueKind::None,
            Epilogue::BiasAct { bias: None, .. } => EpilogueKind::Act,
            Epilogue::BiasAct { bias: Some(_), .. } => EpilogueKind::BiasAct,
            Epilogue::ActGrad { .. } => EpilogueKind::ActGrad,
        }
    }

    fn name(self) -> &'static str {
        match self {
            EpilogueKind::None => "",
            EpilogueKind::Act => ", act",
            EpilogueKind::BiasAct => ", bias+act",
            EpilogueKind::ActGrad => ", act'",
        }
    }
}

/// A product as the tuner tells them apart: one pick per value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatmulShape {
    /// Rows of C. Where op(A) is not transposed M grows with the batch (a dense layer's forward and
    /// input gradient run over the batch's rows, a convolution's over rows × output positions),
    /// and it is rounded up to a power of two: one pick then serves a batch size and the smaller
    /// batches at the end of an epoch or an evaluation, rather than tuning each.
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub accumulate: bool,
    pub epilogue: EpilogueKind,
    /// With op(B)'s column sums ([`matmul_column_sum`]).
    pub col_sum: bool,
}

impl MatmulShape {
    pub fn of(m: usize, n: usize, k: usize, opts: &MatmulOptions, col_sum: bool) -> MatmulShape {
        let (trans_a, trans_b, accumulate) = (opts.trans_a, opts.trans_b, opts.accumulate);
        let m = if trans_a { m } else { m.next_power_of_two() };
        MatmulShape { m, n, k, trans_a, trans_b, accumulate, epilogue: EpilogueKind::of(&opts.epilogue), col_sum }
    }

    /// The key of its pick on disk.
    fn key(&self) -> String {
        let flag = |b: bool| b as u8;
        format!(
            "{}x{}x{} ta{} tb{} acc{} {:?} cs{}",
            self.m,
            self.k,
            self.n,
            flag(self.trans_a),
            flag(self.trans_b),
            flag(self.accumulate),
            self.epilogue,
            flag(self.col_sum)
        )
    }
}

impl std::fmt::Display for MatmulShape {
    /// E.g. "64x32·32x10 Aᵀ, +colsum"; "≤2048x784·784x64" where M is rounded up.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (m, n, k) = (self.m, self.n, self.k);
        let up_to = if self.trans_a || m == 1 { "" } else { "≤" };
        write!(f, "{up_to}{m}x{k}·{k}x{n}")?;
        let forms = [(self.trans_a, " Aᵀ"), (self.trans_b, " Bᵀ"), (self.accumulate, " +=")];
        for (on, name) in forms {
            if on {
                f.write_str(name)?;
            }
        }
        f.write_str(self.epilogue.name())?;
        if self.col_sum {
            f.write_str(", +colsum")?;
        }
        Ok(())
    }
}

/// The kernel the tuner picked for one shape, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct TunedPick {
    pub shape: MatmulShape,
    pub kernel: MatmulKernel,
    /// The fastest run's device seconds; `None` for a pick read from a cache that kept the static
    /// choice untimed.
    pub seconds: Option<f64>,
    /// Candidates timed (when it was tuned).
    pub timed: usize,
    /// Read from the cache on disk rather than timed in this process.
    pub from_cache: bool,
    /// Wall seconds this process spent choosing it (compiling and timing candidates).
    pub tuning_seconds: f64,
}

impl std::fmt::Display for TunedPick {
    /// One line: "64x32·32x10 Aᵀ, +colsum → register8x4, 41.2 µs (3 timed)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} → {}", self.shape, self.kernel.name())?;
        if let Some(s) = self.seconds {
            write!(f, ", {:.1} µs", s * 1e6)?;
        }
        let how = match self.from_cache {
            true => "cached".to_string(),
            false => format!("{} timed in {:.2} s", self.timed, self.tuning_seconds),
        };
        write!(f, " ({how})")
    }
}

#[derive(Default)]
struct TunerState {
    picks: HashMap<MatmulShape, TunedPick>,
    /// Shapes in the order they were first planned.
    order: Vec<MatmulShape>,
    /// Wall time spent tuning (compiling and timing candidates).
    spent: Duration,
    /// The last error writing the cache (the picks stay in memory).
    disk_error: Option<String>,
}

/// One device's tuner: its picks, its compile budget, its cache file.
pub(crate) struct Tuner {
    enabled: bool,
    budget: Duration,
    /// What the picks were measured under: the policy, subgroup sizes and matmul policy (a forced
    /// profile or a device without subgroups is another set of kernels).
    profile: String,
    cache: Option<TuneCache>,
    state: Mutex<TunerState>,
}

impl Tuner {
    pub(crate) fn new(enabled: bool, budget: Duration, profile: &DeviceProfile, cache: Option<TuneCache>) -> Tuner {
        Tuner {
            enabled,
            budget,
            profile: format!("{:?} {:?} {:?}", profile.policy, profile.subgroup_sizes, profile.matmul),
            cache,
            state: Mutex::new(TunerState::default()),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn cache_path(&self) -> Option<PathBuf> {
        self.cache.as_ref().map(|c| c.path().to_path_buf())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, TunerState>> {
        self.state.lock().map_err(|_| WgnnError::invalid("autotune", "a thread panicked while tuning"))
    }

    pub(crate) fn picks(&self) -> Vec<TunedPick> {
        self.lock().map(|s| s.order.iter().map(|shape| s.picks[shape].clone()).collect()).unwrap_or_default()
    }

    pub(crate) fn disk_error(&self) -> Option<String> {
        self.lock().ok().and_then(|s| s.disk_error.clone())
    }

    /// The pick stored on disk for `shape`, if it names a kernel that may run it.
    fn stored(&self, key: &str, runnable: &dyn Fn(MatmulKernel) -> bool) -> Option<(MatmulKernel, StoredPick)> {
        let stored = self.cache.as_ref()?.load().remove(&(self.profile.clone(), key.to_string()))?;
        let kernel = MatmulKernel::parse(&stored.kernel).filter(|k| runnable(*k))?;
        Some((kernel, stored))
    }

    /// The kernel for `shape`: remembered, else stored on disk, else timed. `measure(kernel,
    /// may_compile, to_beat)` gives a candidate's seconds and the wall time of its warm-up run, or
    /// `None` where it would build a new pipeline and may not; `to_beat` is the best time so far
    /// (see [`time_plan_briefly`]).
    fn pick(
        &self,
        shape: MatmulShape,
        static_pick: MatmulKernel,
        candidates: &[MatmulKernel],
        mut measure: impl FnMut(MatmulKernel, bool, f64) -> Result<Option<(f64, Duration)>>,
    ) -> Result<MatmulKernel> {
        // Held while tuning: two threads planning one shape must get the same pick.
        let mut state = self.lock()?;
        if let Some(p) = state.picks.get(&shape) {
            return Ok(p.kernel);
        }
        let key = shape.key();
        let runnable = |k: MatmulKernel| k == static_pick || candidates.contains(&k);
        let remember = |state: &mut TunerState, pick: TunedPick| {
            state.order.push(shape);
            state.picks.insert(shape, pick);
        };
        if let Some((kernel, stored)) = self.stored(&key, &runnable) {
            let (seconds, timed) = (stored.seconds, stored.timed);
            let pick = TunedPick { shape, kernel, seconds, timed, from_cache: true, tuning_seconds: 0.0 };
            remember(&mut state, pick);
            return Ok(kernel);
        }
        // Candidates whose pipelines are new are compiled only while the budget lasts; the
        // static choice's warm-up run is not counted (its pipeline is compiled for the plan
        // anyway), the rest is.
        let started = Instant::now();
        let mut free = Duration::ZERO;
        let within_budget = |spent: Duration| spent < self.budget;
        let (mut best, mut best_seconds, mut timed) = (static_pick, f64::INFINITY, 0);
        if let Some((static_seconds, warm_up)) = measure(static_pick, true, f64::INFINITY)? {
            (best_seconds, timed, free) = (static_seconds, 1, warm_up);
            for &kernel in candidates.iter().filter(|&&k| k != static_pick) {
                let spent = (state.spent + started.elapsed()).saturating_sub(free);
                if let Some((s, _)) = measure(kernel, within_budget(spent), best_seconds)? {
                    timed += 1;
                    if s < best_seconds && s < static_seconds * (1.0 - TIE) {
                        (best, best_seconds) = (kernel, s);
                    }
                }
            }
        }
        state.spent += started.elapsed().saturating_sub(free);
        let tuning = started.elapsed().as_secs_f64();
        // Another process may have tuned the shape meanwhile: the first stored pick holds.
        if let Some((kernel, stored)) = self.stored(&key, &runnable) {
            let (seconds, timed) = (stored.seconds, stored.timed);
            let pick = TunedPick { shape, kernel, seconds, timed, from_cache: true, tuning_seconds: tuning };
            remember(&mut state, pick);
            return Ok(kernel);
        }
        let seconds = best_seconds.is_finite().then_some(best_seconds);
        if let Some(cache) = &self.cache {
            let stored = StoredPick { profile: self.profile.clone(), key, kernel: best.name(), seconds, timed };
            state.disk_error = cache.store(stored).err().map(|e| e.to_string());
        }
        let pick = TunedPick { shape, kernel: best, seconds, timed, from_cache: false, tuning_seconds: tuning };
        remember(&mut state, pick);
        Ok(best)
    }
}

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

    /// The plan of `kernel` on these operands with `opts`' form and epilogue.
    fn plan(&self, gpu: &Gpu, kernel: MatmulKernel, opts: &MatmulOptions) -> Result<Plan> {
        let act = |e: &Epilogue| match e {
            Epilogue::BiasAct { act, .. } | Epilogue::ActGrad { act, .. } => *act,
            Epilogue::None => Activation::Identity,
        };
        let epilogue = match (&opts.epilogue, &self.aux) {
            (Epilogue::None, _) => Epilogue::None,
            (e @ Epilogue::ActGrad { .. }, Some(y)) => Epilogue::ActGrad { y, act: act(e) },
            (e, aux) => Epilogue::BiasAct { bias: aux.as_ref(), act: act(e) },
        };
        let (a, b, c) = (&self.a, &self.b, &self.c);
        let variant = match kernel {
            MatmulKernel::Variant(v) => Some(v),
            MatmulKernel::Tile(_) => None,
        };
        let opts = MatmulOptions { epilogue, variant, ..*opts };
        match (kernel, &self.col_sum) {
            (MatmulKernel::Variant(_), None) => matmul(gpu, a, b, c, &opts),
            (MatmulKernel::Variant(_), Some(s)) => matmul_column_sum(gpu, a, b, c, s, &opts),
            (MatmulKernel::Tile(t), None) => matmul_register(gpu, a, b, c, &opts, t),
            (MatmulKernel::Tile(t), Some(s)) => matmul_register_column_sum(gpu, a, b, c, s, &opts, t),
        }
    }
}

/// The kernels `gpu` may run op(A)·op(B) with at this shape: the register blockings always, the
/// subgroup kernel where it runs, the workgroup-memory kernels where the policy times them.
fn candidates(gpu: &Gpu, shape: &MatmulShape) -> Vec<MatmulKernel> {
    let MatmulShape { m, n, k, trans_a, trans_b, .. } = *shape;
    let mut kernels = vec![MatmulVariant::Register, MatmulVariant::RegisterTall];
    if subgroup_ok(gpu, m, n, k, trans_a, trans_b) {
        kernels.push(MatmulVariant::Subgroup);
    }
    let workgroup = gpu.profile().matmul.tune_workgroup_kernels;
    if workgroup {
        kernels.push(MatmulVariant::Tiled);
    }
    let mut kernels: Vec<MatmulKernel> = kernels.into_iter().map(MatmulKernel::Variant).collect();
    if workgroup {
        let tiles = RegisterTile::PRESETS.into_iter().filter(|t| t.check(gpu).is_ok());
        kernels.extend(tiles.map(MatmulKernel::Tile));
    }
    kernels
}

/// The kernel the engine runs op(A)·op(B) with (A and the other operands stored, 16-byte aligned
/// views): the tuner's pick where it is on, else [`choose_variant`]'s.
pub(crate) fn matmul_kernel(
    gpu: &Gpu,
    m: usize,
    n: usize,
    k: usize,
    opts: &MatmulOptions,
    col_sum: bool,
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
            true => operands.plan(gpu, kernel, opts)?,
            false => match registry::without_compiling(|| operands.plan(gpu, kernel, opts))? {
                Some(plan) => plan,
                None => return Ok(None),
            },
        };
        time_plan_briefly(gpu, &plan, to_beat).map(Some)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_parse_back() {
        let tiles = RegisterTile::PRESETS.map(MatmulKernel::Tile);
        for kernel in MatmulVariant::ALL.map(MatmulKernel::Variant).into_iter().chain(tiles) {
            assert_eq!(MatmulKernel::parse(&kernel.name()), Some(kernel));
        }
        for bad in ["", "tile", "tile 64x64/4x4", "tile 64x64x16/4", "registers", "tile axbxc/dxe"] {
            assert_eq!(MatmulKernel::parse(bad), None, "{bad}");
        }
    }
}
