//! Sizes past the device's limits name what the user chose: the batch size (and the largest that
//! fits), the layer whose weights are too large. Run on a device with lowered limits, so they
//! hold on every adapter.

mod common;
use common::*;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Gpu, GpuOptions, WgnnError};

/// A device whose storage bindings hold 1 MiB.
fn small_device() -> Gpu {
    gpu(); // fails with the install hint where there is no adapter at all
    let limits = |l| wgpu::Limits { max_storage_buffer_binding_size: 1 << 20, ..l };
    Gpu::with_options(&GpuOptions { limits, ..Default::default() }).unwrap()
}

#[test]
fn a_batch_too_large_for_the_device_names_the_batch_size_that_fits() {
    let device = small_device();
    let data = synthetic(600, 784, 10, 1);
    let mut m = Sequential::new(784, 1)
        .dense(32, Activation::Relu)
        .dense(10, Activation::Identity)
        .build(&Backend::Gpu(device))
        .unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    // 1 MiB holds 334 rows of 784 floats; batches are padded to a multiple of 4 rows: 332.
    match m.fit(&data, &FitOptions { epochs: 1, batch_size: 500, ..Default::default() }) {
        Err(e @ WgnnError::DeviceLimit { .. }) => {
            let message = e.to_string();
            assert!(message.contains("batch size 500") && message.contains("largest that fits is 332"), "{message}");
            assert!(message.contains("[500, 784]"), "{message}");
        }
        other => panic!("batch 500 on 1 MiB bindings: {other:?}"),
    }
    // 333 rows would fit unpadded; the message says the padding is why they do not.
    match m.fit(&data, &FitOptions { epochs: 1, batch_size: 333, ..Default::default() }) {
        Err(e @ WgnnError::DeviceLimit { .. }) => {
            let message = e.to_string();
            assert!(message.contains("batch size 333, padded to 336 rows"), "{message}");
            assert!(message.contains("[336, 784]"), "{message}");
        }
        other => panic!("batch 333 (336 padded) on 1 MiB bindings: {other:?}"),
    }
    m.fit(&data, &FitOptions { epochs: 1, batch_size: 332, ..Default::default() }).unwrap();
}

#[test]
fn a_layer_too_large_for_the_device_is_named() {
    let device = small_device();
    let built = Sequential::new(784, 1)
        .dense(16, Activation::Relu)
        .dense(20_000, Activation::Relu)
        .dense(10, Activation::Identity)
        .build(&Backend::Gpu(device));
    match built {
        Err(e @ WgnnError::DeviceLimit { .. }) => {
            assert!(e.to_string().contains("layer 1 (dense(20000, relu))'s weight [16, 20000]"), "{e}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("1.28 MB of weights in one layer built on 1 MiB bindings"),
    }
    let built = Sequential::new(784, 1).dense(400, Activation::Relu).build(&Backend::Gpu(small_device()));
    match built {
        Err(e @ WgnnError::DeviceLimit { .. }) => {
            assert!(e.to_string().contains("layer 0 (dense(400, relu))'s weight [784, 400]"), "{e}");
        }
        other => panic!("784×400 weights (1.25 MB) on 1 MiB bindings: {:?}", other.err()),
    }
    // Each layer fits, all of them together do not.
    let built = Sequential::new(784, 1)
        .dense(300, Activation::Relu)
        .dense(300, Activation::Relu)
        .build(&Backend::Gpu(small_device()));
    match built {
        Err(e @ WgnnError::DeviceLimit { .. }) => assert!(e.to_string().contains("the model's parameters"), "{e}"),
        other => panic!("1.3 MB of parameters on 1 MiB bindings: {:?}", other.err()),
    }
}
