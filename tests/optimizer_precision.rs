//! optimizer.wgsl's step-dependent factors held to f64 on the kernel alone: Adam's bias corrections
//! (1 − β^t, where β^t rounded to f32 and subtracted from 1 loses digits) and the learning-rate
//! schedules, for t = 1…100,000 (and a few larger t for Adam), within 1e-6 relative. A regression
//! test for issue 28: the shader's former β^t = pow(β, t) = exp2(t·log2 β) put Adam's step 6e-5
//! off at t = 1 on lavapipe.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::optimizer::{
    adam_update, sgd_update_with_step, AdamConfig, DecayMask, EpsPlacement, LrSchedule, SgdConfig,
};
use wgnn::{Gpu, Tensor};

/// The bound the issue sets on the GPU's step size against f64.
const RTOL: f64 = 1e-6;

/// Every t up to 256, then 120 log-spaced values up to 100,000 (and 100,000 itself).
fn steps() -> Vec<u32> {
    let mut ts: Vec<u32> = (1..=256).collect();
    let (lo, hi) = (256f64.ln(), 100_000f64.ln());
    for i in 1..=120 {
        let t = (lo + (hi - lo) * i as f64 / 120.0).exp().round() as u32;
        if t > *ts.last().unwrap() {
            ts.push(t);
        }
    }
    assert_eq!(*ts.last().unwrap(), 100_000);
    ts
}

/// Adam's first update of the moments from zero with gradient 1, taken as update t: the parameter
/// moves by lr·((1−β1)/(1−β1^t)) / (√(1−β2)/√(1−β2^t) + eps). Runs it for each t on tensors of
/// `len` (1: the scalar kernel; 4: the vec4 one) and returns the worst relative error against f64.
fn worst_adam_step_error(gpu: &Gpu, len: usize, cfg: &AdamConfig) -> (f64, u32) {
    let pt = Tensor::zeros(gpu, &[len]).unwrap();
    let gt = Tensor::from_slice(gpu, &[len], &vec![1.0; len]).unwrap();
    let mt = Tensor::zeros(gpu, &[len]).unwrap();
    let vt = Tensor::zeros(gpu, &[len]).unwrap();
    let step = Tensor::zeros_u32(gpu, &[1]).unwrap();
    let plan = adam_update(gpu, &pt, &gt, &mt, &vt, &step, cfg).unwrap();
    let zeros = vec![0.0f32; len];
    let (lr, b1, b2, eps) = (cfg.lr as f64, cfg.beta1 as f64, cfg.beta2 as f64, cfg.eps as f64);
    let mut worst = (0.0f64, 0u32);
    // Past the range too: t no longer exact in f32 (2^24 + 1), and the largest t.
    for t in steps().into_iter().chain([1_000_000, 16_777_217, u32::MAX]) {
        for tensor in [&pt, &mt, &vt] {
            tensor.write(&zeros).unwrap();
        }
        step.write_u32(&[t]).unwrap();
        gpu.run(&[&plan]).unwrap();
        let ti = t as f64;
        let want = -lr * ((1.0 - b1) / (1.0 - b1.powf(ti))) / ((1.0 - b2).sqrt() / (1.0 - b2.powf(ti)).sqrt() + eps);
        for got in pt.to_vec().unwrap() {
            let err = (got as f64 - want).abs() / want.abs();
            if err > worst.0 {
                worst = (err, t);
            }
        }
    }
    worst
}

#[test]
fn adam_step_size_matches_f64_up_to_100k_steps() {
    let gpu = gpu();
    for beta2 in [0.999f32, 0.9999, 0.99] {
        for beta1 in [0.9f32, 0.0] {
            // eps far below √(1−β2)·|g|, so the step is the bias corrections' ratio.
            let cfg = AdamConfig {
                lr: 1e-3,
                beta1,
                beta2,
                eps: 1e-30,
                weight_decay: 0.0,
                schedule: LrSchedule::Constant,
                eps_placement: EpsPlacement::Torch,
                decay: DecayMask::All,
            };
            for len in [1, 4] {
                let (err, t) = worst_adam_step_error(&gpu, len, &cfg);
                println!("adam β1 {beta1} β2 {beta2} len {len}: worst step-size error {err:.2e} (t = {t})");
                assert!(err <= RTOL, "adam β1 {beta1} β2 {beta2} len {len}: step size off by {err:e} at t = {t}");
            }
        }
    }
}

#[test]
fn adam_cpu_reference_matches_f64_bias_corrections() {
    // The reference the GPU is tested against elsewhere must itself hold the same bound.
    for beta2 in [0.999f32, 0.9999] {
        let cfg = AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2,
            eps: 1e-30,
            weight_decay: 0.0,
            schedule: LrSchedule::Constant,
            eps_placement: EpsPlacement::Torch,
            decay: DecayMask::All,
        };
        let (b1, b2) = (cfg.beta1 as f64, beta2 as f64);
        for t in steps() {
            let (mut p, mut m, mut v) = ([0.0f32], [0.0f32], [0.0f32]);
            cpu::adam_update(&mut p, &[1.0], &mut m, &mut v, t, &cfg);
            let ti = t as f64;
            let want = -1e-3 * ((1.0 - b1) / (1.0 - b1.powf(ti))) / ((1.0 - b2).sqrt() / (1.0 - b2.powf(ti)).sqrt());
            let err = (p[0] as f64 - want).abs() / want.abs();
            assert!(err <= RTOL, "cpu adam β2 {beta2}: step size off by {err:e} at t = {t}");
        }
    }
}

/// SGD with gradient 1 from 0 moves the parameter by the scheduled rate; returns the worst
/// relative error of the GPU's rate against `want(t)` (f64), and its t.
fn worst_schedule_error(gpu: &Gpu, len: usize, cfg: &SgdConfig, want: impl Fn(f64) -> f64) -> (f64, u32) {
    let pt = Tensor::zeros(gpu, &[len]).unwrap();
    let gt = Tensor::from_slice(gpu, &[len], &vec![1.0; len]).unwrap();
    let step = Tensor::zeros_u32(gpu, &[1]).unwrap();
    let plan = sgd_update_with_step(gpu, &pt, &gt, None, Some(&step), cfg).unwrap();
    let zeros = vec![0.0f32; len];
    let mut worst = (0.0f64, 0u32);
    for t in steps() {
        pt.write(&zeros).unwrap();
        step.write_u32(&[t]).unwrap();
        gpu.run(&[&plan]).unwrap();
        let want = want((t - 1) as f64);
        for got in pt.to_vec().unwrap() {
            // The host's f32 rounding of the reference, once: compare against f64 directly.
            let err = (-(got as f64) - want).abs() / want.abs();
            if err > worst.0 {
                worst = (err, t);
            }
            // And the CPU reference of the rate, which must hold the same bound.
            let cpu_rate = cfg.schedule.lr_at(cfg.lr, t) as f64;
            assert!(
                (cpu_rate - want).abs() <= RTOL * want.abs(),
                "{:?}: lr_at({t}) = {cpu_rate} vs {want}",
                cfg.schedule
            );
        }
    }
    worst
}

/// A schedule's rate as a function of k = t − 1, in f64.
type RateOf = Box<dyn Fn(f64) -> f64>;

#[test]
fn schedules_match_f64_up_to_100k_steps() {
    let gpu = gpu();
    let base = SgdConfig { lr: 0.1, momentum: 0.0, nesterov: false, weight_decay: 0.0, schedule: LrSchedule::Constant };
    let lr = base.lr as f64;
    let cases: Vec<(LrSchedule, RateOf)> = vec![
        (
            LrSchedule::Exponential { decay_steps: 10, decay_rate: 0.999 },
            Box::new(move |k| lr * (0.999f32 as f64).powf(k / 10.0)),
        ),
        (
            LrSchedule::Exponential { decay_steps: 1000, decay_rate: 0.5 },
            Box::new(move |k| lr * 0.5f64.powf(k / 1000.0)),
        ),
        (
            LrSchedule::Step { every: 7, gamma: 0.9995 },
            Box::new(move |k| lr * (0.9995f32 as f64).powf((k / 7.0).floor())),
        ),
        // T past the last t tried, so the factor is followed down to ~1e-9 of lr; and a T that is
        // reached, after which the rate is held at min_lr.
        (
            LrSchedule::Cosine { total_steps: 100_000, min_lr: 0.0 },
            Box::new(move |k| lr * 0.5 * (1.0 + (std::f64::consts::PI * k / 100_000.0).cos())),
        ),
        (
            LrSchedule::Cosine { total_steps: 3000, min_lr: 1e-4 },
            Box::new(move |k| {
                let min = 1e-4f32 as f64;
                min + (lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * k.min(3000.0) / 3000.0).cos())
            }),
        ),
        // Warmup over 2,000 updates, the cosine down to min_lr at 60,000, then held.
        (
            LrSchedule::WarmupCosine { warmup_steps: 2000, total_steps: 60_000, min_lr: 1e-4 },
            Box::new(move |k| {
                let min = 1e-4f32 as f64;
                if k < 2000.0 {
                    return lr * (k + 1.0) / 2000.0;
                }
                let frac = (k.min(60_000.0) - 2000.0) / 58_000.0;
                min + (lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
            }),
        ),
    ];
    for (schedule, want) in &cases {
        let cfg = SgdConfig { schedule: *schedule, ..base };
        for len in [1, 4] {
            let (err, t) = worst_schedule_error(&gpu, len, &cfg, want);
            println!("{schedule:?} len {len}: worst rate error {err:.2e} (t = {t})");
            assert!(err <= RTOL, "{schedule:?} len {len}: rate off by {err:e} at t = {t}");
        }
    }
}
