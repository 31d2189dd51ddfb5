//! Reliability: save and load, checkpoints and resume (also after a killed process), a diverging
//! run stopped with its last good weights, determinism, and the example rejecting bad flags.

mod common;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::*;
use wgnn::data::Features;
use wgnn::internals::kernels::optimizer::LrSchedule;
use wgnn::model::{Backend, Checkpointing, FitOptions, Loss, Optimizer, Sequential, Validation};
use wgnn::{Activation, History, WgnnError};

fn model(backend: &Backend, dims: &[usize], seed: u64) -> Sequential {
    let mut b = Sequential::new(dims[0], seed);
    for (i, &units) in dims[1..].iter().enumerate() {
        let act = if i + 2 == dims.len() { Activation::Identity } else { Activation::LeakyRelu(0.2) };
        b = b.dense(units, act);
    }
    b.build(backend).unwrap()
}

/// Everything of a history but the timings, as bits.
fn history_bits(h: &History) -> Vec<[u32; 5]> {
    let opt = |v: Option<f32>| v.map_or(u32::MAX, f32::to_bits);
    h.epochs
        .iter()
        .map(|r| {
            [r.epoch as u32, r.train_loss.to_bits(), r.train_accuracy.to_bits(), opt(r.val_loss), opt(r.val_accuracy)]
        })
        .collect()
}

fn weight_bits(m: &Sequential) -> Vec<u32> {
    m.weights().unwrap().iter().flat_map(|(w, b)| w.iter().chain(b).map(|v| v.to_bits()).collect::<Vec<_>>()).collect()
}

#[test]
fn a_loaded_model_predicts_exactly_what_the_saved_one_did() {
    let data = synthetic(120, 11, 4, 1);
    let dir = scratch("save-load");
    for backend in backends() {
        let mut saved = model(&backend, &[11, 13, 4], 3);
        saved.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        saved.fit(&data, &FitOptions { epochs: 2, batch_size: 16, ..Default::default() }).unwrap();
        let path = dir.join("model.safetensors");
        saved.save(&path).unwrap();
        let loaded = Sequential::load(&path, &backend).unwrap();
        assert_eq!(loaded.layers(), saved.layers());
        assert_eq!((loaded.input_dim(), loaded.seed()), (11, 3));
        assert_eq!(weight_bits(&loaded), weight_bits(&saved), "{}: weights", saved.backend_name());
        let x = data.to_f32();
        let want: Vec<u32> = saved.predict(&x, data.rows).unwrap().iter().map(|v| v.to_bits()).collect();
        let got: Vec<u32> = loaded.predict(&x, data.rows).unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{}: predictions after load", saved.backend_name());
        // No temporary file is left beside the saved one.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["model.safetensors"], "files in {}", dir.display());
    }
}

#[test]
fn unreadable_model_files_are_clear_errors_naming_the_path() {
    let dir = scratch("bad-files");
    let backend = Backend::Gpu(gpu());
    let good = dir.join("good.safetensors");
    model(&backend, &[6, 4, 3], 1).save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let check = |path: &Path, err: WgnnError, needle: &str| {
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "error does not name {}: {msg}", path.display());
        assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
    };

    let missing = dir.join("missing.safetensors");
    let err = Sequential::load(&missing, &backend).err().expect("missing file");
    assert!(matches!(err, WgnnError::Io { .. }), "{err}");
    check(&missing, err, "No such file");

    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a safetensors file at all, just text").unwrap();
    check(&garbage, Sequential::load(&garbage, &backend).err().expect("garbage"), "not a readable safetensors file");

    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    check(&truncated, Sequential::load(&truncated, &backend).err().expect("truncated"), "truncated or corrupt");
    std::fs::write(&truncated, &bytes[..5]).unwrap();
    check(&truncated, Sequential::load(&truncated, &backend).err().expect("truncated header"), "truncated or corrupt");

    let mut other = model(&backend, &[6, 5, 3], 1);
    check(&good, other.load_weights(&good).expect_err("other architecture"), "holds weights for [6] → dense(4");
    let mut wider_input = model(&backend, &[7, 4, 3], 1);
    check(&good, wider_input.load_weights(&good).expect_err("other input"), "this model is [7] → dense(4");
    // The same architecture loads.
    let mut same = model(&backend, &[6, 4, 3], 9);
    same.load_weights(&good).unwrap();

    check(&good, Sequential::resume(&good, &backend).err().expect("not a checkpoint"), "not a checkpoint");
}

#[test]
fn a_resumed_run_matches_the_uninterrupted_one() {
    let data = synthetic(150, 9, 4, 2);
    for backend in backends() {
        // SGD with a step schedule: the resumed run must keep decaying from t, not restart it.
        let mut stepped = Optimizer::sgd(0.05, 0.9);
        if let Optimizer::Sgd(cfg) = &mut stepped {
            cfg.schedule = LrSchedule::Step { every: 7, gamma: 0.5 };
        }
        for optimizer in [Optimizer::adam(1e-2), stepped] {
            let what = format!("{optimizer:?} on {}", model(&backend, &[9, 3], 0).backend_name());
            let options = |epochs| FitOptions {
                epochs,
                batch_size: 16,
                validation: Validation::Fraction(0.2),
                progress_every: 3,
                ..Default::default()
            };
            let mut straight = model(&backend, &[9, 12, 4], 5);
            straight.compile(Loss::SparseCategoricalCrossentropy, optimizer).unwrap();
            let want = straight.fit(&data, &options(3)).unwrap();

            let dir = scratch("resume");
            let mut first = model(&backend, &[9, 12, 4], 5);
            first.compile(Loss::SparseCategoricalCrossentropy, optimizer).unwrap();
            let checkpoint = Checkpointing { dir: &dir, every_epochs: 1, on_best: true };
            first.fit(&data, &FitOptions { checkpoint: Some(checkpoint), ..options(2) }).unwrap();
            assert!(checkpoint.best_path().exists(), "{what}: no best checkpoint");

            let mut resumed = Sequential::resume(checkpoint.last_path(), &backend).unwrap();
            assert_eq!(resumed.resumed_epoch(), Some(2), "{what}");
            let err = resumed.fit(&data, &options(2)).expect_err("nothing left to train");
            assert!(err.to_string().contains("resumed after epoch 2"), "{err}");
            let got = resumed.fit(&data, &options(3)).unwrap();
            assert_eq!(history_bits(&got), history_bits(&want), "{what}: history\n{got:?}\nvs\n{want:?}");
            assert_eq!(weight_bits(&resumed), weight_bits(&straight), "{what}: weights after 3 epochs");
            assert_eq!(resumed.resumed_epoch(), None);
        }
    }
}

#[test]
fn a_diverging_run_stops_with_its_last_good_weights() {
    let data = synthetic(200, 8, 3, 3);
    for backend in backends() {
        let mut m = model(&backend, &[8, 32, 32, 3], 1);
        m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(1e6, 0.0)).unwrap();
        let options = FitOptions { epochs: 20, batch_size: 10, progress_every: 1, ..Default::default() };
        let err = m.fit(&data, &options).expect_err("lr 1e6 must diverge");
        println!("{err}");
        let msg = err.to_string();
        assert!(
            matches!(err, WgnnError::Training { .. }) && msg.contains("epoch 1, steps"),
            "{}: {msg}",
            m.backend_name()
        );
        let weights = m.weights().unwrap();
        let bad = weights.iter().flat_map(|(w, b)| w.iter().chain(b)).filter(|v| !v.is_finite()).count();
        assert_eq!(bad, 0, "{}: {bad} non-finite weights kept after: {msg}", m.backend_name());
        let probs = m.predict(&data.to_f32(), data.rows).unwrap();
        assert!(
            probs.iter().all(|p| p.is_finite()),
            "{}: the kept weights predict non-finite values",
            m.backend_name()
        );
    }
}

#[test]
fn non_finite_batches_are_skipped_when_asked() {
    // 120 rows in order, batches of 11 (the last of 10): rows 35 and 97 hold values near f32's
    // largest, which overflow x·W, so batches 4 and 9 of every epoch have a non-finite loss.
    let clean = synthetic(120, 8, 3, 6);
    let mut data = clean.clone();
    if let Features::F32(x) = &mut data.features {
        for row in [35, 97] {
            x[row * 8..(row + 1) * 8].fill(3e38);
        }
    }
    // Plain, and batch-normalised with tanh and with relu (whose NaN must not turn into 0).
    let build = |backend: &Backend, variant: usize| {
        let builder = Sequential::new(8, 2);
        let builder = match variant {
            0 => builder.dense(16, Activation::Relu),
            1 => builder.dense(16, Activation::Tanh).batch_norm(),
            _ => builder.dense(16, Activation::Relu).batch_norm(),
        };
        let mut m = builder.dense(3, Activation::Identity).build(backend).unwrap();
        m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        m
    };
    let options = FitOptions { epochs: 3, batch_size: 11, shuffle: false, progress_every: 1, ..Default::default() };
    for variant in 0..3 {
        let mut runs = Vec::new();
        for backend in backends() {
            // By default the first bad batch stops the run…
            let mut m = build(&backend, variant);
            let err = m.fit(&data, &options).expect_err("a NaN loss stops fit");
            let what = format!("variant {variant}, {}", m.backend_name());
            assert!(err.to_string().contains("epoch 1, steps 4..=4"), "{what}: {err}");
            // …and with skipping, training goes on around them.
            let mut m = build(&backend, variant);
            let h = m.fit(&data, &FitOptions { skip_nonfinite_batches: true, ..options }).unwrap();
            assert!(h.epochs.iter().all(|r| r.skipped_batches == 2), "{what}: {h:?}");
            assert!(h.epochs.iter().all(|r| r.train_loss.is_finite()), "{what}: {h:?}");
            assert!(h.epochs[2].train_loss < h.epochs[0].train_loss, "{what}: it still learns: {h:?}");
            // Nothing of the skipped batches reached the weights or the running statistics.
            let weights = m.weights().unwrap();
            assert!(weights.iter().flat_map(|(w, b)| w.iter().chain(b)).all(|v| v.is_finite()), "{what}");
            if let Some(bn) = m.batch_norm_state(0).unwrap() {
                let stats = [bn.gamma, bn.running_mean, bn.running_var].concat();
                assert!(stats.iter().all(|v| v.is_finite()), "{what}: {stats:?}");
            }
            let (loss, _) = m.evaluate(&clean).unwrap();
            assert!(loss.is_finite(), "{what}: evaluate after skipping gives {loss}");
            runs.push((h, weights));
        }
        // The GPU's guard and the CPU reference skip the same batches and train the same way.
        let losses = |h: &History| h.epochs.iter().map(|r| r.train_loss).collect::<Vec<_>>();
        let what = format!("variant {variant}: gpu vs cpu");
        assert_close(&format!("{what} loss"), &losses(&runs[0].0), &losses(&runs[1].0), 1e-5, 1e-4);
        for (i, ((wg, bg), (wc, bc))) in runs[0].1.iter().zip(&runs[1].1).enumerate() {
            assert_close(&format!("{what} layer {i} W"), wg, wc, 1e-4, 1e-3);
            assert_close(&format!("{what} layer {i} b"), bg, bc, 1e-4, 1e-3);
        }
    }
}

#[test]
fn the_same_seed_gives_bit_identical_training_on_the_gpu() {
    let data = synthetic(300, 17, 5, 4);
    let run = || {
        let mut m = model(&Backend::Gpu(gpu()), &[17, 24, 5], 11);
        m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3)).unwrap();
        let options =
            FitOptions { epochs: 2, batch_size: 32, validation: Validation::Fraction(0.1), ..Default::default() };
        let h = m.fit(&data, &options).unwrap();
        (history_bits(&h), weight_bits(&m))
    };
    let (h1, w1) = run();
    let (h2, w2) = run();
    assert_eq!(h1, h2, "histories");
    assert!(
        w1 == w2,
        "weights differ at {} of {} values",
        w1.iter().zip(&w2).filter(|(a, b)| a != b).count(),
        w1.len()
    );
}

/// The `mnist_gpu` example binary of this build profile.
fn mnist_gpu() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| example("mnist_gpu")).clone()
}

#[test]
fn the_example_rejects_bad_flags_with_usage() {
    let bad_values: [&[&str]; 8] = [
        &["--epochs", "abc"],
        &["--no-such-flag"],
        &["--batch-size", "-3"],
        &["--batch-size", "0"],
        &["--epochs", "0"],
        &["--lr", "-0.1"],
        &["--dropout", "1.5"],
        &["--validation-split", "1"],
    ];
    for args in bad_values {
        let out = Command::new(mnist_gpu()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains("Usage:"), "{args:?}: no usage message in: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: trained anyway: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn logistic_regression_rejects_bad_flags_with_usage() {
    let bin = example("logistic_regression");
    for args in
        [&["--iterations", "abc"][..], &["--no-such-flag"], &["--lr", "fast"], &["--lr", "0"], &["--iterations", "0"]]
    {
        let out = Command::new(&bin).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage:"), "{args:?}: no usage message in: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: trained anyway: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn the_example_rejects_unknown_activation_loss_and_optimizer_names() {
    let cases: [(&[&str], &str); 4] = [
        (&["--activation", "swish"], "unknown activation \"swish\""),
        (&["--optimizer", "adamx"], "unknown optimizer \"adamx\"; known: sgd, adam"),
        (&["--loss", "cross_entropy"], "unknown loss \"cross_entropy\""),
        (&["--loss", "hinge"], "hinge needs one output unit"),
    ];
    for (args, message) in cases {
        let out = Command::new(mnist_gpu()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message) && stderr.contains("Usage:"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: trained anyway: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn the_example_trains_with_dropout_batch_norm_and_named_choices() {
    let dir = scratch("variants");
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/mnist.npz");
    let out = Command::new(mnist_gpu())
        .args(["--data", data, "--train-rows", "3000", "--epochs", "2", "--batch-size", "64"])
        .args(["--dropout", "0.2", "--batch-norm", "--activation", "tanh", "--optimizer", "rmsprop"])
        .args(["--loss", "categorical_crossentropy", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(
            "784 → dense(64, identity, no bias) → batch_norm → activation(tanh) → dropout(0.2) → dense(64, identity, no bias) → batch_norm → activation(tanh) → dropout(0.2) → 10, categorical_crossentropy"
        ),
        "{stdout}"
    );
    let accuracy: f32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test loss ").and_then(|r| r.split("test accuracy ").nth(1)))
        .and_then(|a| a.trim().trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in {stdout}"));
    // 3,000 rows, 2 epochs: far from the full recipe, far above chance.
    assert!(accuracy > 80.0, "test accuracy {accuracy}% in {stdout}");
}

#[test]
fn a_killed_training_process_resumes_from_its_last_checkpoint() {
    let dir = scratch("killed");
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/mnist.npz");
    let common = ["--data", data, "--train-rows", "2000", "--batch-size", "100", "--validation-split", "0.1"];
    let out_dir = dir.join("out");
    let ckpt_dir = dir.join("ckpt");
    let mut child = Command::new(mnist_gpu())
        .args(common)
        .args(["--epochs", "1000", "--checkpoint-dir"])
        .arg(&ckpt_dir)
        .arg("--out")
        .arg(&out_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let last = ckpt_dir.join("last.safetensors");
    // Poll for the first checkpoint; the run has 1,000 epochs, so it is still going.
    while !last.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("the training process ended ({status}) before writing a checkpoint: {stderr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let resumed = Sequential::resume(&last, &Backend::Gpu(gpu())).unwrap();
    let epoch = resumed.resumed_epoch().unwrap();
    assert!(epoch >= 1);
    let out = Command::new(mnist_gpu())
        .args(common)
        .arg("--resume")
        .arg(&last)
        .args(["--epochs", &(epoch + 1).to_string()])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "resume failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("resumed from {} after epoch {epoch}", last.display())), "{stdout}");
    assert!(stdout.contains(&format!("epoch {:>3}  loss", epoch + 1)), "{stdout}");
    // The history written holds the checkpoint's epochs and the new one.
    let csv = std::fs::read_to_string(out_dir.join("history.csv")).unwrap();
    let history = History::from_csv(&csv).unwrap();
    assert_eq!(history.epochs.iter().map(|r| r.epoch).collect::<Vec<_>>(), (1..=epoch + 1).collect::<Vec<_>>());
}
