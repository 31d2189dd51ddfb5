//! A run that learns nothing does not succeed, and a divergence stop keeps what was asked: an
//! epoch whose every batch is skipped is an error, so is a non-finite validation loss, and the
//! weights put back are written to the checkpoint folder.

mod common;

use common::*;
use wgnn::data::Features;
use wgnn::model::{Backend, Checkpointing, FitOptions, Loss, Optimizer, Sequential, Validation};
use wgnn::{Activation, Dataset, WgnnError};

fn model(backend: &Backend, lr: f32) -> Sequential {
    let mut m = Sequential::new(8, 1)
        .dense(16, Activation::Relu)
        .dense(16, Activation::Relu)
        .dense(3, Activation::Identity)
        .build(backend)
        .unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(lr, 0.0)).unwrap();
    m
}

/// `data` with every feature of `rows` set near f32's largest value: x·W overflows there.
fn poisoned(data: &Dataset, rows: impl Iterator<Item = usize>) -> Dataset {
    let mut out = data.clone();
    if let Features::F32(x) = &mut out.features {
        for r in rows {
            x[r * 8..(r + 1) * 8].fill(3e38);
        }
    }
    out
}

fn training_detail(result: wgnn::Result<wgnn::History>, what: &str) -> String {
    match result {
        Err(WgnnError::Training { detail }) => detail,
        Err(e) => panic!("{what}: unexpected error {e}"),
        Ok(h) => panic!("{what}: fit succeeded with {:?}", h.epochs.last()),
    }
}

#[test]
fn an_epoch_whose_every_batch_is_skipped_is_an_error() {
    let clean = synthetic(60, 8, 3, 4);
    let all_bad = poisoned(&clean, 0..60);
    for backend in backends() {
        let mut m = model(&backend, 0.1);
        let opts = FitOptions { epochs: 3, batch_size: 16, skip_nonfinite_batches: true, ..Default::default() };
        let detail = training_detail(m.fit(&all_bad, &opts), "every row overflows");
        assert!(detail.contains("every batch of epoch 1 (4 of 4)"), "{detail}");
        // A learning rate that blows the weights up: the first epoch's later batches, or the
        // next epoch's, are all skipped; before, the run ended with NaN losses and no error.
        let mut m = model(&backend, 1e6);
        let opts = FitOptions { epochs: 5, batch_size: 10, skip_nonfinite_batches: true, ..Default::default() };
        let detail = training_detail(m.fit(&clean, &opts), "lr 1e6");
        assert!(detail.contains("had a non-finite loss and was skipped"), "{detail}");
    }
}

#[test]
fn a_non_finite_validation_loss_stops_the_run() {
    let train = synthetic(60, 8, 3, 4);
    let validation = poisoned(&synthetic(20, 8, 3, 5), 0..3);
    for backend in backends() {
        let mut m = model(&backend, 0.05);
        let opts =
            FitOptions { epochs: 2, batch_size: 16, validation: Validation::Data(&validation), ..Default::default() };
        let detail = training_detail(m.fit(&train, &opts), "poisoned validation rows");
        assert!(detail.contains("the validation loss became") && detail.contains("epoch 1"), "{detail}");
        let weights = m.weights().unwrap();
        assert!(weights.iter().flat_map(|(w, b)| w.iter().chain(b)).all(|v| v.is_finite()));
    }
}

#[test]
fn a_divergence_stop_writes_the_restored_weights_to_the_checkpoint_folder() {
    let data = synthetic(200, 8, 3, 3);
    for backend in backends() {
        let dir = scratch("checkpoint");
        let mut m = model(&backend, 1e6);
        let checkpoint = Checkpointing::every_epoch(&dir);
        let opts = FitOptions {
            epochs: 3,
            batch_size: 10,
            progress_every: 1,
            checkpoint: Some(checkpoint),
            ..Default::default()
        };
        let detail = training_detail(m.fit(&data, &opts), "lr 1e6");
        let last = checkpoint.last_path();
        assert!(detail.contains(&last.display().to_string()) && detail.contains("after epoch 0"), "{detail}");
        // The file holds the weights put back, and resumes (its state is finite).
        let resumed = Sequential::resume(&last, &backend).unwrap();
        assert_eq!(resumed.resumed_epoch(), Some(0));
        let bits = |m: &Sequential| -> Vec<u32> {
            m.weights()
                .unwrap()
                .iter()
                .flat_map(|(w, b)| w.iter().chain(b).map(|v| v.to_bits()).collect::<Vec<_>>())
                .collect()
        };
        assert_eq!(bits(&resumed), bits(&m));
        let p = resumed.predict(&data.to_f32(), data.rows).unwrap();
        assert!(p.iter().all(|v| v.is_finite()));
    }
}
