//! Keras' placement of ε (EpsPlacement::Keras) in Adam, AdamW, RMSprop and Adagrad: the GPU
//! against the CPU reference, the reference against Keras 3's update written out in f64, and the
//! choice kept through a checkpoint. (PyTorch's placement is tests/optimizer.rs' and
//! tests/torch_parity.rs'.)

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::optimizer::{
    adagrad_update, adam_update, adamw_update, rmsprop_update, AdagradConfig, AdamConfig, EpsPlacement, RmsPropConfig,
};
use wgnn::internals::rng::Rng;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Tensor};

const STEPS: u32 = 5;
/// Scalar-kernel and vec4-kernel lengths.
const LENGTHS: &[usize] = &[1, 7, 64, 257, 1028];

/// Small gradients, where √(v + ε) and √v + ε differ most.
fn grads(rng: &mut Rng, len: usize) -> Vec<f32> {
    rng.vec_uniform(len, -1e-3, 1e-3)
}

#[test]
fn keras_adam_and_adamw_match_the_cpu_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(280);
    let cfg = AdamConfig { weight_decay: 0.01, ..AdamConfig::keras(1e-2) };
    for decoupled in [false, true] {
        for &len in LENGTHS {
            let what = format!("keras adam decoupled={decoupled} len {len}");
            let mut p = rng.vec_uniform(len, -1.0, 1.0);
            let (mut m, mut v) = (vec![0.0f32; len], vec![0.0f32; len]);
            let pt = Tensor::from_slice(&gpu, &[len], &p).unwrap();
            let gt = Tensor::zeros(&gpu, &[len]).unwrap();
            let (mt, vt) = (Tensor::zeros(&gpu, &[len]).unwrap(), Tensor::zeros(&gpu, &[len]).unwrap());
            let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
            let plan = if decoupled {
                adamw_update(&gpu, &pt, &gt, &mt, &vt, &step, &cfg).unwrap()
            } else {
                adam_update(&gpu, &pt, &gt, &mt, &vt, &step, &cfg).unwrap()
            };
            for t in 1..=STEPS {
                let g = grads(&mut rng, len);
                gt.write(&g).unwrap();
                step.write_u32(&[t]).unwrap();
                gpu.run(&[&plan]).unwrap();
                if decoupled {
                    cpu::adamw_update(&mut p, &g, &mut m, &mut v, t, &cfg);
                } else {
                    cpu::adam_update(&mut p, &g, &mut m, &mut v, t, &cfg);
                }
            }
            assert_close(&format!("{what} param"), &pt.to_vec().unwrap(), &p, 1e-6, 1e-5);
        }
    }
}

#[test]
fn keras_rmsprop_and_adagrad_match_the_cpu_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(281);
    for momentum in [0.0f32, 0.9] {
        let cfg = RmsPropConfig { momentum, ..RmsPropConfig::keras(1e-2) };
        for &len in LENGTHS {
            let what = format!("keras rmsprop momentum {momentum} len {len}");
            let mut p = rng.vec_uniform(len, -1.0, 1.0);
            let (mut sq, mut buf) = (vec![0.0f32; len], vec![0.0f32; len]);
            let pt = Tensor::from_slice(&gpu, &[len], &p).unwrap();
            let gt = Tensor::zeros(&gpu, &[len]).unwrap();
            let (st, bt) = (Tensor::zeros(&gpu, &[len]).unwrap(), Tensor::zeros(&gpu, &[len]).unwrap());
            let with_buf = momentum != 0.0;
            let plan = rmsprop_update(&gpu, &pt, &gt, &st, with_buf.then_some(&bt), None, &cfg).unwrap();
            for t in 1..=STEPS {
                let g = grads(&mut rng, len);
                gt.write(&g).unwrap();
                gpu.run(&[&plan]).unwrap();
                cpu::rmsprop_update(&mut p, &g, &mut sq, with_buf.then_some(&mut buf[..]), t, &cfg);
            }
            assert_close(&format!("{what} param"), &pt.to_vec().unwrap(), &p, 1e-6, 1e-5);
        }
    }
    let cfg = AdagradConfig::keras(1e-2);
    for &len in LENGTHS {
        let what = format!("keras adagrad len {len}");
        let mut p = rng.vec_uniform(len, -1.0, 1.0);
        let mut sum = vec![0.0f32; len];
        let pt = Tensor::from_slice(&gpu, &[len], &p).unwrap();
        let gt = Tensor::zeros(&gpu, &[len]).unwrap();
        let st = Tensor::zeros(&gpu, &[len]).unwrap();
        let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
        let plan = adagrad_update(&gpu, &pt, &gt, &st, &step, &cfg).unwrap();
        for t in 1..=STEPS {
            let g = grads(&mut rng, len);
            gt.write(&g).unwrap();
            step.write_u32(&[t]).unwrap();
            gpu.run(&[&plan]).unwrap();
            cpu::adagrad_update(&mut p, &g, &mut sum, t, &cfg);
        }
        assert_close(&format!("{what} param"), &pt.to_vec().unwrap(), &p, 1e-6, 1e-5);
    }
}

#[test]
fn keras_placement_reference_matches_keras_formulas() {
    // Keras 3's update_step bodies (adam.py, rmsprop.py, adagrad.py), in f64, for three steps of
    // small gradients: there the two placements differ by far more than the tolerance.
    let grads = [4e-4f64, -1e-3, 2.5e-4];
    let adam = AdamConfig::keras(1e-2);
    let (lr, b1, b2, eps) = (adam.lr as f64, adam.beta1 as f64, adam.beta2 as f64, adam.eps as f64);
    let (mut p, mut m, mut v) = ([0.5f32], [0.0f32], [0.0f32]);
    let (mut hp, mut hm, mut hv) = (0.5f64, 0.0f64, 0.0f64);
    let mut torch_p = [0.5f32];
    let (mut tm, mut tv) = ([0.0f32], [0.0f32]);
    for (k, &g) in grads.iter().enumerate() {
        let t = k as i32 + 1;
        cpu::adam_update(&mut p, &[g as f32], &mut m, &mut v, t as u32, &adam);
        let torch = AdamConfig { eps_placement: EpsPlacement::Torch, ..adam };
        cpu::adam_update(&mut torch_p, &[g as f32], &mut tm, &mut tv, t as u32, &torch);
        // alpha = lr·√(1 − β2^t)/(1 − β1^t); p −= m·alpha/(√v + ε).
        let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        hm += (g - hm) * (1.0 - b1);
        hv += (g * g - hv) * (1.0 - b2);
        hp -= hm * alpha / (hv.sqrt() + eps);
        assert_close(&format!("keras adam step {t}"), &p, &[hp as f32], 1e-7, 1e-6);
    }
    assert!((p[0] - torch_p[0]).abs() > 1e-6, "the placements should differ here: {p:?} vs {torch_p:?}");

    let rms = RmsPropConfig::keras(1e-2);
    let (lr, rho, eps) = (rms.lr as f64, rms.rho as f64, rms.eps as f64);
    let (mut p, mut sq) = ([0.5f32], [0.0f32]);
    let (mut hp, mut hsq) = (0.5f64, 0.0f64);
    for (k, &g) in grads.iter().enumerate() {
        cpu::rmsprop_update(&mut p, &[g as f32], &mut sq, None, k as u32 + 1, &rms);
        hsq = rho * hsq + (1.0 - rho) * g * g;
        hp -= lr * g / (hsq + eps).sqrt();
        assert_close(&format!("keras rmsprop step {}", k + 1), &p, &[hp as f32], 1e-7, 1e-6);
    }

    let ada = AdagradConfig::keras(1e-2);
    let (lr, eps) = (ada.lr as f64, ada.eps as f64);
    let (mut p, mut sum) = ([0.5f32], [0.0f32]);
    let (mut hp, mut hsum) = (0.5f64, ada.initial_accumulator as f64);
    for (k, &g) in grads.iter().enumerate() {
        cpu::adagrad_update(&mut p, &[g as f32], &mut sum, k as u32 + 1, &ada);
        hsum += g * g;
        hp -= lr * g / (hsum + eps).sqrt();
        assert_close(&format!("keras adagrad step {}", k + 1), &p, &[hp as f32], 1e-7, 1e-6);
    }
}

#[test]
fn keras_placement_is_kept_through_a_checkpoint() {
    // A run checkpointed after one epoch and resumed ends with the weights of the run that was
    // never interrupted: the resumed optimizer updates with Keras' placement too (PyTorch's would
    // move these small gradients' weights differently).
    let data = synthetic(64, 6, 3, 28);
    let opts = FitOptions { epochs: 1, batch_size: 16, shuffle: false, ..Default::default() };
    let dir = std::env::temp_dir().join(format!("wgnn-conventions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keras.safetensors");
    for (name, optimizer) in [
        ("adam", Optimizer::Adam(AdamConfig::keras(1e-2))),
        ("rmsprop", Optimizer::RmsProp(RmsPropConfig::keras(1e-2))),
        ("adagrad", Optimizer::Adagrad(AdagradConfig::keras(1e-2))),
    ] {
        let mut model = Sequential::new(6, 7)
            .dense(8, Activation::Tanh)
            .dense(3, Activation::Identity)
            .build(&Backend::Cpu)
            .unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, optimizer).unwrap();
        let history = model.fit(&data, &opts).unwrap();
        model.save_checkpoint(&path, 1, &history).unwrap();
        let mut resumed = Sequential::resume(&path, &Backend::Cpu).unwrap();
        model.fit(&data, &opts).unwrap();
        resumed.fit(&data, &FitOptions { epochs: 2, ..opts }).unwrap();
        assert_eq!(resumed.weights().unwrap(), model.weights().unwrap(), "{name}: resumed vs uninterrupted");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
