//! LrSchedule::WarmupCosine (nanoGPT's get_lr): the host reference `lr_at` against the formula
//! written out in f64, the GPU's rate from the step tensor against `lr_at` at every t through
//! warmup, decay and the floor, its bad settings as errors naming the update, and the schedule
//! kept through a checkpoint. (The 100,000-step precision run is tests/optimizer_precision.rs'.)

mod common;
use common::*;
use wgnn::internals::kernels::optimizer::{sgd_update_with_step, AdamConfig, LrSchedule, SgdConfig};
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Tensor, WgnnError};

/// nanoGPT's get_lr(it) with it = k = t − 1, except (k + 1)/W in the warmup (see the doc).
fn written_out(lr: f64, warmup: f64, total: f64, min_lr: f64, k: f64) -> f64 {
    if k < warmup {
        return lr * (k + 1.0) / warmup;
    }
    if k > total {
        return min_lr;
    }
    let ratio = (k - warmup) / (total - warmup);
    min_lr + 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()) * (lr - min_lr)
}

#[test]
fn lr_at_is_nanogpts_warmup_then_cosine() {
    let (lr, min_lr) = (1e-3f32, 1e-4f32);
    for (warmup, total) in [(0u32, 10u32), (1, 2), (5, 20), (100, 2000)] {
        let s = LrSchedule::WarmupCosine { warmup_steps: warmup, total_steps: total, min_lr };
        for t in (0..=total + 5).chain([10 * total, u32::MAX]) {
            let want = written_out(lr as f64, warmup as f64, total as f64, min_lr as f64, t.max(1) as f64 - 1.0);
            let got = s.lr_at(lr, t) as f64;
            assert!((got - want).abs() <= 1e-6 * want.abs(), "{s:?} t = {t}: {got} vs {want}");
        }
        // Landmarks: the last warmup update uses lr; min_lr from update T + 1 on.
        if warmup > 0 {
            assert_eq!(s.lr_at(lr, warmup), lr, "{s:?}: update W is at lr");
            assert_eq!(s.lr_at(lr, 1), lr / warmup as f32, "{s:?}: update 1 is lr/W");
        }
        assert_eq!(s.lr_at(lr, total + 1), min_lr, "{s:?}: update T + 1 is at min_lr");
    }
    // No warmup is the plain cosine.
    let cosine = LrSchedule::Cosine { total_steps: 10, min_lr };
    let warm0 = LrSchedule::WarmupCosine { warmup_steps: 0, total_steps: 10, min_lr };
    for t in 0..15 {
        assert_eq!(warm0.lr_at(lr, t), cosine.lr_at(lr, t), "t = {t}");
    }
}

#[test]
fn gpu_rate_follows_lr_at_through_warmup_decay_and_floor() {
    // Plain SGD from p = 0 with g = 1 leaves p = −lr(t): the rate the GPU computed from t.
    let gpu = gpu();
    let lr = 1e-3f32;
    for (warmup, total, len) in [(1u32, 2u32, 1usize), (7, 30, 5), (100, 2000, 8)] {
        let schedule = LrSchedule::WarmupCosine { warmup_steps: warmup, total_steps: total, min_lr: 1e-4 };
        let cfg = SgdConfig { schedule, ..SgdConfig::torch(lr) };
        let p = Tensor::zeros(&gpu, &[len]).unwrap();
        let g = Tensor::from_slice(&gpu, &[len], &vec![1.0; len]).unwrap();
        let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
        let plan = sgd_update_with_step(&gpu, &p, &g, None, Some(&step), &cfg).unwrap();
        let mut ts: Vec<u32> = (0..=warmup + 3).collect();
        ts.extend((0..40).map(|i| warmup + (total - warmup) * i / 39));
        ts.extend([total, total + 1, total + 2, 5 * total]);
        for t in ts {
            p.write(&vec![0.0; len]).unwrap();
            step.write_u32(&[t]).unwrap();
            gpu.run(&[&plan]).unwrap();
            let want = schedule.lr_at(lr, t);
            let got: Vec<f32> = p.to_vec().unwrap().iter().map(|v| -v).collect();
            assert_close(&format!("{schedule:?} rate at t = {t}"), &got, &vec![want; len], 0.0, 1e-6);
        }
    }
}

#[test]
fn bad_warmup_settings_are_errors_naming_the_update() {
    let gpu = gpu();
    let p = Tensor::zeros(&gpu, &[3]).unwrap();
    let g = Tensor::zeros(&gpu, &[3]).unwrap();
    let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
    let base = SgdConfig::torch(0.1);
    for (what, schedule, field) in [
        ("warmup = total", LrSchedule::WarmupCosine { warmup_steps: 5, total_steps: 5, min_lr: 0.0 }, "warmup_steps"),
        ("warmup > total", LrSchedule::WarmupCosine { warmup_steps: 9, total_steps: 5, min_lr: 0.0 }, "warmup_steps"),
        ("total 0", LrSchedule::WarmupCosine { warmup_steps: 0, total_steps: 0, min_lr: 0.0 }, "total_steps"),
        ("min_lr > lr", LrSchedule::WarmupCosine { warmup_steps: 1, total_steps: 5, min_lr: 0.2 }, "min_lr"),
        ("min_lr NaN", LrSchedule::WarmupCosine { warmup_steps: 1, total_steps: 5, min_lr: f32::NAN }, "min_lr"),
        ("min_lr < 0", LrSchedule::WarmupCosine { warmup_steps: 1, total_steps: 5, min_lr: -1e-3 }, "min_lr"),
    ] {
        let cfg = SgdConfig { schedule, ..base };
        match sgd_update_with_step(&gpu, &p, &g, None, Some(&step), &cfg) {
            Err(WgnnError::InvalidArgument { op, detail }) => {
                assert_eq!(op, "sgd_update", "{what}");
                assert!(detail.contains(field), "{what}: {detail}");
            }
            other => panic!("{what}: expected an error naming {field}, got {:?}", other.map(|_| ())),
        }
        let adamw = AdamConfig { schedule, ..AdamConfig::torch(0.1) };
        assert!(adamw.validate_for("adamw_update").is_err(), "{what}: AdamW accepted it");
    }
}

#[test]
fn a_resumed_run_continues_the_warmup_where_it_stopped() {
    // Two epochs of four steps straight, and one epoch, a checkpoint and a second epoch resumed
    // from it, end with the same weights: the schedule (warmup 3, cosine to update 6, then the
    // floor) is saved with the optimizer, and t with the state.
    let data = synthetic(64, 6, 3, 23);
    let opts = FitOptions { epochs: 1, batch_size: 16, shuffle: false, ..Default::default() };
    let dir = scratch("warmup-resume");
    let path = dir.join("warmup.safetensors");
    let schedule = LrSchedule::WarmupCosine { warmup_steps: 3, total_steps: 6, min_lr: 1e-3 };
    for backend in backends() {
        let mut model =
            Sequential::new(6, 7).dense(8, Activation::Tanh).dense(3, Activation::Identity).build(&backend).unwrap();
        model
            .compile(Loss::SparseCategoricalCrossentropy, Optimizer::adamw(1e-2, 0.1).with_schedule(schedule))
            .unwrap();
        let history = model.fit(&data, &opts).unwrap();
        model.save_checkpoint(&path, 1, &history).unwrap();
        let mut resumed = Sequential::resume(&path, &backend).unwrap();
        model.fit(&data, &opts).unwrap();
        resumed.fit(&data, &FitOptions { epochs: 2, ..opts }).unwrap();
        let what = format!("{}: resumed vs uninterrupted", if matches!(backend, Backend::Cpu) { "cpu" } else { "gpu" });
        assert_eq!(resumed.weights().unwrap(), model.weights().unwrap(), "{what}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
