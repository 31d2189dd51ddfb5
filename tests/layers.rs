//! Layers as the model's unit: Keras-style layers of their own, the fusion pass that runs them as
//! fewer dispatches (checked against the same model unfused, and both against the CPU
//! reference), input shapes, and the errors of layers that do not fit their input.

mod common;

use common::fusion::check_fusion;
use common::{gpu, synthetic};
use wgnn::data::load_mnist;
use wgnn::internals::kernels::batch_norm::BatchNormConfig;
use wgnn::layers::Dense;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Initializer, Layer, WgnnError};

#[test]
fn the_dense_short_form_fuses_its_epilogues_the_output_loss_and_the_in_place_first_layer() {
    // u8 MNIST rows: where the profile reads the first layer's batch in place and fuses the output
    // layer with its loss, the fused step does both; unfused, neither. 45 rows in batches of 13.
    let (train, _) = load_mnist(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/mnist.npz")).unwrap();
    let data = train.subset(&(100..145).collect::<Vec<_>>()).unwrap();
    let build = || {
        Sequential::new(784, 4).dense(24, Activation::Relu).dense(16, Activation::Tanh).dense(10, Activation::Identity)
    };
    let opts = FitOptions { epochs: 2, batch_size: 13, ..Default::default() };
    check_fusion("mlp", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
}

#[test]
fn keras_style_layers_fuse_into_blocks_and_match_unfused_and_the_reference() {
    // Dense(no bias) → BatchNorm → Activation → Dropout fuse into one block; the softmax layer at
    // the end is the loss's; the guarded step (skipping non-finite batches) on top.
    let data = synthetic(70, 9, 4, 3);
    let build = || {
        Sequential::new(9, 11)
            .add(Layer::Dense(Dense {
                units: 12,
                activation: Activation::Identity,
                use_bias: false,
                init: Initializer::HeNormal,
            }))
            .add(Layer::BatchNorm(BatchNormConfig { eps: 1e-3, momentum: 0.2 }))
            .add(Layer::Activation(Activation::Tanh))
            .add(Layer::Dropout(0.25))
            .dense(8, Activation::Relu)
            .dense(4, Activation::Identity)
            .add(Layer::Activation(Activation::Softmax))
    };
    let opts = FitOptions { epochs: 2, batch_size: 16, skip_nonfinite_batches: true, ..Default::default() };
    check_fusion("keras style", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
    // A hidden softmax layer, and mean squared error through a sigmoid output.
    let build = || {
        Sequential::new(9, 5)
            .dense(7, Activation::Identity)
            .activation(Activation::Softmax)
            .dropout(0.1)
            .dense(4, Activation::Sigmoid)
    };
    let targets = data.clone().with_targets(data.one_hot(4).unwrap(), 4).unwrap();
    let opts = FitOptions { epochs: 2, batch_size: 16, ..Default::default() };
    check_fusion("hidden softmax, mse", &build, &targets, Loss::MeanSquaredError, &opts);
}

#[test]
fn image_shaped_inputs_flatten_and_normalise_per_channel() {
    // [3, 3, 2] samples: a batch norm over the 2 channels on the input itself (a block with no
    // core), then Flatten and dense layers.
    let flat = synthetic(40, 18, 3, 8);
    let data = flat.with_sample_shape(&[3, 3, 2]).unwrap();
    let build = || {
        Sequential::new([3, 3, 2], 2).batch_norm().flatten().dense(6, Activation::Relu).dense(3, Activation::Identity)
    };
    let model = build().build(&Backend::Cpu).unwrap();
    assert_eq!(model.input_shape(), &[3, 3, 2]);
    assert_eq!(model.output_shape_of(1), Some(&[18][..]), "flatten");
    assert!(model.summary().contains("flatten"), "{}", model.summary());
    let state = model.batch_norm_state(0).unwrap().expect("layer 0 is a batch norm");
    assert_eq!(state.gamma.len(), 2, "one γ per channel");
    check_fusion(
        "per-channel bn",
        &build,
        &data,
        Loss::SparseCategoricalCrossentropy,
        &FitOptions { epochs: 2, batch_size: 10, ..Default::default() },
    );
}

#[test]
fn layers_that_do_not_fit_their_input_are_errors_naming_them() {
    let backend = Backend::Cpu;
    let err = Sequential::new([28, 28, 1], 0).dense(10, Activation::Identity).build(&backend).err().unwrap();
    assert!(matches!(err, WgnnError::Shape { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("layer 0 (dense(10, identity))") && msg.contains("[28, 28, 1]") && msg.contains("Flatten"),
        "{msg}"
    );

    let err = Sequential::new([4, 4, 3], 0)
        .activation(Activation::Softmax)
        .flatten()
        .dense(2, Activation::Identity)
        .build(&backend);
    assert!(err.err().unwrap().to_string().contains("softmax runs over one axis"));

    for rate in [1.0, -0.1, f32::NAN] {
        let err = Sequential::new(4, 0)
            .dense(3, Activation::Relu)
            .dropout(rate)
            .dense(2, Activation::Identity)
            .build(&backend);
        let msg = err.err().unwrap().to_string();
        assert!(msg.contains("layer 1 (dropout(") && msg.contains("rate must be in [0, 1)"), "{msg}");
    }
    let err = Sequential::new(4, 0).dense(0, Activation::Relu).build(&backend).err().unwrap();
    assert!(err.to_string().contains("units must be at least 1"), "{err}");
    let err = Sequential::new([0, 3], 0).flatten().dense(2, Activation::Relu).build(&backend).err().unwrap();
    assert!(err.to_string().contains("no features"), "{err}");

    // A data set of another sample shape (same size) is refused by a model of image inputs.
    let mut model = Sequential::new([3, 6, 1], 0).flatten().dense(2, Activation::Identity).build(&backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let data = synthetic(8, 18, 2, 1).with_sample_shape(&[6, 3, 1]).unwrap();
    let err = model.fit(&data, &FitOptions::default()).expect_err("other axes");
    assert!(matches!(err, WgnnError::Shape { .. }) && err.to_string().contains("[6, 3, 1]"), "{err}");
    // Rows of the right width and no axes of their own are taken as they are.
    model.fit(&synthetic(8, 18, 2, 1), &FitOptions { epochs: 1, ..Default::default() }).unwrap();
}

#[test]
fn keras_style_models_save_and_load_with_their_shapes() {
    let data = synthetic(30, 12, 3, 4).with_sample_shape(&[2, 3, 2]).unwrap();
    let dir = std::env::temp_dir().join(format!("wgnn-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    for backend in [Backend::Gpu(gpu()), Backend::Cpu] {
        let mut model = Sequential::new([2, 3, 2], 9)
            .batch_norm()
            .flatten()
            .add(Layer::Dense(Dense {
                units: 5,
                activation: Activation::Identity,
                use_bias: false,
                init: Initializer::GlorotUniform,
            }))
            .batch_norm()
            .activation(Activation::Relu)
            .dropout(0.3)
            .dense(3, Activation::Softmax)
            .build(&backend)
            .unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        model.fit(&data, &FitOptions { epochs: 2, batch_size: 8, ..Default::default() }).unwrap();
        model.save(&path).unwrap();
        let loaded = Sequential::load(&path, &backend).unwrap();
        assert_eq!(loaded.layers(), model.layers());
        assert_eq!(loaded.input_shape(), &[2, 3, 2]);
        assert_eq!(loaded.parameters().unwrap(), model.parameters().unwrap());
        let names: Vec<String> = loaded.parameters().unwrap().into_iter().map(|p| p.name).collect();
        assert!(
            names.contains(&"layers.0.gamma".to_string()) && names.contains(&"layers.2.weight".to_string()),
            "{names:?}"
        );
        assert!(!names.contains(&"layers.2.bias".to_string()), "no bias before a batch norm: {names:?}");
        assert_eq!(loaded.predict_dataset(&data).unwrap(), model.predict_dataset(&data).unwrap());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_scale_layer_trains_like_the_reference_saves_and_refuses_a_non_finite_factor() {
    // Scale after a relu (whose gradient the block below then applies itself), inside a residual
    // branch, and before a softmax output. 29 rows in batches of 8.
    let data = synthetic(29, 6, 3, 12);
    let build = || {
        Sequential::new(6, 5)
            .dense(8, Activation::Relu)
            .scale(0.5)
            .residual(|b| b.dense(8, Activation::Tanh).scale(-0.25))
            .dense(3, Activation::Identity)
            .scale(2.0)
            .activation(Activation::Softmax)
    };
    let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
    check_fusion("scale", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
    for backend in [Backend::Gpu(gpu()), Backend::Cpu] {
        let model = build().build(&backend).unwrap();
        let rows = data.to_f32();
        let path = common::scratch("scale").join("model.safetensors");
        model.save(&path).unwrap();
        let loaded = Sequential::load(&path, &backend).unwrap();
        assert_eq!(loaded.layers(), model.layers());
        assert_eq!(loaded.layers()[1], Layer::Scale(wgnn::layers::Scale { factor: 0.5 }));
        assert_eq!(loaded.predict(&rows, 29).unwrap(), model.predict(&rows, 29).unwrap());
    }
    for factor in [f32::NAN, f32::INFINITY] {
        let err =
            Sequential::new(6, 5).scale(factor).dense(2, Activation::Identity).build(&Backend::Cpu).err().unwrap();
        assert!(
            matches!(err, WgnnError::InvalidArgument { .. }) && err.to_string().contains("layer 0 (scale("),
            "{err}"
        );
    }
}
