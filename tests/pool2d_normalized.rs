//! Max pooling of a training batch norm's output computed on the way
//! (`max_pool2d_forward_normalized`, shaders/pool2d_normalized.wgsl) against the two passes it
//! replaces (the batch norm's training forward, then `max_pool2d_forward`): the same y and argmax
//! to the bit, on awkward shapes, every element-wise activation, C a multiple of 4 or not,
//! overlapping windows, ties and a NaN; against the CPU reference; bad input as typed errors.

mod common;

use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::batch_norm::{batch_norm_forward_train, BatchNormConfig};
use wgnn::internals::kernels::pool2d::{max_pool2d_forward, Padding, Pool2dConfig, Pool2dDims};
use wgnn::internals::kernels::pool2d_normalized::{max_pool2d_forward_normalized, ChannelNorm};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Tensor};

fn up(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

/// Odd sizes, pool 2 (tiles), 3 at stride 2 with `same` (overlapping windows), C 1, 3, 4, 16.
fn cases() -> Vec<([usize; 4], Pool2dConfig)> {
    let same = |pool, strides| Pool2dConfig { pool_size: pool, strides: Some(strides), padding: Padding::Same };
    vec![
        ([2, 7, 9, 3], Pool2dConfig::new((2, 2))),
        ([3, 6, 6, 16], Pool2dConfig::new((2, 2))),
        ([1, 9, 7, 4], same((3, 3), (2, 2))),
        ([4, 5, 5, 1], Pool2dConfig::new((2, 2))),
        ([2, 8, 6, 8], same((2, 2), (2, 2))),
    ]
}

const ACTS: &[Activation] = &[
    Activation::Relu,
    Activation::Identity,
    Activation::LeakyRelu(0.1),
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::GeluErf,
];

/// The batch's statistics and γ, β on the GPU, and the batch norm's output h: (stats, h).
struct Normed {
    gamma: Tensor,
    beta: Tensor,
    mean: Tensor,
    inv_std: Tensor,
    h: Tensor,
}

fn batch_norm(gpu: &Gpu, rng: &mut Rng, x: &Tensor, channels: usize, act: Activation) -> Normed {
    let per = |rng: &mut Rng, lo, hi| up(gpu, &[channels], &rng.vec_uniform(channels, lo, hi));
    let (gamma, beta) = (per(rng, 0.5, 1.5), per(rng, -0.5, 0.5));
    let zeros = || Tensor::zeros(gpu, &[channels]).unwrap();
    let (mean, inv_std, running_mean, running_var) = (zeros(), zeros(), zeros(), zeros());
    let rows = x.len() / channels;
    let (x2, h) = (x.reshape(&[rows, channels]).unwrap(), Tensor::zeros(gpu, &[rows, channels]).unwrap());
    let cfg = BatchNormConfig::default();
    let plan =
        batch_norm_forward_train(gpu, &x2, &gamma, &beta, &h, &mean, &inv_std, &running_mean, &running_var, &cfg, act)
            .unwrap();
    gpu.run(&[&plan]).unwrap();
    Normed { gamma, beta, mean, inv_std, h }
}

#[test]
fn one_pass_gives_the_two_passes_y_and_argmax_to_the_bit_and_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    for (i, (shape, c)) in cases().into_iter().enumerate() {
        for (j, &act) in ACTS.iter().enumerate() {
            let d = Pool2dDims::new("test", &shape, &c).unwrap();
            let mut x = rng.vec_uniform(shape.iter().product(), -2.0, 2.0);
            // Ties in a window, and in some cases a NaN (its channel's statistics become NaN too).
            x[1] = x[0];
            let nan = (i + j) % 4 == 0;
            if nan {
                let third = x.len() / 3;
                x[third] = f32::NAN;
            }
            let xt = up(&gpu, &shape, &x);
            let n = batch_norm(&gpu, &mut rng, &xt, shape[3], act);
            let (y2, a2) = (Tensor::zeros(&gpu, &d.y_shape()).unwrap(), Tensor::zeros_u32(&gpu, &d.y_shape()).unwrap());
            let two = max_pool2d_forward(&gpu, &n.h.reshape(&shape).unwrap(), &y2, &a2, &c).unwrap();
            let (y1, a1) =
                (up(&gpu, &d.y_shape(), &vec![7.0; y2.len()]), Tensor::zeros_u32(&gpu, &d.y_shape()).unwrap());
            let norm = ChannelNorm { gamma: &n.gamma, beta: &n.beta, mean: &n.mean, inv_std: &n.inv_std };
            let one = max_pool2d_forward_normalized(&gpu, &xt, &norm, &y1, &a1, &c, act).unwrap();
            gpu.run(&[&two, &one]).unwrap();
            let what = format!("{shape:?} {c:?} {act:?}");
            let bits = |t: &Tensor| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y1), bits(&y2), "{what}: y");
            assert_eq!(a1.to_vec_u32().unwrap(), a2.to_vec_u32().unwrap(), "{what}: argmax");
            if nan {
                // The NaN poisons its channel's statistics: the bits above are the check.
                continue;
            }
            let host = |t: &Tensor| t.to_vec().unwrap();
            let (gamma, beta, mean, inv_std) = (host(&n.gamma), host(&n.beta), host(&n.mean), host(&n.inv_std));
            let cpu_norm = ChannelNorm { gamma: &gamma[..], beta: &beta[..], mean: &mean[..], inv_std: &inv_std[..] };
            let (want_y, want_a) = cpu::max_pool2d_forward_normalized(&x, &cpu_norm, &d, act);
            assert_close(&what, &y1.to_vec().unwrap(), &want_y, 1e-5, 1e-5);
            let agree = want_a.iter().zip(a1.to_vec_u32().unwrap()).filter(|(w, g)| **w == *g).count();
            // Near-ties may round apart between the CPU and the GPU; nearly every argmax agrees.
            assert!(agree * 100 >= want_a.len() * 95, "{what}: {agree} of {} argmaxes agree", want_a.len());
        }
    }
}

#[test]
fn bad_input_is_an_error_naming_the_op_and_the_shapes() {
    let gpu = gpu();
    let c = Pool2dConfig::new((2, 2));
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let (x, y, a) = (t(&[2, 4, 6, 3]), t(&[2, 2, 3, 3]), Tensor::zeros_u32(&gpu, &[2, 2, 3, 3]).unwrap());
    let (ok, short) = (t(&[3]), t(&[2]));
    let norm = ChannelNorm { gamma: &ok, beta: &ok, mean: &short, inv_std: &ok };
    let Err(e) = max_pool2d_forward_normalized(&gpu, &x, &norm, &y, &a, &c, Activation::Relu) else {
        panic!("a mean of 2 values for 3 channels was taken")
    };
    let text = e.to_string();
    assert!(text.contains("max_pool2d_forward_normalized") && text.contains("mean"), "{text}");
    let norm = ChannelNorm { gamma: &ok, beta: &ok, mean: &ok, inv_std: &ok };
    let Err(e) = max_pool2d_forward_normalized(&gpu, &x, &norm, &t(&[2, 2, 2, 3]), &a, &c, Activation::Relu) else {
        panic!("a y of the wrong shape was taken")
    };
    let text = e.to_string();
    assert!(text.contains("max_pool2d_forward_normalized") && text.contains("y must be"), "{text}");
    let Err(e) = max_pool2d_forward_normalized(&gpu, &x, &norm, &y, &a, &c, Activation::Softmax) else {
        panic!("softmax, not element-wise, was taken")
    };
    assert!(e.to_string().contains("max_pool2d_forward_normalized"), "{e}");
}
