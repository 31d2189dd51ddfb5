//! Data sets larger than one storage binding, on a device whose binding limit is lowered to 64 KiB:
//! they are split into chunks of whole rows, gathered and trained on exactly as on a normal device;
//! one that needs more chunks than a gather binds is a DeviceLimit error naming the limit.

mod common;
use std::sync::OnceLock;

use common::*;
use wgnn::data::Features;
use wgnn::device::GpuOptions;
use wgnn::internals::cpu;
use wgnn::internals::kernels::gather::{bindable_chunks, gather_rows, BatchStart, GpuRows, MAX_FEATURE_CHUNKS};
use wgnn::internals::rng::Rng;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential, Validation};
use wgnn::{Activation, Dataset, Gpu, Tensor, WgnnError};

const BINDING: u64 = 64 << 10;

/// One device per test binary, every storage binding at most 64 KiB.
fn small_gpu() -> Gpu {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let options =
        GpuOptions { limits: |l| wgpu::Limits { max_storage_buffer_binding_size: BINDING, ..l }, ..Default::default() };
    match GPU.get_or_init(|| Gpu::with_options(&options).map_err(|e| e.to_string())) {
        Ok(g) => g.clone(),
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    }
}

/// `total` rows of `dim` features (u8 or, as f32, the same values) and labels below 10.
fn rows(total: usize, dim: usize, u8_source: bool, seed: u64) -> (Features, Vec<f32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let bytes: Vec<u8> = (0..total * dim).map(|_| rng.below(256) as u8).collect();
    let labels = (0..total).map(|_| rng.below(10) as u32).collect();
    let as_f32: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
    let features = if u8_source { Features::U8(bytes) } else { Features::F32(as_f32.clone()) };
    (features, as_f32, labels)
}

fn assert_device_limit(err: &WgnnError, parts: &[&str]) {
    assert!(matches!(err, WgnnError::DeviceLimit { .. }), "{err:?}");
    let message = err.to_string();
    for part in ["upload_rows", "max_storage_buffer_binding_size", &BINDING.to_string()].iter().chain(parts) {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[test]
fn the_device_has_the_lowered_limit() {
    let gpu = small_gpu();
    assert_eq!(gpu.limits().max_storage_buffer_binding_size, BINDING);
    // The chunked gather needs 11 storage bindings per stage; lavapipe has 32.
    assert_eq!(bindable_chunks(&gpu), MAX_FEATURE_CHUNKS);
}

#[test]
fn gathers_from_chunked_data_sets_match_cpu() {
    let (gpu, normal) = (small_gpu(), common::gpu());
    // (rows, dim, u8?, batch, chunks expected). 13 and 785 are not multiples of 4 (u8 rows packed
    // across words); 16 takes the u8x4 path (packed words in groups of 4). Each batch fits one binding.
    let cases = [
        (12_000, 13, true, 1000, 3),
        (12_000, 16, true, 1000, 3),
        (300, 785, true, 20, 4),
        (4000, 13, false, 1000, 4),
        (80, 785, false, 20, 4),
    ];
    for (i, &(total, dim, u8_source, batch, want_chunks)) in cases.iter().enumerate() {
        let (features, as_f32, labels) = rows(total, dim, u8_source, i as u64);
        let mut rng = Rng::new(100 + i as u64);
        let mut mean_std = rng.vec_uniform(dim, -0.5, 0.5);
        mean_std.extend(rng.vec_uniform(dim, 0.5, 2.0));
        let mut order: Vec<u32> = (0..total as u32).collect();
        rng.shuffle(&mut order);
        let idx = Tensor::from_u32(&gpu, &[total], &order).unwrap();
        let x = Tensor::zeros(&gpu, &[batch, dim]).unwrap();
        let y = Tensor::zeros_u32(&gpu, &[batch]).unwrap();
        for standardize in [false, true] {
            let src = GpuRows {
                scale: 1.0 / 255.0,
                shift: -0.1,
                mean_std: standardize.then(|| Tensor::from_slice(&gpu, &[2, dim], &mean_std).unwrap()),
                ..GpuRows::upload(&gpu, &features, &labels, dim).unwrap()
            };
            let what = format!("{total}x{dim} u8={u8_source} std={standardize}");
            assert_eq!(src.chunks.len(), want_chunks, "{what}: chunks of {} rows", src.rows_per_chunk);
            // Every row, in shuffled batches: each batch reads rows of every chunk.
            for start in (0..total).step_by(batch) {
                let plan = gather_rows(&gpu, &src, &idx, BatchStart::At(start), &x, &y).unwrap();
                gpu.run(&[&plan]).unwrap();
                let ms = standardize.then_some(&mean_std[..]);
                let (want_x, want_y) =
                    cpu::gather_rows(&as_f32, &labels, dim, &order, start, batch, 1.0 / 255.0, -0.1, ms);
                assert_close(&format!("{what} rows {start}.."), &x.to_vec().unwrap(), &want_x, 1e-6, 1e-5);
                assert_eq!(y.to_vec_u32().unwrap(), want_y, "{what} rows {start}..: labels");
            }
        }
        // The batch position from the step counter reads the same rows.
        let src =
            GpuRows { scale: 1.0 / 255.0, shift: -0.1, ..GpuRows::upload(&gpu, &features, &labels, dim).unwrap() };
        let step = Tensor::from_u32(&gpu, &[2], &[2, 0]).unwrap();
        let start = BatchStart::Counter { epoch_step: &step, stride: batch, parity: 0, t: None };
        let plan = gather_rows(&gpu, &src, &idx, start, &x, &y).unwrap();
        gpu.run(&[&plan]).unwrap();
        let (want_x, want_y) =
            cpu::gather_rows(&as_f32, &labels, dim, &order, 2 * batch, batch, 1.0 / 255.0, -0.1, None);
        assert_close(&format!("{total}x{dim} from the counter"), &x.to_vec().unwrap(), &want_x, 1e-6, 1e-5);
        assert_eq!(y.to_vec_u32().unwrap(), want_y);
        // The same data set is one chunk on a device with the adapter's limits.
        assert_eq!(GpuRows::upload(&normal, &features, &labels, dim).unwrap().chunks.len(), 1);
    }
}

fn model(backend: &Backend, dim: usize) -> Sequential {
    let mut m =
        Sequential::new(dim, 9).dense(24, Activation::Relu).dense(4, Activation::Identity).build(backend).unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(5e-3)).unwrap();
    m
}

#[test]
fn fit_on_a_chunked_data_set_matches_fit_on_a_normal_device() {
    // 4000 × 13 f32 = 208 KB: four chunks of 1260 rows at 64 KiB; as u8, 52 KB in one.
    let f32_data = synthetic(4000, 13, 4, 8);
    let bytes = f32_data.to_f32().iter().map(|v| ((v + 1.0) * 127.5) as u8).collect();
    let u8_data = Dataset { features: Features::U8(bytes), scale: 1.0 / 127.5, shift: -1.0, ..f32_data.clone() };
    // 16,000 × 13 u8 = 208 KB: four chunks of 5041 rows.
    let big = synthetic(16_000, 13, 4, 9);
    let bytes = big.to_f32().iter().map(|v| ((v + 1.0) * 127.5) as u8).collect();
    let big_u8 = Dataset { features: Features::U8(bytes), scale: 1.0 / 127.5, shift: -1.0, ..big };
    // Evaluation batches shrink to what a binding holds: 1,600 validation rows of [rows, 24] f32
    // activations (154 KB) are three batches of at most 682 rows on this device, one elsewhere.
    for (what, data, held_out) in [("f32", &f32_data, 0.4), ("u8", &u8_data, 0.1), ("u8, 16,000 rows", &big_u8, 0.1)] {
        let options =
            FitOptions { epochs: 3, batch_size: 64, validation: Validation::Fraction(held_out), ..Default::default() };
        let want = model(&Backend::Gpu(gpu()), 13).fit(data, &options).unwrap();
        let got = model(&Backend::Gpu(small_gpu()), 13).fit(data, &options).unwrap();
        let series = |h: &wgnn::History| {
            h.epochs.iter().flat_map(|r| [r.train_loss, r.train_accuracy, r.val_loss.unwrap()]).collect::<Vec<_>>()
        };
        assert_close(&format!("{what}: history on a 64 KiB-binding device"), &series(&got), &series(&want), 1e-6, 1e-5);
        assert!(got.epochs[2].train_loss < got.epochs[0].train_loss, "{what}: it learns: {got:?}");
    }
}

#[test]
fn a_data_set_past_what_a_gather_binds_is_a_device_limit_error() {
    let gpu = small_gpu();
    // 6000 × 13 f32 = 312 KB: five chunks of 1260 rows, one more than a gather binds.
    let (features, _, labels) = rows(6000, 13, false, 1);
    let err = GpuRows::upload(&gpu, &features, &labels, 13).err().expect("five chunks");
    assert_device_limit(&err, &["[6000, 13] f32", "5 chunks", "binds 4"]);
    // fit says the same.
    let data = synthetic(6000, 13, 4, 2);
    let err = model(&Backend::Gpu(gpu.clone()), 13).fit(&data, &FitOptions::default()).expect_err("five chunks");
    assert_device_limit(&err, &["[6000, 13] f32"]);

    // One row larger than a binding.
    let (features, _, labels) = rows(2, 70_000, true, 3);
    let err = GpuRows::upload(&gpu, &features, &labels, 70_000).err().expect("a row of 70,000 bytes");
    assert_device_limit(&err, &["one row", "[2, 70000] u8"]);

    // Labels (one buffer, 4 bytes a row) larger than a binding.
    let (features, _, labels) = rows(20_000, 1, true, 4);
    let err = GpuRows::upload(&gpu, &features, &labels, 1).err().expect("80,000 bytes of labels");
    assert_device_limit(&err, &["labels", "[20000, 1] u8"]);
}

#[test]
fn a_device_with_eight_storage_bindings_gathers_one_chunk_and_rejects_more() {
    // The WebGPU default of 8 storage buffers per stage: only the one-chunk gather fits.
    let options = GpuOptions {
        limits: |l| wgpu::Limits {
            max_storage_buffer_binding_size: BINDING,
            max_storage_buffers_per_shader_stage: 8,
            ..l
        },
        ..Default::default()
    };
    let gpu = Gpu::with_options(&options).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    assert_eq!(bindable_chunks(&gpu), 1);
    let (features, as_f32, labels) = rows(5000, 13, true, 5);
    let src = GpuRows::upload(&gpu, &features, &labels, 13).unwrap();
    assert_eq!(src.chunks.len(), 1);
    let order: Vec<u32> = (0..5000).rev().collect();
    let idx = Tensor::from_u32(&gpu, &[5000], &order).unwrap();
    let (x, y) = (Tensor::zeros(&gpu, &[100, 13]).unwrap(), Tensor::zeros_u32(&gpu, &[100]).unwrap());
    gpu.run(&[&gather_rows(&gpu, &src, &idx, BatchStart::At(4900), &x, &y).unwrap()]).unwrap();
    let (want_x, want_y) = cpu::gather_rows(&as_f32, &labels, 13, &order, 4900, 100, 1.0, 0.0, None);
    assert_close("one chunk, 8 bindings", &x.to_vec().unwrap(), &want_x, 0.0, 0.0);
    assert_eq!(y.to_vec_u32().unwrap(), want_y);

    let (features, _, labels) = rows(6000, 13, true, 6);
    let err = GpuRows::upload(&gpu, &features, &labels, 13).err().expect("two chunks, one bindable");
    assert_device_limit(&err, &["[6000, 13] u8", "2 chunks", "binds 1"]);
}
