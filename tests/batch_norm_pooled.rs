//! Batch norm's backward through the max pooling above it (`batch_norm_backward_through_max_pool`,
//! shaders/batch_norm_pooled.wgsl) against the two passes it replaces (the pool's backward
//! reading act′ at its maxima, then the norm's backward) and the CPU reference, on odd images
//! (cells no window covers), every activation it takes, batches of 1 to 5 images; the CPU
//! reference by finite differences; the pools and activations it does not take as errors.

mod common;

use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::batch_norm::{batch_norm_backward, batch_norm_forward_train, BatchNormConfig};
use wgnn::internals::kernels::batch_norm_pooled::{batch_norm_backward_through_max_pool, PoolAbove};
use wgnn::internals::kernels::pool2d::{
    max_pool2d_backward_with_output, max_pool2d_forward, Padding, Pool2dConfig, Pool2dDims,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Tensor};

fn up(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

/// x `[rows, H, W, C]`, pool: 2×2 (odd images leave a row and a column to the last tiles), 3×3
/// every 3, 2×2 same-padded; 45 windows, not a multiple of the 4 an invocation of dx takes.
fn cases() -> Vec<([usize; 4], Pool2dConfig)> {
    let same = Pool2dConfig { pool_size: (2, 2), strides: None, padding: Padding::Same };
    vec![
        ([3, 7, 9, 4], Pool2dConfig::new((2, 2))),
        ([1, 6, 6, 8], Pool2dConfig::new((3, 3))),
        ([5, 5, 7, 16], same),
        ([2, 8, 8, 12], Pool2dConfig::new((2, 2))),
        ([3, 6, 10, 4], Pool2dConfig::new((2, 2))),
    ]
}

const ACTS: &[Activation] =
    &[Activation::Relu, Activation::Identity, Activation::LeakyRelu(0.2), Activation::Sigmoid, Activation::Tanh];

/// Everything one case needs on the GPU: x, γ, β, the batch norm's forward (h, mean, inv_std)
/// and the pool's forward over h (y, argmax), run.
struct Case {
    d: Pool2dDims,
    x: Vec<f32>,
    gamma: Vec<f32>,
    dy: Vec<f32>,
    t: [Tensor; 8],
}

fn setup(gpu: &Gpu, rng: &mut Rng, shape: [usize; 4], c: &Pool2dConfig, act: Activation) -> Case {
    let d = Pool2dDims::new("test", &shape, c).unwrap();
    let ch = shape[3];
    let n = shape[..3].iter().product::<usize>();
    let x = rng.vec_uniform(n * ch, -2.0, 2.0);
    let (gamma, beta) = (rng.vec_uniform(ch, 0.5, 1.5), rng.vec_uniform(ch, -0.5, 0.5));
    let dy = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
    let z = |shape: &[usize]| Tensor::zeros(gpu, shape).unwrap();
    let (xt, gt, bt) = (up(gpu, &[n, ch], &x), up(gpu, &[ch], &gamma), up(gpu, &[ch], &beta));
    let (h, mean, inv_std, rm, rv) = (z(&[n, ch]), z(&[ch]), z(&[ch]), z(&[ch]), z(&[ch]));
    let (y, argmax) = (z(&d.y_shape()), Tensor::zeros_u32(gpu, &d.y_shape()).unwrap());
    let cfg = BatchNormConfig::default();
    let bn = batch_norm_forward_train(gpu, &xt, &gt, &bt, &h, &mean, &inv_std, &rm, &rv, &cfg, act).unwrap();
    let pool = max_pool2d_forward(gpu, &h.reshape(&shape).unwrap(), &y, &argmax, c).unwrap();
    gpu.run(&[&bn, &pool]).unwrap();
    let dyt = up(gpu, &d.y_shape(), &dy);
    Case { d, x, gamma, dy, t: [xt, gt, h, mean, inv_std, y, argmax, dyt] }
}

#[test]
fn through_the_pool_matches_the_two_passes_and_the_cpu_reference() {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    for (i, (shape, c)) in cases().into_iter().enumerate() {
        for (j, &act) in ACTS.iter().enumerate() {
            let case = setup(&gpu, &mut rng, shape, &c, act);
            let [xt, gt, h, mean, inv_std, y, argmax, dyt] = &case.t;
            let (n, ch) = (xt.shape()[0], shape[3]);
            let z = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
            // The two passes.
            let dh = z(&[n, ch]);
            let (dx2, dg2, db2) = (z(&[n, ch]), z(&[ch]), z(&[ch]));
            let below = Some((&h.reshape(&shape).unwrap(), act));
            let dh4 = dh.reshape(&shape).unwrap();
            let pool_back = max_pool2d_backward_with_output(&gpu, dyt, argmax, y, &dh4, &c, below).unwrap();
            let bn_back = batch_norm_backward(&gpu, &dh, xt, gt, mean, inv_std, &dx2, &dg2, &db2, false).unwrap();
            // One.
            let (dx1, dg1, db1) = (z(&[n, ch]), z(&[ch]), z(&[ch]));
            let pool = PoolAbove { dy: dyt.clone(), argmax: argmax.clone(), y: y.clone(), act, dims: case.d };
            let one =
                batch_norm_backward_through_max_pool(&gpu, &pool, xt, gt, mean, inv_std, &dx1, &dg1, &db1).unwrap();
            gpu.run(&[&pool_back, &bn_back, &one]).unwrap();
            let what = format!("case {i} {shape:?} {c:?} {act:?} (act {j})");
            let host = |t: &Tensor| t.to_vec().unwrap();
            assert_close(&format!("{what} dx"), &host(&dx1), &host(&dx2), 1e-5, 1e-4);
            assert_close(&format!("{what} dgamma"), &host(&dg1), &host(&dg2), 1e-5, 1e-4);
            assert_close(&format!("{what} dbeta"), &host(&db1), &host(&db2), 1e-5, 1e-4);
            let (y_h, a_h) = (host(y), argmax.to_vec_u32().unwrap());
            let (mean_h, inv_h) = (host(mean), host(inv_std));
            let (want_dx, want_dg, want_db) = cpu::batch_norm_backward_through_max_pool(
                &case.dy,
                &a_h,
                &y_h,
                act,
                &case.d,
                &case.x,
                &case.gamma,
                &mean_h,
                &inv_h,
            );
            assert_close(&format!("{what} dx vs cpu"), &host(&dx1), &want_dx, 1e-5, 1e-4);
            assert_close(&format!("{what} dgamma vs cpu"), &host(&dg1), &want_dg, 1e-5, 1e-4);
            assert_close(&format!("{what} dbeta vs cpu"), &host(&db1), &want_db, 1e-5, 1e-4);
        }
    }
}

/// The CPU reference is the gradient of Σ w·maxpool(act(batch norm(x))) w.r.t. x (training
/// statistics), by central differences: tanh and sigmoid (smooth), one cell of each window raised
/// well above the others so that the maxima stay put under the probe.
#[test]
fn the_cpu_reference_matches_finite_differences() {
    let mut rng = Rng::new(42);
    let cfg = BatchNormConfig::default();
    for (shape, pool) in [([2, 6, 6, 4], 2), ([1, 6, 9, 4], 3)] {
        let c = Pool2dConfig::new((pool, pool));
        let d = Pool2dDims::new("test", &shape, &c).unwrap();
        let [rows, h, w, ch] = shape;
        let n = rows * h * w;
        for act in [Activation::Tanh, Activation::Sigmoid] {
            let mut x = rng.vec_uniform(n * ch, -0.5, 0.5);
            for (r, oy, ox, k) in windows(rows, h / pool, w / pool, ch) {
                let (dy, dx) = (rng.below(pool), rng.below(pool));
                x[((r * h + oy * pool + dy) * w + ox * pool + dx) * ch + k] += 2.0;
            }
            let (gamma, beta) = (rng.vec_uniform(ch, 0.5, 1.5), rng.vec_uniform(ch, -0.5, 0.5));
            let wts = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
            let forward = |xp: &[f32]| {
                let (h, mean, inv_std, _) = cpu::batch_norm_forward_train_deferred(xp, &gamma, &beta, n, ch, &cfg, act);
                let (y, argmax) = cpu::max_pool2d_forward(&h, &d);
                (y, argmax, mean, inv_std)
            };
            let (y, argmax, mean, inv_std) = forward(&x);
            let (dx, _, _) =
                cpu::batch_norm_backward_through_max_pool(&wts, &argmax, &y, act, &d, &x, &gamma, &mean, &inv_std);
            let num = numeric_gradient(&x, 1e-2, |xp| dot(&wts, &forward(xp).0));
            assert_close(&format!("{shape:?} pool {pool} {act:?}"), &dx, &num, 1e-3, 1e-2);
        }
    }
}

/// Every (image, window row, window column, channel).
fn windows(rows: usize, ho: usize, wo: usize, ch: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut all = Vec::new();
    for r in 0..rows {
        for oy in 0..ho {
            for ox in 0..wo {
                for k in 0..ch {
                    all.push((r, oy, ox, k));
                }
            }
        }
    }
    all
}

#[test]
fn pools_and_activations_it_does_not_take_are_errors_naming_it() {
    let gpu = gpu();
    let mut rng = Rng::new(43);
    let overlapping = Pool2dConfig { pool_size: (3, 3), strides: Some((1, 1)), padding: Padding::Same };
    for (shape, c, act) in [
        ([2, 6, 6, 4], overlapping, Activation::Relu),
        ([2, 6, 6, 3], Pool2dConfig::new((2, 2)), Activation::Relu),
        ([2, 6, 6, 4], Pool2dConfig::new((2, 2)), Activation::GeluErf),
    ] {
        let case = setup(&gpu, &mut rng, shape, &c, Activation::Identity);
        let [xt, gt, _, mean, inv_std, y, argmax, dyt] = &case.t;
        let (n, ch) = (xt.shape()[0], shape[3]);
        let (dx, dg, db) = (
            Tensor::zeros(&gpu, &[n, ch]).unwrap(),
            Tensor::zeros(&gpu, &[ch]).unwrap(),
            Tensor::zeros(&gpu, &[ch]).unwrap(),
        );
        let pool = PoolAbove { dy: dyt.clone(), argmax: argmax.clone(), y: y.clone(), act, dims: case.d };
        let Err(e) = batch_norm_backward_through_max_pool(&gpu, &pool, xt, gt, mean, inv_std, &dx, &dg, &db) else {
            panic!("{shape:?} {c:?} {act:?} was taken")
        };
        let text = e.to_string();
        assert!(text.contains("batch_norm_backward_through_max_pool") && text.contains("tile"), "{text}");
    }
}
