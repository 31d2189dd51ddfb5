//! The direct forward convolution (shaders/conv2d_direct.wgsl, small patches, no patch matrix)
//! against the CPU reference on awkward shapes, forced whichever kernel the engine would pick; the
//! patch matrix it keeps equal to im2col's bit for bit; and where it does not fit, an error.

mod common;

use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::conv2d::{
    conv2d_direct_fits, conv2d_forward_using, Conv2dConfig, Conv2dDims, ConvForwardKernel, ConvPatches, Padding,
    MAX_DIRECT_CHANNELS, MAX_DIRECT_PATCH,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Tensor};

/// x `[rows, h, w, c_in]`, a kh×kw kernel to c_out channels, strides, padding.
type Case = ([usize; 4], (usize, usize), usize, (usize, usize), Padding);

/// Odd image sizes, C_in 1 to 3, 1×1 (at stride 2) to 5×5 kernels and one as large as the image,
/// `same` with even kernels and strides of 2 and 3, C_out from 4 to the most the kernel takes,
/// and the largest patch it takes (3·3·3); 28×28×1 → 16 is the default CNN's first layer.
const CASES: &[Case] = &[
    ([2, 7, 9, 1], (3, 3), 16, (1, 1), Padding::Valid),
    ([3, 9, 7, 1], (3, 3), 32, (1, 1), Padding::Same),
    ([1, 7, 9, 3], (3, 3), 4, (1, 1), Padding::Valid),
    ([2, 8, 6, 3], (3, 3), MAX_DIRECT_CHANNELS, (2, 2), Padding::Same),
    ([2, 7, 9, 1], (5, 5), 8, (2, 2), Padding::Same),
    ([3, 8, 6, 2], (2, 2), 12, (2, 2), Padding::Same),
    ([2, 9, 7, 1], (4, 2), 4, (1, 2), Padding::Same),
    ([2, 6, 5, 3], (1, 1), 4, (2, 2), Padding::Same),
    ([1, 4, 4, 1], (5, 5), 8, (3, 3), Padding::Same),
    ([1, 5, 5, 1], (5, 5), 4, (1, 1), Padding::Valid),
    ([5, 28, 28, 1], (3, 3), 16, (1, 1), Padding::Valid),
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

#[test]
fn direct_forward_matches_cpu_and_keeps_the_patches_im2col_would() {
    let gpu = gpu();
    let mut rng = Rng::new(24);
    for (i, case) in CASES.iter().enumerate() {
        let (d, cfg) = dims(case);
        assert!(d.patch_len() <= MAX_DIRECT_PATCH, "{case:?}");
        let act = ACTS[i % ACTS.len()];
        let x = rng.vec_uniform(d.x_shape().iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(d.kernel_shape().iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(d.c_out, -0.5, 0.5);
        let (xt, kt, bt) = (up(&gpu, &d.x_shape(), &x), up(&gpu, &d.kernel_shape(), &k), up(&gpu, &[d.c_out], &b));
        for with_bias in [true, false] {
            let bias = with_bias.then_some(&bt);
            let what = format!("{case:?} {act:?} bias={with_bias}");
            let yt = up(&gpu, &d.y_shape(), &vec![7.0; d.y_shape().iter().product()]);
            assert!(conv2d_direct_fits(&d, &kt, bias, &yt), "{what}");
            let plan =
                conv2d_forward_using(&gpu, &xt, &kt, bias, &yt, act, &cfg, None, ConvForwardKernel::Direct).unwrap();
            let labels: Vec<&str> = plan.dispatches.iter().map(|d| d.label.as_str()).collect();
            assert_eq!(labels, ["conv2d_direct::conv2d_direct"], "{what}");
            gpu.run(&[&plan]).unwrap();
            let want = cpu::conv2d_forward(&x, &k, with_bias.then_some(&b[..]), &d, act);
            assert_close(&what, &yt.to_vec().unwrap(), &want, 1e-5, 1e-4);
        }
        // Kept patches: the same matrix as im2col's (bit for bit: both copy x), and the same y
        // within the reference's tolerance (the sums run in another order).
        let Some(direct_patches) = ConvPatches::new(&gpu, &d).unwrap() else {
            continue;
        };
        let im2col_patches = ConvPatches::new(&gpu, &d).unwrap().unwrap();
        let (y_direct, y_im2col) =
            (Tensor::zeros(&gpu, &d.y_shape()).unwrap(), Tensor::zeros(&gpu, &d.y_shape()).unwrap());
        let runs = [
            (&y_direct, &direct_patches, ConvForwardKernel::Direct),
            (&y_im2col, &im2col_patches, ConvForwardKernel::Im2colMatmul),
        ];
        for (y, patches, using) in runs {
            let plan = conv2d_forward_using(&gpu, &xt, &kt, Some(&bt), y, act, &cfg, Some(patches), using).unwrap();
            gpu.run(&[&plan]).unwrap();
        }
        let what = format!("{case:?} {act:?} kept");
        assert_eq!(direct_patches.tensor().to_vec().unwrap(), im2col_patches.tensor().to_vec().unwrap(), "{what}");
        assert_close(&what, &y_direct.to_vec().unwrap(), &y_im2col.to_vec().unwrap(), 1e-5, 1e-4);
    }
}

#[test]
fn shapes_the_direct_kernel_does_not_take_are_errors_when_forced() {
    let gpu = gpu();
    let too_long = ([1, 5, 5, 4], (3, 3), 8, (1, 1), Padding::Valid); // 36-value patch
    let odd_channels = ([1, 5, 5, 1], (3, 3), 6, (1, 1), Padding::Valid);
    let too_many = ([1, 5, 5, 1], (3, 3), MAX_DIRECT_CHANNELS + 4, (1, 1), Padding::Valid);
    for case in [too_long, odd_channels, too_many] {
        let (d, cfg) = dims(&case);
        let (x, k) = (Tensor::zeros(&gpu, &d.x_shape()).unwrap(), Tensor::zeros(&gpu, &d.kernel_shape()).unwrap());
        let y = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
        assert!(!conv2d_direct_fits(&d, &k, None, &y), "{case:?}");
        let err = conv2d_forward_using(&gpu, &x, &k, None, &y, Activation::Relu, &cfg, None, ConvForwardKernel::Direct)
            .err()
            .unwrap_or_else(|| panic!("{case:?} ran"));
        let text = err.to_string();
        assert!(text.contains("conv2d_forward_using") && text.contains(&format!("{:?}", d.kernel_shape())), "{text}");
    }
}
