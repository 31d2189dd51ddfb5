//! batch_norm.wgsl against the CPU reference (training and inference forward, running averages,
//! backward), the reference's backward against finite differences, and PyTorch's conventions
//! pinned by hand.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::batch_norm::{
    batch_norm_backward, batch_norm_forward_inference, batch_norm_forward_train, BatchNormConfig,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Tensor, WgnnError};

/// Per-feature tensors of one layer on the GPU.
struct Layer {
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    inv_std: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl Layer {
    fn new(gpu: &Gpu, gamma: &[f32], beta: &[f32], running_mean: &[f32], running_var: &[f32]) -> Layer {
        let d = gamma.len();
        Layer {
            gamma: Tensor::from_slice(gpu, &[d], gamma).unwrap(),
            beta: Tensor::from_slice(gpu, &[d], beta).unwrap(),
            mean: Tensor::zeros(gpu, &[d]).unwrap(),
            inv_std: Tensor::zeros(gpu, &[d]).unwrap(),
            running_mean: Tensor::from_slice(gpu, &[d], running_mean).unwrap(),
            running_var: Tensor::from_slice(gpu, &[d], running_var).unwrap(),
        }
    }
    fn train(&self, gpu: &Gpu, x: &Tensor, y: &Tensor, cfg: &BatchNormConfig) {
        let plan = batch_norm_forward_train(
            gpu,
            x,
            &self.gamma,
            &self.beta,
            y,
            &self.mean,
            &self.inv_std,
            &self.running_mean,
            &self.running_var,
            cfg,
            Activation::Identity,
        )
        .unwrap();
        gpu.run(&[&plan]).unwrap();
    }
}

/// Feature counts that are multiples of 4 (beside SIZES' 64): kernels may take four columns at
/// a time there, so both kinds of width are checked.
const FOURS: [usize; 4] = [4, 16, 32, 68];

/// Inputs with a per-feature offset and scale, so that normalising is not a no-op.
fn features(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    let offset = rng.vec_uniform(cols, -5.0, 5.0);
    let scale = rng.vec_uniform(cols, 0.1, 3.0);
    (0..rows * cols).map(|i| offset[i % cols] + scale[i % cols] * rng.normal()).collect()
}

/// Trains one step on the GPU and the CPU and compares y, the saved statistics and the running
/// averages.
fn check_train(gpu: &Gpu, rng: &mut Rng, rows: usize, cols: usize, cfg: &BatchNormConfig) {
    let x = features(rng, rows, cols);
    let gamma = rng.vec_uniform(cols, 0.5, 2.0);
    let beta = rng.vec_uniform(cols, -1.0, 1.0);
    let (mut rm, mut rv) = (rng.vec_uniform(cols, -1.0, 1.0), rng.vec_uniform(cols, 0.5, 2.0));
    let layer = Layer::new(gpu, &gamma, &beta, &rm, &rv);
    let xt = Tensor::from_slice(gpu, &[rows, cols], &x).unwrap();
    let yt = Tensor::zeros(gpu, &[rows, cols]).unwrap();
    layer.train(gpu, &xt, &yt, cfg);
    let (y, mean, inv_std) =
        cpu::batch_norm_forward_train(&x, &gamma, &beta, &mut rm, &mut rv, rows, cols, cfg, Activation::Identity);
    let what = format!("batch_norm_forward_train {rows}x{cols}");
    assert_close(&format!("{what} mean"), &layer.mean.to_vec().unwrap(), &mean, 1e-5, 1e-5);
    assert_close(&format!("{what} inv_std"), &layer.inv_std.to_vec().unwrap(), &inv_std, 1e-5, 1e-4);
    assert_close(&format!("{what} running_mean"), &layer.running_mean.to_vec().unwrap(), &rm, 1e-5, 1e-5);
    assert_close(&format!("{what} running_var"), &layer.running_var.to_vec().unwrap(), &rv, 1e-5, 1e-4);
    assert_close(&format!("{what} y"), &yt.to_vec().unwrap(), &y, 1e-4, 1e-4);
}

#[test]
fn forward_train_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    let cfg = BatchNormConfig::default();
    for &rows in SIZES.iter().filter(|&&r| r > 1).chain(&[2, 300, 1000]) {
        for &cols in SIZES.iter().chain(&FOURS) {
            check_train(&gpu, &mut rng, rows, cols, &cfg);
        }
    }
}

#[test]
fn forward_train_statistics_over_70001_rows() {
    // Past lavapipe's 65,535-iteration loop cap: the chunked reductions must be right.
    let gpu = gpu();
    let mut rng = Rng::new(22);
    check_train(&gpu, &mut rng, 70_001, 3, &BatchNormConfig { eps: 1e-3, momentum: 0.3 });
    check_train(&gpu, &mut rng, 70_001, 8, &BatchNormConfig { eps: 1e-3, momentum: 0.3 });
}

#[test]
fn running_averages_after_several_steps_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(23);
    let (rows, cols) = (65, 127);
    let cfg = BatchNormConfig::default();
    let (gamma, beta) = (vec![1.0f32; cols], vec![0.0f32; cols]);
    let (mut rm, mut rv) = (vec![0.0f32; cols], vec![1.0f32; cols]);
    let layer = Layer::new(&gpu, &gamma, &beta, &rm, &rv);
    let xt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
    let yt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
    for step in 0..6 {
        let x = features(&mut rng, rows, cols);
        xt.write(&x).unwrap();
        layer.train(&gpu, &xt, &yt, &cfg);
        cpu::batch_norm_forward_train(&x, &gamma, &beta, &mut rm, &mut rv, rows, cols, &cfg, Activation::Identity);
        assert_close(&format!("step {step} running_mean"), &layer.running_mean.to_vec().unwrap(), &rm, 1e-5, 1e-5);
        assert_close(&format!("step {step} running_var"), &layer.running_var.to_vec().unwrap(), &rv, 1e-5, 1e-4);
    }
}

#[test]
fn pytorch_conventions_by_hand() {
    // One feature, x = [1, 2, 3, 4]: μ = 2.5, biased σ² = 1.25, unbiased 5/3. From running (0, 1)
    // with momentum 0.1: running_mean = 0.25, running_var = 0.9 + 0.1·5/3 (torch.nn.BatchNorm1d).
    let gpu = gpu();
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let cfg = BatchNormConfig::default();
    let layer = Layer::new(&gpu, &[2.0], &[0.5], &[0.0], &[1.0]);
    let xt = Tensor::from_slice(&gpu, &[4, 1], &x).unwrap();
    let yt = Tensor::zeros(&gpu, &[4, 1]).unwrap();
    layer.train(&gpu, &xt, &yt, &cfg);
    let inv_std = 1.0 / (1.25f64 + 1e-5).sqrt();
    let y: Vec<f32> = x.iter().map(|&v| (2.0 * (v as f64 - 2.5) * inv_std + 0.5) as f32).collect();
    assert_close("y", &yt.to_vec().unwrap(), &y, 1e-6, 1e-6);
    assert_close("running_mean", &layer.running_mean.to_vec().unwrap(), &[0.25], 1e-7, 1e-6);
    assert_close("running_var", &layer.running_var.to_vec().unwrap(), &[0.9 + 0.1 * 5.0 / 3.0], 1e-7, 1e-6);
    assert_close("saved inv_std", &layer.inv_std.to_vec().unwrap(), &[inv_std as f32], 1e-7, 1e-6);
}

#[test]
fn forward_inference_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(24);
    let cfg = BatchNormConfig { eps: 1e-3, momentum: 0.1 };
    for &rows in SIZES {
        for &cols in SIZES.iter().chain(&FOURS) {
            let x = features(&mut rng, rows, cols);
            let gamma = rng.vec_uniform(cols, 0.5, 2.0);
            let beta = rng.vec_uniform(cols, -1.0, 1.0);
            let rm = rng.vec_uniform(cols, -5.0, 5.0);
            let rv = rng.vec_uniform(cols, 0.01, 9.0);
            let layer = Layer::new(&gpu, &gamma, &beta, &rm, &rv);
            let xt = Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap();
            let yt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
            let plan = batch_norm_forward_inference(
                &gpu,
                &xt,
                &layer.gamma,
                &layer.beta,
                &layer.running_mean,
                &layer.running_var,
                &yt,
                &cfg,
                Activation::Identity,
            )
            .unwrap();
            gpu.run(&[&plan]).unwrap();
            let want =
                cpu::batch_norm_forward_inference(&x, &gamma, &beta, &rm, &rv, rows, cols, &cfg, Activation::Identity);
            let what = format!("batch_norm_forward_inference {rows}x{cols}");
            assert_close(&what, &yt.to_vec().unwrap(), &want, 1e-5, 1e-5);
            assert_eq!(layer.running_mean.to_vec().unwrap(), rm, "{what}: running_mean must not change");
            assert_eq!(layer.running_var.to_vec().unwrap(), rv, "{what}: running_var must not change");
        }
    }
}

/// Runs the backward on the GPU and compares dx, dγ, dβ with the CPU.
fn check_backward(gpu: &Gpu, rng: &mut Rng, rows: usize, cols: usize, accumulate: bool) {
    let x = features(rng, rows, cols);
    let gamma = rng.vec_uniform(cols, 0.5, 2.0);
    let beta = rng.vec_uniform(cols, -1.0, 1.0);
    let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (mut rm, mut rv) = (vec![0.0f32; cols], vec![1.0f32; cols]);
    let cfg = BatchNormConfig::default();
    let (_, mean, inv_std) =
        cpu::batch_norm_forward_train(&x, &gamma, &beta, &mut rm, &mut rv, rows, cols, &cfg, Activation::Identity);
    let (dx, dgamma, dbeta) = cpu::batch_norm_backward(&dy, &x, &gamma, &mean, &inv_std, rows, cols);
    let start_g = rng.vec_uniform(cols, -1.0, 1.0);
    let start_b = rng.vec_uniform(cols, -1.0, 1.0);
    let t = |shape: &[usize], v: &[f32]| Tensor::from_slice(gpu, shape, v).unwrap();
    let (xt, dyt, dxt) = (t(&[rows, cols], &x), t(&[rows, cols], &dy), Tensor::zeros(gpu, &[rows, cols]).unwrap());
    let (gt, mt, st) = (t(&[cols], &gamma), t(&[cols], &mean), t(&[cols], &inv_std));
    let (dgt, dbt) = (t(&[cols], &start_g), t(&[cols], &start_b));
    let plan = batch_norm_backward(gpu, &dyt, &xt, &gt, &mt, &st, &dxt, &dgt, &dbt, accumulate).unwrap();
    gpu.run(&[&plan]).unwrap();
    let plus = |sum: &[f32], start: &[f32]| -> Vec<f32> {
        sum.iter().zip(start).map(|(s, a)| if accumulate { s + a } else { *s }).collect()
    };
    let what = format!("batch_norm_backward {rows}x{cols} accumulate={accumulate}");
    let tol = 1e-4 * (rows as f32).sqrt();
    assert_close(&format!("{what} dx"), &dxt.to_vec().unwrap(), &dx, 1e-4, 1e-3);
    assert_close(&format!("{what} dgamma"), &dgt.to_vec().unwrap(), &plus(&dgamma, &start_g), tol, 1e-4);
    assert_close(&format!("{what} dbeta"), &dbt.to_vec().unwrap(), &plus(&dbeta, &start_b), tol, 1e-4);
}

#[test]
fn backward_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(25);
    for &rows in SIZES.iter().filter(|&&r| r > 1).chain(&[2, 1000]) {
        for &cols in SIZES.iter().chain(&FOURS) {
            check_backward(&gpu, &mut rng, rows, cols, rows % 2 == 0);
        }
    }
    check_backward(&gpu, &mut rng, 70_001, 3, true);
    check_backward(&gpu, &mut rng, 70_001, 8, false);
}

#[test]
fn backward_reference_matches_finite_differences() {
    // f(x, γ, β) = Σ w ⊙ y with the batch statistics recomputed at every probe: dx must include
    // the paths through μ and σ², which is where a wrong formula shows.
    let mut rng = Rng::new(26);
    let cfg = BatchNormConfig::default();
    for &(rows, cols) in &[(2, 3), (6, 4), (13, 2)] {
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.normal()).collect();
        let gamma = rng.vec_uniform(cols, 0.5, 2.0);
        let beta = rng.vec_uniform(cols, -1.0, 1.0);
        let w = rng.vec_uniform(rows * cols, -1.0, 1.0);
        let forward = |x: &[f32], gamma: &[f32], beta: &[f32]| {
            let (mut rm, mut rv) = (vec![0.0f32; cols], vec![1.0f32; cols]);
            cpu::batch_norm_forward_train(x, gamma, beta, &mut rm, &mut rv, rows, cols, &cfg, Activation::Identity)
        };
        let (_, mean, inv_std) = forward(&x, &gamma, &beta);
        let (dx, dgamma, dbeta) = cpu::batch_norm_backward(&w, &x, &gamma, &mean, &inv_std, rows, cols);
        let what = format!("{rows}x{cols}");
        let num_dx = numeric_gradient(&x, 1e-2, |xp| dot(&w, &forward(xp, &gamma, &beta).0));
        assert_close(&format!("d/dx {what}"), &dx, &num_dx, 2e-3, 1e-2);
        let num_dg = numeric_gradient(&gamma, 1e-2, |gp| dot(&w, &forward(&x, gp, &beta).0));
        assert_close(&format!("d/dgamma {what}"), &dgamma, &num_dg, 2e-3, 1e-2);
        let num_db = numeric_gradient(&beta, 1e-2, |bp| dot(&w, &forward(&x, &gamma, bp).0));
        assert_close(&format!("d/dbeta {what}"), &dbeta, &num_db, 2e-3, 1e-2);
        // The known invariants: each column of dx sums to 0 and is orthogonal to x̂.
        for c in 0..cols {
            let s: f32 = (0..rows).map(|r| dx[r * cols + c]).sum();
            assert!(s.abs() < 1e-4, "{what}: column {c} of dx sums to {s}");
        }
    }
}

#[test]
fn bad_arguments_are_errors_naming_the_kernel() {
    let gpu = gpu();
    let cfg = BatchNormConfig::default();
    let layer = Layer::new(&gpu, &[1.0; 3], &[0.0; 3], &[0.0; 3], &[1.0; 3]);
    let one = Tensor::zeros(&gpu, &[1, 3]).unwrap();
    let one_y = Tensor::zeros(&gpu, &[1, 3]).unwrap();
    let train = |x: &Tensor, y: &Tensor, gamma: &Tensor, cfg: &BatchNormConfig| {
        batch_norm_forward_train(
            &gpu,
            x,
            gamma,
            &layer.beta,
            y,
            &layer.mean,
            &layer.inv_std,
            &layer.running_mean,
            &layer.running_var,
            cfg,
            Activation::Identity,
        )
        .err()
    };
    // One row: an error in training (as in PyTorch), defined in inference.
    let err = train(&one, &one_y, &layer.gamma, &cfg).expect("one row must fail in training");
    assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("batch_norm_forward_train") && err.to_string().contains("[1, 3]"), "{err}");
    batch_norm_forward_inference(
        &gpu,
        &one,
        &layer.gamma,
        &layer.beta,
        &layer.running_mean,
        &layer.running_var,
        &one_y,
        &cfg,
        Activation::Identity,
    )
    .expect("one row is fine in inference");

    let x = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let y = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let short = Tensor::zeros(&gpu, &[4]).unwrap();
    let err = train(&x, &y, &short, &cfg).expect("gamma of the wrong length must fail");
    assert!(matches!(err, WgnnError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("gamma") && err.to_string().contains("[4, 3]"), "{err}");
    let err = train(&x, &x, &layer.gamma, &cfg).expect("in-place must fail");
    assert!(err.to_string().contains("share memory"), "{err}");
    for bad in [BatchNormConfig { eps: 0.0, momentum: 0.1 }, BatchNormConfig { eps: 1e-5, momentum: f32::NAN }] {
        let err = train(&x, &y, &layer.gamma, &bad).expect("bad hyper-parameters must fail");
        assert!(err.to_string().contains("batch_norm_forward_train"), "{err}");
    }
    let wrong = Tensor::zeros(&gpu, &[3, 4]).unwrap();
    let err =
        batch_norm_backward(&gpu, &wrong, &x, &layer.gamma, &layer.mean, &layer.inv_std, &y, &short, &short, false)
            .err()
            .expect("dy of another shape must fail");
    assert!(err.to_string().contains("batch_norm_backward") && err.to_string().contains("[3, 4]"), "{err}");
}

/// The deferred training forward and the commit of its statistics: the same y and saved
/// statistics as the direct forward, the same running averages once committed, and none moved
/// when the step's guard flag says skip.
#[test]
fn deferred_running_statistics_commit_unless_the_step_is_skipped() {
    use wgnn::internals::kernels::batch_norm::{batch_norm_commit_running, batch_norm_forward_train_deferred};
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let cfg = BatchNormConfig { eps: 1e-3, momentum: 0.25 };
    for &(rows, cols) in &[(2, 1), (33, 5), (1000, 70), (65, 12)] {
        let x = features(&mut rng, rows, cols);
        let gamma = rng.vec_uniform(cols, 0.5, 2.0);
        let beta = rng.vec_uniform(cols, -1.0, 1.0);
        let (rm0, rv0) = (rng.vec_uniform(cols, -1.0, 1.0), rng.vec_uniform(cols, 0.5, 2.0));
        // What the direct forward computes, on the CPU.
        let (mut rm, mut rv) = (rm0.clone(), rv0.clone());
        let (y, mean, inv_std) =
            cpu::batch_norm_forward_train(&x, &gamma, &beta, &mut rm, &mut rv, rows, cols, &cfg, Activation::Identity);
        // The deferred reference agrees with it.
        let (y_d, mean_d, inv_std_d, pending) =
            cpu::batch_norm_forward_train_deferred(&x, &gamma, &beta, rows, cols, &cfg, Activation::Identity);
        assert_eq!((&y_d, &mean_d, &inv_std_d), (&y, &mean, &inv_std));
        let (mut rm_d, mut rv_d) = (rm0.clone(), rv0.clone());
        cpu::batch_norm_commit_running(&mean_d, &pending, &mut rm_d, &mut rv_d, false, &cfg);
        assert_close("deferred reference running_mean", &rm_d, &rm, 1e-6, 1e-6);
        assert_close("deferred reference running_var", &rv_d, &rv, 1e-6, 1e-6);

        for (counters, skip) in [(None, false), (Some([7u32, 0]), false), (Some([7, 1]), true)] {
            let what = format!("deferred {rows}x{cols} counters {counters:?}");
            let layer = Layer::new(&gpu, &gamma, &beta, &rm0, &rv0);
            let xt = Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap();
            let yt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
            let pending_t = Tensor::zeros(&gpu, &[cols]).unwrap();
            let counters_t = counters.map(|c| Tensor::from_u32(&gpu, &[2], &c).unwrap());
            let mut plan = batch_norm_forward_train_deferred(
                &gpu,
                &xt,
                &layer.gamma,
                &layer.beta,
                &yt,
                &layer.mean,
                &layer.inv_std,
                &pending_t,
                &cfg,
                Activation::Identity,
            )
            .unwrap();
            // Before the commit, the running statistics are untouched.
            gpu.run(&[&plan]).unwrap();
            assert_eq!(layer.running_mean.to_vec().unwrap(), rm0, "{what}: running_mean moved before the commit");
            assert_close(&format!("{what} y"), &yt.to_vec().unwrap(), &y, 1e-4, 1e-4);
            assert_close(&format!("{what} pending_var"), &pending_t.to_vec().unwrap(), &pending, 1e-5, 1e-4);
            plan = batch_norm_commit_running(
                &gpu,
                &layer.mean,
                &pending_t,
                &layer.running_mean,
                &layer.running_var,
                counters_t.as_ref(),
                &cfg,
            )
            .unwrap();
            gpu.run(&[&plan]).unwrap();
            let (want_m, want_v) = if skip { (&rm0, &rv0) } else { (&rm, &rv) };
            assert_close(&format!("{what} running_mean"), &layer.running_mean.to_vec().unwrap(), want_m, 1e-5, 1e-5);
            assert_close(&format!("{what} running_var"), &layer.running_var.to_vec().unwrap(), want_v, 1e-5, 1e-4);
        }
    }
    // Shapes are checked.
    let t = |n: usize| Tensor::zeros(&gpu, &[n]).unwrap();
    let err = batch_norm_commit_running(&gpu, &t(3), &t(4), &t(3), &t(3), None, &cfg).err().unwrap();
    assert!(err.to_string().contains("batch_norm_commit_running") && err.to_string().contains("pending_var"), "{err}");
}

#[test]
fn the_activation_after_it_runs_in_the_normalising_pass() {
    // y = act(batch norm(x)) for each element-wise activation, training (blended and deferred
    // running statistics) and inference, against the CPU reference; softmax is refused.
    use wgnn::internals::kernels::batch_norm::batch_norm_forward_train_deferred;
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let cfg = BatchNormConfig::default();
    let acts = [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
        Activation::GeluErf,
    ];
    for (i, (rows, cols)) in
        [(37, 5), (130, 16), (2, 3), (65, 64), (9, 7), (33, 129), (9, 4), (300, 20), (7, 36), (3, 8), (5, 12), (2, 24)]
            .into_iter()
            .enumerate()
    {
        let act = acts[i % acts.len()];
        let x = features(&mut rng, rows, cols);
        let gamma = rng.vec_uniform(cols, 0.5, 2.0);
        let beta = rng.vec_uniform(cols, -1.0, 1.0);
        let (rm, rv) = (rng.vec_uniform(cols, -1.0, 1.0), rng.vec_uniform(cols, 0.5, 2.0));
        let layer = Layer::new(&gpu, &gamma, &beta, &rm, &rv);
        let xt = Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap();
        let out = || Tensor::zeros(&gpu, &[rows, cols]).unwrap();
        let what = format!("{rows}x{cols} {act:?}");
        let (y, pending) = (out(), Tensor::zeros(&gpu, &[cols]).unwrap());
        let (mean, inv_std) = (&layer.mean, &layer.inv_std);
        let plan = batch_norm_forward_train_deferred(
            &gpu,
            &xt,
            &layer.gamma,
            &layer.beta,
            &y,
            mean,
            inv_std,
            &pending,
            &cfg,
            act,
        );
        gpu.run(&[&plan.unwrap()]).unwrap();
        let want = cpu::batch_norm_forward_train_deferred(&x, &gamma, &beta, rows, cols, &cfg, act).0;
        assert_close(&format!("{what} deferred y"), &y.to_vec().unwrap(), &want, 1e-4, 1e-4);
        let y = out();
        let plan = batch_norm_forward_train(
            &gpu,
            &xt,
            &layer.gamma,
            &layer.beta,
            &y,
            mean,
            inv_std,
            &layer.running_mean,
            &layer.running_var,
            &cfg,
            act,
        );
        gpu.run(&[&plan.unwrap()]).unwrap();
        let (mut rm2, mut rv2) = (rm.clone(), rv.clone());
        let want = cpu::batch_norm_forward_train(&x, &gamma, &beta, &mut rm2, &mut rv2, rows, cols, &cfg, act).0;
        assert_close(&format!("{what} y"), &y.to_vec().unwrap(), &want, 1e-4, 1e-4);
        let y = out();
        let plan = batch_norm_forward_inference(
            &gpu,
            &xt,
            &layer.gamma,
            &layer.beta,
            &layer.running_mean,
            &layer.running_var,
            &y,
            &cfg,
            act,
        );
        gpu.run(&[&plan.unwrap()]).unwrap();
        let want = cpu::batch_norm_forward_inference(&x, &gamma, &beta, &rm2, &rv2, rows, cols, &cfg, act);
        assert_close(&format!("{what} inference y"), &y.to_vec().unwrap(), &want, 1e-4, 1e-4);
        assert!(
            want.iter()
                .zip(cpu::batch_norm_forward_inference(
                    &x,
                    &gamma,
                    &beta,
                    &rm2,
                    &rv2,
                    rows,
                    cols,
                    &cfg,
                    Activation::Identity
                ))
                .any(|(a, b)| *a != b),
            "{what}: the activation changes something"
        );
    }
    let (x, y, d) = (
        Tensor::zeros(&gpu, &[4, 3]).unwrap(),
        Tensor::zeros(&gpu, &[4, 3]).unwrap(),
        Tensor::zeros(&gpu, &[3]).unwrap(),
    );
    let err =
        batch_norm_forward_inference(&gpu, &x, &d, &d, &d, &d, &y, &cfg, Activation::Softmax).err().expect("softmax");
    assert!(err.to_string().contains("batch_norm_forward_inference"), "{err}");
}

/// Training forward (relu after it) and backward on the GPU: y, saved mean and inv_std, running
/// mean and variance, dx, dγ, dβ.
fn train_and_backward(gpu: &Gpu, x: &[f32], dy: &[f32], gamma: &[f32], beta: &[f32], cols: usize) -> Vec<Vec<f32>> {
    let rows = x.len() / cols;
    let layer = Layer::new(gpu, gamma, beta, &vec![0.5; cols], &vec![2.0; cols]);
    let t = |shape: &[usize], v: &[f32]| Tensor::from_slice(gpu, shape, v).unwrap();
    let (xt, dyt) = (t(&[rows, cols], x), t(&[rows, cols], dy));
    let (yt, dxt) = (Tensor::zeros(gpu, &[rows, cols]).unwrap(), Tensor::zeros(gpu, &[rows, cols]).unwrap());
    let (dgt, dbt) = (Tensor::zeros(gpu, &[cols]).unwrap(), Tensor::zeros(gpu, &[cols]).unwrap());
    let cfg = BatchNormConfig::default();
    let forward = batch_norm_forward_train(
        gpu,
        &xt,
        &layer.gamma,
        &layer.beta,
        &yt,
        &layer.mean,
        &layer.inv_std,
        &layer.running_mean,
        &layer.running_var,
        &cfg,
        Activation::Relu,
    )
    .unwrap();
    let backward =
        batch_norm_backward(gpu, &dyt, &xt, &layer.gamma, &layer.mean, &layer.inv_std, &dxt, &dgt, &dbt, false)
            .unwrap();
    gpu.run(&[&forward, &backward]).unwrap();
    [&yt, &layer.mean, &layer.inv_std, &layer.running_mean, &layer.running_var, &dxt, &dgt, &dbt]
        .iter()
        .map(|t| t.to_vec().unwrap())
        .collect()
}

#[test]
fn each_column_comes_out_as_if_alone_bit_for_bit() {
    // A kernel may take the columns four at a time (a vec4) or one by one; either way a column's
    // arithmetic is the same, so eight columns at once and each on its own give the same bits.
    let gpu = gpu();
    let mut rng = Rng::new(28);
    let (rows, cols) = (1000, 8);
    let x = features(&mut rng, rows, cols);
    let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (gamma, beta) = (rng.vec_uniform(cols, 0.5, 2.0), rng.vec_uniform(cols, -1.0, 1.0));
    let all = train_and_backward(&gpu, &x, &dy, &gamma, &beta, cols);
    let names = ["y", "mean", "inv_std", "running_mean", "running_var", "dx", "dgamma", "dbeta"];
    for c in 0..cols {
        let column = |v: &[f32]| -> Vec<f32> { v.iter().skip(c).step_by(cols).copied().collect() };
        let alone = train_and_backward(&gpu, &column(&x), &column(&dy), &[gamma[c]], &[beta[c]], 1);
        for ((name, together), alone) in names.iter().zip(&all).zip(&alone) {
            let together: Vec<u32> = if together.len() == cols {
                vec![together[c].to_bits()]
            } else {
                column(together).iter().map(|v| v.to_bits()).collect()
            };
            let alone: Vec<u32> = alone.iter().map(|v| v.to_bits()).collect();
            assert_eq!(together, alone, "column {c}'s {name}: with its neighbours vs alone");
        }
    }
}
