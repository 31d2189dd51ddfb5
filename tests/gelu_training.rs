//! GELU layers in training: the step keeps a GELU's input z, and every backward path that
//! applies act′ (a matmul's or col2im's input gradient, the activation's own dispatch, batch
//! norm's, a residual sum's) reads z, not the output. The GPU step against the CPU reference,
//! fused and unfused, in an MLP, a CNN and a residual branch; the gradient through a GELU layer
//! against finite differences.

mod common;

use common::fusion::check_fusion;
use common::{assert_close, backends, synthetic};
use wgnn::model::{FitOptions, Loss, Optimizer, Sequential};
use wgnn::Activation::{Gelu, GeluErf, Identity, Relu};

#[test]
fn a_gelu_mlp_trains_like_the_reference_fused_and_unfused() {
    // A GELU in a dense epilogue (read by the next matmul's input gradient), as an activation
    // layer of its own, after batch norm, before dropout, and on the output under mean squared
    // error. 37 rows in batches of 16: a tail of 5.
    let data = synthetic(37, 9, 4, 3);
    for gelu in [Gelu, GeluErf] {
        let build = || {
            Sequential::new(9, 7)
                .dense(12, gelu)
                .dense(10, Identity)
                .activation(gelu)
                .dense(8, Identity)
                .batch_norm()
                .activation(gelu)
                .dropout(0.2)
                .dense(4, Identity)
        };
        let opts = FitOptions { epochs: 2, batch_size: 16, ..Default::default() };
        check_fusion(&format!("{gelu:?} mlp"), &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
        let build = || Sequential::new(9, 2).dense(6, Relu).dense(4, gelu);
        let targets = data.clone().with_targets(data.one_hot(4).unwrap(), 4).unwrap();
        check_fusion(&format!("{gelu:?} output, mse"), &build, &targets, Loss::MeanSquaredError, &opts);
    }
}

#[test]
fn a_gelu_cnn_trains_like_the_reference_fused_and_unfused() {
    // A GELU in a convolution's epilogue below another convolution (col2im's act′) and below
    // max pooling (its backward's act′), on odd 7×5 images.
    let data = synthetic(22, 7 * 5 * 2, 3, 8).with_sample_shape(&[7, 5, 2]).unwrap();
    let build = || {
        Sequential::new([7, 5, 2], 4)
            .conv2d_same(4, (3, 3), Gelu)
            .conv2d_same(3, (3, 3), GeluErf)
            .max_pool2d((2, 2))
            .flatten()
            .dense(3, Identity)
    };
    let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
    check_fusion("gelu cnn", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
}

#[test]
fn a_gelu_in_a_residual_branch_trains_like_the_reference() {
    // A GELU on a fork (its readers' gradients summed before its act′), inside the branch, and
    // after the sum (the sum's epilogue).
    let data = synthetic(30, 7, 3, 5);
    let build = || {
        Sequential::new(7, 3)
            .dense(6, Gelu)
            .residual(|b| b.dense(5, GeluErf).dense(6, Identity))
            .activation(Gelu)
            .dense(3, Identity)
    };
    let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
    check_fusion("gelu residual", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
}

#[test]
fn the_gradient_through_gelu_layers_matches_finite_differences() {
    // One SGD step over the whole batch moves each parameter by −lr·∂L/∂p: the weights below
    // each GELU (in the dense epilogue, and as a layer of its own) against central differences
    // of the evaluated loss.
    let data = synthetic(12, 5, 3, 4);
    for backend in backends() {
        for fused in [true, false] {
            let build = || {
                Sequential::new(5, 9)
                    .dense(6, Gelu)
                    .dense(4, Identity)
                    .activation(GeluErf)
                    .dense(3, Identity)
                    .fused(fused)
                    .build(&backend)
                    .unwrap()
            };
            let lr = 0.5;
            let mut model = build();
            model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(lr, 0.0)).unwrap();
            let before = model.weights().unwrap();
            let opts = FitOptions { epochs: 1, batch_size: 12, shuffle: false, ..Default::default() };
            model.fit(&data, &opts).unwrap();
            let after = model.weights().unwrap();
            let mut probe = build();
            probe.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(lr, 0.0)).unwrap();
            for layer in [0, 1] {
                for (part, pick) in [("dW", 0), ("db", 1)] {
                    let get = |w: &(Vec<f32>, Vec<f32>)| if pick == 0 { w.0.clone() } else { w.1.clone() };
                    let (b, a) = (get(&before[layer]), get(&after[layer]));
                    let step: Vec<f32> = b.iter().zip(&a).map(|(b, a)| (b - a) / lr).collect();
                    let numeric = common::numeric_gradient(&b, 1e-2, |w| {
                        let mut weights = before.clone();
                        match pick {
                            0 => weights[layer].0 = w.to_vec(),
                            _ => weights[layer].1 = w.to_vec(),
                        }
                        probe.set_weights(&weights).unwrap();
                        probe.evaluate(&data).unwrap().0 as f64
                    });
                    let what = format!("{} (fused {fused}): layer {layer}'s {part}", model.backend_name());
                    assert_close(&what, &step, &numeric, 2e-3, 2e-2);
                }
            }
        }
    }
}
