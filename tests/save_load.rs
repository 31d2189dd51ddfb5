//! Saved models come back as they were: every loss and last activation predicts and evaluates the
//! same after `load`; an uncompiled model predicts through its own last activation; files of
//! the first format still load; non-finite weights or optimizer state are refused by name.

mod common;
use std::collections::HashMap;
use std::path::PathBuf;

use common::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Dataset, Layer, WgnnError};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Data a model of `outputs` units can train on under `loss`: labels in range, and float targets
/// for a regression of more than one output.
fn data_for(loss: Loss, outputs: usize) -> Dataset {
    let classes = match loss {
        Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy => outputs,
        _ => 2,
    };
    let data = synthetic(50, 7, classes, 5);
    match (loss, outputs) {
        (Loss::MeanSquaredError, n) if n > 1 => {
            let targets = data.one_hot(n).unwrap();
            data.with_targets(targets, n).unwrap()
        }
        _ => data,
    }
}

#[test]
fn every_loss_and_last_activation_predicts_and_evaluates_the_same_after_load() {
    use Activation::*;
    use Loss::*;
    let cases = [
        (SparseCategoricalCrossentropy, Identity, 3),
        (SparseCategoricalCrossentropy, Softmax, 3),
        (CategoricalCrossentropy, Softmax, 4),
        (BinaryCrossentropy, Sigmoid, 1),
        (BinaryCrossentropy, Identity, 1),
        (Hinge, Identity, 1),
        (MeanSquaredError, Identity, 1),
        (MeanSquaredError, Sigmoid, 1),
        (MeanSquaredError, Tanh, 2),
        (MeanSquaredError, Softmax, 3),
    ];
    let dir = scratch("every-loss");
    for backend in backends() {
        for (loss, last, outputs) in cases {
            let what = format!(
                "{} with a {} output of {outputs} on {}",
                loss.name(),
                last.name(),
                match backend {
                    Backend::Gpu(_) => "the gpu",
                    Backend::Cpu => "the cpu",
                }
            );
            let data = data_for(loss, outputs);
            let mut saved = Sequential::new(7, 11).dense(6, Relu).dense(outputs, last).build(&backend).unwrap();
            saved.compile(loss, Optimizer::sgd(0.05, 0.9)).unwrap();
            saved.fit(&data, &FitOptions { epochs: 1, batch_size: 16, ..Default::default() }).unwrap();
            let path = dir.join("model.safetensors");
            saved.save(&path).unwrap();
            let mut loaded = Sequential::load(&path, &backend).unwrap();
            assert_eq!(loaded.compiled_loss(), Some(loss), "{what}: the loss comes back");
            let x = data.to_f32();
            let want = saved.predict(&x, data.rows).unwrap();
            assert_eq!(bits(&loaded.predict(&x, data.rows).unwrap()), bits(&want), "{what}: predictions");
            let (loss_before, acc_before) = saved.evaluate(&data).unwrap();
            let (loss_after, acc_after) = loaded.evaluate(&data).unwrap();
            assert_eq!(
                (loss_after.to_bits(), acc_after.to_bits()),
                (loss_before.to_bits(), acc_before.to_bits()),
                "{what}: evaluate gives {loss_after}/{acc_after}, before saving {loss_before}/{acc_before}"
            );
            // The optimizer comes back too: the loaded model trains without another compile.
            loaded.fit(&data, &FitOptions { epochs: 1, batch_size: 16, ..Default::default() }).unwrap();
        }
    }
}

#[test]
fn an_uncompiled_model_predicts_through_its_own_last_activation() {
    let data = synthetic(30, 5, 2, 9);
    let x = data.to_f32();
    for backend in backends() {
        for last in [Activation::Sigmoid, Activation::Tanh, Activation::Softmax, Activation::Identity] {
            let build = || Sequential::new(5, 4).dense(8, Activation::Relu).dense(3, last).build(&backend).unwrap();
            let plain = build();
            // Mean squared error applies nothing beyond the layers' own activations.
            let mut regression = build();
            regression.compile(Loss::MeanSquaredError, Optimizer::sgd(0.1, 0.0)).unwrap();
            let got = plain.predict(&x, data.rows).unwrap();
            assert_eq!(bits(&got), bits(&regression.predict(&x, data.rows).unwrap()), "{}", last.name());
            if last == Activation::Sigmoid {
                assert!(got.iter().all(|&p| p > 0.0 && p < 1.0), "sigmoid outputs: {got:?}");
            }
            match plain.evaluate(&data) {
                Err(WgnnError::InvalidArgument { op, detail }) => {
                    assert_eq!(op, "evaluate");
                    assert!(detail.contains("compile"), "{detail}");
                }
                other => panic!("evaluate on an uncompiled model: {other:?}"),
            }
        }
    }
}

/// tests/fixtures/format1: a model and a checkpoint written by wgnn before the compile settings
/// were saved (a leaky-relu layer with batch norm and dropout, a tanh layer, a softmax output;
/// Adam with an exponential schedule), and what the model predicted then for four rows.
#[test]
fn files_of_the_first_format_still_load() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("predictions.json")).unwrap()).unwrap();
    let floats =
        |k: &str| -> Vec<f32> { fixture[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect() };
    let (inputs, want) = (floats("inputs"), floats("predictions"));
    let rows = fixture["rows"].as_u64().unwrap() as usize;
    for backend in backends() {
        let model = Sequential::load(dir.join("model.safetensors"), &backend).unwrap();
        assert_eq!(model.compiled_loss(), None, "the old file has no loss");
        // Dense(no bias) → BatchNorm → Activation → Dropout, then the two plain dense layers.
        assert_eq!(model.layers().len(), 6, "{:?}", model.layers());
        assert!(matches!(model.layers()[1], Layer::BatchNorm(_)) && model.layers()[3] == Layer::Dropout(0.25));
        let got = model.predict(&inputs, rows).unwrap();
        match backend {
            Backend::Cpu => assert_eq!(bits(&got), bits(&want), "the reference predicts as it did"),
            Backend::Gpu(_) => assert_close("gpu predictions of the old file", &got, &want, 1e-5, 1e-4),
        }

        let mut resumed = Sequential::resume(dir.join("checkpoint.safetensors"), &backend).unwrap();
        assert_eq!(resumed.resumed_epoch(), Some(3));
        assert_eq!(resumed.compiled_loss(), Some(Loss::SparseCategoricalCrossentropy));
        let data = synthetic(40, 6, 3, 1);
        let history = resumed.fit(&data, &FitOptions { epochs: 4, batch_size: 16, ..Default::default() }).unwrap();
        assert_eq!(history.epochs.last().unwrap().epoch, 4);
    }
}

/// Rewrites the safetensors file at `path` with one value of tensor `name` replaced by `value`.
fn poison(path: &std::path::Path, name: &str, value: f32) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: HashMap<String, String> = meta.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec())).collect();
    let target = tensors.iter_mut().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("no tensor {name}"));
    target.2[4..8].copy_from_slice(&value.to_le_bytes());
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .map(|(n, shape, data)| (n.as_str(), TensorView::new(Dtype::F32, shape.clone(), data).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

#[test]
fn non_finite_weights_or_optimizer_state_are_refused_naming_the_tensor() {
    let dir = scratch("poisoned");
    let data = synthetic(40, 6, 3, 2);
    let mut model =
        Sequential::new(6, 1).dense(5, Activation::Relu).dense(3, Activation::Softmax).build(&Backend::Cpu).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    let history = model.fit(&data, &FitOptions { epochs: 1, batch_size: 8, ..Default::default() }).unwrap();
    let clean = dir.join("clean.safetensors");
    model.save_checkpoint(&clean, 1, &history).unwrap();
    for (tensor, value) in [
        ("optimizer.v.layers.1.weight", f32::NAN),
        ("optimizer.m.layers.0.bias", f32::INFINITY),
        ("layers.0.weight", f32::NAN),
    ] {
        let path = dir.join("poisoned.safetensors");
        std::fs::copy(&clean, &path).unwrap();
        poison(&path, tensor, value);
        for backend in backends() {
            match Sequential::resume(&path, &backend) {
                Err(WgnnError::Data { path: p, detail }) => {
                    assert_eq!(p, path);
                    assert!(detail.contains(tensor) && detail.contains("non-finite"), "{detail}");
                }
                Err(e) => panic!("{tensor}: unexpected error {e}"),
                Ok(_) => panic!("{tensor} = {value} was accepted on resume"),
            }
        }
        if !tensor.starts_with("optimizer") {
            assert!(Sequential::load(&path, &Backend::Cpu).is_err(), "load accepts {tensor} = {value}");
        }
    }
    // The clean file still resumes.
    Sequential::resume(&clean, &Backend::Cpu).unwrap();
}
