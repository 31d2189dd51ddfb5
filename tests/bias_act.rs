//! bias_act.wgsl, softmax_grad.wgsl and reduce.wgsl against the CPU reference, and their backward by finite differences.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::bias_act::{bias_act_backward, bias_act_forward};
use wgnn::internals::kernels::reduce::column_sum;
use wgnn::internals::kernels::softmax_grad::softmax_backward;
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Tensor, WgnnError};

const ACTS: &[Activation] = &[
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Gelu,
    Activation::GeluErf,
];

/// What the forward keeps for the backward: y = act(x), or x itself for the GELUs.
fn saved(act: Activation, x: &[f32], y: Vec<f32>) -> Vec<f32> {
    if act.saves_input() {
        x.to_vec()
    } else {
        y
    }
}

#[test]
fn forward_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    for &act in ACTS {
        for &(rows, cols) in &[(1, 1), (7, 63), (64, 65), (127, 257), (257, 10), (1000, 3)] {
            for with_bias in [true, false] {
                let x = rng.vec_uniform(rows * cols, -3.0, 3.0);
                let b = rng.vec_uniform(cols, -1.0, 1.0);
                let xt = Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap();
                let bt = Tensor::from_slice(&gpu, &[cols], &b).unwrap();
                let yt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
                let plan = bias_act_forward(&gpu, &xt, with_bias.then_some(&bt), &yt, act).unwrap();
                gpu.run(&[&plan]).unwrap();
                let want = cpu::bias_act_forward(&x, with_bias.then_some(&b[..]), rows, cols, act);
                assert_close(
                    &format!("bias_act_forward {act:?} {rows}x{cols} bias={with_bias}"),
                    &yt.to_vec().unwrap(),
                    &want,
                    1e-6,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn backward_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    for &act in ACTS {
        for &(rows, cols) in &[(1, 1), (7, 63), (65, 64), (257, 127), (5000, 3)] {
            let x = rng.vec_uniform(rows * cols, -3.0, 3.0);
            let y = saved(act, &x, cpu::bias_act_forward(&x, None, rows, cols, act));
            let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
            let (dz_want, db_want) = cpu::bias_act_backward(&dy, &y, rows, cols, act);
            let dyt = Tensor::from_slice(&gpu, &[rows, cols], &dy).unwrap();
            let yt = Tensor::from_slice(&gpu, &[rows, cols], &y).unwrap();
            let dzt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
            let dbt = Tensor::zeros(&gpu, &[cols]).unwrap();
            let plan = bias_act_backward(&gpu, &dyt, &yt, &dzt, Some(&dbt), act, false).unwrap();
            gpu.run(&[&plan]).unwrap();
            let what = format!("bias_act_backward {act:?} {rows}x{cols}");
            assert_close(&format!("{what} dz"), &dzt.to_vec().unwrap(), &dz_want, 1e-6, 1e-5);
            assert_close(&format!("{what} db"), &dbt.to_vec().unwrap(), &db_want, 1e-4, 1e-4);
        }
    }
}

#[test]
fn backward_reference_matches_finite_differences() {
    let mut rng = Rng::new(3);
    let (rows, cols) = (5, 4);
    for &act in ACTS {
        // Keep away from relu's kink at 0, where finite differences are meaningless.
        let x: Vec<f32> = rng
            .vec_uniform(rows * cols, -2.0, 2.0)
            .into_iter()
            .map(|v| if v.abs() < 0.1 { v + 0.3 } else { v })
            .collect();
        let b = vec![0.0f32; cols];
        let w = rng.vec_uniform(rows * cols, -1.0, 1.0);
        let y = saved(act, &x, cpu::bias_act_forward(&x, Some(&b), rows, cols, act));
        let (dz, db) = cpu::bias_act_backward(&w, &y, rows, cols, act);
        let num_dx = numeric_gradient(&x, 1e-3, |xp| dot(&w, &cpu::bias_act_forward(xp, Some(&b), rows, cols, act)));
        assert_close(&format!("d/dx {act:?}"), &dz, &num_dx, 2e-3, 2e-2);
        let num_db = numeric_gradient(&b, 1e-3, |bp| dot(&w, &cpu::bias_act_forward(&x, Some(bp), rows, cols, act)));
        assert_close(&format!("d/db {act:?}"), &db, &num_db, 2e-3, 2e-2);
    }
}

#[test]
fn column_sum_long_columns_and_accumulate() {
    // 70,001 rows: past lavapipe's 65,535-iteration loop cap, so the chunked path must be right.
    let gpu = gpu();
    let mut rng = Rng::new(4);
    for &(rows, cols) in &[(1, 1), (4096, 3), (4097, 5), (70_001, 3), (60_000, 10)] {
        let x = rng.vec_uniform(rows * cols, -1.0, 1.0);
        let start = rng.vec_uniform(cols, -1.0, 1.0);
        let xt = Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap();
        let out = Tensor::from_slice(&gpu, &[cols], &start).unwrap();
        gpu.run(&[&column_sum(&gpu, &xt, &out, true).unwrap()]).unwrap();
        let sums = cpu::column_sum(&x, rows, cols);
        let want: Vec<f32> = sums.iter().zip(&start).map(|(s, a)| s + a).collect();
        assert_close(&format!("column_sum {rows}x{cols}"), &out.to_vec().unwrap(), &want, 1e-3, 1e-4);
    }
}

#[test]
fn bad_shapes_are_errors_naming_the_kernel() {
    let gpu = gpu();
    let x = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let b = Tensor::zeros(&gpu, &[4]).unwrap();
    let y = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let err =
        bias_act_forward(&gpu, &x, Some(&b), &y, Activation::Relu).err().expect("bias of the wrong length must fail");
    assert!(matches!(err, WgnnError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("bias_act_forward") && err.to_string().contains("[4, 3]"), "{err}");

    let empty = Tensor::zeros(&gpu, &[0, 3]).unwrap();
    let err = bias_act_forward(&gpu, &empty, None, &empty, Activation::Relu).err().expect("empty must fail");
    assert!(err.to_string().contains("bias_act_forward") && err.to_string().contains("[0, 3]"), "{err}");

    let err = bias_act_forward(&gpu, &x, None, &x, Activation::Relu).err().expect("in-place must fail");
    assert!(err.to_string().contains("share memory"), "{err}");

    let err =
        bias_act_forward(&gpu, &x, None, &y, Activation::LeakyRelu(-1.0)).err().expect("negative slope must fail");
    assert!(err.to_string().contains("slope"), "{err}");
}

#[test]
fn pipelines_are_cached_across_calls_and_shapes() {
    // A device of its own: other tests in this binary build pipelines on the shared one meanwhile.
    let gpu = wgnn::Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let make = |rows: usize| {
        let x = Tensor::zeros(&gpu, &[rows, 5]).unwrap();
        let y = Tensor::zeros(&gpu, &[rows, 5]).unwrap();
        bias_act_forward(&gpu, &x, None, &y, Activation::Sigmoid).unwrap();
    };
    make(3);
    let before = gpu.pipeline_count();
    assert_eq!(before, 1, "one pipeline for one specialisation");
    make(17);
    make(300);
    assert_eq!(gpu.pipeline_count(), before, "a new shape must reuse the cached pipeline");
}

#[test]
fn softmax_backward_matches_cpu_and_finite_differences() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    for &(rows, cols) in &[(1, 1), (1, 2), (7, 13), (130, 10), (3, 1000), (4097, 3)] {
        let z = rng.vec_uniform(rows * cols, -4.0, 4.0);
        let y = cpu::softmax(&z, rows, cols);
        let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
        let want = cpu::softmax_backward(&dy, &y, rows, cols);
        let (dyt, yt) = (
            Tensor::from_slice(&gpu, &[rows, cols], &dy).unwrap(),
            Tensor::from_slice(&gpu, &[rows, cols], &y).unwrap(),
        );
        let dzt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
        gpu.run(&[&softmax_backward(&gpu, &dyt, &yt, &dzt).unwrap()]).unwrap();
        assert_close(&format!("softmax_backward {rows}x{cols}"), &dzt.to_vec().unwrap(), &want, 1e-6, 1e-5);
    }
    // The reference against finite differences of Σ w·softmax(z).
    let (rows, cols) = (3, 5);
    let z = rng.vec_uniform(rows * cols, -2.0, 2.0);
    let w = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let analytic = cpu::softmax_backward(&w, &cpu::softmax(&z, rows, cols), rows, cols);
    let numeric = numeric_gradient(&z, 1e-2, |z| dot(&w, &cpu::softmax(z, rows, cols)));
    assert_close("softmax_backward vs finite differences", &analytic, &numeric, 1e-3, 1e-2);
    // Shapes are checked.
    let a = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let b = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    let c = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let err = softmax_backward(&gpu, &a, &b, &c).err().unwrap();
    assert!(matches!(err, WgnnError::Shape { .. }) && err.to_string().contains("softmax_backward"), "{err}");
    // The elementwise kernels refuse softmax rather than apply something else.
    let err = bias_act_forward(&gpu, &a, None, &c, Activation::Softmax).err().unwrap();
    assert!(err.to_string().contains("bias_act_forward") && err.to_string().contains("row-wise"), "{err}");
}

#[test]
fn gelu_known_values_tails_and_normal_cdf() {
    // PyTorch's F.gelu(z, approximate='tanh') and F.gelu(z) (exact), float64.
    let z = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0];
    let tanh_want: [f64; 7] =
        [-0.0036373920, -0.1588080094, -0.1542859100, 0.0, 0.3457140900, 0.8411919906, 1.9545976685];
    let erf_want: [f64; 7] =
        [-0.0040496941, -0.1586552539, -0.1542687694, 0.0, 0.3457312306, 0.8413447461, 1.9544997361];
    // Φ(z) of the standard normal.
    let cdf_want: [f64; 7] = [0.0013498980, 0.1586552539, 0.3085375387, 0.5, 0.6914624613, 0.8413447461, 0.9772498681];
    let cdf: Vec<f32> = z.iter().map(|&v| wgnn::activation::normal_cdf(v)).collect();
    assert_close("normal_cdf", &cdf, &f32s(&cdf_want), 1e-9, 3e-7);
    // Far tails: 0 and z, derivatives 0 and 1, no NaN from z³ or exp overflowing.
    let tails = [-1e4f32, -60.0, 60.0, 1e4];
    let gpu = gpu();
    for (act, want) in [(Activation::Gelu, tanh_want), (Activation::GeluErf, erf_want)] {
        let cpu_y: Vec<f32> = z.iter().map(|&v| act.forward(v)).collect();
        assert_close(&format!("{act:?} cpu"), &cpu_y, &f32s(&want), 2e-7, 1e-6);
        let mut x = z.to_vec();
        x.extend(tails);
        let xt = Tensor::from_slice(&gpu, &[1, x.len()], &x).unwrap();
        let yt = Tensor::zeros(&gpu, &[1, x.len()]).unwrap();
        gpu.run(&[&bias_act_forward(&gpu, &xt, None, &yt, act).unwrap()]).unwrap();
        let mut want_all = f32s(&want);
        want_all.extend([0.0, 0.0, 60.0, 1e4]);
        assert_close(&format!("{act:?} gpu"), &yt.to_vec().unwrap(), &want_all, 1e-6, 1e-6);
        // dz = 1 · act'(z), given z.
        let ones = Tensor::from_slice(&gpu, &[1, x.len()], &vec![1.0; x.len()]).unwrap();
        let dz = Tensor::zeros(&gpu, &[1, x.len()]).unwrap();
        gpu.run(&[&bias_act_backward(&gpu, &ones, &xt, &dz, None, act, false).unwrap()]).unwrap();
        let got = dz.to_vec().unwrap();
        let want_d: Vec<f32> = x.iter().map(|&v| act.derivative_from_saved(v)).collect();
        assert_close(&format!("{act:?}' gpu"), &got, &want_d, 1e-6, 1e-5);
        assert_eq!(&got[z.len()..], &[0.0, 0.0, 1.0, 1.0], "{act:?}' in the tails");
        // GELU'(0) = 1/2 for both.
        assert_close(&format!("{act:?}'(0)"), &[act.derivative_from_saved(0.0)], &[0.5], 1e-7, 0.0);
    }
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}
