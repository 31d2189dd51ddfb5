//! `--resume` as a person uses it after a crash (issue 21, item 3): a checkpoint of a finished run
//! still gives its outputs; other data flags than the checkpoint's are refused naming the flag;
//! each example refuses the other's network; cnn_mnist refuses images that are not 28×28.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use npyz::npz::NpzWriter;
use npyz::WriterBuilder;
use wgnn::model::{Backend, Loss, Optimizer, Sequential};
use wgnn::{Activation, History};

/// The first 1,000 training and 200 test rows of assets/mnist.npz (tests/fixtures/make_mnist_small.py).
const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mnist_small.npz");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgnn-resume-outputs-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs example `name` with `args` (split on spaces); exit code, stdout, stderr.
fn run(name: &str, args: &str) -> (Option<i32>, String, String) {
    let out = Command::new(example(name)).args(args.split_whitespace()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn epochs_in(csv: &Path) -> usize {
    std::fs::read_to_string(csv).unwrap().lines().count() - 1
}

#[test]
fn resuming_mnist_gpu_checkpoints() {
    let dir = scratch("mnist-gpu");
    let data = "--train-rows 600 --validation-split 0.25 --batch-size 32";
    let ckpt = dir.join("ckpt");
    let (code, _, stderr) = run(
        "mnist_gpu",
        &format!(
            "--data {MNIST} {data} --epochs 2 --checkpoint-dir {} --out {}",
            ckpt.display(),
            dir.join("first").display()
        ),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let last = ckpt.join("last.safetensors");

    // Killed after its last checkpoint, before its outputs: --resume writes them, trains nothing.
    let out = dir.join("recovered");
    let save = out.join("model.safetensors");
    let (code, stdout, stderr) = run(
        "mnist_gpu",
        &format!(
            "--data {MNIST} {data} --epochs 2 --resume {} --out {} --save {}",
            last.display(),
            out.display(),
            save.display()
        ),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("nothing left to train: the checkpoint completed all 2 epochs"), "{stdout}");
    assert!(!stdout.contains("epoch   "), "trained again: {stdout}");
    assert_eq!(epochs_in(&out.join("history.csv")), 2);
    assert!(out.join("curves.png").is_file());
    let saved = Sequential::load(&save, &Backend::Cpu).unwrap();
    let resumed = Sequential::resume(&last, &Backend::Cpu).unwrap();
    assert_eq!(saved.weights().unwrap(), resumed.weights().unwrap());
    let history = History::from_csv(&std::fs::read_to_string(out.join("history.csv")).unwrap()).unwrap();
    assert_eq!(history.epochs.len(), resumed.resumed_history().unwrap().epochs.len());

    // Fewer epochs than the checkpoint holds: an error naming --epochs.
    let (code, _, stderr) = run("mnist_gpu", &format!("--data {MNIST} {data} --epochs 1 --resume {}", last.display()));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--epochs 1: the checkpoint has completed 2 epochs"), "{stderr}");

    // Other data flags than the checkpoint's: refused naming the flag and both values.
    for (flags, named) in [
        (
            "--train-rows 700 --validation-split 0.25 --batch-size 32",
            "--train-rows 700: the checkpoint was trained with --train-rows 600",
        ),
        (
            "--train-rows 600 --validation-split 0.1 --batch-size 32",
            "--validation-split 0.1: the checkpoint was trained with --validation-split 0.25",
        ),
        (
            "--train-rows 600 --validation-split 0.25 --batch-size 64",
            "--batch-size 64: the checkpoint was trained with --batch-size 32",
        ),
        (
            "--train-rows 600 --batch-size 32",
            "--validation-split 0: the checkpoint was trained with --validation-split 0.25",
        ),
    ] {
        let (code, stdout, stderr) = run(
            "mnist_gpu",
            &format!(
                "--data {MNIST} {flags} --epochs 3 --resume {} --out {}",
                last.display(),
                dir.join("other").display()
            ),
        );
        assert_eq!(code, Some(2), "{flags}: {stderr}");
        assert!(stderr.contains(named), "{flags}: {stderr}");
        assert!(!stdout.contains("epoch   3"), "{flags}: trained: {stdout}");
    }

    // cnn_mnist refuses this MLP checkpoint (it trained the MLP and exited 0).
    let (code, stdout, stderr) =
        run("cnn_mnist", &format!("--data {MNIST} {data} --epochs 3 --resume {}", last.display()));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("[784] → dense(64, relu)") && stderr.contains("resume it with mnist_gpu"), "{stderr}");
    assert!(!stdout.contains("epoch   3"), "{stdout}");
}

#[test]
fn mnist_gpu_refuses_a_convolutional_checkpoint() {
    let dir = scratch("cnn-checkpoint");
    let mut m = Sequential::new([28, 28, 1], 1)
        .conv2d(2, (3, 3), Activation::Relu)
        .flatten()
        .dense(10, Activation::Identity)
        .build(&Backend::Cpu)
        .unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let path = dir.join("cnn.safetensors");
    m.save_checkpoint(&path, 1, &History::default()).unwrap();
    let (code, stdout, stderr) =
        run("mnist_gpu", &format!("--data {MNIST} --train-rows 100 --epochs 2 --resume {}", path.display()));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("[28, 28, 1] → conv2d(2, 3×3, relu)") && stderr.contains("resume it with cnn_mnist"),
        "{stderr}"
    );
    assert!(!stdout.contains("epoch   2"), "{stdout}");
}

/// cnn_mnist read any 784 values per image as 28×28×1.
#[test]
fn cnn_mnist_refuses_images_that_are_not_28_by_28() {
    let dir = scratch("wide-images");
    let path = dir.join("wide.npz");
    let mut npz = NpzWriter::create(&path).unwrap();
    for (x, y, rows) in [("x_train", "y_train", 20u64), ("x_test", "y_test", 10)] {
        let pixels: Vec<u8> = (0..rows * 14 * 56).map(|i| (i % 251) as u8).collect();
        let mut w =
            npz.array::<u8>(x, Default::default()).unwrap().default_dtype().shape(&[rows, 14, 56]).begin_nd().unwrap();
        w.extend(pixels).unwrap();
        w.finish().unwrap();
        let labels: Vec<u8> = (0..rows).map(|r| (r % 10) as u8).collect();
        let mut w = npz.array::<u8>(y, Default::default()).unwrap().default_dtype().shape(&[rows]).begin_nd().unwrap();
        w.extend(labels).unwrap();
        w.finish().unwrap();
    }
    drop(npz);
    let (code, _, stderr) =
        run("cnn_mnist", &format!("--data {} --epochs 1 --out {}", path.display(), dir.join("out").display()));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("images of [14, 56]") && stderr.contains("28×28"), "{stderr}");
}
