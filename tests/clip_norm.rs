//! Clipping by global norm on the GPU (grad_norm.wgsl, FitOptions::clip_norm): the factor and
//! norm against the CPU reference on awkward sizes (1 to 10^6 + 3 values, scalar and vec4,
//! views), the same bits on every run, the update reading the factor, bad input as errors, and
//! a model's GPU steps equal to the CPU reference's with clipping active.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::grad_norm::clip_factor;
use wgnn::internals::kernels::optimizer::{update_with, AdamConfig, SgdConfig, UpdateExtras, UpdateRule};
use wgnn::internals::rng::Rng;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Gpu, Tensor};

/// The GPU's [factor, norm] for `grad`, run twice: both runs must give the same bits.
fn gpu_factor(gpu: &Gpu, grad: &Tensor, max_norm: f32) -> [f32; 2] {
    let out = Tensor::zeros(gpu, &[2]).unwrap();
    let plan = clip_factor(gpu, grad, &out, max_norm).unwrap();
    gpu.run(&[&plan]).unwrap();
    let first = out.to_vec().unwrap();
    out.write(&[-1.0, -1.0]).unwrap();
    gpu.run(&[&plan]).unwrap();
    let second = out.to_vec().unwrap();
    assert_eq!(
        first.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        second.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "two runs"
    );
    [first[0], first[1]]
}

#[test]
fn factor_and_norm_match_the_reference_on_awkward_sizes() {
    let gpu = gpu();
    let mut rng = Rng::new(230);
    // Scalar (odd) and vec4 lengths, a block (256 · 16) and one past it, and past a million.
    for len in [1usize, 3, 7, 1000, 1001, 4096, 4097, 65_537, 1_000_003, 1_048_576] {
        let g = rng.vec_uniform(len, -1.0, 1.0);
        let grad = Tensor::from_slice(&gpu, &[len], &g).unwrap();
        let norm = cpu::clip_factor(&g, 1.0)[1];
        // Clipping active (half the norm), and not (twice it: factor exactly 1).
        for max_norm in [0.5 * norm, 2.0 * norm] {
            let want = cpu::clip_factor(&g, max_norm);
            let got = gpu_factor(&gpu, &grad, max_norm);
            assert_close(&format!("len {len} max_norm {max_norm}"), &got, &want, 0.0, 2e-6);
            assert!(want[0] < 1.0 || got[0] == 1.0, "len {len}: an inactive clip multiplies by exactly 1");
        }
    }
}

#[test]
fn views_zero_gradients_and_overflow() {
    let gpu = gpu();
    let mut rng = Rng::new(231);
    // A view inside a larger buffer (offset by one storage alignment), odd and vec4 lengths.
    let align = gpu.limits().min_storage_buffer_offset_alignment as usize / 4;
    let big = rng.vec_uniform(4 * align + 5000, -2.0, 2.0);
    let buffer = Tensor::from_slice(&gpu, &[big.len()], &big).unwrap();
    for len in [5usize, 4000] {
        let view = buffer.view(align, &[len]).unwrap();
        let g = &big[align..align + len];
        let want = cpu::clip_factor(g, 1.0);
        assert_close(&format!("view of {len}"), &gpu_factor(&gpu, &view, 1.0), &want, 0.0, 2e-6);
    }
    // All zero: norm 0, factor 1 (max_norm / 1e-6 is past 1).
    let zeros = Tensor::zeros(&gpu, &[300]).unwrap();
    assert_eq!(gpu_factor(&gpu, &zeros, 1.0), [1.0, 0.0]);
    // Squares past f32's range though the norm (8.5e19) fits: an infinite norm, factor 0, on
    // the GPU and in the reference alike (PyTorch's float32 CUDA reduction gives the same).
    let huge = Tensor::from_slice(&gpu, &[8], &[3e19; 8]).unwrap();
    let [factor, norm] = gpu_factor(&gpu, &huge, 1.0);
    assert!(factor == 0.0 && norm == f32::INFINITY, "{factor} {norm}");
    assert_eq!(cpu::clip_factor(&[3e19; 8], 1.0), [factor, norm], "the reference at the same input");
}

#[test]
fn the_update_reads_the_factor() {
    // clip_factor then SGD and AdamW in one plan, against the reference scaling the gradient.
    let gpu = gpu();
    let mut rng = Rng::new(232);
    for len in [13usize, 1028] {
        for rule in [UpdateRule::Sgd(SgdConfig::torch(0.1)), UpdateRule::AdamW(AdamConfig::torch(1e-2))] {
            let what = format!("len {len} {}", rule.op());
            let mut p = rng.vec_uniform(len, -1.0, 1.0);
            let pt = Tensor::from_slice(&gpu, &[len], &p).unwrap();
            let gt = Tensor::zeros(&gpu, &[len]).unwrap();
            let states: Vec<Tensor> = (0..rule.state_slots()).map(|_| Tensor::zeros(&gpu, &[len]).unwrap()).collect();
            let mut cpu_states = vec![vec![0.0f32; len]; rule.state_slots()];
            let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
            let factor = Tensor::zeros(&gpu, &[2]).unwrap();
            let mut plan = clip_factor(&gpu, &gt, &factor, 0.3).unwrap();
            let extras = UpdateExtras { grad_scale: Some(&factor), decay_mask: None };
            plan.extend(update_with(&gpu, &rule, &pt, &gt, &states, &step, &extras).unwrap());
            for t in 1..=3u32 {
                let g = rng.vec_uniform(len, -1.0, 1.0);
                gt.write(&g).unwrap();
                step.write_u32(&[t]).unwrap();
                gpu.run(&[&plan]).unwrap();
                let [scale, _] = cpu::clip_factor(&g, 0.3);
                assert!(scale < 0.5, "{what}: clipping must be active");
                let extras = cpu::optimizer::UpdateExtras { grad_scale: Some(scale), decay_mask: None };
                let mut slices: Vec<&mut [f32]> = cpu_states.iter_mut().map(|s| &mut s[..]).collect();
                cpu::optimizer::update_with(&rule, &mut p, &g, &mut slices, t, &extras).unwrap();
            }
            assert_close(&format!("{what}: param"), &pt.to_vec().unwrap(), &p, 1e-6, 1e-5);
        }
    }
}

#[test]
fn bad_input_is_an_error_naming_clip_factor() {
    let gpu = gpu();
    let grad = Tensor::zeros(&gpu, &[10]).unwrap();
    let out = Tensor::zeros(&gpu, &[2]).unwrap();
    let expect = |what: &str, r: wgnn::Result<wgnn::internals::kernels::Plan>, words: &[&str]| match r {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("clip_factor") && words.iter().all(|w| text.contains(w)), "{what}: {text}");
        }
        other => panic!("{what}: expected an error, got {:?}", other.map(|_| ())),
    };
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        expect(&format!("max_norm {bad}"), clip_factor(&gpu, &grad, &out, bad), &["max_norm"]);
    }
    let three = Tensor::zeros(&gpu, &[3]).unwrap();
    expect("out [3]", clip_factor(&gpu, &grad, &three, 1.0), &["out", "[2]"]);
    let empty = Tensor::zeros(&gpu, &[0]).unwrap();
    expect("empty grad", clip_factor(&gpu, &empty, &out, 1.0), &["empty"]);
    let ints = Tensor::zeros_u32(&gpu, &[10]).unwrap();
    expect("u32 grad", clip_factor(&gpu, &ints, &out, 1.0), &["f32"]);
    let inside = grad.view(0, &[2]).unwrap();
    expect("out inside grad", clip_factor(&gpu, &grad, &inside, 1.0), &["share memory"]);
}

fn model(backend: &Backend, optimizer: Optimizer) -> Sequential {
    let mut model = Sequential::new(6, 11)
        .dense(16, Activation::Relu)
        .dense(8, Activation::Tanh)
        .dense(3, Activation::Identity)
        .build(backend)
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, optimizer).unwrap();
    model
}

#[test]
fn a_clipped_gpu_step_equals_the_cpu_reference_step() {
    // A max norm far below the gradients' (so every step is clipped: the weights differ from an
    // unclipped run's), with AdamW and SGD with momentum, over several steps and a partial batch.
    let data = synthetic(70, 6, 3, 33);
    let opts = FitOptions { epochs: 3, batch_size: 16, shuffle: true, clip_norm: Some(0.05), ..Default::default() };
    for optimizer in [Optimizer::adamw(1e-2, 0.01), Optimizer::sgd(0.1, 0.9)] {
        let trained = |backend: &Backend, opts: &FitOptions| {
            let mut m = model(backend, optimizer);
            m.fit(&data, opts).unwrap();
            m.parameters().unwrap()
        };
        let reference = trained(&Backend::Cpu, &opts);
        let on_gpu = trained(&Backend::Gpu(gpu()), &opts);
        let unclipped = trained(&Backend::Cpu, &FitOptions { clip_norm: None, ..opts });
        for ((g, c), u) in on_gpu.iter().zip(&reference).zip(&unclipped) {
            assert_close(&format!("{optimizer:?} {}: gpu vs cpu", g.name), &g.values, &c.values, 1e-5, 1e-4);
            assert!(c.values != u.values, "{optimizer:?} {}: clipping must change the step", c.name);
        }
    }
}

#[test]
fn a_bad_clip_norm_is_an_error_naming_it() {
    let data = synthetic(20, 6, 3, 34);
    for backend in backends() {
        let mut m = model(&backend, Optimizer::adam(1e-3));
        for bad in [0.0, -0.5, f32::NAN] {
            let err = m.fit(&data, &FitOptions { clip_norm: Some(bad), ..Default::default() }).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("fit") && text.contains("clip_norm"), "{text}");
        }
    }
}
