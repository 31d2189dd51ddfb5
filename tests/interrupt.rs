//! Stopping a run on request (issue 21, item 2): `FitOptions::cancel` in the library — the run
//! stops between ticks and before validation, keeps every step it ran (early stopping's best
//! weights are not put back) and returns its history marked cancelled — and Ctrl-C in the
//! examples: the outputs asked for are written and the process exits 130; a second Ctrl-C exits
//! at once, without them.

mod common;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use wgnn::history::EpochRecord;
use wgnn::model::{
    Backend, Checkpointing, EarlyStopping, FitOptions, Loss, Observer, Optimizer, Progress, Sequential, Validation,
};
use wgnn::{Activation, History};

/// The small MNIST archive (1,000 training rows, 200 test rows; tests/fixtures/make_mnist_small.py).
const MNIST_SMALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mnist_small.npz");
/// What mnist_gpu prints on stderr at the first Ctrl-C (examples/common/interrupt.rs).
const NOTICE: &str = "Ctrl-C again to exit at once";

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

fn model(backend: &Backend) -> Sequential {
    let mut m = Sequential::new(7, 1).dense(6, Activation::Relu).dense(3, Activation::Identity).build(backend).unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    m
}

/// With `restore_best_weights`, a cancelled fit put the best epoch's weights back, against
/// `FitOptions::cancel`'s "the weights keep every step run"; a fit that runs to its end still
/// ends with them.
#[test]
fn a_cancelled_fit_keeps_its_steps_under_restore_best_weights() {
    let (data, validation) = (synthetic(96, 7, 3, 4), synthetic(40, 7, 3, 5));
    for backend in [Backend::Gpu(gpu()), Backend::Cpu] {
        let dir = scratch(&format!("best-{}", matches!(backend, Backend::Cpu)));
        // best.safetensors is written on each new best validation loss, as early stopping (on
        // the validation loss, min_delta 0) picks its best epoch.
        let checkpoint = Checkpointing { dir: &dir, every_epochs: 1, on_best: true };
        let flag = AtomicBool::new(false);
        let options = FitOptions {
            epochs: 3,
            batch_size: 8,
            progress_every: 2,
            validation: Validation::Data(&validation),
            checkpoint: Some(checkpoint),
            early_stopping: Some(EarlyStopping::val_loss(100)),
            cancel: Some(&flag),
            ..Default::default()
        };
        let best = || Sequential::resume(checkpoint.best_path(), &backend).unwrap().weights().unwrap();

        let mut whole = model(&backend);
        let h = whole.fit(&data, &options).unwrap();
        assert_eq!((h.epochs.len(), h.cancelled_in), (3, None));
        assert_eq!(whole.weights().unwrap(), best(), "{}: the best epoch's weights", whole.backend_name());

        let mut stopped = model(&backend);
        let mut observer = CancelAt { epoch: 3, flag: &flag, ticks_after: 0 };
        let h = stopped.fit_with(&data, &options, &mut observer).unwrap();
        assert_eq!((h.epochs.len(), h.cancelled_in), (2, Some(3)), "{}", stopped.backend_name());
        // Epoch 3's first steps are in the weights: they are not the best epoch's (1 or 2).
        assert_ne!(stopped.weights().unwrap(), best(), "{}: the best weights put back", stopped.backend_name());
    }
}

/// Sets the flag at the last progress tick of `epoch`, after its last step and before its
/// validation; counts the epochs that end.
struct CancelAtTheLastStep<'a> {
    epoch: usize,
    flag: &'a AtomicBool,
    epochs_ended: usize,
}

impl Observer for CancelAtTheLastStep<'_> {
    fn on_progress(&mut self, p: &Progress) {
        if p.epoch == self.epoch && p.step == p.steps {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
    fn on_epoch_end(&mut self, _: &EpochRecord) {
        self.epochs_ended += 1;
    }
}

/// A stop asked for during an epoch's last steps waited for its validation (cnn_mnist's: ~17 s):
/// now the epoch ends unvalidated and unrecorded, as one stopped in its middle.
#[test]
fn a_stop_during_the_last_steps_skips_the_validation() {
    let (data, validation) = (synthetic(96, 7, 3, 4), synthetic(40, 7, 3, 5));
    for backend in [Backend::Gpu(gpu()), Backend::Cpu] {
        let mut m = model(&backend);
        let flag = AtomicBool::new(false);
        let options = FitOptions {
            epochs: 3,
            batch_size: 8,
            progress_every: 2,
            validation: Validation::Data(&validation),
            cancel: Some(&flag),
            ..Default::default()
        };
        let before = m.weights().unwrap();
        let mut observer = CancelAtTheLastStep { epoch: 1, flag: &flag, epochs_ended: 0 };
        let h = m.fit_with(&data, &options, &mut observer).unwrap();
        assert_eq!((h.epochs.len(), h.cancelled_in, observer.epochs_ended), (0, Some(1), 0), "{}", m.backend_name());
        assert_ne!(m.weights().unwrap(), before, "{}: epoch 1's steps are kept", m.backend_name());
    }
}

/// mnist_gpu on 600 rows of the small archive for up to 500 epochs, writing history, curves,
/// the model and a checkpoint; `stdout` where its stdout goes, stderr piped.
fn spawn_mnist_gpu(dir: &Path, stdout: impl Into<Stdio>) -> Child {
    Command::new(example("mnist_gpu"))
        .args(["--data", MNIST_SMALL, "--train-rows", "800", "--validation-split", "0.25", "--epochs", "500"])
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--save")
        .arg(dir.join("model.safetensors"))
        .arg("--checkpoint-dir")
        .arg(dir.join("ckpt"))
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads lines from `from` up to and including the first that starts with `start`; all of them.
fn read_through(from: &mut impl BufRead, start: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if from.read_line(&mut line).unwrap() == 0 {
            panic!("no line starting {start:?} in: {seen}");
        }
        seen.push_str(&line);
        if line.starts_with(start) {
            return seen;
        }
    }
}

fn interrupt(child: &Child) {
    // SAFETY: kill(2) on the pid of a child not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
}

#[test]
fn ctrl_c_writes_the_outputs_asked_for_and_exits_130() {
    let dir = scratch("example");
    let mut child = spawn_mnist_gpu(&dir, Stdio::piped());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = read_through(&mut stdout, "epoch   1 ");
    interrupt(&child);
    stdout.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    let stdout = seen;
    assert_eq!(status.code(), Some(130), "{stdout}");
    let history = std::fs::read_to_string(dir.join("out/history.csv")).unwrap();
    let epochs = history.lines().count() - 1;
    let plural = if epochs == 1 { "" } else { "s" };
    let said = format!(
        ": wrote the history of the {epochs} epoch{plural} completed, its curves and the model as trained so far; {} \
         holds epoch {epochs}",
        dir.join("ckpt/last.safetensors").display()
    );
    let line = stdout.lines().find(|l| l.starts_with("interrupted in epoch ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(epochs >= 1 && line.ends_with(&said), "{history}\n{line}\nexpected it to end with {said:?}");
    assert!(dir.join("out/curves.png").is_file());
    // The model as trained, and the last completed epoch's checkpoint, both load.
    Sequential::load(dir.join("model.safetensors"), &Backend::Cpu).unwrap();
    let resumed = Sequential::resume(dir.join("ckpt/last.safetensors"), &Backend::Cpu).unwrap();
    assert_eq!(resumed.resumed_epoch(), Some(epochs));
    assert!(!stdout.contains("test accuracy"), "evaluated after the interrupt: {stdout}");
}

/// The second Ctrl-C ends the run before it writes anything more. To hold the run in place
/// between the two signals, whatever the machine's speed, the test fills the run's stdout pipe:
/// its next line waits for a reader, so it cannot print, and cannot get past its first output
/// file (history.csv, written before its first line); the second signal is sent once the notice
/// of the first is on stderr. Without the second signal's exit, draining the pipe lets the run go
/// on to write curves.png and the model and print "interrupted in epoch".
#[test]
fn a_second_ctrl_c_exits_at_once_without_the_writing() {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let dir = scratch("twice");
    let (reader, writer) = std::io::pipe().unwrap();
    // The same pipe opened again, non-blocking, for this test's own writes; the child's end
    // stays blocking.
    let mut filler = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", writer.as_raw_fd()))
        .unwrap();
    let mut child = spawn_mnist_gpu(&dir, writer);
    let mut stdout = BufReader::new(reader);
    read_through(&mut stdout, "epoch   1 ");
    let filled: usize = [4096, 1]
        .into_iter()
        .map(|size| {
            let mut written = 0;
            loop {
                match filler.write(&vec![b'\n'; size]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return written,
                    Err(e) => panic!("filling the pipe: {e}"),
                }
            }
        })
        .sum();
    assert!(filled > 0);

    interrupt(&child);
    // The notice, from the signal's own thread; the bound only keeps a run without one from
    // hanging the test (it comes at once).
    let stderr = child.stderr.take().unwrap();
    let (lines, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).try_for_each(|l| lines.send(l)));
    let mut said = Vec::new();
    while !said.last().is_some_and(|l: &String| l.contains(NOTICE)) {
        match heard.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(line) => said.push(line),
            Err(e) => {
                child.kill().ok();
                panic!("no notice after the first Ctrl-C ({e}); stderr: {said:?}");
            }
        }
    }
    interrupt(&child);
    drop(filler);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(!rest.contains("interrupted in epoch"), "the run went on after the second Ctrl-C: {rest}");
    for file in ["out/curves.png", "model.safetensors"] {
        assert!(!dir.join(file).exists(), "{file} written after the second Ctrl-C");
    }
}
