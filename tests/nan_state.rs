//! Loaded and resumed state that could only give NaN is refused, naming the tensor: a negative
//! batch-norm running variance, a negative second moment of Adam, RMSprop or Adagrad; and
//! `evaluate` checks its features are finite as `predict_dataset` does (issue 21, item 4).

mod common;

use common::safetensors_file::SafetensorsFile;
use common::*;
use wgnn::data::Features;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, WgnnError};

/// Before the fix the model loaded and `predict` returned `Ok([NaN, …])`.
#[test]
fn a_negative_running_variance_is_refused_naming_the_tensor() {
    let dir = scratch("running-var");
    let path = dir.join("bn.safetensors");
    let builder = Sequential::new(6, 1).dense(5, Activation::Relu).batch_norm().dense(2, Activation::Identity);
    let mut m = builder.build(&Backend::Cpu).unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    m.fit(&synthetic(40, 6, 2, 1), &FitOptions { batch_size: 8, ..Default::default() }).unwrap();
    m.save(&path).unwrap();
    let mut file = SafetensorsFile::read(&path);
    file.values("layers.1.running_var")[3] = -0.5;
    file.write(&path);
    for backend in backends() {
        let e = Sequential::load(&path, &backend).err().expect("a negative running variance loaded");
        let message = e.to_string();
        assert!(message.contains("`layers.1.running_var`") && message.contains("-0.5"), "{message}");
        assert!(message.contains("at index 3") && message.contains("≥ 0"), "{message}");
    }
}

/// Before the fix a negative Adam `v` resumed, then training stopped with "the training loss
/// became NaN", blaming the training.
#[test]
fn a_negative_second_moment_is_refused_on_resume_naming_the_tensor() {
    let dir = scratch("second-moment");
    let data = synthetic(40, 6, 3, 2);
    let optimizers = [
        (Optimizer::adam(1e-2), "optimizer.v.layers.0.weight"),
        (Optimizer::by_name("rmsprop", 1e-2).unwrap(), "optimizer.square_avg.layers.0.weight"),
        (Optimizer::by_name("adagrad", 1e-2).unwrap(), "optimizer.sum.layers.0.weight"),
        (Optimizer::by_name("adadelta", 1.0).unwrap(), "optimizer.acc_delta.layers.0.weight"),
    ];
    for (optimizer, tensor) in optimizers {
        let path = dir.join("checkpoint.safetensors");
        let mut m = Sequential::new(6, 1)
            .dense(4, Activation::Relu)
            .dense(3, Activation::Identity)
            .build(&Backend::Cpu)
            .unwrap();
        m.compile(Loss::SparseCategoricalCrossentropy, optimizer).unwrap();
        let history = m.fit(&data, &FitOptions { batch_size: 8, ..Default::default() }).unwrap();
        m.save_checkpoint(&path, 1, &history).unwrap();
        let mut file = SafetensorsFile::read(&path);
        file.values(tensor)[0] = -1e-3;
        file.write(&path);
        for backend in backends() {
            let e = Sequential::resume(&path, &backend).err().expect("a negative second moment resumed");
            let message = e.to_string();
            assert!(message.contains(&format!("`{tensor}`")) && message.contains("negative"), "{message}");
        }
        // The same file with every second moment ≥ 0 resumes.
        file.values(tensor)[0] = 0.0;
        file.write(&path);
        Sequential::resume(&path, &Backend::Cpu).unwrap();
    }
}

/// `evaluate` refused non-finite features only where `predict_dataset` did: now both do.
#[test]
fn evaluate_refuses_non_finite_features() {
    for backend in backends() {
        let mut m = Sequential::new(4, 1).dense(3, Activation::Identity).build(&backend).unwrap();
        m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        let mut data = synthetic(10, 4, 3, 3);
        data.features = Features::F32((0..40).map(|i| if i == 17 { f32::NAN } else { 0.5 }).collect());
        let e = m.evaluate(&data).expect_err("evaluate of a NaN feature");
        assert!(matches!(e, WgnnError::NonFinite { index: 17, .. }), "{e:?}");
        assert!(e.to_string().contains("evaluate"), "{e}");
        assert!(m.predict_dataset(&data).is_err());
        // Scaling that overflows to infinity is caught as read, too.
        let data = synthetic(10, 4, 3, 3).scaled(f32::MAX).scaled(4.0);
        assert!(matches!(m.evaluate(&data), Err(WgnnError::NonFinite { .. })));
    }
}
