//! Features wired into the training API: binary cross-entropy, layer initialisers (and, below,
//! early stopping and the further optimizers), each checked GPU against the CPU reference.

mod common;
use common::*;
use wgnn::data::Dataset;
use wgnn::internals::rng::Rng;
use wgnn::model::{Backend, EarlyStopping, FitOptions, Loss, Monitor, Optimizer, Sequential};
use wgnn::{Activation, Initializer, Layer, WgnnError};

/// Random features labelled 0/1 by the sign of a fixed random linear map (learnable).
fn binary(rows: usize, dim: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let x = rng.vec_uniform(rows * dim, -1.0, 1.0);
    let w = rng.vec_uniform(dim, -1.0, 1.0);
    let y = x.chunks(dim).map(|row| (dot(&w, row) > 0.0) as u32).collect();
    Dataset::from_f32(x, y, dim, 2, "binary").unwrap()
}

#[test]
fn binary_crossentropy_gpu_fit_matches_cpu_and_learns() {
    let gpu = gpu();
    // 6 steps of 16 rows and a partial 7th of 4, for 4 epochs.
    let data = binary(100, 13, 1);
    let mut results = Vec::new();
    for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
        let mut model =
            Sequential::new(13, 3).dense(9, Activation::Tanh).dense(1, Activation::Identity).build(&backend).unwrap();
        model.compile(Loss::BinaryCrossentropy, Optimizer::adam(2e-2)).unwrap();
        let history = model.fit(&data, &FitOptions { epochs: 4, batch_size: 16, ..Default::default() }).unwrap();
        let (loss, accuracy) = model.evaluate(&data).unwrap();
        let probs = model.predict_dataset(&data).unwrap();
        results.push((history, loss, accuracy, probs, model.weights().unwrap()));
    }
    let (g, c) = (&results[0], &results[1]);
    let losses = |h: &wgnn::History| h.epochs.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    let accs = |h: &wgnn::History| h.epochs.iter().map(|r| r.train_accuracy).collect::<Vec<_>>();
    assert_close("bce train loss, gpu vs cpu", &losses(&g.0), &losses(&c.0), 1e-4, 1e-3);
    assert_close("bce train accuracy, gpu vs cpu", &accs(&g.0), &accs(&c.0), 1e-6, 0.0);
    assert_close("bce evaluate, gpu vs cpu", &[g.1, g.2], &[c.1, c.2], 1e-4, 1e-3);
    assert_close("bce predict, gpu vs cpu", &g.3, &c.3, 1e-5, 1e-3);
    for (i, ((wg, bg), (wc, bc))) in g.4.iter().zip(&c.4).enumerate() {
        assert_close(&format!("bce layer {i} W"), wg, wc, 1e-4, 1e-3);
        assert_close(&format!("bce layer {i} b"), bg, bc, 1e-4, 1e-3);
    }
    let l = losses(&g.0);
    assert!(l[3] < l[0], "bce loss did not fall: {l:?}");
    // The stated loss: from ln 2 ≈ 0.69 (chance) to below 0.35 after 4 epochs (0.31 measured).
    assert!(g.1 < 0.35, "bce loss after 4 epochs is {} (history {l:?})", g.1);
    assert!(g.2 >= 0.85, "bce accuracy {} on a linearly separable set", g.2);

    // predict is σ(z), one value per row; evaluate's accuracy thresholds it at 0.5.
    assert_eq!(g.3.len(), data.rows);
    assert!(g.3.iter().all(|&p| (0.0..=1.0).contains(&p)));
    let thresholded = g.3.iter().zip(&data.labels).filter(|(&p, &y)| (p > 0.5) == (y == 1)).count();
    assert!((thresholded as f32 / data.rows as f32 - g.2).abs() < 1e-6, "predict vs evaluate accuracy");
    let nll: f64 =
        g.3.iter()
            .zip(&data.labels)
            .map(|(&p, &y)| -(if y == 1 { p as f64 } else { 1.0 - p as f64 }).ln())
            .sum::<f64>()
            / data.rows as f64;
    assert!((nll as f32 - g.1).abs() < 1e-4, "evaluate loss {} vs −log σ {nll}", g.1);
}

#[test]
fn binary_crossentropy_rejects_bad_setups() {
    let backend = Backend::Gpu(gpu());
    let mut two = Sequential::new(4, 1).dense(2, Activation::Identity).build(&backend).unwrap();
    let err = two.compile(Loss::BinaryCrossentropy, Optimizer::sgd(0.1, 0.0)).expect_err("2 outputs");
    assert!(err.to_string().contains("exactly 1 output unit"), "{err}");
    let mut tanh = Sequential::new(4, 1).dense(1, Activation::Tanh).build(&backend).unwrap();
    let err = tanh.compile(Loss::BinaryCrossentropy, Optimizer::sgd(0.1, 0.0)).expect_err("tanh last");
    assert!(err.to_string().contains("last layer must be linear"), "{err}");
    let mut model = Sequential::new(4, 1).dense(1, Activation::Identity).build(&backend).unwrap();
    model.compile(Loss::BinaryCrossentropy, Optimizer::sgd(0.1, 0.0)).unwrap();
    let three = Dataset::from_f32(vec![0.5; 12], vec![0, 1, 2], 4, 3, "three classes").unwrap();
    let err = model.evaluate(&three).expect_err("label 2");
    assert!(matches!(err, WgnnError::InvalidArgument { .. }) && err.to_string().contains("label 2"), "{err}");
}

#[test]
fn dense_init_sets_the_initial_weights() {
    for backend in [Backend::Gpu(gpu()), Backend::Cpu] {
        let model = Sequential::new(5, 9)
            .dense_init(3, Activation::Relu, Initializer::Constant(0.01))
            .dense(2, Activation::Identity)
            .build(&backend)
            .unwrap();
        let w = model.weights().unwrap();
        assert_eq!(w[0].0, vec![0.01; 15]);
        assert_eq!(w[0].1, vec![0.0; 3]);
        // The default stays Glorot-uniform: limit √(6 / (3 + 2)).
        let limit = (6.0f32 / 5.0).sqrt();
        assert!(w[1].0.iter().all(|v| v.abs() <= limit) && w[1].0.iter().any(|&v| v != 0.0));
    }
}

/// Random features with random labels: nothing to learn, so a model can only memorise its
/// training rows and its validation loss soon rises.
fn noise(rows: usize, dim: usize, classes: u32, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let x = rng.vec_uniform(rows * dim, -1.0, 1.0);
    let y = (0..rows).map(|_| (rng.uniform(0.0, classes as f32) as u32).min(classes - 1)).collect();
    Dataset::from_f32(x, y, dim, classes as usize, "noise").unwrap()
}

fn overfitting_model(backend: &Backend) -> Sequential {
    let mut model =
        Sequential::new(10, 4).dense(64, Activation::Relu).dense(3, Activation::Identity).build(backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(2e-2)).unwrap();
    model
}

#[test]
fn early_stopping_stops_an_overfitting_run_and_restores_the_best_weights() {
    let gpu = gpu();
    let (train, val) = (noise(24, 10, 3, 1), noise(60, 10, 3, 2));
    let patience = 3;
    let options = FitOptions {
        epochs: 80,
        batch_size: 8,
        validation: wgnn::model::Validation::Data(&val),
        early_stopping: Some(EarlyStopping::val_loss(patience)),
        ..Default::default()
    };
    let mut histories = Vec::new();
    for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
        let mut model = overfitting_model(&backend);
        let history = model.fit(&train, &options).unwrap();
        let stopped = history.stopped_early_at.expect("an overfitting run stops early");
        assert!(stopped < 80 && history.epochs.len() == stopped, "{history:?}");
        let val_losses: Vec<f32> = history.epochs.iter().map(|r| r.val_loss.unwrap()).collect();
        let best = (0..val_losses.len()).fold(0, |b, i| if val_losses[i] < val_losses[b] { i } else { b });
        assert_eq!(stopped, best + 1 + patience, "stops `patience` epochs after the best: {val_losses:?}");

        // The weights at the end are the best epoch's: the same as a run stopped there.
        let (restored_loss, _) = model.evaluate(&val).unwrap();
        assert!((restored_loss - val_losses[best]).abs() < 1e-5, "restored {restored_loss} vs best {val_losses:?}");
        let mut reference = overfitting_model(&backend);
        let short = FitOptions { epochs: best + 1, early_stopping: None, ..options };
        reference.fit(&train, &short).unwrap();
        for (i, ((w, b), (wr, br))) in model.weights().unwrap().iter().zip(&reference.weights().unwrap()).enumerate() {
            assert_eq!(w, wr, "layer {i} W: restored vs a run of {} epochs", best + 1);
            assert_eq!(b, br, "layer {i} b");
        }
        histories.push(val_losses);
    }
    assert_eq!(histories[0].len(), histories[1].len(), "gpu and cpu stop at the same epoch");
    assert_close("early-stopped val loss, gpu vs cpu", &histories[0], &histories[1], 1e-4, 1e-3);
}

#[test]
fn early_stopping_on_accuracy_without_restore_keeps_the_last_weights() {
    let (train, val) = (noise(24, 10, 3, 1), noise(60, 10, 3, 2));
    let es = EarlyStopping { monitor: Monitor::ValAccuracy, patience: 2, min_delta: 0.0, restore_best_weights: false };
    let mut model = overfitting_model(&Backend::Gpu(gpu()));
    let options = FitOptions {
        epochs: 80,
        batch_size: 8,
        validation: wgnn::model::Validation::Data(&val),
        early_stopping: Some(es),
        ..Default::default()
    };
    let history = model.fit(&train, &options).unwrap();
    let stopped = history.stopped_early_at.expect("accuracy stops improving on noise");
    let last = history.epochs.last().unwrap();
    assert_eq!(last.epoch, stopped);
    let (_, accuracy) = model.evaluate(&val).unwrap();
    assert!((accuracy - last.val_accuracy.unwrap()).abs() < 1e-6, "the last epoch's weights are kept");

    // Early stopping needs something to monitor.
    let err = overfitting_model(&Backend::Cpu)
        .fit(&train, &FitOptions { early_stopping: Some(es), ..Default::default() })
        .expect_err("no validation");
    assert!(err.to_string().contains("needs validation"), "{err}");
}

/// Random features labelled by the argmax of a fixed random linear map.
fn classes3(rows: usize, dim: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let x = rng.vec_uniform(rows * dim, -1.0, 1.0);
    let maps: Vec<Vec<f32>> = (0..3).map(|_| rng.vec_uniform(dim, -1.0, 1.0)).collect();
    let y = x
        .chunks(dim)
        .map(|row| (0..3).fold(0, |b, c| if dot(&maps[c], row) > dot(&maps[b], row) { c } else { b }) as u32)
        .collect();
    Dataset::from_f32(x, y, dim, 3, "classes3").unwrap()
}

fn further_optimizers() -> Vec<Optimizer> {
    let mut rms_momentum = Optimizer::rmsprop(5e-3);
    if let Optimizer::RmsProp(c) = &mut rms_momentum {
        c.momentum = 0.9;
    }
    vec![
        Optimizer::adamw(1e-2, 0.05),
        Optimizer::rmsprop(5e-3),
        rms_momentum,
        Optimizer::adagrad(5e-2),
        Optimizer::adadelta(1.0),
    ]
}

#[test]
fn further_optimizers_gpu_fit_matches_cpu_and_learns() {
    let gpu = gpu();
    // 8 steps of 16 rows and a partial 9th of 4, for 3 epochs.
    let data = classes3(132, 11, 5);
    for optimizer in further_optimizers() {
        let mut runs = Vec::new();
        for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
            let mut model = Sequential::new(11, 6)
                .dense(16, Activation::Relu)
                .dense(3, Activation::Identity)
                .build(&backend)
                .unwrap();
            model.compile(Loss::SparseCategoricalCrossentropy, optimizer).unwrap();
            let history = model.fit(&data, &FitOptions { epochs: 3, batch_size: 16, ..Default::default() }).unwrap();
            runs.push((history.epochs.iter().map(|r| r.train_loss).collect::<Vec<_>>(), model.weights().unwrap()));
        }
        assert_close(&format!("{optimizer:?}: train loss, gpu vs cpu"), &runs[0].0, &runs[1].0, 1e-4, 1e-3);
        for (i, ((wg, bg), (wc, bc))) in runs[0].1.iter().zip(&runs[1].1).enumerate() {
            assert_close(&format!("{optimizer:?}: layer {i} W"), wg, wc, 1e-4, 1e-3);
            assert_close(&format!("{optimizer:?}: layer {i} b"), bg, bc, 1e-4, 1e-3);
        }
        assert!(runs[0].0[2] < runs[0].0[0], "{optimizer:?}: loss did not fall: {:?}", runs[0].0);
    }
}

#[test]
fn further_optimizers_and_bce_resume_from_checkpoints_exactly() {
    let backend = Backend::Gpu(gpu());
    let multi = classes3(80, 7, 8);
    let two = binary(80, 7, 9);
    let mut cases: Vec<(Optimizer, Loss, &Dataset)> =
        further_optimizers().into_iter().map(|o| (o, Loss::SparseCategoricalCrossentropy, &multi)).collect();
    cases.push((Optimizer::adagrad(5e-2), Loss::BinaryCrossentropy, &two));
    for (optimizer, loss, data) in cases {
        let outputs = if loss == Loss::BinaryCrossentropy { 1 } else { 3 };
        let build = || {
            let mut m = Sequential::new(7, 2)
                .dense(8, Activation::Tanh)
                .dense(outputs, Activation::Identity)
                .build(&backend)
                .unwrap();
            m.compile(loss, optimizer).unwrap();
            m
        };
        let options = |epochs| FitOptions { epochs, batch_size: 16, ..Default::default() };
        let mut straight = build();
        let want = straight.fit(data, &options(3)).unwrap();

        let dir = std::env::temp_dir().join(format!("wgnn-model-features-{}", std::process::id()));
        let checkpoint = wgnn::model::Checkpointing::every_epoch(&dir);
        let mut first = build();
        first.fit(data, &FitOptions { checkpoint: Some(checkpoint), ..options(2) }).unwrap();
        let mut resumed = Sequential::resume(checkpoint.last_path(), &backend).unwrap();
        assert_eq!(resumed.loss(), loss, "{optimizer:?}: the checkpoint keeps the loss");
        let got = resumed.fit(data, &options(3)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let losses = |h: &wgnn::History| h.epochs.iter().map(|r| r.train_loss.to_bits()).collect::<Vec<_>>();
        assert_eq!(losses(&got), losses(&want), "{optimizer:?} {loss:?}: resumed history");
        assert_eq!(resumed.weights().unwrap(), straight.weights().unwrap(), "{optimizer:?} {loss:?}: weights");
    }
}

#[test]
fn bad_optimizer_settings_are_rejected_at_compile() {
    let mut model = Sequential::new(4, 1).dense(2, Activation::Identity).build(&Backend::Cpu).unwrap();
    let mut bad = Optimizer::rmsprop(1e-3);
    if let Optimizer::RmsProp(c) = &mut bad {
        c.rho = 1.5;
    }
    let err = model.compile(Loss::SparseCategoricalCrossentropy, bad).expect_err("rho 1.5");
    assert!(err.to_string().contains("rmsprop_update") && err.to_string().contains("rho"), "{err}");
}

fn dropout_model(backend: &Backend, rate: f32) -> Sequential {
    let mut model = Sequential::new(11, 12)
        .dense(24, Activation::Relu)
        .dropout(rate)
        .dense(16, Activation::Tanh)
        .dropout(rate)
        .dense(3, Activation::Identity)
        .build(backend)
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    model
}

#[test]
fn dropout_layers_train_the_same_on_gpu_and_cpu_and_are_off_in_evaluate() {
    let gpu = gpu();
    let data = classes3(132, 11, 21);
    let options = FitOptions { epochs: 3, batch_size: 16, ..Default::default() };
    let mut runs = Vec::new();
    for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
        let mut model = dropout_model(&backend, 0.3);
        let history = model.fit(&data, &options).unwrap();
        let losses: Vec<f32> = history.epochs.iter().map(|r| r.train_loss).collect();
        // evaluate and predict run without dropout: repeatable, and consistent with each other.
        let (loss, accuracy) = model.evaluate(&data).unwrap();
        assert_eq!(model.evaluate(&data).unwrap(), (loss, accuracy), "evaluate is deterministic");
        let probs = model.predict_dataset(&data).unwrap();
        let nll = probs.chunks(3).zip(&data.labels).map(|(p, &y)| -(p[y as usize] as f64).ln()).sum::<f64>()
            / data.rows as f64;
        assert!((nll as f32 - loss).abs() < 1e-4, "evaluate loss {loss} vs predict's {nll}");
        runs.push((losses, model.weights().unwrap()));
    }
    assert_close("dropout: train loss, gpu vs cpu", &runs[0].0, &runs[1].0, 1e-4, 1e-3);
    for (i, ((wg, bg), (wc, bc))) in runs[0].1.iter().zip(&runs[1].1).enumerate() {
        assert_close(&format!("dropout: layer {i} W"), wg, wc, 1e-4, 1e-3);
        assert_close(&format!("dropout: layer {i} b"), bg, bc, 1e-4, 1e-3);
    }
    // The masks really act: the same model without dropout trains differently.
    let mut plain = dropout_model(&Backend::Gpu(gpu.clone()), 0.0);
    let plain_losses: Vec<f32> = plain.fit(&data, &options).unwrap().epochs.iter().map(|r| r.train_loss).collect();
    assert!((plain_losses[0] - runs[0].0[0]).abs() > 1e-3, "dropout changed nothing: {plain_losses:?}");

    // Save and load keep the rate.
    let mut model = dropout_model(&Backend::Gpu(gpu), 0.3);
    model.fit(&data, &options).unwrap();
    let path = std::env::temp_dir().join(format!("wgnn-dropout-{}.safetensors", std::process::id()));
    model.save(&path).unwrap();
    let loaded = Sequential::load(&path, &Backend::Cpu).unwrap();
    std::fs::remove_file(&path).unwrap();
    let rates: Vec<f32> =
        loaded.layers().iter().filter_map(|l| if let Layer::Dropout(r) = l { Some(*r) } else { None }).collect();
    assert_eq!(rates, vec![0.3, 0.3]);
}

#[test]
fn bad_dropout_settings_are_rejected() {
    let backend = Backend::Cpu;
    let err =
        Sequential::new(4, 1).dense(3, Activation::Relu).dropout(1.0).dense(2, Activation::Identity).build(&backend);
    assert!(err.err().expect("rate 1").to_string().contains("[0, 1)"));
    let err = Sequential::new(4, 1).dense(2, Activation::Identity).dropout(0.5).build(&backend);
    assert!(err.err().expect("output dropout").to_string().contains("output layer"));
}
