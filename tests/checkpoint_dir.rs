//! One training run at a time per checkpoint folder: a second run fails at once with a clear
//! error, and temporary files a killed writer left are removed.

mod common;
use std::fs::OpenOptions;

use common::*;
use wgnn::model::{Backend, Checkpointing, FitOptions, Loss, Optimizer, Sequential, LOCK_FILE};
use wgnn::{Activation, WgnnError};

fn model(backend: &Backend) -> Sequential {
    let mut m = Sequential::new(6, 3).dense(8, Activation::Relu).dense(3, Activation::Softmax).build(backend).unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    m
}

#[test]
fn a_second_run_on_a_locked_folder_fails_before_training() {
    let dir = scratch("locked");
    let data = synthetic(40, 6, 3, 1);
    // Another run holds the folder (flock: any other open file description conflicts).
    let other = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE)).unwrap();
    other.try_lock().unwrap();
    for backend in [Backend::Gpu(gpu()), Backend::Cpu] {
        let mut m = model(&backend);
        let before = m.weights().unwrap();
        let opts = FitOptions { epochs: 1, checkpoint: Some(Checkpointing::every_epoch(&dir)), ..Default::default() };
        match m.fit(&data, &opts) {
            Err(WgnnError::InvalidArgument { op, detail }) => {
                assert_eq!(op, "fit");
                assert!(detail.contains("in use by another training run"), "{detail}");
            }
            other => panic!("fit on a locked folder: {other:?}"),
        }
        assert_eq!(m.weights().unwrap(), before, "nothing trained");
        assert!(!dir.join("last.safetensors").exists());
    }
    other.unlock().unwrap();
    let mut m = model(&Backend::Cpu);
    let opts = FitOptions { epochs: 1, checkpoint: Some(Checkpointing::every_epoch(&dir)), ..Default::default() };
    m.fit(&data, &opts).unwrap();
    assert!(dir.join("last.safetensors").exists());
    // The lock went with the run: another takes the folder.
    m.fit(&data, &FitOptions { epochs: 2, ..opts }).unwrap();
}

#[test]
fn stale_temporary_checkpoint_files_are_removed_and_others_kept() {
    let dir = scratch("stale");
    let stale = [".last.tmp4194301.safetensors", ".best.tmp77.safetensors", ".last.safetensors.tmp12"];
    let kept = ["notes.txt", ".model.tmp5.safetensors", "last.tmp.csv"];
    for name in stale.iter().chain(&kept) {
        std::fs::write(dir.join(name), b"half a file").unwrap();
    }
    let mut m = model(&Backend::Cpu);
    let opts = FitOptions { epochs: 1, checkpoint: Some(Checkpointing::every_epoch(&dir)), ..Default::default() };
    m.fit(&synthetic(30, 6, 3, 2), &opts).unwrap();
    for name in stale {
        assert!(!dir.join(name).exists(), "{name} left behind");
    }
    for name in kept {
        assert!(dir.join(name).exists(), "{name} removed");
    }
}
