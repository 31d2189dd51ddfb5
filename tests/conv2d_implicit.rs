//! The implicit-GEMM convolution (the subgroup matmul reading x's patches in place,
//! src/kernels/conv2d_implicit.rs) against the CPU reference on awkward shapes: forced, where it
//! runs on this adapter, and an error where it does not; and the engine's own pick (whichever
//! kernel that is) for the forward and the kernel gradient; the same for the input gradient at
//! stride 1 (dz zero-padded, the kernel turned 180°).

mod common;

use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::conv2d::{
    conv2d_backward_input, conv2d_backward_input_kernel, conv2d_backward_input_using, conv2d_backward_weights,
    conv2d_forward, conv2d_forward_kernel, conv2d_forward_using, conv2d_implicit_applies, conv2d_implicit_input_fits,
    conv2d_implicit_runs, conv2d_step_patches, Conv2dConfig, Conv2dDims, ConvForwardKernel, ConvInputGradKernel,
    Padding,
};
use wgnn::internals::kernels::matmul::subgroup_k_halves;
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Tensor};

/// x `[rows, h, w, c_in]`, a kh×kw kernel to c_out channels, strides, padding.
type Case = ([usize; 4], (usize, usize), usize, (usize, usize), Padding);

/// Odd image sizes, 1 and 7 rows, C_in 4 to 16, C_out 4 to 32, 1×1 at stride 2 (`same` that pads
/// nothing), 2×3 at stride 2, a window as large as the image, and the default CNN's second layer
/// at batch 64 (K of the kernel gradient split); C_in 1 and 3 (each vec4 of a patch gathered, K
/// padded to a multiple of 4); then shapes it does not take (1 and 5 filters, padding), which
/// the engine runs on the patch path; last, the default CNN's first layer at batch 64 (on a CPU
/// adapter its forward and kernel gradient take the subgroup kernel's 4-lane halves).
const CASES: &[Case] = &[
    ([1, 7, 9, 4], (3, 3), 4, (1, 1), Padding::Valid),
    ([7, 9, 7, 16], (3, 3), 32, (1, 1), Padding::Valid),
    ([7, 6, 6, 12], (3, 3), 16, (1, 1), Padding::Valid),
    ([3, 9, 11, 8], (2, 3), 8, (2, 2), Padding::Valid),
    ([2, 7, 7, 4], (1, 1), 12, (2, 2), Padding::Same),
    ([1, 5, 5, 16], (5, 5), 32, (1, 1), Padding::Valid),
    ([4, 13, 13, 16], (3, 3), 32, (1, 1), Padding::Valid),
    ([64, 13, 13, 16], (3, 3), 32, (1, 1), Padding::Valid),
    ([2, 7, 9, 1], (3, 3), 16, (1, 1), Padding::Valid),
    ([2, 7, 9, 3], (3, 3), 8, (1, 1), Padding::Valid),
    ([2, 7, 9, 16], (3, 3), 1, (1, 1), Padding::Valid),
    ([2, 7, 9, 16], (3, 3), 5, (1, 1), Padding::Valid),
    ([4, 8, 6, 4], (3, 3), 4, (1, 1), Padding::Same),
    ([64, 28, 28, 1], (3, 3), 16, (1, 1), Padding::Valid),
];

const ACTS: &[Activation] =
    &[Activation::Identity, Activation::Relu, Activation::LeakyRelu(0.1), Activation::Sigmoid, Activation::Tanh];

fn up(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

fn dims(&(x, (kh, kw), c_out, strides, padding): &Case) -> (Conv2dDims, Conv2dConfig) {
    let cfg = Conv2dConfig { strides, padding };
    (Conv2dDims::new("test", &x, &[kh, kw, x[3], c_out], &cfg).unwrap(), cfg)
}

fn labels(plan: &wgnn::Plan) -> Vec<String> {
    plan.dispatches.iter().map(|d| d.label.clone()).collect()
}

#[test]
fn forced_implicit_forward_matches_cpu_where_it_runs_and_is_an_error_elsewhere() {
    let gpu = gpu();
    let mut rng = Rng::new(25);
    let mut ran = 0;
    for (i, case) in CASES.iter().enumerate() {
        let (d, cfg) = dims(case);
        let act = ACTS[i % ACTS.len()];
        let x = rng.vec_uniform(d.x_shape().iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(d.kernel_shape().iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(d.c_out, -0.5, 0.5);
        let (xt, kt, bt) = (up(&gpu, &d.x_shape(), &x), up(&gpu, &d.kernel_shape(), &k), up(&gpu, &[d.c_out], &b));
        for with_bias in [true, false] {
            let bias = with_bias.then_some(&bt);
            let what = format!("{case:?} {act:?} bias={with_bias}");
            let yt = up(&gpu, &d.y_shape(), &vec![7.0; d.y_shape().iter().product()]);
            match conv2d_forward_using(&gpu, &xt, &kt, bias, &yt, act, &cfg, None, ConvForwardKernel::Implicit) {
                Ok(plan) => {
                    let l = labels(&plan);
                    let in_place = l.iter().any(|l| l.starts_with("matmul_conv"));
                    assert!(in_place && !l.iter().any(|l| l.contains("im2col")), "{what}: {l:?}");
                    gpu.run(&[&plan]).unwrap();
                    let want = cpu::conv2d_forward(&x, &k, with_bias.then_some(&b[..]), &d, act);
                    assert_close(&what, &yt.to_vec().unwrap(), &want, 1e-5, 1e-4);
                    ran += 1;
                }
                Err(e) => {
                    assert!(!conv2d_implicit_runs(&gpu, &xt, &d), "{what}: {e}");
                    let text = e.to_string();
                    assert!(text.contains("conv2d_forward_using") && text.contains("implicit"), "{what}: {text}");
                }
            }
        }
    }
    println!("forced implicit forward ran in {ran} of {} cases", 2 * CASES.len());
}

#[test]
fn the_engines_forward_and_kernel_gradient_match_cpu_whichever_kernel_it_picks() {
    let gpu = gpu();
    let mut rng = Rng::new(26);
    for (i, case) in CASES.iter().enumerate() {
        let (d, cfg) = dims(case);
        let act = ACTS[(i + 2) % ACTS.len()];
        let x = rng.vec_uniform(d.x_shape().iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(d.kernel_shape().iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(d.c_out, -0.5, 0.5);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, kt, bt) = (up(&gpu, &d.x_shape(), &x), up(&gpu, &d.kernel_shape(), &k), up(&gpu, &[d.c_out], &b));
        let dzt = up(&gpu, &d.y_shape(), &dz);
        let implicit = conv2d_implicit_applies(&gpu, &d) && conv2d_implicit_runs(&gpu, &xt, &d);
        // Where the engine reads the patches in place, a training step keeps none.
        assert_eq!(implicit, conv2d_implicit_applies(&gpu, &d) && conv2d_step_patches(&gpu, &d).unwrap().is_none());
        let yt = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
        let forward = conv2d_forward(&gpu, &xt, &kt, Some(&bt), &yt, act, &cfg).unwrap();
        let (dkt, dbt) =
            (up(&gpu, &d.kernel_shape(), &vec![3.0; k.len()]), up(&gpu, &[d.c_out], &[3.0; 32][..d.c_out]));
        let weights = conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &cfg).unwrap();
        let dk_only = Tensor::zeros(&gpu, &d.kernel_shape()).unwrap();
        let weights_only = conv2d_backward_weights(&gpu, &xt, &dzt, &dk_only, None, &cfg).unwrap();
        let what = format!("{case:?} {act:?}");
        if conv2d_forward_kernel(&gpu, &d, &kt, Some(&bt), &yt) == ConvForwardKernel::Implicit {
            assert!(labels(&forward).iter().any(|l| l.starts_with("matmul_conv")), "{what}: {:?}", labels(&forward));
        }
        if implicit {
            for plan in [&weights, &weights_only] {
                let reads_in_place = labels(plan).iter().any(|l| l.starts_with("matmul_conv"));
                assert!(
                    reads_in_place && !labels(plan).iter().any(|l| l.contains("im2col")),
                    "{what}: {:?}",
                    labels(plan)
                );
            }
        }
        gpu.run(&[&forward, &weights, &weights_only]).unwrap();
        assert_close(&what, &yt.to_vec().unwrap(), &cpu::conv2d_forward(&x, &k, Some(&b), &d, act), 1e-5, 1e-4);
        let (want_dk, want_db) = cpu::conv2d_backward_weights(&x, &dz, &d);
        assert_close(&format!("{what} dkernel"), &dkt.to_vec().unwrap(), &want_dk, 1e-3, 1e-4);
        assert_close(&format!("{what} dbias"), &dbt.to_vec().unwrap(), &want_db, 1e-3, 1e-4);
        assert_close(&format!("{what} dkernel alone"), &dk_only.to_vec().unwrap(), &want_dk, 1e-3, 1e-4);
    }
}

/// Input-gradient shapes beside [`CASES`]: `same` with even and uneven windows (more padding
/// after than before), windows wider than the image's padding, C_out not a multiple of 4 (the
/// padded dz's extra channels), one image, C_in 32 and 36 (where the engine picks it on a CPU
/// adapter).
const INPUT_CASES: &[Case] = &[
    ([2, 6, 5, 32], (3, 3), 8, (1, 1), Padding::Same),
    ([3, 7, 7, 36], (3, 2), 12, (1, 1), Padding::Valid),
    ([3, 7, 8, 8], (2, 2), 6, (1, 1), Padding::Same),
    ([2, 6, 7, 4], (4, 3), 8, (1, 1), Padding::Same),
    ([1, 5, 9, 12], (5, 5), 3, (1, 1), Padding::Same),
    ([2, 9, 5, 8], (1, 3), 10, (1, 1), Padding::Valid),
    ([5, 4, 4, 4], (3, 3), 7, (1, 1), Padding::Same),
];

#[test]
fn forced_implicit_input_gradient_matches_cpu_where_it_runs_and_is_an_error_elsewhere() {
    let gpu = gpu();
    let mut rng = Rng::new(27);
    let mut ran = 0;
    for (i, case) in CASES.iter().chain(INPUT_CASES).enumerate() {
        let (d, cfg) = dims(case);
        let k = rng.vec_uniform(d.kernel_shape().iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        // The layer below's output (an activation whose derivative multiplies dx), every other case.
        let act = ACTS[i % ACTS.len()];
        let below = rng.vec_uniform(d.x_shape().iter().product(), -1.0, 1.0);
        let below = below.iter().map(|&v| act.forward(v)).collect::<Vec<_>>();
        let (kt, dzt, bt) =
            (up(&gpu, &d.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz), up(&gpu, &d.x_shape(), &below));
        let with_below = i % 2 == 0;
        let what = format!("{case:?} below={}", if with_below { format!("{act:?}") } else { "none".into() });
        let dxt = up(&gpu, &d.x_shape(), &vec![7.0; d.x_shape().iter().product()]);
        let gpu_below = with_below.then_some((&bt, act));
        match conv2d_backward_input_using(&gpu, &dzt, &kt, &dxt, &cfg, gpu_below, ConvInputGradKernel::Implicit) {
            Ok(plan) => {
                let l = labels(&plan);
                let pointwise = case.1 == (1, 1) && case.3 == (1, 1);
                assert!(
                    pointwise
                        || (l.iter().any(|l| l.starts_with("matmul_conv")) && !l.iter().any(|l| l.contains("col2im"))),
                    "{what}: {l:?}"
                );
                gpu.run(&[&plan]).unwrap();
                let cpu_below = with_below.then_some((&below[..], act));
                let want = cpu::conv2d_backward_input(&dz, &k, &d, cpu_below);
                assert_close(&what, &dxt.to_vec().unwrap(), &want, 1e-5, 1e-4);
                ran += 1;
            }
            Err(e) => {
                assert!(!conv2d_implicit_input_fits(&gpu, &d), "{what}: {e}");
                let text = e.to_string();
                assert!(text.contains("conv2d_backward_input_using") && text.contains("implicit"), "{what}: {text}");
            }
        }
    }
    println!("forced implicit input gradient ran in {ran} of {} cases", CASES.len() + INPUT_CASES.len());
}

#[test]
fn the_engines_input_gradient_matches_cpu_whichever_kernel_it_picks() {
    let gpu = gpu();
    let mut rng = Rng::new(28);
    let mut implicit = 0;
    for case in CASES.iter().chain(INPUT_CASES) {
        let (d, cfg) = dims(case);
        let k = rng.vec_uniform(d.kernel_shape().iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (kt, dzt) = (up(&gpu, &d.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz));
        let dxt = Tensor::zeros(&gpu, &d.x_shape()).unwrap();
        let plan = conv2d_backward_input(&gpu, &dzt, &kt, &dxt, &cfg, None).unwrap();
        let what = format!("{case:?}");
        let picked = conv2d_backward_input_kernel(&gpu, &d);
        // The engine reads dz's patches in place only where that runs, and then writes no dcol.
        assert!(picked == ConvInputGradKernel::Col2im || conv2d_implicit_input_fits(&gpu, &d), "{what}");
        if picked == ConvInputGradKernel::Implicit && case.1 != (1, 1) {
            implicit += 1;
            assert!(!labels(&plan).iter().any(|l| l.contains("col2im")), "{what}: {:?}", labels(&plan));
        }
        gpu.run(&[&plan]).unwrap();
        assert_close(&what, &dxt.to_vec().unwrap(), &cpu::conv2d_backward_input(&dz, &k, &d, None), 1e-5, 1e-4);
    }
    println!(
        "the engine picked the implicit input gradient in {implicit} of {} cases",
        CASES.len() + INPUT_CASES.len()
    );
}

#[test]
fn small_kernels_gradients_take_the_k_halves_and_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(28);
    // dK = patches(x)ᵀ·dz with a patch of at most 32 values (one tile of rows, below every
    // split-K target) and at most 16 filters: the subgroup kernel's two halves of 4 lanes take
    // alternate K chunks. Positions (a multiple of 4, as the implicit kernel gradient needs) from
    // a few chunks to a split K; C_in 1 (the patch gathered by scalars, K padded) and 4.
    let cases: [Case; 3] = [
        ([2, 8, 9, 1], (3, 3), 16, (1, 1), Padding::Valid),
        ([3, 9, 8, 4], (2, 2), 12, (1, 1), Padding::Valid),
        ([40, 28, 28, 1], (3, 3), 8, (1, 1), Padding::Valid),
    ];
    for case in &cases {
        let (d, cfg) = dims(case);
        let positions = d.rows * d.window.ho * d.window.wo;
        let x = rng.vec_uniform(d.x_shape().iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, dzt) = (up(&gpu, &d.x_shape(), &x), up(&gpu, &d.y_shape(), &dz));
        let runs = conv2d_implicit_applies(&gpu, &d) && conv2d_implicit_runs(&gpu, &xt, &d);
        if gpu.profile().matmul.prefer_subgroup && gpu.profile().matmul.subgroup_kernel {
            assert!(runs, "{case:?}: the implicit kernel gradient should run");
        }
        assert!(subgroup_k_halves(&gpu, d.patch_len().next_multiple_of(4), d.c_out, positions), "{case:?}");
        let (dkt, dbt) = (Tensor::zeros(&gpu, &d.kernel_shape()).unwrap(), Tensor::zeros(&gpu, &[d.c_out]).unwrap());
        gpu.run(&[&conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &cfg).unwrap()]).unwrap();
        let (want_dk, want_db) = cpu::conv2d_backward_weights(&x, &dz, &d);
        let tol = 1e-5 * (positions as f32).sqrt();
        assert_close(&format!("{case:?} dkernel"), &dkt.to_vec().unwrap(), &want_dk, tol, 1e-4);
        assert_close(&format!("{case:?} dbias"), &dbt.to_vec().unwrap(), &want_db, tol, 1e-4);
    }
}
