//! conv2d (im2col + matmul, col2im) against the CPU reference on awkward shapes, the CPU backward
//! by finite differences, a weight gradient summed past lavapipe's loop cap, the patch matrix in
//! chunks on a device with a small binding limit, the patch matrix kept from the forward for the
//! kernel gradient, and bad input as typed errors.

mod common;
use std::sync::OnceLock;

use common::*;
use wgnn::device::GpuOptions;
use wgnn::internals::cpu;
use wgnn::internals::kernels::conv2d::{
    conv2d_backward_activation, conv2d_backward_input, conv2d_backward_weights, conv2d_backward_weights_from_patches,
    conv2d_forward, conv2d_forward_keeping_patches, conv2d_forward_using, conv2d_implicit_applies, conv2d_step_patches,
    Conv2dConfig, Conv2dDims, ConvForwardKernel, ConvPatches, Padding,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Tensor, WgnnError};

/// One convolution to try: x `[rows, h, w, c_in]`, kernel `[kh, kw, c_in, c_out]`.
#[derive(Clone, Copy, Debug)]
struct Case {
    x: [usize; 4],
    kernel: (usize, usize),
    c_out: usize,
    strides: (usize, usize),
    padding: Padding,
}

impl Case {
    fn cfg(&self) -> Conv2dConfig {
        Conv2dConfig { strides: self.strides, padding: self.padding }
    }
    fn kernel_shape(&self) -> [usize; 4] {
        [self.kernel.0, self.kernel.1, self.x[3], self.c_out]
    }
    fn dims(&self) -> Conv2dDims {
        Conv2dDims::new("test", &self.x, &self.kernel_shape(), &self.cfg()).unwrap()
    }
}

const fn case(x: [usize; 4], kernel: (usize, usize), c_out: usize, strides: (usize, usize), padding: Padding) -> Case {
    Case { x, kernel, c_out, strides, padding }
}

/// Odd sizes, strides 1 and 2, 1×1 to 5×5 kernels, C = 1 and 3, batch 1, `same` with even kernels,
/// a kernel as large as the image, a 1×1 kernel at stride 2 (not pointwise), and a patch length
/// (3·3·4 = 36) and channel counts that allow the vec4 and subgroup matmuls, and more.
const CASES: &[Case] = &[
    case([1, 7, 9, 3], (3, 3), 4, (1, 1), Padding::Valid),
    case([2, 7, 9, 1], (5, 5), 3, (2, 2), Padding::Same),
    case([3, 8, 6, 3], (2, 2), 5, (2, 2), Padding::Same),
    case([2, 9, 7, 1], (4, 2), 2, (1, 2), Padding::Same),
    case([2, 5, 5, 3], (1, 1), 8, (1, 1), Padding::Valid),
    case([2, 5, 7, 3], (1, 1), 4, (1, 1), Padding::Same),
    case([2, 6, 5, 4], (1, 1), 4, (2, 2), Padding::Same),
    case([1, 5, 5, 3], (5, 5), 4, (1, 1), Padding::Valid),
    case([2, 11, 11, 4], (3, 3), 8, (1, 1), Padding::Valid),
    case([1, 9, 9, 3], (3, 3), 2, (2, 2), Padding::Valid),
    case([1, 4, 4, 1], (6, 6), 1, (3, 3), Padding::Same),
    // 4, 8 and 16 channels: the vec4 im2col and col2im at the padding's edges; 5: a channel left
    // after groups of 4.
    case([2, 7, 6, 8], (3, 3), 4, (2, 1), Padding::Same),
    case([1, 5, 6, 16], (3, 3), 4, (1, 1), Padding::Same),
    case([1, 6, 5, 5], (2, 3), 3, (1, 1), Padding::Same),
    // Kernel rows too long for one invocation: im2col and col2im split the channels in segments.
    case([1, 3, 3, 2801], (3, 3), 2, (1, 1), Padding::Same),
    case([1, 3, 3, 11_200], (3, 3), 4, (1, 1), Padding::Same),
];

const ACTS: &[Activation] = &[
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Gelu,
    Activation::GeluErf,
];

/// What an activation's forward keeps for its backward, from its input u: act(u), or u itself
/// for the GELUs.
fn saved(act: Activation, u: f32) -> f32 {
    if act.saves_input() {
        u
    } else {
        act.forward(u)
    }
}

fn up(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

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
fn kept_patches_give_the_same_results_without_building_them_twice() {
    // The forward keeps its patch matrix, the kernel gradient reads it: the same y, dkernel and
    // dbias (bit for bit: the same products on the same matrix) and no im2col in the backward.
    // x as its own patch matrix (1×1, stride 1) keeps none.
    let gpu = gpu();
    let mut rng = Rng::new(7);
    for (i, c) in CASES.iter().enumerate() {
        let d = c.dims();
        let Some(patches) = ConvPatches::new(&gpu, &d).unwrap() else {
            assert!(c.kernel == (1, 1) && c.strides == (1, 1), "{c:?} keeps no patches");
            continue;
        };
        let act = ACTS[i % ACTS.len()];
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(c.c_out, -0.5, 0.5);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, kt, bt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &[c.c_out], &b));
        let dzt = up(&gpu, &d.y_shape(), &dz);
        let outputs = || {
            let y = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
            let dk = up(&gpu, &c.kernel_shape(), &vec![7.0; k.len()]);
            (y, dk, up(&gpu, &[c.c_out], &vec![7.0; c.c_out]))
        };
        let (y, dk, db) = outputs();
        let forward = conv2d_forward(&gpu, &xt, &kt, Some(&bt), &y, act, &c.cfg()).unwrap();
        let weights = conv2d_backward_weights(&gpu, &xt, &dzt, &dk, Some(&db), &c.cfg()).unwrap();
        gpu.run(&[&forward, &weights]).unwrap();
        let (kept_y, kept_dk, kept_db) = outputs();
        let forward =
            conv2d_forward_keeping_patches(&gpu, &xt, &kt, Some(&bt), &kept_y, act, &c.cfg(), &patches).unwrap();
        let weights =
            conv2d_backward_weights_from_patches(&gpu, &xt, &patches, &dzt, &kept_dk, Some(&kept_db), &c.cfg())
                .unwrap();
        let labels: Vec<&str> = weights.dispatches.iter().map(|d| d.label.as_str()).collect();
        assert!(!labels.iter().any(|l| l.contains("im2col")), "{c:?}: {labels:?}");
        gpu.run(&[&forward, &weights]).unwrap();
        let what = format!("{c:?} {act:?}");
        assert_eq!(kept_y.to_vec().unwrap(), y.to_vec().unwrap(), "{what} y");
        assert_eq!(kept_dk.to_vec().unwrap(), dk.to_vec().unwrap(), "{what} dkernel");
        assert_eq!(kept_db.to_vec().unwrap(), db.to_vec().unwrap(), "{what} dbias");
        let want = cpu::conv2d_forward(&x, &k, Some(&b), &d, act);
        assert_close(&format!("{what} y"), &kept_y.to_vec().unwrap(), &want, 1e-5, 1e-4);
        let (want_dk, want_db) = cpu::conv2d_backward_weights(&x, &dz, &d);
        assert_close(&format!("{what} dkernel"), &kept_dk.to_vec().unwrap(), &want_dk, 1e-4, 1e-4);
        assert_close(&format!("{what} dbias"), &kept_db.to_vec().unwrap(), &want_db, 1e-4, 1e-4);
    }
}

#[test]
fn a_batch_past_one_grid_dimension_of_rows_runs_in_one_piece() {
    // 128 images of 28×28: a patch matrix of 86,528 rows, more than one grid dimension's 65,535
    // workgroups, kept in one piece (or, where the engine reads the patches in place, none); the
    // products (whichever kernel the engine picks) match the CPU reference.
    let gpu = gpu();
    let c = case([128, 28, 28, 1], (3, 3), 8, (1, 1), Padding::Valid);
    let d = c.dims();
    let patches = conv2d_step_patches(&gpu, &d).unwrap();
    assert!(patches.is_some() || conv2d_implicit_applies(&gpu, &d), "kept in one piece");
    let mut rng = Rng::new(10);
    let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
    let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
    let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
    let (xt, kt, dzt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz));
    let yt = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
    let (dkt, dbt) = (Tensor::zeros(&gpu, &c.kernel_shape()).unwrap(), Tensor::zeros(&gpu, &[c.c_out]).unwrap());
    let (forward, weights) = match &patches {
        Some(kept) => (
            conv2d_forward_keeping_patches(&gpu, &xt, &kt, None, &yt, Activation::Relu, &c.cfg(), kept).unwrap(),
            conv2d_backward_weights_from_patches(&gpu, &xt, kept, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap(),
        ),
        None => (
            conv2d_forward(&gpu, &xt, &kt, None, &yt, Activation::Relu, &c.cfg()).unwrap(),
            conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap(),
        ),
    };
    gpu.run(&[&forward, &weights]).unwrap();
    let want = cpu::conv2d_forward(&x, &k, None, &d, Activation::Relu);
    assert_close("y", &yt.to_vec().unwrap(), &want, 1e-5, 1e-4);
    let (dk, db) = cpu::conv2d_backward_weights(&x, &dz, &d);
    assert_close("dkernel", &dkt.to_vec().unwrap(), &dk, 1e-3, 1e-4);
    assert_close("dbias", &dbt.to_vec().unwrap(), &db, 1e-3, 1e-4);
}

#[test]
fn patches_are_kept_only_in_one_piece_and_only_for_their_own_shapes() {
    let c = case([20, 8, 8, 3], (3, 3), 4, (1, 1), Padding::Same);
    assert!(ConvPatches::new(&small_gpu(), &c.dims()).unwrap().is_none(), "in chunks on the small device");
    let gpu = gpu();
    let patches = ConvPatches::new(&gpu, &c.dims()).unwrap().unwrap();
    assert_eq!(patches.tensor().shape(), [20 * 8 * 8, 28]);
    let other = case([20, 8, 8, 3], (3, 3), 4, (2, 2), Padding::Same);
    let (x, k) = (Tensor::zeros(&gpu, &c.x).unwrap(), Tensor::zeros(&gpu, &c.kernel_shape()).unwrap());
    let y = Tensor::zeros(&gpu, &other.dims().y_shape()).unwrap();
    let err = conv2d_forward_keeping_patches(&gpu, &x, &k, None, &y, Activation::Relu, &other.cfg(), &patches)
        .err()
        .expect("patches of another stride");
    assert!(matches!(err, WgnnError::Shape { .. }), "{err:?}");
    assert!(
        err.to_string().contains("conv2d_forward_keeping_patches") && err.to_string().contains("patches were made")
    );
    let dz = Tensor::zeros(&gpu, &other.dims().y_shape()).unwrap();
    let err = conv2d_backward_weights_from_patches(&gpu, &x, &patches, &dz, &k, None, &other.cfg()).err().unwrap();
    assert!(err.to_string().contains("conv2d_backward_weights_from_patches"), "{err}");
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

const SMALL_BINDING: u64 = 64 << 10;

/// A device whose storage bindings are at most 64 KiB.
fn small_gpu() -> Gpu {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let options = GpuOptions {
        limits: |l| wgpu::Limits { max_storage_buffer_binding_size: SMALL_BINDING, ..l },
        ..Default::default()
    };
    match GPU.get_or_init(|| Gpu::with_options(&options).map_err(|e| e.to_string())) {
        Ok(g) => g.clone(),
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    }
}

#[test]
fn patch_matrix_in_chunks_matches_cpu() {
    // The whole batch's patch matrix passes 64 KiB: chunks of images, one scratch reused. 8×8×4
    // outputs are 1,024 bytes an image, so any chunk keeps y's views aligned (9 images of 6,912
    // bytes a chunk); 3×3×3 ones 108 bytes, so a chunk is a multiple of 8 images where views align
    // to 32 bytes (67 fit, 64 taken), of 64 where they align to 256.
    let gpu = small_gpu();
    let mut rng = Rng::new(6);
    for c in
        [case([20, 8, 8, 3], (3, 3), 4, (1, 1), Padding::Same), case([80, 3, 3, 3], (3, 3), 3, (1, 1), Padding::Same)]
    {
        let d = c.dims();
        let patch_bytes = (d.rows * d.window.ho * d.window.wo * d.patch_len() * 4) as u64;
        assert!(patch_bytes > SMALL_BINDING, "{c:?}: {patch_bytes} bytes would fit");
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(c.c_out, -0.5, 0.5);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, kt, bt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &[c.c_out], &b));
        let dzt = up(&gpu, &d.y_shape(), &dz);
        let yt = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
        let dxt = Tensor::zeros(&gpu, &c.x).unwrap();
        let (dkt, dbt) = (Tensor::zeros(&gpu, &c.kernel_shape()).unwrap(), Tensor::zeros(&gpu, &[c.c_out]).unwrap());
        // The patch matrix's chunks (the engine may pick the direct kernel, which needs none).
        let im2col = ConvForwardKernel::Im2colMatmul;
        let forward =
            conv2d_forward_using(&gpu, &xt, &kt, Some(&bt), &yt, Activation::Relu, &c.cfg(), None, im2col).unwrap();
        let input = conv2d_backward_input(&gpu, &dzt, &kt, &dxt, &c.cfg(), None).unwrap();
        let weights = conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap();
        assert!(forward.len() > 2, "{c:?}: one chunk ({} dispatches)", forward.len());
        gpu.run(&[&forward, &input, &weights]).unwrap();
        let want = cpu::conv2d_forward(&x, &k, Some(&b), &d, Activation::Relu);
        assert_close(&format!("{c:?} y"), &yt.to_vec().unwrap(), &want, 1e-5, 1e-4);
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
    }
}

#[test]
fn patch_matrices_taller_than_a_grid_dimension_are_cut_into_chunks() {
    // A matmul's workgroup covers 4 to 16 rows of the patch matrix (by the device profile's
    // workgroup shapes): on a device whose grid dimensions hold 32 workgroups (128 to 512 rows),
    // 12 images of 7×7 outputs (588 rows) are cut into chunks, and so is a 1×1 convolution over 9
    // images of 8×8 (576 rows), which otherwise reads x as the matrix.
    let options =
        GpuOptions { limits: |l| wgpu::Limits { max_compute_workgroups_per_dimension: 32, ..l }, ..Default::default() };
    common::gpu();
    let gpu = Gpu::with_options(&options).unwrap();
    let mut rng = Rng::new(9);
    for c in
        [case([12, 9, 9, 2], (3, 3), 4, (1, 1), Padding::Valid), case([9, 8, 8, 3], (1, 1), 5, (1, 1), Padding::Valid)]
    {
        let d = c.dims();
        assert!(d.rows * d.window.ho * d.window.wo > 32 * 16, "{c:?}");
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, kt, dzt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz));
        let yt = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
        let dxt = Tensor::zeros(&gpu, &c.x).unwrap();
        let (dkt, dbt) = (Tensor::zeros(&gpu, &c.kernel_shape()).unwrap(), Tensor::zeros(&gpu, &[c.c_out]).unwrap());
        let im2col = ConvForwardKernel::Im2colMatmul;
        let forward =
            conv2d_forward_using(&gpu, &xt, &kt, None, &yt, Activation::Tanh, &c.cfg(), None, im2col).unwrap();
        let products = forward.dispatches.iter().filter(|d| d.label.contains("matmul")).count();
        assert!(products > 1, "{c:?}: one product, not cut into chunks");
        let input = conv2d_backward_input(&gpu, &dzt, &kt, &dxt, &c.cfg(), None).unwrap();
        let weights = conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap();
        gpu.run(&[&forward, &input, &weights]).unwrap();
        let want = cpu::conv2d_forward(&x, &k, None, &d, Activation::Tanh);
        assert_close(&format!("{c:?} y"), &yt.to_vec().unwrap(), &want, 1e-5, 1e-4);
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
    }
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

#[test]
fn a_patch_matrix_past_the_binding_limit_is_a_device_limit_error() {
    // One image's patch matrix, 40·40 positions × 76 (5·5·3 padded to a multiple of 4), is
    // 486,400 bytes: past 64 KiB.
    let gpu = small_gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let same = Conv2dConfig { strides: (1, 1), padding: Padding::Same };
    let (x, k, y) = (t(&[2, 40, 40, 3]), t(&[5, 5, 3, 2]), t(&[2, 40, 40, 2]));
    for (op, result) in [
        ("conv2d_forward", conv2d_forward(&gpu, &x, &k, None, &y, Activation::Relu, &same)),
        ("conv2d_backward_input", conv2d_backward_input(&gpu, &y, &k, &x, &same, None)),
        ("conv2d_backward_weights", conv2d_backward_weights(&gpu, &x, &y, &k, None, &same)),
    ] {
        let err = expect_err(result, op);
        assert!(matches!(err, WgnnError::DeviceLimit { .. }), "{err:?}");
        assert_mentions(
            &err,
            &[op, "patch matrix", "[2, 40, 40, 3]", "[1600, 76]", "486400", &SMALL_BINDING.to_string()],
        );
    }
}
