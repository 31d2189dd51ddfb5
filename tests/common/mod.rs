//! Shared by the integration tests: one device per test binary, tolerances, finite differences,
//! the example binaries.
#![allow(dead_code)]

pub mod attention_shapes;
pub mod conv_cases;
pub mod fusion;
pub mod loss_outputs;
pub mod optimizer_checks;
pub mod safetensors_file;
pub mod tiny_text;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use wgnn::internals::rng::Rng;
use wgnn::model::Backend;
use wgnn::{Dataset, Gpu, Tensor};

/// A product's operands for (M, K, N, trans_a, trans_b), uniform in [-1, 1]: A as `[M, K]` (`[K, M]`
/// when trans_a) and B as `[K, N]` (`[N, K]` when trans_b), each uploaded and as the host's values.
pub fn matmul_operands(
    rng: &mut Rng,
    gpu: &Gpu,
    (m, k, n, ta, tb): (usize, usize, usize, bool, bool),
) -> [(Tensor, Vec<f32>); 2] {
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let at = Tensor::from_slice(gpu, &if ta { [k, m] } else { [m, k] }, &a).unwrap();
    let bt = Tensor::from_slice(gpu, &if tb { [n, k] } else { [k, n] }, &b).unwrap();
    [(at, a), (bt, b)]
}

/// The device every test in a binary shares. No adapter is a failure with the install hint, never
/// a silent pass.
pub fn gpu() -> Gpu {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    match GPU.get_or_init(|| Gpu::new().map_err(|e| e.to_string())) {
        Ok(g) => g.clone(),
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    }
}

/// A fresh, empty folder for one test, named by the test binary, the process and `name`, so that
/// concurrent runs and the binaries of one run never share one.
pub fn scratch(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash>: the test's name without the hash.
    let stem = exe.file_stem().and_then(|s| s.to_str()).unwrap_or("test");
    let binary = stem.rsplit_once('-').map_or(stem, |(name, _)| name);
    let dir = std::env::temp_dir().join(format!("wgnn-{binary}-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The two backends a model-level test runs on: the shared device and the CPU reference.
pub fn backends() -> [Backend; 2] {
    [Backend::Gpu(gpu()), Backend::Cpu]
}

/// Shapes every kernel is tried on: 1, primes, around the tile sizes, and one large non-square.
pub const SIZES: &[usize] = &[1, 7, 63, 64, 65, 127, 257];

/// |got − want| ≤ atol + rtol·|want| everywhere; the message names the max difference and the first
/// mismatching index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs reference {}", got.len(), want.len());
    let mut max_diff = 0.0f32;
    let mut first_bad: Option<usize> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let diff = (g - w).abs();
        let ok = diff <= atol + rtol * w.abs() && g.is_finite() == w.is_finite();
        if diff.is_finite() {
            max_diff = max_diff.max(diff);
        }
        if !ok && first_bad.is_none() {
            first_bad = Some(i);
        }
    }
    if let Some(i) = first_bad {
        panic!(
            "{what}: mismatch at index {i}: gpu {} vs cpu {} (max |diff| {max_diff:e}, atol {atol:e}, rtol {rtol:e}, {} values)",
            got[i],
            want[i],
            got.len()
        );
    }
}

/// Central finite differences of a scalar function f at x, one coordinate at a time (f64 inside
/// for accuracy; the functions under test are f32).
pub fn numeric_gradient(x: &[f32], eps: f32, mut f: impl FnMut(&[f32]) -> f64) -> Vec<f32> {
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = probe[i];
            probe[i] = orig + eps;
            let plus = f(&probe);
            probe[i] = orig - eps;
            let minus = f(&probe);
            probe[i] = orig;
            ((plus - minus) / (2.0 * eps as f64)) as f32
        })
        .collect()
}

/// Σ w·y: projects an output onto fixed random weights, so the gradient of this scalar with respect
/// to y is w, the upstream gradient used by gradient checks.
pub fn dot(w: &[f32], y: &[f32]) -> f64 {
    w.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Random features in [-1, 1) labelled by the argmax of a fixed random linear map: learnable, so a
/// loss that does not fall means the updates are wrong.
pub fn synthetic(rows: usize, dim: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let x = rng.vec_uniform(rows * dim, -1.0, 1.0);
    let map = rng.vec_uniform(dim * classes, -1.0, 1.0);
    let y = x
        .chunks(dim)
        .map(|row| {
            let score = |c: usize| row.iter().enumerate().map(|(j, v)| v * map[j * classes + c]).sum::<f32>();
            (0..classes).fold(0, |best, c| if score(c) > score(best) { c } else { best }) as u32
        })
        .collect();
    Dataset::from_f32(x, y, dim, classes, "synthetic").unwrap()
}

/// An example binary of this build profile, built (or found up to date) once per test process:
/// `cargo test --test NAME` alone does not rebuild the examples, and a stale binary would test old
/// code.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--example", name]).current_dir(env!("CARGO_MANIFEST_DIR"));
        cmd.arg("--target-dir").arg(profile_dir.parent().unwrap());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success() && bin.exists(), "could not build {}", bin.display());
        built.push(name.to_string());
    }
    bin
}
