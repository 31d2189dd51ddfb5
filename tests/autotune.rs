//! The matmul autotuner: its picks run every product correctly (checked against the CPU
//! reference, whatever it picked on this adapter), a cache written is read back with the same
//! picks, a corrupt or foreign cache file is ignored and replaced, a stored pick the device may
//! not run is ignored, a GPU-class tile picked from the cache runs, turning it off gives the
//! static choice, and the same seed with the same cache trains bit for bit the same. No test
//! asserts which kernel wins: that is the adapter's.

mod common;
use std::path::{Path, PathBuf};

use common::*;
use wgnn::autotune::{MatmulKernel, TunedPick};
use wgnn::internals::cpu;
use wgnn::internals::kernels::matmul::{
    choose_variant, matmul, matmul_column_sum, Epilogue, MatmulOptions, MatmulVariant,
};
use wgnn::internals::rng::Rng;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Gpu, GpuOptions, ProfileOverride, Tensor};

/// A fresh, empty cache folder for one test.
fn cache_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgnn-autotune-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn tuned_gpu(dir: &Path, profile: ProfileOverride) -> Gpu {
    Gpu::with_options(&GpuOptions { profile, tune_cache_dir: Some(dir), ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

/// The products of a small MLP's training step: forward with bias and activation, weight
/// gradient with column sums, input gradient with the activation's derivative, and a narrow
/// output (10 columns, no vec4 loads).
const PRODUCTS: [(usize, usize, usize, &str); 5] =
    [(32, 64, 64, "forward"), (64, 32, 64, "dW"), (32, 64, 64, "dX"), (32, 64, 10, "forward"), (64, 32, 10, "dW")];

/// Runs `PRODUCTS` with the engine's pick and checks each against the CPU reference; returns the
/// labels of the dispatches.
fn run_products(gpu: &Gpu, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut labels = Vec::new();
    for (m, k, n, what) in PRODUCTS {
        let (ta, tb) = (what == "dW", what == "dX");
        let a = rng.vec_uniform(m * k, -1.0, 1.0);
        let b = rng.vec_uniform(k * n, -1.0, 1.0);
        let (a_shape, b_shape) = (if ta { [k, m] } else { [m, k] }, if tb { [n, k] } else { [k, n] });
        let at = Tensor::from_slice(gpu, &a_shape, &a).unwrap();
        let bt = Tensor::from_slice(gpu, &b_shape, &b).unwrap();
        let ct = Tensor::zeros(gpu, &[m, n]).unwrap();
        let product = cpu::matmul(&a, &b, m, k, n, ta, tb);
        let tol = 2e-5 * (k as f32).sqrt();
        let label = format!("{what} {m}x{k}·{k}x{n}");
        let plan = match what {
            "forward" => {
                let bias = rng.vec_uniform(n, -1.0, 1.0);
                let bias_t = Tensor::from_slice(gpu, &[n], &bias).unwrap();
                let epilogue = Epilogue::BiasAct { bias: Some(&bias_t), act: Activation::Relu };
                let plan = matmul(gpu, &at, &bt, &ct, &MatmulOptions { epilogue, ..Default::default() }).unwrap();
                gpu.run(&[&plan]).unwrap();
                let want: Vec<f32> = product.iter().enumerate().map(|(i, v)| (v + bias[i % n]).max(0.0)).collect();
                assert_close(&label, &ct.to_vec().unwrap(), &want, tol, 1e-4);
                plan
            }
            "dW" => {
                let st = Tensor::zeros(gpu, &[n]).unwrap();
                let opts = MatmulOptions { trans_a: true, ..Default::default() };
                let plan = matmul_column_sum(gpu, &at, &bt, &ct, &st, &opts).unwrap();
                gpu.run(&[&plan]).unwrap();
                let (want_c, want_s) = cpu::matmul_column_sum(&a, &b, m, k, n, true);
                assert_close(&label, &ct.to_vec().unwrap(), &want_c, tol, 1e-4);
                assert_close(&format!("{label} sums"), &st.to_vec().unwrap(), &want_s, tol, 1e-4);
                plan
            }
            _ => {
                let y = rng.vec_uniform(m * n, -1.0, 1.0).iter().map(|v| v.max(0.0)).collect::<Vec<_>>();
                let yt = Tensor::from_slice(gpu, &[m, n], &y).unwrap();
                let epilogue = Epilogue::ActGrad { y: &yt, act: Activation::Relu };
                let opts = MatmulOptions { trans_b: true, epilogue, ..Default::default() };
                let plan = matmul(gpu, &at, &bt, &ct, &opts).unwrap();
                gpu.run(&[&plan]).unwrap();
                let want: Vec<f32> = product.iter().zip(&y).map(|(v, y)| if *y > 0.0 { *v } else { 0.0 }).collect();
                assert_close(&label, &ct.to_vec().unwrap(), &want, tol, 1e-4);
                plan
            }
        };
        labels.extend(plan.dispatches.iter().map(|d| d.label.clone()));
    }
    labels
}

fn kernels(picks: &[TunedPick]) -> Vec<(String, MatmulKernel)> {
    picks.iter().map(|p| (p.shape.to_string(), p.kernel)).collect()
}

#[test]
fn a_cache_written_then_read_gives_the_same_picks() {
    let dir = cache_dir("round-trip");
    let first = tuned_gpu(&dir, ProfileOverride::Adapter);
    let labels = run_products(&first, 1);
    let picks = first.tuned_picks();
    assert_eq!(picks.len(), PRODUCTS.len(), "one pick per shape and form: {picks:?}");
    assert!(picks.iter().all(|p| !p.from_cache && p.timed >= 1), "{picks:?}");
    assert!(first.tune_cache_error().is_none(), "{:?}", first.tune_cache_error());
    assert!(first.tune_cache_path().unwrap().starts_with(&dir));
    // A second device reads every pick back, times nothing, and plans the same kernels.
    let second = tuned_gpu(&dir, ProfileOverride::Adapter);
    assert_eq!(run_products(&second, 1), labels);
    let again = second.tuned_picks();
    assert!(again.iter().all(|p| p.from_cache), "{again:?}");
    assert_eq!(kernels(&again), kernels(&picks));
    // Planning a shape again uses the remembered pick: the plans are the same.
    assert_eq!(run_products(&second, 2), labels);
    assert_eq!(second.tuned_picks().len(), picks.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_or_foreign_cache_file_is_ignored_and_replaced() {
    let dir = cache_dir("corrupt");
    let first = tuned_gpu(&dir, ProfileOverride::Adapter);
    run_products(&first, 3);
    let path = first.tune_cache_path().unwrap();
    let written = std::fs::read_to_string(&path).unwrap();
    let adapter = first.adapter_info().name.clone();
    let foreign =
        written.replace(&format!("\"adapter\": {}", serde_json::to_string(&adapter).unwrap()), "\"adapter\": \"x\"");
    assert_ne!(foreign, written, "the file names its adapter");
    for (what, contents) in
        [("garbage", "{ not json ]".to_string()), ("another device's", foreign), ("empty", String::new())]
    {
        std::fs::write(&path, contents).unwrap();
        let gpu = tuned_gpu(&dir, ProfileOverride::Adapter);
        run_products(&gpu, 3);
        assert!(gpu.tuned_picks().iter().all(|p| !p.from_cache), "{what}: nothing read from it");
        assert!(gpu.tune_cache_error().is_none(), "{what}: {:?}", gpu.tune_cache_error());
        // Replaced by a file the next device reads.
        let next = tuned_gpu(&dir, ProfileOverride::Adapter);
        run_products(&next, 3);
        assert!(next.tuned_picks().iter().all(|p| p.from_cache), "{what}: {:?}", next.tuned_picks());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rewrites every stored pick of the cache file at `path` to `kernel`.
fn store_everywhere(path: &Path, kernel: &str) {
    let mut file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for pick in file["picks"].as_array_mut().unwrap() {
        pick["kernel"] = kernel.into();
    }
    std::fs::write(path, serde_json::to_string(&file).unwrap()).unwrap();
}

#[test]
fn a_gpu_class_tile_picked_from_the_cache_runs_every_product() {
    // Under the GPU policy the tiles of matmul_register are candidates: one stored as the pick of
    // every shape runs them all (forward with bias and activation, dW with column sums, dX with
    // the derivative), checked against the CPU reference.
    let dir = cache_dir("tile");
    let first = tuned_gpu(&dir, ProfileOverride::Gpu);
    run_products(&first, 4);
    store_everywhere(&first.tune_cache_path().unwrap(), "tile 64x64x16/4x4");
    let gpu = tuned_gpu(&dir, ProfileOverride::Gpu);
    let labels = run_products(&gpu, 4);
    assert!(labels.iter().all(|l| l.starts_with("matmul_register::")), "{labels:?}");
    assert!(gpu.tuned_picks().iter().all(|p| p.from_cache && matches!(p.kernel, MatmulKernel::Tile(_))));
    // The CPU-adapter policy does not time tiles: a stored one is not its to pick, and is ignored.
    let cpu_policy = tuned_gpu(&dir, ProfileOverride::CpuAdapter);
    store_everywhere(&first.tune_cache_path().unwrap(), "tile 64x64x16/4x4");
    let labels = run_products(&cpu_policy, 4);
    assert!(labels.iter().all(|l| !l.starts_with("matmul_register::")), "{labels:?}");
    // Nor is a kernel no build of wgnn has.
    store_everywhere(&first.tune_cache_path().unwrap(), "tile 64x64x16/4x3");
    let other = tuned_gpu(&dir, ProfileOverride::Gpu);
    run_products(&other, 4);
    assert!(other.tuned_picks().iter().all(|p| !p.from_cache), "{:?}", other.tuned_picks());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn turned_off_the_engine_takes_the_static_choice() {
    let dir = cache_dir("off");
    let gpu = Gpu::with_options(&GpuOptions { autotune: false, tune_cache_dir: Some(&dir), ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    assert!(!gpu.autotune());
    let labels = run_products(&gpu, 5);
    // The same dispatches as the static choice asked for by name.
    let (a, b, c) = (
        Tensor::zeros(&gpu, &[32, 64]).unwrap(),
        Tensor::zeros(&gpu, &[64, 10]).unwrap(),
        Tensor::zeros(&gpu, &[32, 10]).unwrap(),
    );
    let static_pick = choose_variant(&gpu, 32, 10, 64, false, false);
    let forced = matmul(&gpu, &a, &b, &c, &MatmulOptions { variant: Some(static_pick), ..Default::default() }).unwrap();
    let chosen = matmul(&gpu, &a, &b, &c, &MatmulOptions::default()).unwrap();
    assert_eq!(forced.dispatches[0].label, chosen.dispatches[0].label);
    assert!(MatmulVariant::ALL.contains(&static_pick));
    assert!(!labels.is_empty() && gpu.tuned_picks().is_empty());
    assert!(!dir.exists(), "nothing written");
}

fn train(gpu: &Gpu) -> Vec<u32> {
    let data = synthetic(300, 17, 5, 4);
    let mut m = Sequential::new(17, 11)
        .dense(24, Activation::Relu)
        .dense(5, Activation::Identity)
        .build(&Backend::Gpu(gpu.clone()))
        .unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3)).unwrap();
    m.fit(&data, &FitOptions { epochs: 2, batch_size: 32, ..Default::default() }).unwrap();
    m.weights().unwrap().iter().flat_map(|(w, b)| w.iter().chain(b).map(|v| v.to_bits()).collect::<Vec<_>>()).collect()
}

#[test]
fn the_same_seed_and_cache_train_bit_for_bit_the_same() {
    // The first device tunes and writes the cache; the second reads it: the same picks, so the
    // same summation orders and the same weights, to the bit.
    let dir = cache_dir("training");
    let first = tuned_gpu(&dir, ProfileOverride::Adapter);
    let want = train(&first);
    assert!(!first.tuned_picks().is_empty());
    let second = tuned_gpu(&dir, ProfileOverride::Adapter);
    let got = train(&second);
    assert!(second.tuned_picks().iter().all(|p| p.from_cache), "{:?}", second.tuned_picks());
    assert_eq!(kernels(&second.tuned_picks()), kernels(&first.tuned_picks()));
    assert!(
        got == want,
        "weights differ at {} of {} values",
        got.iter().zip(&want).filter(|(a, b)| a != b).count(),
        want.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn past_its_budget_the_tuner_builds_no_pipeline_the_static_choice_would_not() {
    // With no compile budget the tuner times only what is built already: planning the products
    // builds the same pipelines as with the tuner off (under the GPU policy too, where the
    // workgroup-memory tiles are candidates).
    for profile in [ProfileOverride::Adapter, ProfileOverride::Gpu] {
        let dir = cache_dir(&format!("budget-{profile:?}"));
        let options = GpuOptions { profile, tune_cache_dir: Some(&dir), ..Default::default() };
        let no_budget = Gpu::with_options(&GpuOptions { tune_budget: Some(std::time::Duration::ZERO), ..options })
            .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
        let off = Gpu::with_options(&GpuOptions { autotune: false, ..options }).unwrap();
        run_products(&no_budget, 6);
        run_products(&off, 6);
        assert_eq!(no_budget.tuned_picks().len(), PRODUCTS.len());
        assert_eq!(no_budget.pipeline_count(), off.pipeline_count(), "{profile:?}: {:?}", no_budget.tuned_picks());
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// C = A·B at `m` rows on `gpu` with the engine's pick, checked against the CPU reference.
fn checked_forward(gpu: &Gpu, m: usize, k: usize, n: usize) {
    let mut rng = Rng::new(m as u64);
    let (a, b) = (rng.vec_uniform(m * k, -1.0, 1.0), rng.vec_uniform(k * n, -1.0, 1.0));
    let at = Tensor::from_slice(gpu, &[m, k], &a).unwrap();
    let bt = Tensor::from_slice(gpu, &[k, n], &b).unwrap();
    let ct = Tensor::zeros(gpu, &[m, n]).unwrap();
    gpu.run(&[&matmul(gpu, &at, &bt, &ct, &MatmulOptions::default()).unwrap()]).unwrap();
    let want = cpu::matmul(&a, &b, m, k, n, false, false);
    assert_close(&format!("{m}x{k}·{k}x{n}"), &ct.to_vec().unwrap(), &want, 2e-5 * (k as f32).sqrt(), 1e-4);
}

#[test]
fn a_batch_and_the_smaller_batches_after_it_share_one_pick() {
    // Rows of a product whose A is not transposed are the batch's: they are tuned by the power of
    // two at or above them, so an epoch's or an evaluation's last, smaller batch reuses the pick.
    let dir = cache_dir("rows");
    let gpu = tuned_gpu(&dir, ProfileOverride::Adapter);
    for m in [64, 37, 33] {
        checked_forward(&gpu, m, 40, 24);
    }
    let picks = gpu.tuned_picks();
    assert_eq!(picks.len(), 1, "{picks:?}");
    assert_eq!((picks[0].shape.m, picks[0].shape.to_string().as_str()), (64, "≤64x40·40x24"));
    checked_forward(&gpu, 65, 40, 24);
    checked_forward(&gpu, 1, 40, 24);
    let rows: Vec<usize> = gpu.tuned_picks().iter().map(|p| p.shape.m).collect();
    assert_eq!(rows, [64, 128, 1]);
    std::fs::remove_dir_all(&dir).unwrap();
}
