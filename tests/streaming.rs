//! A training set larger than the memory budget's share for data streams in chunks of whole
//! batches: the same history and weights, bit for bit, as when it is resident, in less device
//! memory; a resumed streamed run continues as the uninterrupted one; a budget too small for one
//! batch is a typed error.

mod common;
use common::*;
use wgnn::model::{Backend, Checkpointing, FitOptions, Loss, Optimizer, Sequential, Validation};
use wgnn::{Activation, Dataset, Gpu, GpuOptions, History, WgnnError};

const BATCH: usize = 64;

/// A device with `memory_budget` bytes, the tuner off (both runs pick the same kernels).
fn device(memory_budget: u64) -> Gpu {
    gpu(); // fails with the install hint where there is no adapter at all
    let options = GpuOptions { memory_budget: Some(memory_budget), autotune: false, ..Default::default() };
    Gpu::with_options(&options).unwrap()
}

/// `synthetic`'s learnable rows as u8 pixels (scaled back to [0, 1]): the training set stays
/// bytes on the device, packed four to a word, as MNIST's does.
fn pixels(rows: usize, shape: &[usize], classes: usize, seed: u64) -> Dataset {
    let dim = shape.iter().product();
    let data = synthetic(rows, dim, classes, seed);
    let bytes: Vec<u8> = data.to_f32().iter().map(|v| ((v + 1.0) * 127.5) as u8).collect();
    Dataset::new(bytes, dim, &data.labels).unwrap().with_sample_shape(shape).unwrap().scaled(1.0 / 255.0)
}

/// 28 features (whole words: the first layer may read the chunk in place), one hidden layer.
fn mlp(gpu: &Gpu) -> Sequential {
    mlp_with(gpu, Loss::SparseCategoricalCrossentropy)
}

/// The MLP trained against one-hot float targets: they stream beside the rows.
fn mlp_one_hot(gpu: &Gpu) -> Sequential {
    mlp_with(gpu, Loss::CategoricalCrossentropy)
}

fn mlp_with(gpu: &Gpu, loss: Loss) -> Sequential {
    let mut m = Sequential::new(28, 7)
        .dense(32, Activation::Relu)
        .dense(4, Activation::Softmax)
        .build(&Backend::Gpu(gpu.clone()))
        .unwrap();
    m.compile(loss, Optimizer::adam(1e-2)).unwrap();
    m
}

/// 7×7 pixels (49 bytes a row: rows straddle the packed words).
fn cnn(gpu: &Gpu) -> Sequential {
    let mut m = Sequential::new([7, 7, 1], 11)
        .conv2d(2, (3, 3), Activation::Relu)
        .max_pool2d((2, 2))
        .flatten()
        .dense(8, Activation::Tanh)
        .dense(3, Activation::Softmax)
        .build(&Backend::Gpu(gpu.clone()))
        .unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    m
}

fn options<'a>(epochs: usize, validation: &'a Dataset) -> FitOptions<'a> {
    FitOptions { epochs, batch_size: BATCH, validation: Validation::Data(validation), ..Default::default() }
}

/// Every recorded figure of each epoch but its timings, as bits.
fn figures(h: &History) -> Vec<[u32; 5]> {
    let bits = |v: Option<f32>| v.map_or(u32::MAX, f32::to_bits);
    h.epochs
        .iter()
        .map(|r| {
            let (loss, acc) = (r.train_loss.to_bits(), r.train_accuracy.to_bits());
            [loss, acc, bits(r.val_loss), bits(r.val_accuracy), r.skipped_batches as u32]
        })
        .collect()
}

fn flat_weights(m: &Sequential) -> Vec<u32> {
    m.parameters().unwrap().iter().flat_map(|p| p.values.iter().map(|v| v.to_bits())).collect()
}

/// Trains `build`'s model on `train` once resident (1 GiB budget) and once under `budget`, which
/// must stream it in at least 3 chunks: the same history and weights, and a lower peak of the
/// engine's device bytes, below the resident upload.
fn streams_like_resident(name: &str, build: fn(&Gpu) -> Sequential, train: &Dataset, val: &Dataset, budget: u64) {
    let (large, small) = (device(1 << 30), device(budget));
    let (mut resident, mut streamed) = (build(&large), build(&small));
    assert_eq!(resident.training_chunks(train, BATCH).unwrap(), None, "{name}: resident under 1 GiB");
    let plan = streamed.training_chunks(train, BATCH).unwrap().expect("the small budget streams");
    assert!(plan.chunks >= 3, "{name}: {plan:?}: fewer than 3 chunks");

    let fit = |m: &mut Sequential, gpu: &Gpu| {
        gpu.reset_peak_allocated_bytes();
        let before = gpu.allocated_bytes();
        let history = m.fit(train, &options(2, val)).unwrap();
        (history, gpu.peak_allocated_bytes() - before)
    };
    let (want, resident_peak) = fit(&mut resident, &large);
    let (got, streamed_peak) = fit(&mut streamed, &small);
    assert_eq!(figures(&got), figures(&want), "{name}: history, streamed vs resident");
    assert!(got.epochs.iter().all(|r| r.val_loss.is_some()), "{name}: validation ran");
    assert_eq!(flat_weights(&streamed), flat_weights(&resident), "{name}: weights, streamed vs resident");
    // The history is not that of an untrained model.
    let losses: Vec<f32> = got.epochs.iter().map(|r| r.train_loss).collect();
    assert!(losses[1] < losses[0], "{name}: training loss {losses:?}");

    println!("{name}: {plan:?}; peak device bytes resident {resident_peak}, streamed {streamed_peak}");
    // What differs is the data: the chunk buffers in place of the upload, and the steps planned on
    // each buffer (their kernels' scratch at most another step's worth).
    let step = resident.step_memory_bytes(train, BATCH).unwrap();
    assert!(
        streamed_peak <= resident_peak - plan.resident_bytes + plan.buffer_bytes + step,
        "{name}: streamed peak {streamed_peak}, resident {resident_peak}: more than the chunk buffers (and a \
         step's {step} bytes) in place of the upload"
    );
    assert!(
        streamed_peak < plan.resident_bytes,
        "{name}: streaming held {streamed_peak} bytes at most, the resident upload alone is {}",
        plan.resident_bytes
    );
}

#[test]
fn an_mlp_streamed_in_chunks_trains_as_when_resident() {
    // 12,000 rows of 28 bytes (+ a 4-byte label): 384 KB, over half of a 384 KiB budget; each
    // chunk buffer 96 KiB, 47 batches: 4 chunks, the last with the partial batch. A sixteenth
    // of the budget holds ~45 rows of evaluation: the validation set is one batch, as under 1 GiB.
    let train = pixels(12_000, &[28], 4, 1);
    let val = pixels(40, &[28], 4, 2);
    streams_like_resident("mlp", mlp, &train, &val, 384 << 10);
}

#[test]
fn float_targets_stream_beside_their_rows() {
    // 12,000 rows of 28 bytes, a label and 4 one-hot floats (+ their unused labels): 624 KB; 7
    // chunks under 384 KiB.
    let train = pixels(12_000, &[28], 4, 8);
    let val = pixels(40, &[28], 4, 9);
    streams_like_resident("mlp, one-hot targets", mlp_one_hot, &train, &val, 384 << 10);
}

#[test]
fn standardized_f32_features_stream() {
    // 12,000 rows of 28 f32 (+ label), standardised by the training set's statistics: 1.39 MB,
    // 6 chunks under 1 MiB.
    let train = synthetic(12_000, 28, 4, 10).standardized();
    let val = synthetic(40, 28, 4, 11).standardized_like(&train).unwrap();
    assert!(train.standardize.is_some());
    streams_like_resident("mlp, standardised f32", mlp, &train, &val, 1 << 20);
}

#[test]
fn a_cnn_streamed_in_chunks_trains_as_when_resident() {
    // 12,000 rows of 49 bytes (+ label): 636 KB, over half of a 512 KiB budget: 5 chunks. A
    // sixteenth of the budget holds ~29 rows of evaluation: the validation set is one batch, as
    // under 1 GiB.
    let train = pixels(12_000, &[7, 7, 1], 3, 3);
    let val = pixels(24, &[7, 7, 1], 3, 4);
    streams_like_resident("cnn", cnn, &train, &val, 512 << 10);
}

#[test]
fn a_streamed_run_resumed_from_its_checkpoint_continues_as_uninterrupted() {
    let gpu = device(384 << 10);
    let train = pixels(12_000, &[28], 4, 5);
    let val = pixels(40, &[28], 4, 6);
    let mut straight = mlp(&gpu);
    assert!(straight.training_chunks(&train, BATCH).unwrap().is_some_and(|p| p.chunks >= 3));
    let want = straight.fit(&train, &options(3, &val)).unwrap();

    let dir = scratch("resume");
    let checkpoint = Checkpointing::every_epoch(&dir);
    let mut first = mlp(&gpu);
    first.fit(&train, &FitOptions { checkpoint: Some(checkpoint), ..options(1, &val) }).unwrap();
    let mut resumed = Sequential::resume(checkpoint.last_path(), &Backend::Gpu(gpu.clone())).unwrap();
    assert_eq!(resumed.resumed_epoch(), Some(1));
    let got = resumed.fit(&train, &options(3, &val)).unwrap();
    assert_eq!(figures(&got), figures(&want), "history, resumed vs uninterrupted");
    assert_eq!(flat_weights(&resumed), flat_weights(&straight), "weights, resumed vs uninterrupted");
}

#[test]
fn a_budget_too_small_for_one_batch_is_an_error_naming_both() {
    // Two batches of 64 rows of 32 bytes (+ 3 for the packing) do not fit half of 4 KiB.
    let gpu = device(4096);
    let train = pixels(500, &[28], 4, 7);
    let mut m = mlp(&gpu);
    let batch_bytes = (BATCH * 32 + 3).to_string();
    for (what, result) in [
        ("training_chunks", m.training_chunks(&train, BATCH).map(|_| ())),
        ("fit", m.fit(&train, &FitOptions { epochs: 1, batch_size: BATCH, ..Default::default() }).map(|_| ())),
    ] {
        let err = result.expect_err("a 4 KiB budget cannot hold a batch");
        let message = err.to_string();
        assert!(matches!(err, WgnnError::DeviceLimit { .. }), "{what}: {err:?}");
        for part in ["4096", &batch_bytes, "memory budget", "WGNN_MEMORY_BUDGET"] {
            assert!(message.contains(part), "{what}: {part:?} missing from: {message}");
        }
    }
    // A smaller batch fits: 8 rows, 259 bytes; 3 batches a chunk, 21 chunks.
    let plan = m.training_chunks(&train, 8).unwrap().expect("500 rows of 32 bytes stream under 4 KiB");
    assert_eq!((plan.batches, plan.chunks), (3, 21), "{plan:?}");
    m.fit(&train, &FitOptions { epochs: 1, batch_size: 8, ..Default::default() }).unwrap();
}
