//! conv2d (im2col + matmul, col2im, and the kernels the engine picks instead) against the CPU
//! reference on awkward shapes, forward and backward; the CPU backward by finite differences, a
//! weight gradient summed past lavapipe's loop cap, and bad input as typed errors. The patch
//! matrix itself (kept from the forward, in chunks, past the limits): tests/conv2d_patches.rs.

mod common;

use common::conv_cases::*;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::conv2d::{
    conv2d_backward_activation, conv2d_backward_input, conv2d_backward_weights, conv2d_forward, Conv2dConfig,
    Conv2dDims, Padding,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Tensor, WgnnError};

#[test]
fn same_padding_follows_tensorflow() {
    // (H, k, s) → (Ho, pad_top): pad_total = max((ceil(H/s) − 1)·s + k − H, 0), the odd cell after.
    for &((h, k, s), (ho, top)) in &[
        ((5, 3, 1), (5, 1)),
        ((5, 2, 1), (5, 0)),
        ((5, 4, 1), (5, 1)),
        ((6, 3, 2), (3, 0)),
        ((7, 3, 2), (4, 1)),
        ((4, 6, 3), (2, 2)),
        ((5, 1, 2), (3, 0)),
    ] {
        let d = Conv2dDims::new(
            "t",
            &[1, h, h, 1],
            &[k, k, 1, 1],
            &Conv2dConfig { strides: (s, s), padding: Padding::Same },
        )
        .unwrap();
        assert_eq!((d.window.ho, d.window.pad_top), (ho, top), "H {h}, k {k}, s {s}");
    }
    let d =
        Conv2dDims::new("t", &[1, 7, 8, 1], &[3, 2, 1, 1], &Conv2dConfig { strides: (2, 3), padding: Padding::Valid })
            .unwrap();
    assert_eq!(d.y_shape(), [1, 3, 3, 1]);
}

#[test]
fn forward_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    for (i, c) in CASES.iter().enumerate() {
        let d = c.dims();
        let act = ACTS[i % ACTS.len()];
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(c.c_out, -0.5, 0.5);
        let (xt, kt, bt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &[c.c_out], &b));
        let yt = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
        for with_bias in [true, false] {
            let bias = with_bias.then_some(&bt);
            gpu.run(&[&conv2d_forward(&gpu, &xt, &kt, bias, &yt, act, &c.cfg()).unwrap()]).unwrap();
            let want = cpu::conv2d_forward(&x, &k, with_bias.then_some(&b[..]), &d, act);
            assert_close(&format!("{c:?} {act:?} bias={with_bias}"), &yt.to_vec().unwrap(), &want, 1e-5, 1e-4);
        }
    }
}

#[test]
fn backward_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    for c in CASES {
        let d = c.dims();
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, kt, dzt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz));
        // Garbage first: every output must be overwritten.
        let dxt = up(&gpu, &c.x, &vec![7.0; x.len()]);
        let dkt = up(&gpu, &c.kernel_shape(), &vec![7.0; k.len()]);
        let dbt = up(&gpu, &[c.c_out], &vec![7.0; c.c_out]);
        let input = conv2d_backward_input(&gpu, &dzt, &kt, &dxt, &c.cfg(), None).unwrap();
        let weights = conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap();
        gpu.run(&[&input, &weights]).unwrap();
        assert_close(
            &format!("{c:?} dx"),
            &dxt.to_vec().unwrap(),
            &cpu::conv2d_backward_input(&dz, &k, &d, None),
            1e-5,
            1e-4,
        );
        let (dk, db) = cpu::conv2d_backward_weights(&x, &dz, &d);
        assert_close(&format!("{c:?} dkernel"), &dkt.to_vec().unwrap(), &dk, 1e-4, 1e-4);
        assert_close(&format!("{c:?} dbias"), &dbt.to_vec().unwrap(), &db, 1e-4, 1e-4);
        // Without a bias gradient.
        let weights = conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, None, &c.cfg()).unwrap();
        gpu.run(&[&weights]).unwrap();
        assert_close(&format!("{c:?} dkernel alone"), &dkt.to_vec().unwrap(), &dk, 1e-4, 1e-4);
    }
}

#[test]
fn input_gradient_through_the_activation_below_matches_cpu() {
    // `below`: x as what an activation saved (its output; its input for the GELUs), whose
    // derivative multiplies dx (col2im's epilogue, or the matmul's where x is its own patch matrix).
    let gpu = gpu();
    let mut rng = Rng::new(8);
    for (i, c) in CASES.iter().enumerate() {
        let d = c.dims();
        let act = ACTS[1 + i % (ACTS.len() - 1)];
        let x: Vec<f32> = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0).into_iter().map(|u| saved(act, u)).collect();
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, kt, dzt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz));
        let dxt = up(&gpu, &c.x, &vec![7.0; x.len()]);
        gpu.run(&[&conv2d_backward_input(&gpu, &dzt, &kt, &dxt, &c.cfg(), Some((&xt, act))).unwrap()]).unwrap();
        let want = cpu::conv2d_backward_input(&dz, &k, &d, Some((&x, act)));
        assert_close(&format!("{c:?} {act:?} dx"), &dxt.to_vec().unwrap(), &want, 1e-5, 1e-4);
    }
}

#[test]
fn input_gradient_through_the_activation_below_matches_finite_differences() {
    // The CPU reference's dx through the activation below is the gradient of conv(act(u)) w.r.t. u.
    let mut rng = Rng::new(9);
    let cases = [
        (CASES[1], Activation::Tanh),
        (CASES[4], Activation::Sigmoid),
        (CASES[9], Activation::Tanh),
        (CASES[2], Activation::Gelu),
        (CASES[3], Activation::GeluErf),
    ];
    for (c, act) in cases {
        let d = c.dims();
        let u = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let w = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let x: Vec<f32> = u.iter().map(|&v| saved(act, v)).collect();
        let num = numeric_gradient(&u, 1e-2, |up_| {
            let xp: Vec<f32> = up_.iter().map(|&v| act.forward(v)).collect();
            dot(&w, &cpu::conv2d_forward(&xp, &k, None, &d, Activation::Identity))
        });
        let got = cpu::conv2d_backward_input(&w, &k, &d, Some((&x, act)));
        assert_close(&format!("{c:?} {act:?}"), &got, &num, 2e-3, 2e-2);
    }
}

#[test]
fn activation_gradient_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    let shape = [2, 5, 3, 4];
    let (rows, cols) = (2 * 5 * 3, 4);
    for &act in ACTS {
        let y: Vec<f32> = rng.vec_uniform(rows * cols, -2.0, 2.0).into_iter().map(|u| saved(act, u)).collect();
        let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
        let (yt, dyt, dzt) = (up(&gpu, &shape, &y), up(&gpu, &shape, &dy), Tensor::zeros(&gpu, &shape).unwrap());
        gpu.run(&[&conv2d_backward_activation(&gpu, &dyt, &yt, &dzt, act).unwrap()]).unwrap();
        let want = cpu::conv2d_backward_activation(&dy, &y, cols, act);
        assert_eq!(want, cpu::bias_act_backward(&dy, &y, rows, cols, act).0);
        assert_close(&format!("dz {act:?}"), &dzt.to_vec().unwrap(), &want, 1e-6, 1e-5);
    }
}

#[test]
fn backward_reference_matches_finite_differences() {
    let mut rng = Rng::new(4);
    let cases = [
        case([2, 5, 6, 2], (3, 3), 3, (2, 2), Padding::Same),
        case([1, 4, 5, 1], (2, 2), 2, (1, 1), Padding::Same),
        case([1, 5, 5, 2], (3, 3), 2, (2, 1), Padding::Valid),
        case([2, 3, 3, 3], (1, 1), 2, (1, 1), Padding::Valid),
    ];
    for c in cases {
        let d = c.dims();
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(c.c_out, -0.5, 0.5);
        let w = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        // The loss Σ w·conv(x): its gradient at the convolution's output is w.
        let loss =
            |x: &[f32], k: &[f32], b: &[f32]| dot(&w, &cpu::conv2d_forward(x, k, Some(b), &d, Activation::Identity));
        // Linear in each argument: a large step costs no accuracy.
        let eps = 0.05;
        let (dk, db) = cpu::conv2d_backward_weights(&x, &w, &d);
        assert_close(
            &format!("{c:?} dx"),
            &cpu::conv2d_backward_input(&w, &k, &d, None),
            &numeric_gradient(&x, eps, |xp| loss(xp, &k, &b)),
            1e-4,
            1e-3,
        );
        assert_close(&format!("{c:?} dkernel"), &dk, &numeric_gradient(&k, eps, |kp| loss(&x, kp, &b)), 1e-4, 1e-3);
        assert_close(&format!("{c:?} dbias"), &db, &numeric_gradient(&b, eps, |bp| loss(&x, &k, bp)), 1e-4, 1e-3);
    }
    // Through an activation: dz = dy ⊙ act′(y), then the input gradient.
    let c = case([1, 5, 4, 2], (3, 2), 3, (1, 2), Padding::Same);
    let d = c.dims();
    let x: Vec<f32> = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
    let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
    let w = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
    let y = cpu::conv2d_forward(&x, &k, None, &d, Activation::Tanh);
    let dz = cpu::conv2d_backward_activation(&w, &y, c.c_out, Activation::Tanh);
    let num = numeric_gradient(&x, 1e-3, |xp| dot(&w, &cpu::conv2d_forward(xp, &k, None, &d, Activation::Tanh)));
    assert_close("tanh dx", &cpu::conv2d_backward_input(&dz, &k, &d, None), &num, 2e-3, 2e-2);
}

#[test]
fn weight_gradient_past_the_loop_cap() {
    // 70 images of 32×32: the kernel gradient sums 71,680 positions, past lavapipe's 65,535
    // iterations per invocation; with a 1×1 kernel (x itself the patch matrix) too.
    let gpu = gpu();
    let mut rng = Rng::new(5);
    for c in [
        case([70, 32, 32, 1], (3, 3), 4, (1, 1), Padding::Same),
        case([70, 32, 32, 2], (1, 1), 4, (1, 1), Padding::Valid),
    ] {
        let d = c.dims();
        assert!(d.rows * d.window.ho * d.window.wo > 70_000);
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, dzt) = (up(&gpu, &c.x, &x), up(&gpu, &d.y_shape(), &dz));
        let (dkt, dbt) = (Tensor::zeros(&gpu, &c.kernel_shape()).unwrap(), Tensor::zeros(&gpu, &[c.c_out]).unwrap());
        gpu.run(&[&conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap()]).unwrap();
        let (dk, db) = cpu::conv2d_backward_weights(&x, &dz, &d);
        // Sums of ~70,000 terms of ±1: absolute error ~1e-3 in f32.
        assert_close(&format!("{c:?} dkernel"), &dkt.to_vec().unwrap(), &dk, 5e-3, 1e-4);
        assert_close(&format!("{c:?} dbias"), &dbt.to_vec().unwrap(), &db, 5e-3, 1e-4);
    }
}
#[test]
fn bad_input_is_an_error_naming_the_op_and_shapes() {
    let gpu = gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let valid = Conv2dConfig::default();
    let (x, k, y) = (t(&[2, 5, 5, 3]), t(&[3, 3, 3, 4]), t(&[2, 3, 3, 4]));

    let err = expect_err(
        conv2d_forward(&gpu, &t(&[1, 2, 2, 3]), &k, None, &t(&[1, 1, 1, 4]), Activation::Relu, &valid),
        "kernel > input",
    );
    assert!(matches!(err, WgnnError::Shape { .. }), "{err:?}");
    assert_mentions(&err, &["conv2d_forward", "larger than", "[1, 2, 2, 3]", "[3, 3, 3, 4]"]);

    let stride0 = Conv2dConfig { strides: (1, 0), padding: Padding::Same };
    let err = expect_err(conv2d_forward(&gpu, &x, &k, None, &y, Activation::Relu, &stride0), "stride 0");
    assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err:?}");
    assert_mentions(&err, &["conv2d_forward", "strides", "[2, 5, 5, 3]"]);

    let err = expect_err(conv2d_forward(&gpu, &x, &t(&[3, 3, 2, 4]), None, &y, Activation::Relu, &valid), "channels");
    assert!(matches!(err, WgnnError::Shape { .. }), "{err:?}");
    assert_mentions(&err, &["conv2d_forward", "channels", "[2, 5, 5, 3]", "[3, 3, 2, 4]"]);

    let err = expect_err(conv2d_forward(&gpu, &x, &k, None, &t(&[2, 5, 5, 4]), Activation::Relu, &valid), "y");
    assert_mentions(&err, &["conv2d_forward", "y must be [2, 3, 3, 4]", "[2, 5, 5, 4]"]);

    let err = expect_err(conv2d_forward(&gpu, &x, &k, Some(&t(&[3])), &y, Activation::Relu, &valid), "bias");
    assert_mentions(&err, &["conv2d_forward", "bias", "[3]"]);

    let err = expect_err(conv2d_forward(&gpu, &t(&[2, 25, 3]), &k, None, &y, Activation::Relu, &valid), "rank 3");
    assert_mentions(&err, &["conv2d_forward", "[rows, H, W, C_in]", "[2, 25, 3]"]);

    let err = expect_err(conv2d_forward(&gpu, &x, &k, None, &y, Activation::Softmax, &valid), "softmax");
    assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err:?}");

    let labels = Tensor::zeros_u32(&gpu, &[2, 5, 5, 3]).unwrap();
    let err = expect_err(conv2d_forward(&gpu, &labels, &k, None, &y, Activation::Relu, &valid), "u32 x");
    assert!(matches!(err, WgnnError::DType { .. }), "{err:?}");

    // y's view starts 256 bytes in: aligned on every adapter, inside x's 600 bytes.
    let both = t(&[2 * 75]);
    let (xv, yv) = (both.view(0, &[2, 5, 5, 3]).unwrap(), both.view(64, &[2, 3, 3, 4]).unwrap());
    let err = expect_err(conv2d_forward(&gpu, &xv, &k, None, &yv, Activation::Relu, &valid), "overlap");
    assert_mentions(&err, &["conv2d_forward", "share memory"]);

    let same = Conv2dConfig { strides: (1, 1), padding: Padding::Same };
    let huge = t(&[200, 100, 3, 4]);
    let err = expect_err(conv2d_forward(&gpu, &x, &huge, None, &t(&[2, 5, 5, 4]), Activation::Relu, &same), "window");
    assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err:?}");
    assert_mentions(&err, &["conv2d_forward", "200×100", "16384"]);

    let err = expect_err(conv2d_backward_input(&gpu, &t(&[2, 3, 4, 4]), &k, &x, &valid, None), "dz");
    assert_mentions(&err, &["conv2d_backward_input", "dz must be [2, 3, 3, 4]", "[2, 3, 4, 4]"]);
    // A 1×1 kernel keeps the shape: dz and dx can be one tensor.
    let (square, k1) = (t(&[1, 2, 2, 4]), t(&[1, 1, 4, 4]));
    let err = expect_err(conv2d_backward_input(&gpu, &square, &k1, &square, &valid, None), "dx is dz");
    assert_mentions(&err, &["conv2d_backward_input", "share memory"]);
    let err = expect_err(conv2d_backward_weights(&gpu, &x, &y, &t(&[3, 3, 3, 5]), None, &valid), "dkernel");
    assert_mentions(&err, &["conv2d_backward_weights", "[2, 3, 3, 5]"]);
    let err = expect_err(conv2d_backward_weights(&gpu, &x, &y, &k, Some(&t(&[5])), &valid), "dbias");
    assert_mentions(&err, &["conv2d_backward_weights", "dbias", "[5]"]);
    let err = expect_err(conv2d_backward_activation(&gpu, &y, &t(&[2, 3, 3, 5]), &y, Activation::Relu), "act");
    assert_mentions(&err, &["conv2d_backward_activation", "[2, 3, 3, 5]"]);
}
