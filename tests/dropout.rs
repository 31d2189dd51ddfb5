//! dropout.wgsl against the CPU reference (bit-identical masks), the statistics of the mask, and
//! the backward by finite differences.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::dropout::{dropout_backward, dropout_forward};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Tensor, WgnnError};

/// Runs dropout_forward on the GPU at t = step: (y, mask). Half the calls pass the counter one
/// ahead with lag 1, as a training step whose gather advanced it does.
fn gpu_dropout(gpu: &Gpu, x: &[f32], shape: [usize; 2], rate: f32, seed: u32, step: u32) -> (Vec<f32>, Vec<f32>) {
    let xt = Tensor::from_slice(gpu, &shape, x).unwrap();
    let yt = Tensor::zeros(gpu, &shape).unwrap();
    let mt = Tensor::zeros(gpu, &shape).unwrap();
    let lag = (x.len() % 2) as u32;
    let counter = step.wrapping_add(lag);
    let st = Tensor::from_u32(gpu, &[1], &[counter]).unwrap();
    gpu.run(&[&dropout_forward(gpu, &xt, &yt, &mt, rate, seed, &st, lag).unwrap()]).unwrap();
    assert_eq!(st.to_vec_u32().unwrap(), vec![counter], "dropout_forward must not write the step counter");
    (yt.to_vec().unwrap(), mt.to_vec().unwrap())
}

#[test]
fn forward_masks_are_bit_identical_to_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    for &(rows, cols) in &[(1, 1), (7, 63), (64, 65), (127, 257), (257, 7), (1000, 300)] {
        for &(rate, seed, step) in &[(0.5, 0u32, 0u32), (0.1, 7, 1), (0.9, 123_456, 99_999), (0.25, u32::MAX, u32::MAX)]
        {
            let x = rng.vec_uniform(rows * cols, -3.0, 3.0);
            let (y, mask) = gpu_dropout(&gpu, &x, [rows, cols], rate, seed, step);
            let (y_want, mask_want) = cpu::dropout_forward(&x, rate, seed, step);
            let what = format!("dropout_forward {rows}x{cols} p={rate} seed={seed} step={step}");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&mask), bits(&mask_want), "{what}: mask");
            assert_eq!(bits(&y), bits(&y_want), "{what}: y");
        }
    }
}

#[test]
fn kept_fraction_and_mean_match_the_rate() {
    let gpu = gpu();
    let (rows, cols) = (1000, 1000);
    let n = (rows * cols) as f64;
    let mut rng = Rng::new(12);
    let x = rng.vec_uniform(rows * cols, 0.5, 1.5);
    let x_sum: f64 = x.iter().map(|&v| v as f64).sum();
    for &rate in &[0.1f32, 0.5, 0.9] {
        let p = rate as f64;
        let (y, mask) = gpu_dropout(&gpu, &x, [rows, cols], rate, 42, 3);
        let scale = 1.0 / (1.0 - rate);
        assert!(mask.iter().all(|&m| m == 0.0 || m == scale), "p={rate}: mask values must be 0 or 1/(1-p)");
        // Binomial: the kept count has standard deviation sqrt(n p (1 - p)); allow 5 of them.
        let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / n;
        let tol = 5.0 * (p * (1.0 - p) / n).sqrt();
        assert!((kept - (1.0 - p)).abs() < tol, "p={rate}: kept fraction {kept}, want {} ± {tol}", 1.0 - p);
        // E[y] = x: Σy/Σx has relative standard deviation about sqrt(p/(1-p)/n)·(rms x / mean x).
        let ratio = y.iter().map(|&v| v as f64).sum::<f64>() / x_sum;
        let tol = 5.0 * 1.1 * (p / (1.0 - p) / n).sqrt();
        assert!((ratio - 1.0).abs() < tol, "p={rate}: Σy/Σx = {ratio}, want 1 ± {tol}");
    }
}

#[test]
fn different_steps_and_seeds_give_independent_masks() {
    let gpu = gpu();
    let (rows, cols) = (500, 400);
    let n = (rows * cols) as f64;
    let x = vec![1.0f32; rows * cols];
    let rate = 0.5f32;
    let (_, base) = gpu_dropout(&gpu, &x, [rows, cols], rate, 9, 100);
    let (_, again) = gpu_dropout(&gpu, &x, [rows, cols], rate, 9, 100);
    assert_eq!(base, again, "the same seed and step must give the same mask");
    for &(seed, step) in &[(9u32, 101u32), (9, 0), (10, 100)] {
        let (_, other) = gpu_dropout(&gpu, &x, [rows, cols], rate, seed, step);
        // Independent masks agree on a fraction p² + (1-p)² = 0.5 of the elements.
        let agree = base.iter().zip(&other).filter(|(a, b)| a == b).count() as f64 / n;
        let tol = 5.0 * (0.25 / n).sqrt();
        assert!((agree - 0.5).abs() < tol, "seed {seed} step {step}: masks agree on {agree} of elements, want 0.5");
    }
}

#[test]
fn rate_zero_is_the_identity() {
    let gpu = gpu();
    let mut rng = Rng::new(13);
    let x = rng.vec_uniform(65 * 127, -2.0, 2.0);
    let (y, mask) = gpu_dropout(&gpu, &x, [65, 127], 0.0, 5, 6);
    assert_eq!(y, x);
    assert!(mask.iter().all(|&m| m == 1.0));
}

#[test]
fn backward_matches_cpu_and_finite_differences() {
    let gpu = gpu();
    let mut rng = Rng::new(14);
    for &(rows, cols) in &[(1, 1), (7, 63), (64, 65), (257, 127)] {
        let x = rng.vec_uniform(rows * cols, -2.0, 2.0);
        let (_, mask) = cpu::dropout_forward(&x, 0.3, 77, 5);
        let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
        let dyt = Tensor::from_slice(&gpu, &[rows, cols], &dy).unwrap();
        let mt = Tensor::from_slice(&gpu, &[rows, cols], &mask).unwrap();
        let dxt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
        gpu.run(&[&dropout_backward(&gpu, &dyt, &mt, &dxt).unwrap()]).unwrap();
        let want = cpu::dropout_backward(&dy, &mask);
        assert_close(&format!("dropout_backward {rows}x{cols}"), &dxt.to_vec().unwrap(), &want, 0.0, 0.0);
    }
    // The reference against finite differences; the mask depends on (seed, step) only, so it is
    // the same at every probe.
    let (rows, cols) = (6, 5);
    let x = rng.vec_uniform(rows * cols, -2.0, 2.0);
    let w = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (_, mask) = cpu::dropout_forward(&x, 0.4, 3, 8);
    assert!(mask.contains(&0.0) && mask.iter().any(|&m| m != 0.0), "a mask with both kinds");
    let dx = cpu::dropout_backward(&w, &mask);
    let num = numeric_gradient(&x, 1e-2, |xp| dot(&w, &cpu::dropout_forward(xp, 0.4, 3, 8).0));
    assert_close("d/dx dropout", &dx, &num, 1e-3, 1e-3);
}

#[test]
fn bad_arguments_are_errors_naming_the_kernel() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let y = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let m = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
    for rate in [1.0f32, 1.5, -0.1, f32::NAN, f32::INFINITY] {
        let err = dropout_forward(&gpu, &x, &y, &m, rate, 0, &step, 0).err().expect("a bad rate must fail");
        assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("dropout_forward") && err.to_string().contains("rate"), "{err}");
    }
    let wrong = Tensor::zeros(&gpu, &[3, 4]).unwrap();
    let err = dropout_forward(&gpu, &x, &wrong, &m, 0.5, 0, &step, 0).err().expect("y of another shape must fail");
    assert!(err.to_string().contains("dropout_forward") && err.to_string().contains("[3, 4]"), "{err}");
    let err = dropout_forward(&gpu, &x, &y, &m, 0.5, 0, &x, 0).err().expect("an f32 step must fail");
    assert!(matches!(err, WgnnError::DType { .. }), "{err}");
    let err = dropout_forward(&gpu, &x, &x, &m, 0.5, 0, &step, 0).err().expect("in-place must fail");
    assert!(err.to_string().contains("share memory"), "{err}");
    let err = dropout_backward(&gpu, &x, &wrong, &y).err().expect("mask of another shape must fail");
    assert!(err.to_string().contains("dropout_backward") && err.to_string().contains("[3, 4]"), "{err}");
}
