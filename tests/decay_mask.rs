//! Weight decay on matrices only (DecayMask::Matrices, nanoGPT's configure_optimizers): the
//! update kernels' decay mask against the CPU reference on scalar and vec4 lengths, values whose
//! bit is clear updated exactly as without decay, bad masks as errors naming the update, and a
//! model whose kernels decay while its biases and batch norm's γ and β do not, the GPU step
//! equal to the CPU reference's.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::optimizer::{update_with, AdamConfig, DecayMask, SgdConfig, UpdateExtras, UpdateRule};
use wgnn::internals::rng::Rng;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Tensor, WgnnError};

const STEPS: u32 = 4;
/// Scalar-kernel and vec4-kernel lengths, across mask words.
const LENGTHS: &[usize] = &[1, 7, 33, 64, 257, 1028];

fn random_mask(rng: &mut Rng, len: usize) -> Vec<u32> {
    let mut bits = vec![0u32; len.div_ceil(32)];
    for i in 0..len {
        if rng.next_f32() < 0.5 {
            bits[i / 32] |= 1 << (i % 32);
        }
    }
    bits
}

fn bit(mask: &[u32], i: usize) -> bool {
    (mask[i / 32] >> (i % 32)) & 1 == 1
}

/// `STEPS` updates of `rule` with a random mask (and a gradient scale, when `scale` is given)
/// on the GPU and the CPU reference; returns the reference's parameters and the mask.
fn check_masked(
    gpu: &wgnn::Gpu,
    rng: &mut Rng,
    len: usize,
    rule: UpdateRule,
    scale: Option<f32>,
) -> (Vec<f32>, Vec<u32>) {
    let what = format!("len {len} {rule:?} scale {scale:?}");
    let mask = random_mask(rng, len);
    let mut p = rng.vec_uniform(len, -1.0, 1.0);
    let pt = Tensor::from_slice(gpu, &[len], &p).unwrap();
    let gt = Tensor::zeros(gpu, &[len]).unwrap();
    let states = [Tensor::zeros(gpu, &[len]).unwrap(), Tensor::zeros(gpu, &[len]).unwrap()];
    let (mut m, mut v) = (vec![0.0f32; len], vec![0.0f32; len]);
    let step = Tensor::zeros_u32(gpu, &[1]).unwrap();
    let mask_t = Tensor::from_u32(gpu, &[mask.len()], &mask).unwrap();
    let scale_t = scale.map(|s| Tensor::from_slice(gpu, &[1], &[s]).unwrap());
    let extras = UpdateExtras { decay_mask: Some(&mask_t), grad_scale: scale_t.as_ref() };
    let plan = update_with(gpu, &rule, &pt, &gt, &states, &step, &extras).unwrap();
    let cpu_extras = cpu::optimizer::UpdateExtras { decay_mask: Some(&mask), grad_scale: scale };
    for t in 1..=STEPS {
        let g = rng.vec_uniform(len, -1.0, 1.0);
        gt.write(&g).unwrap();
        step.write_u32(&[t]).unwrap();
        gpu.run(&[&plan]).unwrap();
        cpu::optimizer::update_with(&rule, &mut p, &g, &mut [&mut m, &mut v], t, &cpu_extras).unwrap();
    }
    assert_close(&format!("{what}: param"), &pt.to_vec().unwrap(), &p, 1e-6, 1e-5);
    assert_close(&format!("{what}: m"), &states[0].to_vec().unwrap(), &m, 1e-6, 1e-5);
    assert_close(&format!("{what}: v"), &states[1].to_vec().unwrap(), &v, 1e-6, 1e-5);
    (p, mask)
}

#[test]
fn masked_adam_and_adamw_match_the_cpu_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(231);
    let cfg = AdamConfig { weight_decay: 0.3, decay: DecayMask::Matrices, ..AdamConfig::torch(1e-2) };
    for &len in LENGTHS {
        for rule in [UpdateRule::Adam(cfg), UpdateRule::AdamW(cfg)] {
            for scale in [None, Some(0.37)] {
                check_masked(&gpu, &mut rng, len, rule, scale);
            }
        }
    }
}

#[test]
fn values_whose_bit_is_clear_update_as_without_decay() {
    // The reference with a mask: the clear values as AdamW with no decay at all, the set ones as
    // AdamW decaying every value (each value's update reads only its own state).
    let mut rng = Rng::new(232);
    let len = 200;
    let cfg = AdamConfig { weight_decay: 0.5, ..AdamConfig::torch(1e-2) };
    for decoupled in [false, true] {
        let mask = random_mask(&mut rng, len);
        let p0 = rng.vec_uniform(len, -1.0, 1.0);
        let grads: Vec<Vec<f32>> = (0..STEPS).map(|_| rng.vec_uniform(len, -1.0, 1.0)).collect();
        let run = |cfg: AdamConfig, mask: Option<&[u32]>| {
            let rule = if decoupled { UpdateRule::AdamW(cfg) } else { UpdateRule::Adam(cfg) };
            let (mut p, mut m, mut v) = (p0.clone(), vec![0.0f32; len], vec![0.0f32; len]);
            let extras = cpu::optimizer::UpdateExtras { decay_mask: mask, grad_scale: None };
            for (t, g) in (1..).zip(&grads) {
                cpu::optimizer::update_with(&rule, &mut p, g, &mut [&mut m, &mut v], t, &extras).unwrap();
            }
            p
        };
        let masked = run(AdamConfig { decay: DecayMask::Matrices, ..cfg }, Some(&mask));
        let none = run(AdamConfig { weight_decay: 0.0, ..cfg }, None);
        let all = run(cfg, None);
        for i in 0..len {
            let want = if bit(&mask, i) { all[i] } else { none[i] };
            assert_eq!(masked[i], want, "decoupled {decoupled}, value {i} (bit {})", bit(&mask, i));
            assert_ne!(all[i], none[i], "decoupled {decoupled}, value {i}: the decay must show");
        }
    }
}

#[test]
fn bad_masks_are_errors_naming_the_update() {
    let gpu = gpu();
    let len = 40;
    let p = Tensor::zeros(&gpu, &[len]).unwrap();
    let g = Tensor::zeros(&gpu, &[len]).unwrap();
    let states = [Tensor::zeros(&gpu, &[len]).unwrap(), Tensor::zeros(&gpu, &[len]).unwrap()];
    let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
    let mask = Tensor::zeros_u32(&gpu, &[2]).unwrap();
    let short = Tensor::zeros_u32(&gpu, &[1]).unwrap();
    let f32_mask = Tensor::zeros(&gpu, &[2]).unwrap();
    let matrices = AdamConfig { weight_decay: 0.1, decay: DecayMask::Matrices, ..AdamConfig::torch(1e-3) };
    let all = AdamConfig { decay: DecayMask::All, ..matrices };
    let with = |m| UpdateExtras { decay_mask: Some(m), grad_scale: None };
    let none = UpdateExtras::default();
    let cases: Vec<(&str, UpdateRule, UpdateExtras, &[&str])> = vec![
        ("matrices without a mask", UpdateRule::AdamW(matrices), none, &["adamw_update", "decay_mask"]),
        ("a mask with decay All", UpdateRule::Adam(all), with(&mask), &["adam_update", "decay is All"]),
        ("a short mask", UpdateRule::AdamW(matrices), with(&short), &["adamw_update", "decay_mask", "[2]"]),
        ("an f32 mask", UpdateRule::AdamW(matrices), with(&f32_mask), &["adamw_update", "u32", "[2]"]),
        ("a mask for SGD", UpdateRule::Sgd(SgdConfig::torch(0.1)), with(&mask), &["sgd_update", "Adam"]),
    ];
    for (what, rule, extras, words) in cases {
        let states = &states[..rule.state_slots()];
        match update_with(&gpu, &rule, &p, &g, states, &step, &extras) {
            Err(e @ (WgnnError::InvalidArgument { .. } | WgnnError::Shape { .. } | WgnnError::DType { .. })) => {
                let text = e.to_string();
                assert!(words.iter().all(|w| text.contains(w)), "{what}: {text}");
            }
            other => panic!("{what}: expected an error, got {:?}", other.map(|_| ())),
        }
    }
    // The CPU reference refuses the same.
    let rule = UpdateRule::AdamW(matrices);
    let (mut pv, mut m, mut v) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
    let gv = vec![0.0f32; len];
    let cpu_none = cpu::optimizer::UpdateExtras::default();
    let err = cpu::optimizer::update_with(&rule, &mut pv, &gv, &mut [&mut m, &mut v], 1, &cpu_none).unwrap_err();
    assert!(err.to_string().contains("decay_mask"), "{err}");
    let one = [0u32];
    let cpu_short = cpu::optimizer::UpdateExtras { decay_mask: Some(&one), grad_scale: None };
    let err = cpu::optimizer::update_with(&rule, &mut pv, &gv, &mut [&mut m, &mut v], 1, &cpu_short).unwrap_err();
    assert!(err.to_string().contains("decay_mask"), "{err}");
}

/// Dense → batch norm → tanh → dense, with non-zero biases so that decay would move them.
fn model(backend: &Backend, decay: DecayMask, weight_decay: f32) -> Sequential {
    let mut model = Sequential::new(6, 3)
        .dense(8, Activation::Identity)
        .batch_norm()
        .activation(Activation::Tanh)
        .dense(3, Activation::Identity)
        .build(backend)
        .unwrap();
    let mut weights = model.weights().unwrap();
    let mut rng = Rng::new(233);
    for (_, b) in weights.iter_mut() {
        *b = rng.vec_uniform(b.len(), -0.5, 0.5);
    }
    model.set_weights(&weights).unwrap();
    let cfg = AdamConfig { weight_decay, decay, ..AdamConfig::torch(1e-2) };
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::AdamW(cfg)).unwrap();
    model
}

#[test]
fn a_model_decays_its_kernels_and_not_its_biases_or_norms() {
    // One step from the same weights: with decay on matrices, every 1-D tensor (biases, γ, β)
    // ends as with no decay at all, and every kernel as with decay on everything. Then several
    // steps: the GPU's parameters equal the CPU reference's.
    let data = synthetic(32, 6, 3, 23);
    let one_step = FitOptions { epochs: 1, batch_size: 32, shuffle: false, ..Default::default() };
    for backend in backends() {
        let how = if matches!(backend, Backend::Cpu) { "cpu" } else { "gpu" };
        let trained = |decay, wd| {
            let mut m = model(&backend, decay, wd);
            m.fit(&data, &one_step).unwrap();
            m.parameters().unwrap()
        };
        let (matrices, all, none) =
            (trained(DecayMask::Matrices, 0.5), trained(DecayMask::All, 0.5), trained(DecayMask::All, 0.0));
        for ((m, a), n) in matrices.iter().zip(&all).zip(&none) {
            let want = if m.shape.len() >= 2 { a } else { n };
            assert_close(&format!("{how}: {} after one step", m.name), &m.values, &want.values, 1e-7, 1e-6);
            if m.name.ends_with("weight") || m.name.ends_with("gamma") {
                assert!(a.values != n.values, "{how}: {}: the decay must show", m.name);
            }
        }
    }
    let opts = FitOptions { epochs: 3, batch_size: 8, shuffle: false, ..Default::default() };
    let mut reference = model(&Backend::Cpu, DecayMask::Matrices, 0.5);
    reference.fit(&data, &opts).unwrap();
    let mut on_gpu = model(&Backend::Gpu(gpu()), DecayMask::Matrices, 0.5);
    on_gpu.fit(&data, &opts).unwrap();
    for (g, c) in on_gpu.parameters().unwrap().iter().zip(reference.parameters().unwrap()) {
        assert_close(&format!("gpu vs cpu: {}", g.name), &g.values, &c.values, 1e-5, 1e-4);
    }
}

#[test]
fn the_mask_is_kept_through_a_checkpoint() {
    let data = synthetic(64, 6, 3, 24);
    let opts = FitOptions { epochs: 1, batch_size: 16, shuffle: false, ..Default::default() };
    let dir = scratch("decay-mask");
    let path = dir.join("matrices.safetensors");
    let mut model = model(&Backend::Cpu, DecayMask::Matrices, 0.5);
    let history = model.fit(&data, &opts).unwrap();
    model.save_checkpoint(&path, 1, &history).unwrap();
    let mut resumed = Sequential::resume(&path, &Backend::Cpu).unwrap();
    model.fit(&data, &opts).unwrap();
    resumed.fit(&data, &FitOptions { epochs: 2, ..opts }).unwrap();
    assert_eq!(resumed.parameters().unwrap(), model.parameters().unwrap(), "resumed vs uninterrupted");
    std::fs::remove_dir_all(&dir).unwrap();
}
