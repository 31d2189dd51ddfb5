//! pool2d.wgsl (max, average, global average; forward and backward) against the CPU reference on
//! awkward shapes, ties and NaN in max pooling, the CPU backward by finite differences, a global
//! average past lavapipe's loop cap, the backward passes through the activation below (GPU against
//! CPU, the CPU by finite differences), and bad input as typed errors.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::pool2d::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward, global_avg_pool2d_forward,
    max_pool2d_backward, max_pool2d_backward_with_output, max_pool2d_forward, Padding, Pool2dConfig, Pool2dDims,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Tensor, WgnnError};

fn cfg(pool: (usize, usize), strides: Option<(usize, usize)>, padding: Padding) -> Pool2dConfig {
    Pool2dConfig { pool_size: pool, strides, padding }
}

/// Odd sizes, strides past, equal to and below the pool (backward by tiles where windows do not
/// overlap, by gathers where they do), even pools with `same`, padding before the first window,
/// C = 1 and 3, batch 1, a pool as large as the image.
fn cases() -> Vec<([usize; 4], Pool2dConfig)> {
    vec![
        ([1, 7, 9, 3], Pool2dConfig::new((2, 2))),
        ([2, 7, 9, 1], cfg((3, 3), Some((2, 2)), Padding::Same)),
        ([2, 8, 6, 3], cfg((2, 2), Some((1, 1)), Padding::Same)),
        ([1, 5, 5, 1], Pool2dConfig::new((5, 5))),
        ([3, 6, 7, 2], cfg((2, 3), Some((3, 2)), Padding::Valid)),
        ([2, 9, 9, 4], cfg((4, 4), Some((2, 2)), Padding::Same)),
        ([2, 5, 5, 3], cfg((2, 2), Some((3, 3)), Padding::Same)),
        ([1, 1, 1, 3], Pool2dConfig::new((1, 1))),
        ([2, 7, 7, 2], cfg((3, 3), Some((1, 1)), Padding::Valid)),
        ([2, 4, 5, 2], cfg((3, 3), Some((3, 3)), Padding::Same)),
        // Channel counts that are multiples of 4 (kernels may take four at a time): tiles and
        // gathers, padded and not.
        ([2, 7, 9, 8], Pool2dConfig::new((2, 2))),
        ([2, 8, 6, 12], cfg((2, 2), Some((1, 1)), Padding::Same)),
        ([1, 5, 6, 4], cfg((3, 3), Some((3, 3)), Padding::Same)),
        ([3, 7, 5, 4], cfg((3, 2), Some((2, 2)), Padding::Valid)),
    ]
}

fn up(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

/// Distinct values 0.01 apart, shuffled: no ties, and a finite-difference step of 1e-3 moves no
/// maximum.
fn distinct(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - n as f32 * 0.005).collect();
    rng.shuffle(&mut v);
    v
}

#[test]
fn max_pool_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    for (shape, c) in cases() {
        let d = Pool2dDims::new("test", &shape, &c).unwrap();
        let x = rng.vec_uniform(shape.iter().product(), -1.0, 1.0);
        let dy = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let xt = up(&gpu, &shape, &x);
        let (yt, at) = (Tensor::zeros(&gpu, &d.y_shape()).unwrap(), Tensor::zeros_u32(&gpu, &d.y_shape()).unwrap());
        let dxt = up(&gpu, &shape, &vec![7.0; x.len()]);
        let forward = max_pool2d_forward(&gpu, &xt, &yt, &at, &c).unwrap();
        let backward = max_pool2d_backward(&gpu, &up(&gpu, &d.y_shape(), &dy), &at, &dxt, &c, None).unwrap();
        gpu.run(&[&forward, &backward]).unwrap();
        let (y, argmax) = cpu::max_pool2d_forward(&x, &d);
        assert_eq!(yt.to_vec().unwrap(), y, "{shape:?} {c:?} y");
        assert_eq!(at.to_vec_u32().unwrap(), argmax, "{shape:?} {c:?} argmax");
        let want = cpu::max_pool2d_backward(&dy, &argmax, &d, None);
        assert_close(&format!("{shape:?} {c:?} dx"), &dxt.to_vec().unwrap(), &want, 1e-6, 1e-6);
    }
}

#[test]
fn max_pool_ties_go_to_the_first_cell_and_nan_wins() {
    let gpu = gpu();
    // One image of 4×4×1 in 2×2 windows, stride 1 (overlapping): all equal, so each window's first
    // cell in row-major order; then a NaN at (1, 2), which wins the four windows covering it.
    let c = cfg((2, 2), Some((1, 1)), Padding::Valid);
    let shape = [1, 4, 4, 1];
    let d = Pool2dDims::new("test", &shape, &c).unwrap();
    let mut x = vec![0.5f32; 16];
    let run = |x: &[f32]| {
        let (yt, at) = (Tensor::zeros(&gpu, &d.y_shape()).unwrap(), Tensor::zeros_u32(&gpu, &d.y_shape()).unwrap());
        let dxt = Tensor::zeros(&gpu, &shape).unwrap();
        let forward = max_pool2d_forward(&gpu, &up(&gpu, &shape, x), &yt, &at, &c).unwrap();
        let backward = max_pool2d_backward(&gpu, &up(&gpu, &d.y_shape(), &[1.0; 9]), &at, &dxt, &c, None).unwrap();
        gpu.run(&[&forward, &backward]).unwrap();
        (yt.to_vec().unwrap(), at.to_vec_u32().unwrap(), dxt.to_vec().unwrap())
    };
    let (_, argmax, dx) = run(&x);
    let firsts = vec![0, 1, 2, 4, 5, 6, 8, 9, 10];
    assert_eq!(argmax, firsts);
    assert_eq!(cpu::max_pool2d_forward(&x, &d).1, firsts);
    assert_eq!(dx, cpu::max_pool2d_backward(&[1.0; 9], &firsts, &d, None));
    x[6] = f32::NAN;
    x[0] = 9.0;
    let (y, argmax, _) = run(&x);
    let (y_cpu, argmax_cpu) = cpu::max_pool2d_forward(&x, &d);
    assert_eq!(argmax, argmax_cpu);
    assert_eq!(argmax, vec![0, 6, 6, 4, 6, 6, 8, 9, 10]);
    for (i, (g, w)) in y.iter().zip(&y_cpu).enumerate() {
        assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "y[{i}]: {g} vs {w}");
    }
    assert!(y[1].is_nan() && y[4].is_nan() && y[0] == 9.0);
}

#[test]
fn avg_pool_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    for (shape, c) in cases() {
        let d = Pool2dDims::new("test", &shape, &c).unwrap();
        let x = rng.vec_uniform(shape.iter().product(), -1.0, 1.0);
        let dy = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let yt = up(&gpu, &d.y_shape(), &vec![7.0; dy.len()]);
        let dxt = up(&gpu, &shape, &vec![7.0; x.len()]);
        let forward = avg_pool2d_forward(&gpu, &up(&gpu, &shape, &x), &yt, &c).unwrap();
        let backward = avg_pool2d_backward(&gpu, &up(&gpu, &d.y_shape(), &dy), &dxt, &c, None).unwrap();
        gpu.run(&[&forward, &backward]).unwrap();
        let what = format!("{shape:?} {c:?}");
        assert_close(&format!("{what} y"), &yt.to_vec().unwrap(), &cpu::avg_pool2d_forward(&x, &d), 1e-6, 1e-5);
        assert_close(
            &format!("{what} dx"),
            &dxt.to_vec().unwrap(),
            &cpu::avg_pool2d_backward(&dy, &d, None),
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn same_average_pooling_divides_by_the_cells_inside() {
    // Keras: AveragePooling2D(2, strides=1, padding="same") on [[1, 2], [3, 4]] gives
    // [[2.5, 3], [3.5, 4]]: the last row and column average fewer cells.
    let c = cfg((2, 2), Some((1, 1)), Padding::Same);
    let d = Pool2dDims::new("test", &[1, 2, 2, 1], &c).unwrap();
    assert_eq!(cpu::avg_pool2d_forward(&[1.0, 2.0, 3.0, 4.0], &d), vec![2.5, 3.0, 3.5, 4.0]);
}

#[test]
fn global_avg_pool_matches_cpu_past_the_loop_cap() {
    // 265·265 = 70,225 positions an image: past lavapipe's 65,535 iterations, summed in chunks.
    let gpu = gpu();
    let mut rng = Rng::new(3);
    for shape in [[1, 1, 1, 1], [2, 3, 5, 7], [3, 64, 65, 2], [2, 265, 265, 1], [2, 3, 5, 8], [1, 70, 70, 4]] {
        let [rows, _, _, c] = shape;
        let x = rng.vec_uniform(shape.iter().product(), -1.0, 1.0);
        let dy = rng.vec_uniform(rows * c, -1.0, 1.0);
        let yt = Tensor::zeros(&gpu, &[rows, c]).unwrap();
        let dxt = up(&gpu, &shape, &vec![7.0; x.len()]);
        let forward = global_avg_pool2d_forward(&gpu, &up(&gpu, &shape, &x), &yt).unwrap();
        let backward = global_avg_pool2d_backward(&gpu, &up(&gpu, &[rows, c], &dy), &dxt, None).unwrap();
        gpu.run(&[&forward, &backward]).unwrap();
        let want = cpu::global_avg_pool2d_forward(&x, shape);
        assert_close(&format!("{shape:?} y"), &yt.to_vec().unwrap(), &want, 1e-6, 1e-4);
        let want = cpu::global_avg_pool2d_backward(&dy, shape, None);
        assert_close(&format!("{shape:?} dx"), &dxt.to_vec().unwrap(), &want, 1e-7, 1e-6);
    }
}

#[test]
fn backward_reference_matches_finite_differences() {
    let mut rng = Rng::new(4);
    for (shape, c) in cases().into_iter().take(7) {
        let d = Pool2dDims::new("test", &shape, &c).unwrap();
        let x = distinct(&mut rng, shape.iter().product());
        let w = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (_, argmax) = cpu::max_pool2d_forward(&x, &d);
        let num = numeric_gradient(&x, 1e-3, |xp| dot(&w, &cpu::max_pool2d_forward(xp, &d).0));
        assert_close(
            &format!("max {shape:?} {c:?}"),
            &cpu::max_pool2d_backward(&w, &argmax, &d, None),
            &num,
            1e-3,
            1e-3,
        );
        let num = numeric_gradient(&x, 1e-2, |xp| dot(&w, &cpu::avg_pool2d_forward(xp, &d)));
        assert_close(&format!("avg {shape:?} {c:?}"), &cpu::avg_pool2d_backward(&w, &d, None), &num, 1e-3, 1e-3);
    }
    let shape = [2, 3, 4, 3];
    let x = rng.vec_uniform(shape.iter().product(), -1.0, 1.0);
    let w = rng.vec_uniform(2 * 3, -1.0, 1.0);
    let num = numeric_gradient(&x, 1e-2, |xp| dot(&w, &cpu::global_avg_pool2d_forward(xp, shape)));
    assert_close("global avg", &cpu::global_avg_pool2d_backward(&w, shape, None), &num, 1e-4, 1e-3);
}

/// Max, average and global average backward through the activation below (`below`: the pool's
/// input as that activation's output) on the GPU against the CPU reference, for every case,
/// gathers and tiles alike.
#[test]
fn backward_through_the_activation_below_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    let acts = [Activation::Relu, Activation::LeakyRelu(0.1), Activation::Sigmoid, Activation::Tanh];
    for (i, (shape, c)) in cases().into_iter().enumerate() {
        let act = acts[i % acts.len()];
        let d = Pool2dDims::new("test", &shape, &c).unwrap();
        let h: Vec<f32> =
            rng.vec_uniform(shape.iter().product(), -1.0, 1.0).into_iter().map(|z| act.forward(z)).collect();
        let dy = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (ht, dyt) = (up(&gpu, &shape, &h), up(&gpu, &d.y_shape(), &dy));
        let (yt, at) = (Tensor::zeros(&gpu, &d.y_shape()).unwrap(), Tensor::zeros_u32(&gpu, &d.y_shape()).unwrap());
        let (max_dx, avg_dx) = (up(&gpu, &shape, &vec![7.0; h.len()]), up(&gpu, &shape, &vec![7.0; h.len()]));
        let below = Some((&ht, act));
        let plans = [
            max_pool2d_forward(&gpu, &ht, &yt, &at, &c).unwrap(),
            max_pool2d_backward(&gpu, &dyt, &at, &max_dx, &c, below).unwrap(),
            avg_pool2d_backward(&gpu, &dyt, &avg_dx, &c, below).unwrap(),
        ];
        gpu.run(&plans.iter().collect::<Vec<_>>()).unwrap();
        let what = format!("{shape:?} {c:?} {act:?}");
        let argmax = cpu::max_pool2d_forward(&h, &d).1;
        let want = cpu::max_pool2d_backward(&dy, &argmax, &d, Some((&h, act)));
        assert_close(&format!("{what} max dx"), &max_dx.to_vec().unwrap(), &want, 1e-6, 1e-6);
        let want = cpu::avg_pool2d_backward(&dy, &d, Some((&h, act)));
        assert_close(&format!("{what} avg dx"), &avg_dx.to_vec().unwrap(), &want, 1e-6, 1e-5);
        let [rows, _, _, channels] = shape;
        let dy = rng.vec_uniform(rows * channels, -1.0, 1.0);
        let global_dx = up(&gpu, &shape, &vec![7.0; h.len()]);
        let plan = global_avg_pool2d_backward(&gpu, &up(&gpu, &[rows, channels], &dy), &global_dx, below).unwrap();
        gpu.run(&[&plan]).unwrap();
        let want = cpu::global_avg_pool2d_backward(&dy, shape, Some((&h, act)));
        assert_close(&format!("{what} global dx"), &global_dx.to_vec().unwrap(), &want, 1e-7, 1e-6);
    }
}

/// Max pooling's backward given the forward's output (act′ read at each window's maximum where
/// the windows tile) is the plain backward to the bit: every case, C = 4 and 8 besides (vec4s),
/// activations read from their output and the GELU (read from its input: the plain pass), no
/// activation, ties and a NaN in x.
#[test]
fn max_backward_reading_the_output_is_the_plain_backward_to_the_bit() {
    let gpu = gpu();
    let mut rng = Rng::new(9);
    let acts = [
        Some(Activation::Relu),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::Sigmoid),
        Some(Activation::Tanh),
        Some(Activation::GeluErf),
        None,
    ];
    let mut all = cases();
    all.extend([([3, 8, 6, 4], Pool2dConfig::new((2, 2))), ([2, 7, 5, 8], cfg((2, 2), None, Padding::Same))]);
    for (i, (shape, c)) in all.into_iter().enumerate() {
        let act = acts[i % acts.len()];
        let d = Pool2dDims::new("test", &shape, &c).unwrap();
        let mut h: Vec<f32> = rng.vec_uniform(shape.iter().product(), -1.0, 1.0);
        if let Some(a) = act.filter(|a| !a.saves_input()) {
            h.iter_mut().for_each(|v| *v = a.forward(*v));
        }
        // Ties (relu's zeros do it too) and a NaN, which wins its window.
        h[1] = h[0];
        let middle = h.len() / 2;
        h[middle] = f32::NAN;
        let dy = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (ht, dyt) = (up(&gpu, &shape, &h), up(&gpu, &d.y_shape(), &dy));
        let (yt, at) = (Tensor::zeros(&gpu, &d.y_shape()).unwrap(), Tensor::zeros_u32(&gpu, &d.y_shape()).unwrap());
        let (plain, with_output) = (up(&gpu, &shape, &vec![7.0; h.len()]), up(&gpu, &shape, &vec![5.0; h.len()]));
        let below = act.map(|a| (&ht, a));
        let forward = max_pool2d_forward(&gpu, &ht, &yt, &at, &c).unwrap();
        gpu.run(&[&forward]).unwrap();
        let plans = [
            max_pool2d_backward(&gpu, &dyt, &at, &plain, &c, below).unwrap(),
            max_pool2d_backward_with_output(&gpu, &dyt, &at, &yt, &with_output, &c, below).unwrap(),
        ];
        gpu.run(&plans.iter().collect::<Vec<_>>()).unwrap();
        let (want, got) = (plain.to_vec().unwrap(), with_output.to_vec().unwrap());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{shape:?} {c:?} {act:?}");
    }
}

#[test]
fn max_backward_reading_the_output_refuses_an_output_of_another_shape() {
    let gpu = gpu();
    let c = Pool2dConfig::new((2, 2));
    let (x, dy) = (Tensor::zeros(&gpu, &[2, 4, 6, 3]).unwrap(), Tensor::zeros(&gpu, &[2, 2, 3, 3]).unwrap());
    let at = Tensor::zeros_u32(&gpu, &[2, 2, 3, 3]).unwrap();
    let wrong = Tensor::zeros(&gpu, &[2, 2, 3, 2]).unwrap();
    let below = Some((&x, Activation::Relu));
    let dx = Tensor::zeros(&gpu, &[2, 4, 6, 3]).unwrap();
    let Err(err) = max_pool2d_backward_with_output(&gpu, &dy, &at, &wrong, &dx, &c, below) else {
        panic!("an output of another shape was taken")
    };
    let text = err.to_string();
    assert!(text.contains("max_pool2d_backward_with_output") && text.contains("y must be"), "{text}");
}

/// The CPU backward through the activation below is the gradient of pool(act(z)) w.r.t. z.
#[test]
fn backward_through_the_activation_below_matches_finite_differences() {
    let mut rng = Rng::new(6);
    for (shape, c) in cases().into_iter().take(7) {
        let d = Pool2dDims::new("test", &shape, &c).unwrap();
        // Monotonic and smooth: the maxima stay where they were, and no kink sits under a step.
        for act in [Activation::Tanh, Activation::Sigmoid] {
            let z = distinct(&mut rng, shape.iter().product());
            let h: Vec<f32> = z.iter().map(|&v| act.forward(v)).collect();
            let through = |zp: &[f32]| zp.iter().map(|&v| act.forward(v)).collect::<Vec<f32>>();
            let w = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
            let argmax = cpu::max_pool2d_forward(&h, &d).1;
            let num = numeric_gradient(&z, 1e-3, |zp| dot(&w, &cpu::max_pool2d_forward(&through(zp), &d).0));
            let got = cpu::max_pool2d_backward(&w, &argmax, &d, Some((&h, act)));
            assert_close(&format!("max {shape:?} {c:?} {act:?}"), &got, &num, 1e-3, 1e-2);
            let num = numeric_gradient(&z, 1e-2, |zp| dot(&w, &cpu::avg_pool2d_forward(&through(zp), &d)));
            let got = cpu::avg_pool2d_backward(&w, &d, Some((&h, act)));
            assert_close(&format!("avg {shape:?} {c:?} {act:?}"), &got, &num, 1e-3, 1e-2);
        }
    }
}

#[test]
fn a_bad_activation_below_is_an_error() {
    let gpu = gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let two = Pool2dConfig::new((2, 2));
    let (x, y, a) = (t(&[2, 4, 6, 3]), t(&[2, 2, 3, 3]), Tensor::zeros_u32(&gpu, &[2, 2, 3, 3]).unwrap());
    let h = t(&[2, 4, 6, 3]);
    let err =
        expect_err(max_pool2d_backward(&gpu, &y, &a, &x, &two, Some((&t(&[2, 4, 6, 2]), Activation::Relu))), "shape");
    assert_mentions(&err, &["max_pool2d_backward", "below must be [2, 4, 6, 3]", "[2, 4, 6, 2]"]);
    let err = expect_err(avg_pool2d_backward(&gpu, &y, &x, &two, Some((&h, Activation::Softmax))), "softmax");
    assert_mentions(&err, &["avg_pool2d_backward", "softmax"]);
    let err = expect_err(global_avg_pool2d_backward(&gpu, &t(&[2, 3]), &x, Some((&x, Activation::Relu))), "in place");
    assert_mentions(&err, &["global_avg_pool2d_backward", "share memory"]);
}

fn expect_err(result: wgnn::Result<wgnn::Plan>, what: &str) -> WgnnError {
    match result {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e,
    }
}

fn assert_mentions(err: &WgnnError, parts: &[&str]) {
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[test]
fn bad_input_is_an_error_naming_the_op_and_shapes() {
    let gpu = gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let idx = |shape: &[usize]| Tensor::zeros_u32(&gpu, shape).unwrap();
    let two = Pool2dConfig::new((2, 2));
    let (x, y, a) = (t(&[2, 5, 7, 3]), t(&[2, 2, 3, 3]), idx(&[2, 2, 3, 3]));

    let big = Pool2dConfig::new((3, 3));
    let err =
        expect_err(max_pool2d_forward(&gpu, &t(&[1, 2, 5, 1]), &t(&[1, 1, 1, 1]), &idx(&[1, 1, 1, 1]), &big), "big");
    assert!(matches!(err, WgnnError::Shape { .. }), "{err:?}");
    assert_mentions(&err, &["max_pool2d_forward", "larger than", "[1, 2, 5, 1]"]);

    let stride0 = cfg((2, 2), Some((0, 1)), Padding::Same);
    let err = expect_err(avg_pool2d_forward(&gpu, &x, &y, &stride0), "stride 0");
    assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err:?}");
    assert_mentions(&err, &["avg_pool2d_forward", "strides", "[2, 5, 7, 3]"]);

    let err = expect_err(max_pool2d_forward(&gpu, &x, &t(&[2, 3, 3, 3]), &a, &two), "y");
    assert_mentions(&err, &["max_pool2d_forward", "y must be [2, 2, 3, 3]", "[2, 3, 3, 3]"]);
    let err = expect_err(max_pool2d_forward(&gpu, &x, &y, &t(&[2, 2, 3, 3]), &two), "f32 argmax");
    assert!(matches!(err, WgnnError::DType { .. }), "{err:?}");
    let err = expect_err(max_pool2d_forward(&gpu, &x, &y, &idx(&[2, 2, 3, 2]), &two), "argmax shape");
    assert_mentions(&err, &["max_pool2d_forward", "argmax", "[2, 2, 3, 2]"]);
    let far = Tensor::from_u32(&gpu, &[2, 2, 3, 3], &[210; 36]).unwrap();
    let err = expect_err(max_pool2d_backward(&gpu, &y, &far, &x, &two, None), "argmax past dx");
    assert_mentions(&err, &["max_pool2d_backward", "210", "210 values"]);
    let err = expect_err(max_pool2d_backward(&gpu, &t(&[2, 2, 2, 3]), &a, &x, &two, None), "dy");
    assert_mentions(&err, &["max_pool2d_backward", "dy must be [2, 2, 3, 3]"]);
    let err = expect_err(avg_pool2d_backward(&gpu, &y, &t(&[2, 5, 7]), &two, None), "rank 3");
    assert_mentions(&err, &["avg_pool2d_backward", "[rows, H, W, C]", "[2, 5, 7]"]);
    let err = expect_err(avg_pool2d_forward(&gpu, &x, &x, &cfg((1, 1), None, Padding::Valid)), "in place");
    assert_mentions(&err, &["avg_pool2d_forward", "share memory"]);
    let err = expect_err(avg_pool2d_forward(&gpu, &x, &y, &cfg((200, 100), None, Padding::Same)), "window");
    assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err:?}");
    assert_mentions(&err, &["avg_pool2d_forward", "200×100", "global pooling"]);

    let err = expect_err(global_avg_pool2d_forward(&gpu, &x, &t(&[2, 2])), "global y");
    assert_mentions(&err, &["global_avg_pool2d_forward", "y must be [2, 3]", "[2, 2]"]);
    let err = expect_err(global_avg_pool2d_backward(&gpu, &t(&[3, 3]), &x, None), "global dy");
    assert_mentions(&err, &["global_avg_pool2d_backward", "dy must be [2, 3]", "[3, 3]"]);
    let err = expect_err(global_avg_pool2d_forward(&gpu, &t(&[2, 0, 7, 3]), &t(&[2, 3])), "empty");
    assert!(matches!(err, WgnnError::EmptyTensor { .. }), "{err:?}");
}

/// Max pooling forward and backward (through relu below) and average pooling backward on the
/// GPU: y, argmax, max dx, avg dx.
fn pool_all(
    gpu: &Gpu,
    x: &[f32],
    dy: &[f32],
    shape: [usize; 4],
    c: &Pool2dConfig,
) -> (Vec<f32>, Vec<u32>, Vec<f32>, Vec<f32>) {
    let d = Pool2dDims::new("test", &shape, c).unwrap();
    let (xt, dyt) = (up(gpu, &shape, x), up(gpu, &d.y_shape(), dy));
    let (yt, at) = (Tensor::zeros(gpu, &d.y_shape()).unwrap(), Tensor::zeros_u32(gpu, &d.y_shape()).unwrap());
    let (max_dx, avg_dx) = (Tensor::zeros(gpu, &shape).unwrap(), Tensor::zeros(gpu, &shape).unwrap());
    let below = Some((&xt, Activation::Relu));
    let plans = [
        max_pool2d_forward(gpu, &xt, &yt, &at, c).unwrap(),
        max_pool2d_backward(gpu, &dyt, &at, &max_dx, c, below).unwrap(),
        avg_pool2d_backward(gpu, &dyt, &avg_dx, c, below).unwrap(),
    ];
    gpu.run(&plans.iter().collect::<Vec<_>>()).unwrap();
    (yt.to_vec().unwrap(), at.to_vec_u32().unwrap(), max_dx.to_vec().unwrap(), avg_dx.to_vec().unwrap())
}

#[test]
fn each_channel_comes_out_as_if_alone_bit_for_bit() {
    // A kernel may take the channels four at a time (a vec4) or one by one; either way a
    // channel's arithmetic is the same, so eight channels at once and each on its own give the
    // same bits, ties (first cell wins), NaNs (they win) and zeros (relu's derivative) included.
    let gpu = gpu();
    let mut rng = Rng::new(6);
    let channels = 8;
    for c in
        [Pool2dConfig::new((2, 2)), cfg((2, 2), Some((1, 1)), Padding::Same), cfg((3, 3), Some((2, 2)), Padding::Valid)]
    {
        let shape = [2, 7, 6, channels];
        let d = Pool2dDims::new("test", &shape, &c).unwrap();
        // Values on a coarse grid, so that windows tie; a few NaNs.
        let mut x: Vec<f32> = (0..shape.iter().product()).map(|_| (rng.vec_uniform(1, -2.0, 2.0)[0]).round()).collect();
        for i in (5..x.len()).step_by(37) {
            x[i] = f32::NAN;
        }
        let dy = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let all = pool_all(&gpu, &x, &dy, shape, &c);
        for ch in 0..channels {
            let one = |v: &[f32]| -> Vec<f32> { v.iter().skip(ch).step_by(channels).copied().collect() };
            let alone = pool_all(&gpu, &one(&x), &one(&dy), [2, 7, 6, 1], &c);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let what = format!("{c:?} channel {ch}");
            assert_eq!(bits(&one(&all.0)), bits(&alone.0), "{what} y");
            let argmax: Vec<u32> = all.1.iter().skip(ch).step_by(channels).copied().collect();
            let alone_argmax: Vec<u32> = alone.1.iter().map(|&i| i * channels as u32 + ch as u32).collect();
            assert_eq!(argmax, alone_argmax, "{what} argmax");
            assert_eq!(bits(&one(&all.2)), bits(&alone.2), "{what} max dx");
            assert_eq!(bits(&one(&all.3)), bits(&alone.3), "{what} avg dx");
        }
    }
}
