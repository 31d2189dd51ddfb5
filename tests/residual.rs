//! Residual connections: a block's output plus its input, in dense and convolutional models,
//! trained on the GPU step for step as the CPU reference, fused and unfused; the gradient through
//! both paths against finite differences; save and load; the summary; a shape mismatch without a
//! projection as an error naming both shapes; the README's ResNet-style CNN learning MNIST rows.

mod common;

use common::fusion::check_fusion;
use common::safetensors_file::SafetensorsFile;
use common::{assert_close, backends, scratch, synthetic};
use wgnn::data::load_mnist;
use wgnn::layers::{Conv2D, Padding};
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::Activation::{Identity, Relu};
use wgnn::{Activation, Layer, WgnnError};

fn images(rows: usize, shape: [usize; 3], classes: usize, seed: u64) -> wgnn::Dataset {
    synthetic(rows, shape.iter().product(), classes, seed).with_sample_shape(&shape).unwrap()
}

#[test]
fn dense_residual_blocks_train_like_the_reference_fused_and_unfused() {
    // A basic block with batch norm and dropout in its branch and relu after the sum; a block
    // projected from 12 to 6 features; a nested block (its input read three times: by its
    // branch, the inner sum and the outer sum). 37 rows in batches of 16: a tail of 5.
    let data = synthetic(37, 9, 4, 3);
    let build = || {
        Sequential::new(9, 7)
            .dense(12, Activation::Relu)
            .residual(|b| b.dense(12, Activation::Tanh).batch_norm().dropout(0.2).dense(12, Activation::Identity))
            .activation(Activation::Relu)
            .residual_projected(Layer::dense(6, Activation::Identity), |b| b.dense(6, Activation::Sigmoid))
            .residual(|b| b.residual(|c| c.dense(6, Activation::Relu)).dense(6, Activation::Tanh))
            .dense(4, Activation::Identity)
    };
    let opts = FitOptions { epochs: 2, batch_size: 16, ..Default::default() };
    check_fusion("dense residual", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
    // A block on the model's input itself (the batch read twice), softmax inside a branch, and
    // mean squared error through the sum of the last block.
    let build = || {
        Sequential::new(9, 2)
            .residual(|b| b.dense(5, Activation::Identity).activation(Activation::Softmax).dense(9, Activation::Relu))
            .dense(4, Activation::Identity)
            .residual(|b| b.dense(4, Activation::Tanh))
    };
    let targets = data.clone().with_targets(data.one_hot(4).unwrap(), 4).unwrap();
    check_fusion("residual from the input", &build, &targets, Loss::MeanSquaredError, &opts);
    // A branch ending in a linear dense layer with a bias, whose matmul adds the sum in its
    // epilogue (after a GELU whose matmul keeps its input), a tanh after a sum that does too, and
    // a one-layer branch whose input is its own shortcut (the sum then runs on its own).
    let build = || {
        Sequential::new(9, 3)
            .dense(8, Activation::Relu)
            .residual(|b| b.dense(16, Activation::GeluErf).dense(8, Activation::Identity))
            .residual(|b| b.dense(12, Activation::Relu).dense(8, Activation::Identity))
            .activation(Activation::Tanh)
            .residual(|b| b.dense(8, Activation::Identity))
            .dense(4, Activation::Identity)
    };
    check_fusion("branches ending in a dense layer", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
}

#[test]
fn convolutional_residual_blocks_train_like_the_reference_fused_and_unfused() {
    // ResNet's basic block (conv → bn → relu → conv → bn, + x, relu) and a downsampling block
    // whose shortcut is a strided 1×1 convolution, on odd 7×5 images.
    let data = images(22, [7, 5, 2], 3, 8);
    let build = || {
        Sequential::new([7, 5, 2], 4)
            .conv2d_same(4, (3, 3), Activation::Relu)
            .residual(|b| {
                b.add(Layer::Conv2D(Conv2D { use_bias: false, ..conv_same(4, 1) }))
                    .batch_norm()
                    .activation(Activation::Relu)
                    .conv2d_same(4, (3, 3), Activation::Identity)
            })
            .activation(Activation::Relu)
            .residual_projected(
                Layer::Conv2D(Conv2D { strides: (2, 2), ..Conv2D::new(6, (1, 1), Activation::Identity) }),
                |b| b.add(Layer::Conv2D(conv_same(6, 2))).max_pool2d((1, 1)),
            )
            .flatten()
            .dense(3, Activation::Identity)
    };
    let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
    check_fusion("conv residual", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
}

fn conv_same(filters: usize, stride: usize) -> Conv2D {
    Conv2D { padding: Padding::Same, strides: (stride, stride), ..Conv2D::new(filters, (3, 3), Activation::Identity) }
}

#[test]
fn the_gradient_through_a_residual_branch_matches_finite_differences() {
    // One SGD step over the whole batch moves each parameter by −lr·∂L/∂p: the step's gradient
    // of the weights before the fork (reached through the branch and the shortcut) and inside
    // the branch, against central differences of the evaluated loss.
    let data = synthetic(12, 5, 3, 4);
    for backend in backends() {
        let build = || {
            Sequential::new(5, 9)
                .dense(6, Activation::Tanh)
                .residual(|b| b.dense(4, Activation::Tanh).dense(6, Activation::Identity))
                .activation(Activation::Tanh)
                .dense(3, Activation::Identity)
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
            let step: Vec<f32> = before[layer].0.iter().zip(&after[layer].0).map(|(b, a)| (b - a) / lr).collect();
            let numeric = common::numeric_gradient(&before[layer].0, 1e-2, |w| {
                let mut weights = before.clone();
                weights[layer].0 = w.to_vec();
                probe.set_weights(&weights).unwrap();
                probe.evaluate(&data).unwrap().0 as f64
            });
            assert_close(&format!("{}: layer {layer}'s dW", model.backend_name()), &step, &numeric, 2e-3, 2e-2);
        }
    }
}

#[test]
fn a_residual_model_saves_loads_and_summarises_its_blocks() {
    let data = images(10, [4, 4, 1], 2, 5);
    for backend in backends() {
        let mut model = Sequential::new([4, 4, 1], 3)
            .conv2d_same(2, (3, 3), Activation::Relu)
            .residual_projected(Layer::Conv2D(Conv2D::new(3, (1, 1), Activation::Identity)), |b| {
                b.conv2d_same(3, (3, 3), Activation::Identity)
            })
            .flatten()
            .dense(2, Activation::Identity)
            .build(&backend)
            .unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        model.fit(&data, &FitOptions { epochs: 1, batch_size: 5, ..Default::default() }).unwrap();
        let summary = model.summary();
        assert!(summary.contains("│ conv2d(3, 3×3, identity, same)"), "{summary}");
        assert!(summary.contains("└ add(input of layer 1 through conv2d(3, 1×1, identity))"), "{summary}");
        let path = scratch("residual").join("model.safetensors");
        model.save(&path).unwrap();
        // Format 3 for a model with a residual sum; a plain model is still written as format 2,
        // which older wgnn reads.
        let meta: serde_json::Value =
            serde_json::from_str(&SafetensorsFile::read(&path).metadata["wgnn.model"]).unwrap();
        assert_eq!(meta["format"], 3, "{meta}");
        assert_eq!(meta["layers"][2]["type"], "add", "{meta}");
        assert_eq!(meta["layers"][2]["projection"]["type"], "conv2d", "{meta}");
        let loaded = Sequential::load(&path, &backend).unwrap();
        assert_eq!(loaded.layers(), model.layers());
        assert_eq!(loaded.parameters().unwrap(), model.parameters().unwrap());
        let rows = data.to_f32();
        assert_eq!(loaded.predict(&rows, 10).unwrap(), model.predict(&rows, 10).unwrap());
    }
    let plain = Sequential::new(4, 1).dense(2, Activation::Identity).build(&Backend::Cpu).unwrap();
    let path = scratch("plain").join("model.safetensors");
    plain.save(&path).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&SafetensorsFile::read(&path).metadata["wgnn.model"]).unwrap();
    assert_eq!(meta["format"], 2, "{meta}");
}

#[test]
fn a_branch_that_changes_the_shape_needs_a_projection() {
    let err = Sequential::new(6, 0)
        .dense(8, Activation::Relu)
        .residual(|b| b.dense(5, Activation::Relu))
        .dense(2, Activation::Identity)
        .build(&Backend::Cpu)
        .err()
        .unwrap();
    let WgnnError::Shape { op, shapes, detail } = &err else { panic!("{err}") };
    assert_eq!(op, "layer 2 (add(input of layer 1))");
    assert_eq!(shapes, &[("branch".to_string(), vec![5]), ("shortcut".to_string(), vec![8])]);
    assert!(detail.contains("[5]") && detail.contains("[8]") && detail.contains("projection"), "{err}");
    // A projection of the wrong width names its shape; an empty branch and a projection with an
    // activation are invalid.
    let err = Sequential::new(6, 0)
        .residual_projected(Layer::dense(4, Activation::Identity), |b| b.dense(5, Activation::Relu))
        .build(&Backend::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("the projection dense(4, identity) gives [4]"), "{err}");
    let err = Sequential::new(6, 0).residual(|b| b).build(&Backend::Cpu).err().unwrap();
    assert!(matches!(err, WgnnError::InvalidArgument { .. }) && err.to_string().contains("needs a layer"), "{err}");
    let err = Sequential::new(6, 0)
        .residual_projected(Layer::dense(5, Activation::Relu), |b| b.dense(5, Activation::Relu))
        .build(&Backend::Cpu)
        .err()
        .unwrap();
    assert!(err.to_string().contains("without activation"), "{err}");
}

#[test]
fn the_readmes_resnet_style_cnn_learns_mnist_rows() {
    // The README's model, layer for layer, on 120 MNIST rows for 3 epochs: the loss falls at
    // every epoch.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mnist_small.npz");
    let (train, _) = load_mnist(path).unwrap();
    let train = train.take(120).unwrap().with_sample_shape(&[28, 28, 1]).unwrap();
    let mut model = Sequential::new([28, 28, 1], 42)
        .conv2d_same(16, (3, 3), Relu)
        .residual(|b| b.conv2d_same(16, (3, 3), Relu).conv2d_same(16, (3, 3), Identity))
        .activation(Relu)
        .max_pool2d((2, 2))
        .residual_projected(Layer::Conv2D(Conv2D::new(32, (1, 1), Identity)), |b| {
            b.conv2d_same(32, (3, 3), Relu).conv2d_same(32, (3, 3), Identity)
        })
        .activation(Relu)
        .add(Layer::global_average_pooling2d())
        .dense(10, Activation::Softmax)
        .build(&Backend::Gpu(common::gpu()))
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3)).unwrap();
    let history = model.fit(&train, &FitOptions { epochs: 3, batch_size: 10, ..Default::default() }).unwrap();
    let losses: Vec<f32> = history.epochs.iter().map(|e| e.train_loss).collect();
    let falls = losses.windows(2).all(|w| w[1] < w[0]) && losses[2] < losses[0] - 0.05;
    assert!(losses.iter().all(|l| l.is_finite()) && falls, "{losses:?}");
}
