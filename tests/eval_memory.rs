//! Evaluation and prediction in device memory that does not grow with the data: every full
//! evaluation batch runs in the same buffers (their plans read the batch's position from a step
//! counter on the device), and the results over many batches match the CPU reference.

mod common;
use common::*;
use wgnn::model::{Backend, Loss, Optimizer, Sequential};
use wgnn::{Activation, Dataset, Gpu};

const SHAPE: [usize; 3] = [8, 8, 1];

fn images(rows: usize, seed: u64) -> Dataset {
    synthetic(rows, SHAPE.iter().product(), 3, seed).with_sample_shape(&SHAPE).unwrap()
}

/// A small CNN (a convolution with its patch matrix, max pooling) or an MLP, compiled with `loss`.
fn model(backend: &Backend, cnn: bool, loss: Loss, last: Activation) -> Sequential {
    let outputs = if loss == Loss::BinaryCrossentropy { 1 } else { 3 };
    let builder = Sequential::new(SHAPE, 4);
    let builder = match cnn {
        true => builder.conv2d(4, (3, 3), Activation::Relu).max_pool2d((2, 2)).flatten(),
        false => builder.flatten().dense(16, Activation::Tanh),
    };
    let mut m = builder.dense(outputs, last).build(backend).unwrap();
    m.compile(loss, Optimizer::adam(1e-3)).unwrap();
    m
}

#[test]
fn evaluation_binds_the_memory_of_a_batch_whatever_the_rows() {
    let m = model(&Backend::Gpu(gpu()), true, Loss::SparseCategoricalCrossentropy, Activation::Softmax);
    let bytes = |rows: usize| m.eval_memory_bytes(&images(rows, 1)).unwrap();
    // At most 2,048 rows a batch: a set of 2,048 rows holds one full batch's buffers (or one and a
    // smaller tail's where the device takes fewer); any number of rows holds at most a full
    // batch's and a tail's, each no larger.
    let one_batch = bytes(2048);
    let (small, large, larger) = (bytes(1000), bytes(20_000), bytes(100_000));
    assert!(small <= one_batch, "1,000 rows bind {small} bytes, 2,048 rows {one_batch}");
    assert!(large <= 2 * one_batch, "20,000 rows bind {large} bytes, 2,048 rows {one_batch}");
    assert!(larger <= 2 * one_batch, "100,000 rows bind {larger} bytes, 2,048 rows {one_batch}");
    assert!(small > 0, "the batch buffers are counted");
}

#[test]
fn evaluating_and_predicting_hold_device_memory_of_a_batch_and_release_it() {
    gpu(); // fails with the install hint where there is no adapter at all
           // A device of its own: the engine's accounting counts every tensor on it, and the other tests
           // of this binary run at the same time on the shared one.
    let device = Gpu::new().unwrap();
    let m = model(&Backend::Gpu(device.clone()), true, Loss::SparseCategoricalCrossentropy, Activation::Softmax);
    let dim: usize = SHAPE.iter().product();
    // The most the engine held while evaluating (then predicting) `rows` rows, beyond what it
    // held before; what it held after is what it held before.
    let held = |rows: usize, predict: bool| {
        let data = images(rows, 2);
        let before = device.allocated_bytes();
        device.reset_peak_allocated_bytes();
        match predict {
            true => assert_eq!(m.predict_dataset(&data).unwrap().len(), rows * 3),
            false => drop(m.evaluate(&data).unwrap()),
        }
        assert_eq!(device.allocated_bytes(), before, "{rows} rows: the engine's tensors are all released");
        device.peak_allocated_bytes() - before
    };
    for predict in [false, true] {
        let one_batch = held(2048, predict);
        // The data set itself goes to the device: f32 features, u32 labels, the u32 index list
        // (and, predicting, the f32 outputs of each row, read back batch by batch).
        let data = |rows: usize| (rows * (dim + 2 + 3 * predict as usize) * 4) as u64;
        for rows in [1000, 20_000] {
            let got = held(rows, predict);
            let bound = 2 * one_batch + data(rows);
            assert!(got <= bound, "predict {predict}: {rows} rows held {got} bytes, more than {bound}");
        }
    }
}

#[test]
fn evaluate_and_predict_over_many_batches_match_the_cpu_reference() {
    // 5,001 rows: full evaluation batches of both counter parities, and a partial last one.
    let data = images(5001, 3);
    let x = data.to_f32();
    for (cnn, loss, last) in [
        (true, Loss::SparseCategoricalCrossentropy, Activation::Softmax),
        (false, Loss::MeanSquaredError, Activation::Tanh),
        (false, Loss::BinaryCrossentropy, Activation::Sigmoid),
    ] {
        let what = format!("cnn {cnn}, {loss:?}");
        let on_gpu = model(&Backend::Gpu(gpu()), cnn, loss, last);
        let reference = model(&Backend::Cpu, cnn, loss, last);
        let data = match loss {
            Loss::BinaryCrossentropy => {
                let labels = data.labels.iter().map(|&l| (l == 0) as u32).collect();
                Dataset::from_f32(x.clone(), labels, x.len() / data.rows, 2, "binary").unwrap()
            }
            Loss::MeanSquaredError => {
                let targets = (0..data.rows * 3).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect();
                data.clone().with_targets(targets, 3).unwrap()
            }
            _ => data.clone(),
        };
        let (loss_gpu, acc_gpu) = on_gpu.evaluate(&data).unwrap();
        let (loss_cpu, acc_cpu) = reference.evaluate(&data).unwrap();
        assert!((loss_gpu - loss_cpu).abs() <= 1e-4 * loss_cpu.abs().max(1.0), "{what}: loss {loss_gpu} vs {loss_cpu}");
        assert!((acc_gpu - acc_cpu).abs() <= 2.0 / data.rows as f32, "{what}: accuracy {acc_gpu} vs {acc_cpu}");
        let got = on_gpu.predict(&x, data.rows).unwrap();
        let want = reference.predict(&x, data.rows).unwrap();
        assert_close(&format!("{what}, predict"), &got, &want, 1e-5, 1e-4);
    }
}
