//! The matmul autotuner's state, which each device owns ([`crate::Gpu`]): the pick remembered
//! per product shape, the compile budget, the cache file ([`super::tune_cache`]) and the profile
//! string the picks were measured under; and [`Tuner::pick`], which replays a remembered or
//! stored pick or else times the candidates it is handed. Keyed by plain shapes and kernel names
//! ([`crate::matmul_kernel`]), so the device does not depend on the kernels: building and timing
//! the candidate plans is [`crate::autotune`]'s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::tune_cache::{StoredPick, TuneCache};
use crate::error::{Result, WgnnError};
use crate::matmul_kernel::MatmulKernel;
use crate::profile::DeviceProfile;

/// Environment variable that, set to `off` (or 0, false, no), turns the autotuner off whatever
/// [`crate::GpuOptions::autotune`] says: every product takes the static choice.
pub const AUTOTUNE_ENV: &str = "WGNN_AUTOTUNE";

/// A candidate must beat the static choice by more than this fraction to replace it: timings
/// within a few percent are noise, and the static choice is the one measured by hand.
pub const TIE: f64 = 0.02;

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
    /// With op(B)'s column sums ([`crate::internals::kernels::matmul::matmul_column_sum`]).
    pub col_sum: bool,
}

impl MatmulShape {
    /// The key of its pick on disk.
    pub(crate) fn key(&self) -> String {
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
    /// (see `crate::autotune`'s timing).
    pub(crate) fn pick(
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
        let (mut best, mut best_seconds, mut timed, mut static_seconds) =
            (static_pick, f64::INFINITY, 0, f64::INFINITY);
        if let Some((seconds, warm_up)) = measure(static_pick, true, f64::INFINITY)? {
            static_seconds = seconds;
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
        if best != static_pick {
            // A load spike during the static choice's runs must not persist a slower kernel:
            // both are timed once more, and the challenger kept only if it wins again.
            let again_static = measure(static_pick, false, f64::INFINITY)?.map(|(s, _)| s);
            let again_best = measure(best, false, f64::INFINITY)?.map(|(s, _)| s);
            (best, best_seconds) =
                confirmed((static_pick, static_seconds), (best, best_seconds), again_static, again_best);
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

/// The pick after a challenger beat the static choice in the first round (`challenger` and
/// `static_pick`: kernel and first-round seconds) and both were timed once more (`None`: not
/// timed): the challenger where it wins again by more than [`TIE`] (its best time kept), else the
/// static choice with its best time.
fn confirmed(
    static_pick: (MatmulKernel, f64),
    challenger: (MatmulKernel, f64),
    again_static: Option<f64>,
    again_challenger: Option<f64>,
) -> (MatmulKernel, f64) {
    match (again_static, again_challenger) {
        (Some(s), Some(c)) if c < s * (1.0 - TIE) => (challenger.0, challenger.1.min(c)),
        (Some(s), Some(_)) => (static_pick.0, static_pick.1.min(s)),
        // Not timed again (it would have built a pipeline): the first round stands.
        _ => challenger,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul_kernel::MatmulVariant;

    #[test]
    fn a_challenger_is_kept_only_where_it_wins_again() {
        let (static_kernel, challenger) =
            (MatmulKernel::Variant(MatmulVariant::Subgroup), MatmulKernel::Variant(MatmulVariant::Register));
        // The static choice's first runs hit a spike (10 ms); timed again it is 1 ms: kept.
        assert_eq!(
            confirmed((static_kernel, 0.010), (challenger, 0.004), Some(0.001), Some(0.0041)),
            (static_kernel, 0.001)
        );
        // The challenger wins again: kept, with its best time.
        assert_eq!(
            confirmed((static_kernel, 0.010), (challenger, 0.004), Some(0.009), Some(0.0039)),
            (challenger, 0.0039)
        );
        // Within the tie the second time: the static choice.
        assert_eq!(confirmed((static_kernel, 0.010), (challenger, 0.004), Some(0.004), Some(0.00395)).0, static_kernel);
        // Not timed again: the first round stands.
        assert_eq!(confirmed((static_kernel, 0.010), (challenger, 0.004), None, Some(0.003)), (challenger, 0.004));
    }
}
