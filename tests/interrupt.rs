//! Stopping a run on request (issue 21, item 2): `FitOptions::cancel` in the library — the run
//! stops between ticks, keeps what it trained and returns its history marked cancelled — and
//! Ctrl-C in the examples: the outputs asked for are written and the process exits 130.

mod common;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use wgnn::model::{Backend, Checkpointing, FitOptions, Loss, Observer, Optimizer, Progress, Sequential};
use wgnn::{Activation, History};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgnn-interrupt-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sets the flag at the first progress tick of `epoch` (as a signal handler would).
struct CancelAt<'a> {
    epoch: usize,
    flag: &'a AtomicBool,
    ticks_after: usize,
}

impl Observer for CancelAt<'_> {
    fn on_progress(&mut self, p: &Progress) {
        if self.flag.load(Ordering::Relaxed) {
            self.ticks_after += 1;
        }
        if p.epoch == self.epoch {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

#[test]
fn a_cancelled_fit_returns_the_epochs_completed_and_keeps_its_steps() {
    let data = synthetic(96, 7, 3, 4);
    for backend in [Backend::Gpu(gpu()), Backend::Cpu] {
        let dir = scratch(&format!("library-{}", matches!(backend, Backend::Cpu)));
        let mut m =
            Sequential::new(7, 1).dense(6, Activation::Relu).dense(3, Activation::Identity).build(&backend).unwrap();
        m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        let flag = AtomicBool::new(false);
        let checkpoint = Checkpointing::every_epoch(&dir);
        let options = FitOptions {
            epochs: 5,
            batch_size: 8,
            progress_every: 2,
            checkpoint: Some(checkpoint),
            cancel: Some(&flag),
            ..Default::default()
        };
        let mut observer = CancelAt { epoch: 2, flag: &flag, ticks_after: 0 };
        let history: History = m.fit_with(&data, &options, &mut observer).unwrap();
        assert_eq!(history.epochs.len(), 1, "{}: {history:?}", m.backend_name());
        assert_eq!(history.cancelled_in, Some(2));
        // The flag is seen at the next tick: no progress is reported after it was set.
        assert_eq!(observer.ticks_after, 0, "{}", m.backend_name());
        // The two steps of epoch 2 stay in the weights; the checkpoint is epoch 1's.
        let epoch_1 = Sequential::resume(checkpoint.last_path(), &backend).unwrap();
        assert_eq!(epoch_1.resumed_epoch(), Some(1));
        assert_ne!(epoch_1.weights().unwrap(), m.weights().unwrap(), "{}", m.backend_name());

        // Cancelled before it starts: nothing trained, an empty history marked cancelled.
        let before = m.weights().unwrap();
        let h = m.fit(&data, &options).unwrap();
        assert!(h.epochs.is_empty() && h.cancelled_in == Some(1), "{h:?}");
        assert_eq!(m.weights().unwrap(), before);
        // Without the flag set, training runs to the end and says nothing was cancelled.
        flag.store(false, Ordering::Relaxed);
        let h = m.fit(&data, &FitOptions { epochs: 2, ..options }).unwrap();
        assert_eq!((h.epochs.len(), h.cancelled_in), (2, None));
    }
}

/// Runs mnist_gpu on a few rows for many epochs, sends `signals` SIGINTs after its first epoch
/// line; its exit code and stdout.
fn interrupted_mnist_gpu(dir: &std::path::Path, signals: usize) -> (Option<i32>, String) {
    let mnist = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/mnist.npz");
    let mut child = Command::new(example("mnist_gpu"))
        .args(["--data", mnist, "--train-rows", "1200", "--validation-split", "0.25", "--epochs", "500"])
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--save")
        .arg(dir.join("model.safetensors"))
        .arg("--checkpoint-dir")
        .arg(dir.join("ckpt"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.starts_with("epoch   1 ") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("epoch   1 "), "no first epoch line: {seen}");
    for _ in 0..signals {
        let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(sent.success());
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    (status.code(), seen + &rest)
}

#[test]
fn ctrl_c_writes_the_outputs_asked_for_and_exits_130() {
    let dir = scratch("example");
    let (code, stdout) = interrupted_mnist_gpu(&dir, 1);
    assert_eq!(code, Some(130), "{stdout}");
    assert!(stdout.contains("interrupted in epoch "), "{stdout}");
    let history = std::fs::read_to_string(dir.join("out/history.csv")).unwrap();
    let epochs = history.lines().count() - 1;
    assert!(epochs >= 1 && stdout.contains(&format!("the {epochs} epochs completed")), "{history}\n{stdout}");
    assert!(dir.join("out/curves.png").is_file());
    // The model as trained, and the last completed epoch's checkpoint, both load.
    Sequential::load(dir.join("model.safetensors"), &Backend::Cpu).unwrap();
    let resumed = Sequential::resume(dir.join("ckpt/last.safetensors"), &Backend::Cpu).unwrap();
    assert_eq!(resumed.resumed_epoch(), Some(epochs));
    assert!(!stdout.contains("test accuracy"), "evaluated after the interrupt: {stdout}");

    // Two signals: the second ends the process at once, with the same status.
    let (code, stdout) = interrupted_mnist_gpu(&scratch("example-twice"), 2);
    assert_eq!(code, Some(130), "{stdout}");
}
