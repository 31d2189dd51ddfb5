//! Data-parallel `fit` on one process ([`SingleProcess`]): the same steps as plain `fit`, bit
//! for bit (with batch norm too), a cancelled run stopping where plain fit stops, and what it
//! does not support yet refused by name. The two-rank equivalence under
//! `mpirun` is `tests/data_parallel.rs` (feature `mpi`).

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use wgnn::collective::SingleProcess;
use wgnn::model::{Backend, Checkpointing, FitOptions, Loss, Observer, Optimizer, Progress, Sequential, Validation};
use wgnn::{Activation, WgnnError};

/// Every progress tick: (epoch, samples, running loss, running accuracy).
#[derive(Default)]
struct Ticks(Vec<(usize, usize, f32, f32)>);

impl Observer for Ticks {
    fn on_progress(&mut self, p: &Progress) {
        self.0.push((p.epoch, p.samples, p.loss, p.accuracy));
    }
}

fn mlp(backend: &Backend) -> Sequential {
    let mut model = Sequential::new(37, 7)
        .dense(23, Activation::Relu)
        .dense(19, Activation::Tanh)
        .dense(5, Activation::Identity)
        .build(backend)
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    model
}

#[test]
fn one_rank_trains_exactly_as_plain_fit() {
    // 2 epochs of 10 full batches of 16 and a partial one of 5 (after the validation split: 165
    // training rows), with validation and clipping.
    let data = synthetic(206, 37, 5, 1);
    let opts = FitOptions {
        epochs: 2,
        batch_size: 16,
        progress_every: 1,
        validation: Validation::Fraction(0.2),
        clip_norm: Some(1.0),
        ..Default::default()
    };
    let backend = Backend::Gpu(gpu());
    let (mut plain, mut parallel) = (mlp(&backend), mlp(&backend));
    let (mut plain_ticks, mut parallel_ticks) = (Ticks::default(), Ticks::default());
    let plain_history = plain.fit_with(&data, &opts, &mut plain_ticks).unwrap();
    let parallel_history = parallel.fit_data_parallel_with(&data, &opts, &SingleProcess, &mut parallel_ticks).unwrap();
    assert_eq!(plain_ticks.0.len(), 22, "a tick per step");
    assert_eq!(parallel_ticks.0, plain_ticks.0, "per-step running loss and accuracy");
    let figures = |h: &wgnn::history::History| {
        h.epochs.iter().map(|r| (r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy)).collect::<Vec<_>>()
    };
    assert_eq!(figures(&parallel_history), figures(&plain_history), "the history");
    assert_eq!(parallel.weights().unwrap(), plain.weights().unwrap(), "the weights after 22 steps");
    // The run learned something: equal weights of a model that never updated would also match.
    assert_ne!(parallel.weights().unwrap(), mlp(&backend).weights().unwrap(), "the weights moved");
}

#[test]
fn a_plain_fit_checkpoint_resumes_on_one_rank() {
    // Plain fit's checkpoint records no world size (as before data-parallel fit): one rank.
    let data = synthetic(96, 37, 5, 7);
    let backend = Backend::Gpu(gpu());
    let opts = |epochs| FitOptions { epochs, batch_size: 16, ..Default::default() };
    let straight = mlp(&backend).fit_data_parallel(&data, &opts(3), &SingleProcess).unwrap();
    let dir = scratch("plain_checkpoint");
    let checkpoint = Checkpointing::every_epoch(&dir);
    mlp(&backend).fit(&data, &FitOptions { checkpoint: Some(checkpoint), ..opts(1) }).unwrap();
    let mut resumed = Sequential::resume(checkpoint.last_path(), &backend).unwrap();
    assert_eq!(resumed.resumed_fit().map(|f| f.world_size), Some(1));
    let continued = resumed.fit_data_parallel(&data, &opts(3), &SingleProcess).unwrap();
    let losses = |h: &wgnn::history::History| h.epochs.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&continued), losses(&straight), "the resumed history, bit for bit");
}

fn normed_mlp(backend: &Backend) -> Sequential {
    let mut model = Sequential::new(37, 7)
        .batch_norm()
        .dense(23, Activation::Relu)
        .batch_norm()
        .dense(5, Activation::Identity)
        .build(backend)
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    model
}

#[test]
fn batch_norm_trains_exactly_as_plain_fit_on_one_rank() {
    // 10 full batches of 16 and a partial one of 5 per epoch: every parameter, the running
    // statistics included, as plain fit leaves them.
    let data = synthetic(165, 37, 5, 6);
    let opts = FitOptions { epochs: 2, batch_size: 16, ..Default::default() };
    let backend = Backend::Gpu(gpu());
    let (mut plain, mut parallel) = (normed_mlp(&backend), normed_mlp(&backend));
    let plain_history = plain.fit(&data, &opts).unwrap();
    let history = parallel.fit_data_parallel(&data, &opts, &SingleProcess).unwrap();
    let losses = |h: &wgnn::history::History| h.epochs.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&history), losses(&plain_history), "the training losses");
    assert_eq!(parallel.parameters().unwrap(), plain.parameters().unwrap(), "every parameter after 22 steps");
    let running = parallel.parameters().unwrap().into_iter().find(|p| p.name == "layers.0.running_mean").unwrap();
    assert!(running.values.iter().any(|&v| v != 0.0), "the running mean moved from its zeros");
}

fn refused(what: &str, result: wgnn::Result<wgnn::history::History>, needle: &str) {
    match result {
        Err(WgnnError::InvalidArgument { op, detail }) => {
            assert_eq!(op, "fit_data_parallel", "{what}");
            assert!(detail.contains(needle), "{what}: {detail:?} should name {needle:?}");
        }
        other => panic!("{what}: expected a refusal naming {needle:?}, got {other:?}"),
    }
}

#[test]
fn what_is_not_supported_yet_is_refused_by_name() {
    let data = synthetic(64, 37, 5, 2);
    let opts = FitOptions { batch_size: 16, ..Default::default() };
    // 65 rows in batches of 16: a last batch of 1 row, whose variance batch norm cannot take.
    let one_row_left = synthetic(65, 37, 5, 2);
    let normed = normed_mlp(&Backend::Gpu(gpu())).fit_data_parallel(&one_row_left, &opts, &SingleProcess);
    refused("batch norm on a 1-row shard", normed, "batch norm needs at least 2 rows per rank");
    refused("the CPU backend", mlp(&Backend::Cpu).fit_data_parallel(&data, &opts, &SingleProcess), "CPU backend");
    let skipping = FitOptions { skip_nonfinite_batches: true, ..opts };
    refused(
        "skipping",
        mlp(&Backend::Gpu(gpu())).fit_data_parallel(&data, &skipping, &SingleProcess),
        "skip_nonfinite_batches",
    );
}

/// Records every tick, and sets `flag` at tick `at` (epoch, step), as a Ctrl-C would.
struct CancelAt<'f> {
    at: (usize, usize),
    flag: &'f AtomicBool,
    ticks: Ticks,
}

impl Observer for CancelAt<'_> {
    fn on_progress(&mut self, p: &Progress) {
        self.ticks.on_progress(p);
        if (p.epoch, p.step) == self.at {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

#[test]
fn a_cancelled_run_stops_where_plain_fit_stops() {
    // 3 epochs of 6 steps; the flag is set at epoch 2's third tick.
    let data = synthetic(96, 37, 5, 5);
    let backend = Backend::Gpu(gpu());
    let run = |parallel: bool| {
        let flag = AtomicBool::new(false);
        let opts =
            FitOptions { epochs: 3, batch_size: 16, progress_every: 1, cancel: Some(&flag), ..Default::default() };
        let mut observer = CancelAt { at: (2, 3), flag: &flag, ticks: Ticks::default() };
        let mut model = mlp(&backend);
        let history = match parallel {
            true => model.fit_data_parallel_with(&data, &opts, &SingleProcess, &mut observer),
            false => model.fit_with(&data, &opts, &mut observer),
        };
        (history.unwrap(), observer.ticks.0, model)
    };
    let (plain_history, plain_ticks, mut plain) = run(false);
    let (history, ticks, mut parallel) = run(true);
    assert_eq!(plain_history.cancelled_in, Some(2), "plain fit stops in epoch 2");
    assert_eq!(plain_ticks.len(), 6 + 3, "plain fit: epoch 1's 6 ticks and 3 of epoch 2");
    assert_eq!(history.cancelled_in, Some(2), "cancelled in epoch 2");
    assert_eq!(history.epochs.len(), 1, "epoch 1 recorded, not the unfinished one");
    // The step in whose all-reduce the flag went is dropped, not reported: the same ticks.
    assert_eq!(ticks, plain_ticks, "the ticks");
    assert_eq!(parallel.weights().unwrap(), plain.weights().unwrap(), "the weights after 9 steps");
    // The step count t went back with the dropped step (Adam's bias correction reads it): one
    // more epoch from here trains as it does after plain fit's cancel.
    let more = FitOptions { epochs: 1, batch_size: 16, ..Default::default() };
    plain.fit(&data, &more).unwrap();
    parallel.fit(&data, &more).unwrap();
    assert_eq!(parallel.weights().unwrap(), plain.weights().unwrap(), "the weights one epoch later");
}
