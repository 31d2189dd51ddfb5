//! Every activation on any layer through the public API: softmax as a hidden or output
//! activation (row-wise forward and backward), and the Keras way of naming the output function a
//! fused loss applies (Dense(10, softmax) + cross-entropy, Dense(1, sigmoid) + binary
//! cross-entropy), GPU against the CPU reference.

mod common;
use common::*;
use wgnn::data::Dataset;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, History};

fn losses(h: &History) -> Vec<f32> {
    h.epochs.iter().map(|r| r.train_loss).collect()
}

const ACTS: [Activation; 6] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Softmax,
];

/// Trains `hidden` → 3 logits with a dropout layer after the hidden one; (history, predict).
fn train(backend: &Backend, hidden: Activation, output: Activation, loss: Loss, data: &Dataset) -> (History, Vec<f32>) {
    let mut model =
        Sequential::new(6, 5).dense(7, hidden).dropout(0.25).dense(5, hidden).dense(3, output).build(backend).unwrap();
    model.compile(loss, Optimizer::adam(1e-2)).unwrap();
    let h = model.fit(data, &FitOptions { epochs: 3, batch_size: 16, ..Default::default() }).unwrap();
    let p = model.predict_dataset(data).unwrap();
    (h, p.into_vec())
}

#[test]
fn every_activation_trains_on_hidden_layers_and_matches_cpu() {
    let gpu = gpu();
    let data = synthetic(70, 6, 3, 3);
    for act in ACTS {
        let g =
            train(&Backend::Gpu(gpu.clone()), act, Activation::Identity, Loss::SparseCategoricalCrossentropy, &data);
        let c = train(&Backend::Cpu, act, Activation::Identity, Loss::SparseCategoricalCrossentropy, &data);
        assert_close(&format!("{act:?} hidden: loss gpu vs cpu"), &losses(&g.0), &losses(&c.0), 1e-4, 1e-3);
        assert_close(&format!("{act:?} hidden: predict gpu vs cpu"), &g.1, &c.1, 1e-4, 1e-3);
        assert!(losses(&g.0).iter().all(|l| l.is_finite()), "{act:?}: {:?}", losses(&g.0));
    }
}

#[test]
fn a_softmax_output_under_mean_squared_error_is_row_wise() {
    let gpu = gpu();
    let data = synthetic(60, 6, 3, 8);
    let one_hot = data.clone().with_targets(data.one_hot(3).unwrap(), 3).unwrap();
    let g = train(&Backend::Gpu(gpu), Activation::Tanh, Activation::Softmax, Loss::MeanSquaredError, &one_hot);
    let c = train(&Backend::Cpu, Activation::Tanh, Activation::Softmax, Loss::MeanSquaredError, &one_hot);
    assert_close("softmax + mse: loss gpu vs cpu", &losses(&g.0), &losses(&c.0), 1e-5, 1e-3);
    assert_close("softmax + mse: predict gpu vs cpu", &g.1, &c.1, 1e-5, 1e-3);
    // predict returns the softmax rows themselves.
    for row in g.1.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5 && row.iter().all(|&p| p > 0.0), "{row:?}");
    }
    let l = losses(&g.0);
    assert!(l[2] < l[0], "loss did not fall: {l:?}");
}

#[test]
fn naming_the_fused_output_function_is_the_same_model() {
    let gpu = gpu();
    let backend = Backend::Gpu(gpu);
    let data = synthetic(50, 6, 3, 1);
    // Dense(3, softmax) + sparse cross-entropy is Dense(3) + the fused softmax cross-entropy.
    let named = train(&backend, Activation::Relu, Activation::Softmax, Loss::SparseCategoricalCrossentropy, &data);
    let fused = train(&backend, Activation::Relu, Activation::Identity, Loss::SparseCategoricalCrossentropy, &data);
    assert_eq!(losses(&named.0), losses(&fused.0));
    assert_eq!(named.1, fused.1);

    // Dense(1, sigmoid) + binary cross-entropy likewise.
    let binary = synthetic(50, 6, 2, 2);
    let run = |out: Activation| {
        let mut m = Sequential::new(6, 3).dense(4, Activation::Tanh).dense(1, out).build(&backend).unwrap();
        m.compile(Loss::BinaryCrossentropy, Optimizer::adam(1e-2)).unwrap();
        let h = m.fit(&binary, &FitOptions { epochs: 2, batch_size: 16, ..Default::default() }).unwrap();
        (losses(&h), m.predict_dataset(&binary).unwrap())
    };
    assert_eq!(run(Activation::Sigmoid), run(Activation::Identity));

    // Any other output function is still refused for a fused loss.
    let mut m = Sequential::new(6, 3).dense(3, Activation::Tanh).build(&backend).unwrap();
    let err = m.compile(Loss::CategoricalCrossentropy, Optimizer::adam(1e-3)).expect_err("tanh + cce");
    assert!(err.to_string().contains("must be linear (Activation::Identity) or softmax, got tanh"), "{err}");
    assert_eq!(Activation::parse("softmax").unwrap(), Activation::Softmax);
}

#[test]
fn gelu_layers_predict_like_the_cpu_and_round_trip_through_save() {
    // Building, predicting (the dense layer's pre-activation kept, then the GELU, or an
    // activation layer of its own), saving and loading (their training: tests/gelu_training.rs).
    let data = synthetic(40, 6, 3, 4);
    let x = data.to_f32();
    let dir = scratch("gelu");
    for gelu in [Activation::Gelu, Activation::GeluErf] {
        let mut predictions = Vec::new();
        for backend in backends() {
            for fused in [true, false] {
                let model = Sequential::new(6, 11)
                    .dense(9, gelu)
                    .dense(7, Activation::Identity)
                    .activation(gelu)
                    .dense(3, Activation::Identity)
                    .fused(fused)
                    .build(&backend)
                    .unwrap();
                let p = model.predict(&x, data.rows).unwrap().into_vec();
                let path = dir.join(format!("{}-{fused}.safetensors", gelu.name()));
                model.save(&path).unwrap();
                // Format 3: a wgnn that reads format 2 only (and no "gelu") refuses it by number.
                let meta = &common::safetensors_file::SafetensorsFile::read(&path).metadata["wgnn.model"];
                assert!(meta.contains("\"format\":3"), "{gelu:?}: {meta}");
                let loaded = Sequential::load(&path, &backend).unwrap();
                assert_eq!(loaded.layers(), model.layers(), "{gelu:?}: the layers after load");
                assert_eq!(loaded.predict(&x, data.rows).unwrap().into_vec(), p, "{gelu:?}: predictions after load");
                predictions.push(p);
            }
        }
        for p in &predictions[1..] {
            assert_close(
                &format!("{gelu:?}: predictions, GPU fused and unfused vs CPU"),
                p,
                &predictions[0],
                1e-5,
                1e-4,
            );
        }
        // The saved file names the activation as Activation::parse reads it back.
        let text =
            String::from_utf8_lossy(&std::fs::read(dir.join(format!("{}-true.safetensors", gelu.name()))).unwrap())
                .into_owned();
        // The metadata is JSON inside a JSON string: its quotes escaped.
        let (plain, escaped) = (format!("\"{}\"", gelu.name()), format!("\\\"{}\\\"", gelu.name()));
        assert!(text.contains(&plain) || text.contains(&escaped), "{gelu:?} not named in the saved model");
        assert_eq!(Activation::parse(gelu.name()).unwrap(), gelu);
    }
    assert_eq!(Activation::parse("gelu_tanh").unwrap(), Activation::Gelu);
    assert_eq!(Activation::parse("gelu_exact").unwrap(), Activation::GeluErf);
    std::fs::remove_dir_all(&dir).unwrap();
}
