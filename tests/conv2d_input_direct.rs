//! The direct input gradient of a convolution (src/kernels/conv2d_input_direct.rs) against the CPU
//! reference on awkward shapes, forced where it runs (with and without the activation below), an
//! error where it does not; and the engine's own input gradient (whichever kernel that is) on the
//! same shapes.

mod common;

use common::conv_cases::{assert_mentions, case, expect_err, saved, up, Case, ACTS};
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::conv2d::{
    conv2d_backward_input, conv2d_backward_input_using, conv2d_input_direct_fits, ConvInputKernel, Padding,
};
use wgnn::internals::rng::Rng;
use wgnn::Tensor;

/// Odd image sizes, 1 and 7 rows, C_in 1, 3, 5, 8, 12 and 16, 4 to 32 filters, 1×1 to 5×5
/// kernels, strides 1 and 2, valid and same padding; then 1 and 5 filters and 17 channels, which
/// the direct kernel does not take. Few and small: each shape is a pipeline whose unrolled shader
/// takes seconds to compile on lavapipe.
const CASES: &[Case] = &[
    case([1, 7, 9, 1], (3, 3), 4, (1, 1), Padding::Valid),
    case([7, 9, 7, 3], (3, 3), 8, (1, 1), Padding::Valid),
    case([2, 7, 7, 12], (2, 2), 32, (1, 1), Padding::Valid),
    case([2, 9, 11, 16], (5, 5), 4, (2, 2), Padding::Same),
    case([3, 8, 7, 3], (2, 3), 12, (2, 1), Padding::Same),
    case([2, 6, 5, 8], (1, 1), 4, (2, 2), Padding::Same),
    case([1, 5, 7, 5], (3, 1), 16, (1, 2), Padding::Same),
    case([2, 7, 7, 16], (3, 3), 1, (1, 1), Padding::Valid),
    case([1, 7, 9, 3], (3, 3), 5, (1, 1), Padding::Same),
    case([1, 6, 6, 17], (3, 3), 4, (1, 1), Padding::Valid),
];

#[test]
fn direct_input_gradient_matches_cpu_where_it_runs() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let mut ran = 0;
    for (i, c) in CASES.iter().enumerate() {
        let d = c.dims();
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (kt, dzt) = (up(&gpu, &c.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz));
        let dxt = up(&gpu, &c.x, &vec![7.0; c.x.iter().product()]);
        let fits = conv2d_input_direct_fits(&d, &dzt, &kt);
        assert_eq!(fits, c.x[3] <= 16 && c.c_out % 4 == 0, "{c:?}: where the direct kernel runs");
        let forced = conv2d_backward_input_using(&gpu, &dzt, &kt, &dxt, &c.cfg(), None, ConvInputKernel::Direct);
        if !fits {
            let err = expect_err(forced, &format!("{c:?}"));
            assert_mentions(&err, &["conv2d_backward_input_using", "direct input gradient", "16 input channels"]);
            continue;
        }
        gpu.run(&[&forced.unwrap()]).unwrap();
        let want = cpu::conv2d_backward_input(&dz, &k, &d, None);
        assert_close(&format!("{c:?} dx"), &dxt.to_vec().unwrap(), &want, 1e-5, 1e-4);
        // Through the activation below: x as what it saved, whose derivative multiplies dx.
        let act = ACTS[1 + i % (ACTS.len() - 1)];
        let x: Vec<f32> = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0).into_iter().map(|u| saved(act, u)).collect();
        let xt = up(&gpu, &c.x, &x);
        let plan =
            conv2d_backward_input_using(&gpu, &dzt, &kt, &dxt, &c.cfg(), Some((&xt, act)), ConvInputKernel::Direct);
        gpu.run(&[&plan.unwrap()]).unwrap();
        let want = cpu::conv2d_backward_input(&dz, &k, &d, Some((&x, act)));
        assert_close(&format!("{c:?} {act:?} dx"), &dxt.to_vec().unwrap(), &want, 1e-5, 1e-4);
        ran += 1;
    }
    assert_eq!(ran, 7, "the shapes the direct kernel takes");
}

#[test]
fn the_engines_input_gradient_matches_cpu_on_the_same_shapes() {
    let gpu = gpu();
    let mut rng = Rng::new(32);
    for c in CASES {
        let d = c.dims();
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (kt, dzt) = (up(&gpu, &c.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz));
        let dxt = up(&gpu, &c.x, &vec![7.0; c.x.iter().product()]);
        for using in [None, Some(ConvInputKernel::Patches)] {
            let plan = match using {
                None => conv2d_backward_input(&gpu, &dzt, &kt, &dxt, &c.cfg(), None),
                Some(u) => conv2d_backward_input_using(&gpu, &dzt, &kt, &dxt, &c.cfg(), None, u),
            };
            gpu.run(&[&plan.unwrap()]).unwrap();
            let want = cpu::conv2d_backward_input(&dz, &k, &d, None);
            assert_close(&format!("{c:?} {using:?} dx"), &dxt.to_vec().unwrap(), &want, 1e-5, 1e-4);
            Tensor::write(&dxt, &vec![7.0; c.x.iter().product()]).unwrap();
        }
    }
}
