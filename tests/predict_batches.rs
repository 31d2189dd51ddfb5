//! `predict` in several evaluation batches on a device with small storage bindings: each batch's
//! output must start where the device allows a binding to start, whatever the output width.

mod common;
use common::*;
use wgnn::model::{Backend, Loss, Optimizer, Sequential};
use wgnn::{Activation, Gpu, GpuOptions};

fn small_device(limit: fn(wgpu::Limits) -> wgpu::Limits) -> Gpu {
    gpu(); // fails with the install hint where there is no adapter at all
    Gpu::with_options(&GpuOptions { limits: limit, ..Default::default() }).unwrap()
}

#[test]
fn predict_over_many_batches_on_small_bindings_matches_the_reference() {
    let limits: [fn(wgpu::Limits) -> wgpu::Limits; 2] = [
        |l| wgpu::Limits { max_storage_buffer_binding_size: 4 << 20, ..l },
        |l| wgpu::Limits { max_storage_buffer_binding_size: 1 << 20, ..l },
    ];
    // 784 features: 4 MiB holds 1,337 rows a batch, 1 MiB 334; 3,001 rows take several batches
    // whose starts are not multiples of the alignment.
    let (rows, dim) = (3001, 784);
    let data = synthetic(rows, dim, 2, 3);
    let x = data.to_f32();
    for limit in limits {
        let device = small_device(limit);
        for (outputs, loss, last) in [
            (1, Loss::BinaryCrossentropy, Activation::Sigmoid),
            (3, Loss::MeanSquaredError, Activation::Tanh),
            (10, Loss::SparseCategoricalCrossentropy, Activation::Softmax),
        ] {
            let build = |backend: &Backend| {
                let mut m =
                    Sequential::new(dim, 8).dense(16, Activation::Relu).dense(outputs, last).build(backend).unwrap();
                m.compile(loss, Optimizer::adam(1e-3)).unwrap();
                m
            };
            let on_gpu = build(&Backend::Gpu(device.clone()));
            let reference = build(&Backend::Cpu);
            let got = on_gpu.predict(&x, rows).unwrap();
            let want = reference.predict(&x, rows).unwrap();
            let what =
                format!("{outputs} outputs, binding limit {} bytes", device.limits().max_storage_buffer_binding_size);
            assert_eq!(got.len(), rows * outputs, "{what}");
            assert_close(&what, &got, &want, 1e-5, 1e-4);
            let by_dataset = on_gpu.predict_dataset(&data).unwrap();
            assert_close(&format!("{what}, predict_dataset"), &by_dataset, &want, 1e-5, 1e-4);
        }
    }
}
