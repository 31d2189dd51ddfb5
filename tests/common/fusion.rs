//! The check every layer's test runs: the fused GPU step, the unfused one and the CPU reference
//! give the same per-step losses and parameters.

use super::{assert_close, gpu};
use wgnn::model::{Backend, FitOptions, Loss, Observer, Optimizer, Parameter, Progress, SequentialBuilder};
use wgnn::Dataset;

/// Each step's mean loss, from the running sums reported at every tick (which restart with each
/// epoch, or each evaluation period of a token fit).
#[derive(Default)]
pub struct StepLosses {
    pub losses: Vec<f32>,
    last_sum: f64,
    last_samples: usize,
    /// (epoch, step) of the last tick: a tick repeated for the same step adds nothing.
    last_tick: Option<(usize, usize)>,
}

impl Observer for StepLosses {
    fn on_progress(&mut self, p: &Progress) {
        if self.last_tick == Some((p.epoch, p.step)) {
            return;
        }
        self.last_tick = Some((p.epoch, p.step));
        if p.step == 1 {
            (self.last_sum, self.last_samples) = (0.0, 0);
        }
        let sum = p.loss as f64 * p.samples as f64;
        self.losses.push(((sum - self.last_sum) / (p.samples - self.last_samples) as f64) as f32);
        (self.last_sum, self.last_samples) = (sum, p.samples);
    }
}

/// Trains `build()` on `backend`, fused or not, step by step: (per-step losses, every parameter).
pub fn run(
    build: &dyn Fn() -> SequentialBuilder,
    backend: &Backend,
    fused: bool,
    data: &Dataset,
    loss: Loss,
    opts: &FitOptions,
) -> (Vec<f32>, Vec<Parameter>, Vec<String>) {
    let mut model = build().fused(fused).build(backend).unwrap();
    model.compile(loss, Optimizer::adam(3e-3)).unwrap();
    let kernels = match backend {
        Backend::Gpu(_) => model.step_kernels(data, opts.batch_size).unwrap(),
        Backend::Cpu => Vec::new(),
    };
    let mut steps = StepLosses::default();
    model.fit_with(data, &FitOptions { progress_every: 1, ..*opts }, &mut steps).unwrap();
    (steps.losses, model.parameters().unwrap(), kernels)
}

/// The fused GPU step, the unfused one and the CPU reference (fused and not) give the same
/// per-step losses and parameters; the fused step runs fewer dispatches.
pub fn check_fusion(what: &str, build: &dyn Fn() -> SequentialBuilder, data: &Dataset, loss: Loss, opts: &FitOptions) {
    let gpu = Backend::Gpu(gpu());
    let (want_losses, want_params, _) = run(build, &Backend::Cpu, false, data, loss, opts);
    let runs = [
        ("gpu fused", run(build, &gpu, true, data, loss, opts)),
        ("gpu unfused", run(build, &gpu, false, data, loss, opts)),
        ("cpu fused", run(build, &Backend::Cpu, true, data, loss, opts)),
    ];
    for (how, (losses, params, _)) in &runs {
        assert_eq!(losses.len(), want_losses.len(), "{what}, {how}");
        assert_close(&format!("{what}, {how}: per-step loss"), losses, &want_losses, 1e-4, 1e-3);
        for (got, want) in params.iter().zip(&want_params) {
            assert_eq!((&got.name, &got.shape), (&want.name, &want.shape), "{what}, {how}");
            assert_close(&format!("{what}, {how}: {}", got.name), &got.values, &want.values, 1e-4, 1e-3);
        }
    }
    let (fused, unfused) = (&runs[0].1 .2, &runs[1].1 .2);
    assert!(fused.len() < unfused.len(), "{what}: fused {fused:?} vs unfused {unfused:?}");
}
