//! The losses that train against float targets — mean squared error (regression), categorical
//! cross-entropy on one-hot rows, hinge — through the public API, GPU against the CPU reference.

mod common;
use common::*;
use wgnn::data::Dataset;
use wgnn::internals::rng::Rng;
use wgnn::model::{Backend, EarlyStopping, FitOptions, Loss, Monitor, Optimizer, Sequential, Validation};
use wgnn::{Activation, History, WgnnError};

fn losses(h: &History) -> Vec<f32> {
    h.epochs.iter().map(|r| r.train_loss).collect()
}
fn metrics(h: &History) -> Vec<f32> {
    h.epochs.iter().map(|r| r.train_accuracy).collect()
}

/// y = x·A + c plus a little noise: 2 targets from 5 features.
fn linear_regression(rows: usize, seed: u64) -> Dataset {
    let (dim, outs) = (5, 2);
    let mut rng = Rng::new(seed);
    let x = rng.vec_uniform(rows * dim, -1.0, 1.0);
    let a = rng.vec_uniform(dim * outs, -1.0, 1.0);
    let noise = rng.vec_uniform(rows * outs, -0.05, 0.05);
    let mut y = Vec::with_capacity(rows * outs);
    for (r, row) in x.chunks(dim).enumerate() {
        for o in 0..outs {
            let v: f32 = row.iter().enumerate().map(|(j, &xj)| xj * a[j * outs + o]).sum();
            y.push(v + 0.5 * o as f32 + noise[r * outs + o]);
        }
    }
    Dataset::regression(x, y, dim, outs, "linear regression").unwrap()
}

#[test]
fn mse_regression_trains_to_a_stated_loss_and_gpu_matches_cpu() {
    let gpu = gpu();
    let data = linear_regression(300, 4);
    let mut results = Vec::new();
    for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
        let mut model =
            Sequential::new(5, 8).dense(16, Activation::Tanh).dense(2, Activation::Identity).build(&backend).unwrap();
        model.compile(Loss::MeanSquaredError, Optimizer::adam(1e-2)).unwrap();
        let history = model.fit(&data, &FitOptions { epochs: 40, batch_size: 32, ..Default::default() }).unwrap();
        let evaluated = model.evaluate(&data).unwrap();
        let predicted = model.predict_dataset(&data).unwrap();
        results.push((history, evaluated, predicted));
    }
    let (g, c) = (&results[0], &results[1]);
    assert_close("mse train loss, gpu vs cpu", &losses(&g.0), &losses(&c.0), 1e-4, 2e-3);
    assert_close("mse train mae, gpu vs cpu", &metrics(&g.0), &metrics(&c.0), 1e-4, 2e-3);
    assert_close("mse evaluate, gpu vs cpu", &[g.1 .0, g.1 .1], &[c.1 .0, c.1 .1], 1e-4, 2e-3);
    assert_close("mse predict, gpu vs cpu", &g.2, &c.2, 1e-4, 2e-3);

    // The stated loss: from ≈ the targets' variance to below 0.01 (the noise alone is ≈ 0.0008).
    let l = losses(&g.0);
    assert!(l[0] > 0.1, "first epoch's loss {} is suspiciously low", l[0]);
    assert!(g.1 .0 < 0.01, "mse after 40 epochs is {} (history {l:?})", g.1 .0);

    // evaluate's loss and "accuracy" (the mean absolute error) recomputed from predict.
    let t = &data.targets.as_ref().unwrap().values;
    let n = t.len() as f64;
    let mse = g.2.iter().zip(t).map(|(&p, &y)| ((p - y) as f64).powi(2)).sum::<f64>() / n;
    let mae = g.2.iter().zip(t).map(|(&p, &y)| ((p - y) as f64).abs()).sum::<f64>() / n;
    assert_close("evaluate vs predict (mse, mae)", &[g.1 .0, g.1 .1], &[mse as f32, mae as f32], 1e-5, 1e-3);
}

#[test]
fn mse_through_a_sigmoid_output_matches_cpu() {
    // A non-linear last layer: the loss's gradient passes through σ′ before the backward pass.
    let gpu = gpu();
    let mut rng = Rng::new(11);
    let x = rng.vec_uniform(90 * 4, -1.0, 1.0);
    let y: Vec<f32> = x.chunks(4).map(|r| 1.0 / (1.0 + (-(r[0] - r[2]) * 2.0).exp())).collect();
    let data = Dataset::regression(x, y, 4, 1, "sigmoid regression").unwrap();
    let mut histories = Vec::new();
    for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
        let mut model =
            Sequential::new(4, 2).dense(6, Activation::Relu).dense(1, Activation::Sigmoid).build(&backend).unwrap();
        model.compile(Loss::MeanSquaredError, Optimizer::sgd(0.5, 0.9)).unwrap();
        let h = model.fit(&data, &FitOptions { epochs: 8, batch_size: 20, ..Default::default() }).unwrap();
        let p = model.predict_dataset(&data).unwrap();
        assert!(p.iter().all(|&v| (0.0..=1.0).contains(&v)), "sigmoid outputs");
        histories.push((h, p));
    }
    assert_close("sigmoid mse loss, gpu vs cpu", &losses(&histories[0].0), &losses(&histories[1].0), 1e-5, 1e-3);
    assert_close("sigmoid mse predict, gpu vs cpu", &histories[0].1, &histories[1].1, 1e-5, 1e-3);
    let l = losses(&histories[0].0);
    assert!(l[7] < l[0], "loss did not fall: {l:?}");
}

#[test]
fn categorical_crossentropy_on_one_hot_rows_is_sparse_crossentropy() {
    let gpu = gpu();
    let data = synthetic(120, 6, 3, 5);
    let one_hot = data.clone().with_targets(data.one_hot(3).unwrap(), 3).unwrap();
    let run = |backend: &Backend, loss: Loss, data: &Dataset| {
        let mut model =
            Sequential::new(6, 1).dense(8, Activation::Relu).dense(3, Activation::Identity).build(backend).unwrap();
        model.compile(loss, Optimizer::adam(1e-2)).unwrap();
        let h = model.fit(data, &FitOptions { epochs: 3, batch_size: 25, ..Default::default() }).unwrap();
        (h, model.evaluate(data).unwrap(), model.predict_dataset(data).unwrap())
    };
    let backend = Backend::Gpu(gpu);
    let sparse = run(&backend, Loss::SparseCategoricalCrossentropy, &data);
    // Targets derived from the labels, and given explicitly as one-hot rows.
    let derived = run(&backend, Loss::CategoricalCrossentropy, &data);
    let explicit = run(&backend, Loss::CategoricalCrossentropy, &one_hot);
    let cpu = run(&Backend::Cpu, Loss::CategoricalCrossentropy, &one_hot);
    for (name, other) in [("derived", &derived), ("explicit", &explicit)] {
        assert_close(&format!("{name} vs sparse loss"), &losses(&other.0), &losses(&sparse.0), 1e-6, 1e-5);
        assert_close(&format!("{name} vs sparse accuracy"), &metrics(&other.0), &metrics(&sparse.0), 0.0, 0.0);
        assert_close(&format!("{name} vs sparse predict"), &other.2, &sparse.2, 1e-6, 1e-5);
    }
    assert_close("cce gpu vs cpu", &losses(&explicit.0), &losses(&cpu.0), 1e-4, 1e-3);
    assert_close("cce evaluate gpu vs cpu", &[explicit.1 .0, explicit.1 .1], &[cpu.1 .0, cpu.1 .1], 1e-4, 1e-3);

    // Soft targets train too, and differ from the hard ones.
    let soft: Vec<f32> = data.one_hot(3).unwrap().iter().map(|&v| 0.9 * v + 0.1 / 3.0).collect();
    let smoothed = run(&backend, Loss::CategoricalCrossentropy, &data.clone().with_targets(soft, 3).unwrap());
    assert!(
        losses(&smoothed.0).iter().zip(losses(&explicit.0)).all(|(a, b)| a > &b),
        "label smoothing raises the loss"
    );
}

#[test]
fn hinge_trains_a_linear_classifier_and_gpu_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(21);
    let x = rng.vec_uniform(150 * 7, -1.0, 1.0);
    let w = rng.vec_uniform(7, -1.0, 1.0);
    let y = x.chunks(7).map(|row| (dot(&w, row) > 0.0) as u32).collect();
    let data = Dataset::from_f32(x, y, 7, 2, "separable").unwrap();
    let mut results = Vec::new();
    for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
        let mut model = Sequential::new(7, 3).dense(1, Activation::Identity).build(&backend).unwrap();
        model.compile(Loss::Hinge, Optimizer::sgd(0.1, 0.0)).unwrap();
        let h = model.fit(&data, &FitOptions { epochs: 10, batch_size: 30, ..Default::default() }).unwrap();
        results.push((h, model.evaluate(&data).unwrap(), model.predict_dataset(&data).unwrap()));
    }
    let (g, c) = (&results[0], &results[1]);
    assert_close("hinge loss, gpu vs cpu", &losses(&g.0), &losses(&c.0), 1e-5, 1e-3);
    assert_close("hinge scores, gpu vs cpu", &g.2, &c.2, 1e-5, 1e-3);
    assert!(g.1 .1 >= 0.9, "hinge accuracy {} on a linearly separable set", g.1 .1);
    // predict gives raw scores; their signs are evaluate's accuracy, and the loss is
    // mean max(0, 1 − y·z) with y = ±1.
    let signs = g.2.iter().zip(&data.labels).filter(|(&z, &l)| (z > 0.0) == (l == 1)).count();
    assert!((signs as f32 / data.rows as f32 - g.1 .1).abs() < 1e-6);
    let hinge: f32 = g.2.iter().zip(&data.labels).map(|(&z, &l)| (1.0 - if l == 1 { z } else { -z }).max(0.0)).sum();
    assert_close("hinge evaluate vs predict", &[g.1 .0], &[hinge / data.rows as f32], 1e-5, 1e-4);
}

#[test]
fn float_target_losses_reject_bad_setups() {
    let backend = Backend::Gpu(gpu());
    // Two outputs and integer labels only: mean squared error has nothing to regress on.
    let labelled = synthetic(20, 4, 2, 1);
    let mut model = Sequential::new(4, 1).dense(2, Activation::Identity).build(&backend).unwrap();
    model.compile(Loss::MeanSquaredError, Optimizer::adam(1e-3)).unwrap();
    let err = model.fit(&labelled, &FitOptions::default()).expect_err("no targets");
    assert!(err.to_string().contains("no float targets"), "{err}");
    // Targets of the wrong width.
    let wide = labelled.clone().with_targets(vec![0.0; 60], 3).unwrap();
    let err = model.evaluate(&wide).expect_err("3-wide targets for 2 outputs");
    assert!(matches!(err, WgnnError::Shape { .. }) && err.to_string().contains("width 3"), "{err}");
    // Dataset::with_targets checks its own input.
    let err = labelled.clone().with_targets(vec![0.0; 7], 2).expect_err("7 values");
    assert!(err.to_string().contains("7 target values for 20 rows"), "{err}");
    let err = labelled.clone().with_targets(vec![f32::NAN; 40], 2).expect_err("NaN target");
    assert!(matches!(err, WgnnError::NonFinite { .. }), "{err}");
    // Hinge and categorical cross-entropy want a linear last layer of the right width.
    let mut sig = Sequential::new(4, 1).dense(1, Activation::Sigmoid).build(&backend).unwrap();
    let err = sig.compile(Loss::Hinge, Optimizer::adam(1e-3)).expect_err("hinge after sigmoid");
    assert!(err.to_string().contains("last layer must be linear"), "{err}");
    let mut one = Sequential::new(4, 1).dense(1, Activation::Identity).build(&backend).unwrap();
    let err = one.compile(Loss::CategoricalCrossentropy, Optimizer::adam(1e-3)).expect_err("1 output");
    assert!(err.to_string().contains("at least 2 output units"), "{err}");
    // Targets edited to a length that fits no row count: a shape error on both backends, not a
    // panic or a silent misread.
    let mut short = linear_regression(20, 1);
    short.targets.as_mut().unwrap().values.truncate(10);
    for backend in [backend.clone(), Backend::Cpu] {
        let mut m = Sequential::new(5, 1).dense(2, Activation::Identity).build(&backend).unwrap();
        m.compile(Loss::MeanSquaredError, Optimizer::adam(1e-3)).unwrap();
        let err = m.fit(&short, &FitOptions::default()).expect_err("10 target values for 20 rows");
        assert!(
            matches!(err, WgnnError::Shape { .. }) && err.to_string().contains("10 target values for 20 rows"),
            "{err}"
        );
    }
    // A regression data set has no labels for a classification loss to read.
    let regression = Dataset::regression(vec![0.5; 12], vec![0.0, 1.0, 1.0], 4, 1, "regression").unwrap();
    assert_eq!(regression.classes, 0);
    let mut bce = Sequential::new(4, 1).dense(1, Activation::Identity).build(&backend).unwrap();
    bce.compile(Loss::BinaryCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let err = bce.fit(&regression, &FitOptions::default()).expect_err("BCE on a regression data set");
    assert!(err.to_string().contains("no class labels"), "{err}");
    // Early stopping cannot maximise the mean absolute error that MSE's accuracy column holds.
    let mut m = Sequential::new(5, 1).dense(2, Activation::Identity).build(&backend).unwrap();
    m.compile(Loss::MeanSquaredError, Optimizer::adam(1e-3)).unwrap();
    let data = linear_regression(40, 3);
    let es = EarlyStopping { monitor: Monitor::ValAccuracy, ..EarlyStopping::val_loss(2) };
    let options = FitOptions { validation: Validation::Data(&data), early_stopping: Some(es), ..Default::default() };
    let err = m.fit(&data, &options).expect_err("ValAccuracy under MSE");
    assert!(err.to_string().contains("mean absolute error"), "{err}");
    // Names as a command line gives them.
    assert_eq!(Loss::parse("MSE").unwrap(), Loss::MeanSquaredError);
    assert_eq!(Loss::parse("categorical_crossentropy").unwrap(), Loss::CategoricalCrossentropy);
    let err = Loss::parse("cross_entropy").expect_err("unknown");
    assert!(err.to_string().contains("unknown loss \"cross_entropy\"") && err.to_string().contains("hinge"), "{err}");
}

#[test]
fn a_regression_checkpoint_resumes_with_its_loss() {
    let dir = std::env::temp_dir().join(format!("wgnn-mse-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mse.safetensors");
    let backend = Backend::Gpu(gpu());
    let data = linear_regression(64, 2);
    let mut model = Sequential::new(5, 4).dense(2, Activation::Identity).build(&backend).unwrap();
    model.compile(Loss::MeanSquaredError, Optimizer::adam(1e-2)).unwrap();
    let history = model.fit(&data, &FitOptions { epochs: 2, batch_size: 16, ..Default::default() }).unwrap();
    model.save_checkpoint(&path, 2, &history).unwrap();
    let resumed = Sequential::resume(&path, &backend).unwrap();
    assert_eq!(resumed.loss(), Loss::MeanSquaredError);
    assert_eq!(resumed.evaluate(&data).unwrap(), model.evaluate(&data).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
