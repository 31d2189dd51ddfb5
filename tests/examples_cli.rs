//! The examples as a person runs them: every output place checked before training, a run stopped
//! by a diverging loss still writing its outputs, and errors that name the flag to change, printed
//! without a backtrace. Each run is short (a few hundred rows, or stops before training).

mod common;
use common::example;
#[path = "../examples/common/mod.rs"]
mod example_common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wgnn::model::{Backend, Sequential};
use wgnn::{History, WgnnError};

const MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/mnist.npz");
/// Its first 1,000 training and 200 test rows (tests/fixtures/make_mnist_small.py): what a test
/// that does not need the whole archive gives `--data`, so each run skips reading 70,000 rows.
const MNIST_SMALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mnist_small.npz");

/// The small archive is what its script says: the full archive's first rows.
#[test]
fn the_small_archive_is_the_first_rows_of_mnist() {
    let (train, test) = wgnn::data::load_mnist(MNIST).unwrap();
    let (small_train, small_test) = wgnn::data::load_mnist(MNIST_SMALL).unwrap();
    for (full, small, rows) in [(&train, &small_train, 1000), (&test, &small_test, 200)] {
        assert_eq!((small.rows, &small.sample_shape), (rows, &full.sample_shape));
        assert_eq!(small.labels, full.labels[..rows]);
        for row in 0..rows {
            assert_eq!(small.row_f32(row).unwrap(), full.row_f32(row).unwrap(), "row {row}");
        }
    }
}

/// A fresh, empty folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgnn-examples-cli-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `mnist_gpu` with `args`; its exit code, stdout and stderr.
fn mnist_gpu<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> (Option<i32>, String, String) {
    outcome(Command::new(example("mnist_gpu")).args(args).output().unwrap())
}

fn outcome(out: Output) -> (Option<i32>, String, String) {
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn args(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

/// Whether this process writes into a read-only folder anyway (root does).
fn ignores_permissions(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let locked = dir.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let writable = std::fs::File::create(locked.join("probe")).is_ok();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&locked).unwrap();
    writable
}

#[test]
fn bad_output_places_fail_before_training_naming_the_flag() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("bad-outputs");
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let taken = dir.join("taken");
    std::fs::create_dir_all(taken.join("history.csv")).unwrap();
    let out = dir.join("out");
    let show = |p: &Path| p.display().to_string();
    let mut cases: Vec<(Vec<String>, String)> = vec![
        (vec!["--out".into(), show(&file)], format!("--out {}: not a folder", show(&file))),
        (vec!["--out".into(), show(&file.join("sub"))], format!("--out {}: cannot create", show(&file.join("sub")))),
        (vec!["--out".into(), show(&taken)], format!("--out {}: is a folder", show(&taken.join("history.csv")))),
        (vec!["--out".into(), show(&out), "--save".into(), show(&dir)], format!("--save {}: is a folder", show(&dir))),
        (
            vec!["--out".into(), show(&out), "--save".into(), show(&file.join("m.safetensors"))],
            format!("--save {}", show(&file.join("m.safetensors"))),
        ),
        (
            vec!["--out".into(), show(&out), "--checkpoint-dir".into(), show(&file)],
            format!("--checkpoint-dir {}: not a folder", show(&file)),
        ),
    ];
    let locked = dir.join("read-only");
    if !ignores_permissions(&dir) {
        std::fs::create_dir_all(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        cases.push((vec!["--out".into(), show(&locked)], format!("--out {}: cannot write", show(&locked))));
    }
    for (flags, message) in cases {
        // Quick training, should the check be missing: the failure would come after it.
        let (code, stdout, stderr) =
            mnist_gpu(args(&format!("--data {MNIST_SMALL} --train-rows 100 --epochs 1")).iter().chain(&flags));
        assert_eq!(code, Some(1), "{flags:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(&message),
            "{flags:?}: expected {message:?} in: {stderr}"
        );
        assert!(!stdout.contains("epoch"), "{flags:?}: trained before failing: {stdout}");
    }
    // The probe file of the writability check is gone.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "files left in {}", out.display());
}

#[test]
fn a_diverging_run_still_writes_its_outputs() {
    let dir = scratch("diverging");
    let (out, model, ckpt) = (dir.join("out"), dir.join("missing-folder/model.safetensors"), dir.join("ckpt"));
    // A linear net under mean squared error and plain descent at lr 2: the loss grows by orders
    // of magnitude each (one-step) epoch and overflows within a few, after epoch 1 at the
    // earliest (epoch 1's loss is that of the initial weights).
    let recipe = format!(
        "--data {MNIST_SMALL} --train-rows 200 --batch-size 200 --validation-split 0.1 --epochs 12 --activation identity \
         --loss mse --optimizer sgd --lr 2"
    );
    let (code, stdout, stderr) = mnist_gpu(args(&recipe).iter().map(OsStr::new).chain([
        "--out".as_ref(),
        out.as_os_str(),
        "--save".as_ref(),
        model.as_os_str(),
        "--checkpoint-dir".as_ref(),
        ckpt.as_os_str(),
    ]));
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    // The training loss, or the validation loss after an epoch, whichever overflows first.
    assert!(stderr.starts_with("error: training stopped: the ") && stderr.contains(" loss became"), "{stderr}");
    let completed = stdout.lines().filter(|l| l.starts_with("epoch ") && l.contains("  loss ")).count();
    assert!(completed >= 1, "{stdout}");

    // The history of the epochs completed, their curves, and the model with the weights put back.
    let csv = out.join("history.csv");
    let history = History::from_csv(&std::fs::read_to_string(&csv).unwrap()).unwrap();
    assert_eq!(history.epochs.iter().map(|r| r.epoch).collect::<Vec<_>>(), (1..=completed).collect::<Vec<_>>());
    let png = std::fs::read(out.join("curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let saved = Sequential::load(&model, &Backend::Cpu).unwrap();
    let weights = saved.weights().unwrap();
    assert!(weights.iter().flat_map(|(w, b)| w.iter().chain(b)).all(|v| v.is_finite()), "non-finite weights saved");
    for line in [
        format!("wrote {} ({completed} epochs)", csv.display()),
        format!("wrote {}", out.join("curves.png").display()),
        format!("saved the model to {}", model.display()),
    ] {
        assert!(stdout.contains(&line), "no {line:?} in: {stdout}");
    }

    // Resumed from its last checkpoint it stops again; the history written starts with the
    // checkpoint's epochs, and the flags the checkpoint overrides are named as ignored.
    let last = ckpt.join("last.safetensors");
    let resumed = Sequential::resume(&last, &Backend::Cpu).unwrap().resumed_epoch().unwrap();
    let out2 = dir.join("out2");
    let (code, stdout, stderr) = mnist_gpu(args(&recipe).iter().map(OsStr::new).chain([
        "--seed".as_ref(),
        "7".as_ref(),
        "--resume".as_ref(),
        last.as_os_str(),
        "--out".as_ref(),
        out2.as_os_str(),
    ]));
    let ignored = "note: ignoring --activation, --loss, --optimizer, --lr, --seed: --resume takes the model";
    assert!(stderr.contains(ignored), "{stderr}");
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let history = History::from_csv(&std::fs::read_to_string(out2.join("history.csv")).unwrap()).unwrap();
    let epochs: Vec<usize> = history.epochs.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs[..resumed], (1..=resumed).collect::<Vec<_>>(), "{stdout}");
}

#[test]
fn a_resume_without_overridden_flags_prints_no_note() {
    let dir = scratch("resume-note");
    let ckpt = dir.join("ckpt");
    let quick = format!("--data {MNIST_SMALL} --train-rows 100 --batch-size 50 --out {}", dir.join("out").display());
    let (code, _, stderr) = mnist_gpu(args(&format!("{quick} --epochs 1 --checkpoint-dir {}", ckpt.display())));
    assert_eq!(code, Some(0), "{stderr}");
    let last = ckpt.join("last.safetensors");
    let (code, stdout, stderr) = mnist_gpu(args(&format!("{quick} --epochs 2 --resume {}", last.display())));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("note:"), "{stderr}");
    assert!(stdout.contains("after epoch 1"), "{stdout}");
}

#[test]
fn errors_print_without_a_backtrace() {
    let dir = scratch("missing-data");
    let missing = dir.join("missing.npz");
    let runs = [
        Command::new(example("mnist_gpu")).arg("--data").arg(&missing).env("RUST_BACKTRACE", "1").output().unwrap(),
        Command::new(example("logistic_regression"))
            .args(["--cpu", "--data"])
            .arg(&missing)
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap(),
    ];
    for run in runs {
        let (code, _, stderr) = outcome(run);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(&missing.display().to_string()), "{stderr}");
        assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
        // The OS error once, not again as a cause of itself.
        assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
    }
}

#[test]
fn more_training_rows_than_there_are_is_a_usage_error() {
    let (code, stdout, stderr) = mnist_gpu(args(&format!("--data {MNIST_SMALL} --train-rows 1001 --epochs 1")));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--train-rows 1001") && stderr.contains("1000 training rows"), "{stderr}");
    assert!(stderr.contains("Usage:"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
}

#[test]
fn data_parallel_without_the_feature_says_how_to_build() {
    // `example` builds without the feature `mpi` (the tests' default).
    let (code, stdout, stderr) = mnist_gpu(args("--data-parallel --epochs 1 --train-rows 100"));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for part in ["--data-parallel needs MPI", "--features mpi", "libopenmpi-dev", "mpirun -np 2"] {
        assert!(stderr.contains(part), "{part:?} missing from: {stderr}");
    }
    assert!(!stdout.contains("epoch"), "nothing trained: {stdout}");
    let gpt =
        Command::new(example("char_gpt")).args(args("--data-parallel --iters 2 --eval-every 2 --warmup 1")).output();
    let (code, stdout, stderr) = outcome(gpt.unwrap());
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("--data-parallel needs MPI") && stderr.contains("--example char_gpt"), "{stderr}");
    assert!(!stdout.contains("iteration"), "nothing trained: {stdout}");
}

#[test]
fn char_gpt_on_two_adapters_trains_as_one_at_twice_the_batch() {
    let run = |name: &str, flags: &str| {
        let out = scratch(name);
        let mut a = args(&format!(
            "--iters 20 --eval-every 10 --n-layer 1 --n-head 2 --n-embd 16 --block 8 --eval-batches 2 --warmup 2 \
             --sample-chars 0 {flags} --out"
        ));
        a.push(out.display().to_string());
        let (code, stdout, stderr) = outcome(Command::new(example("char_gpt")).args(&a).output().unwrap());
        assert_eq!(code, Some(0), "{flags}\n{stdout}{stderr}");
        (stdout, History::from_csv(&std::fs::read_to_string(out.join("history.csv")).unwrap()).unwrap())
    };
    // "0,0": two devices on the first adapter, which every machine that runs the tests has.
    let (stdout, two) = run("gpt-adapters", "--adapters 0,0 --batch 2");
    assert!(stdout.contains("data-parallel: 2 adapters in this process, each step 4 windows (2 on each)"), "{stdout}");
    let (_, one) = run("gpt-one-adapter", "--batch 4");
    assert_eq!(two.epochs.len(), 2);
    for (a, b) in two.epochs.iter().zip(&one.epochs) {
        // The same windows; the gradients summed across ranks on the host, in another order.
        let close = |x: f32, y: f32| (x - y).abs() <= 1e-3 * y.abs().max(1.0);
        assert!(close(a.train_loss, b.train_loss), "{two:?}\n{one:?}");
        assert!(close(a.val_loss.unwrap(), b.val_loss.unwrap()), "{two:?}\n{one:?}");
    }
    let bad =
        Command::new(example("char_gpt")).args(args("--adapters 99 --iters 2 --eval-every 2 --warmup 1")).output();
    let (code, stdout, stderr) = outcome(bad.unwrap());
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("--adapters 99: ") && stderr.contains("adapter index 99"), "{stderr}");
}

#[test]
fn two_adapters_in_one_process_train_as_one_at_twice_the_batch() {
    let run = |name: &str, flags: &str| {
        let out = scratch(name);
        let line = format!("--data {MNIST_SMALL} --epochs 2 {flags} --out {}", out.display());
        let (code, stdout, stderr) = mnist_gpu(args(&line));
        assert_eq!(code, Some(0), "{line}\n{stdout}{stderr}");
        (stdout, History::from_csv(&std::fs::read_to_string(out.join("history.csv")).unwrap()).unwrap())
    };
    // "0,0": two devices on the first adapter, which every machine that runs the tests has.
    let (stdout, two) = run("adapters", "--adapters 0,0 --batch-size 16");
    assert!(stdout.contains("data-parallel: 2 adapters in this process, each step 32 rows (16 on each)"), "{stdout}");
    let (_, one) = run("one-adapter", "--batch-size 32");
    assert_eq!(two.epochs.len(), 2);
    for (a, b) in two.epochs.iter().zip(&one.epochs) {
        // The sums run in another order (the gradient summed across ranks on the host).
        assert!((a.train_loss - b.train_loss).abs() <= 1e-3 * b.train_loss.abs().max(1.0), "{two:?}\n{one:?}");
    }
    let (code, stdout, stderr) = mnist_gpu(args(&format!("--data {MNIST_SMALL} --adapters 99 --epochs 1")));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("--adapters 99: ") && stderr.contains("adapter index 99"), "{stderr}");
}

#[test]
fn the_help_says_when_a_best_checkpoint_is_written() {
    let (code, stdout, _) = mnist_gpu(["--help"]);
    assert_eq!(code, Some(0));
    let checkpoint_dir = stdout.split("--checkpoint-dir").nth(1).and_then(|s| s.split("\n  -").next()).unwrap();
    assert!(checkpoint_dir.contains("best.safetensors") && checkpoint_dir.contains("--validation-split"), "{stdout}");
}

#[test]
fn a_batch_too_large_for_the_device_names_the_flag() {
    let (code, stdout, stderr) = mnist_gpu(args(&format!(
        "--data {MNIST} --batch-size 59999 --epochs 1 --out {}",
        scratch("large-batch").display()
    )));
    if code == Some(0) {
        // A device whose storage bindings hold the whole batch trains with it.
        let batch_bytes = 59999 * 784 * 4;
        let limit = common::gpu().limits().max_storage_buffer_binding_size;
        assert!(limit >= batch_bytes, "trained a {batch_bytes}-byte batch past a {limit}-byte binding: {stdout}");
    } else {
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.starts_with("error: training with --batch-size 59999"), "{stderr}");
        assert!(!stdout.contains("epoch   1"), "{stdout}");
    }
}

#[test]
fn only_device_limits_get_the_batch_size_flag() {
    let limit = WgnnError::DeviceLimit {
        op: "zeros".into(),
        what: "a tensor of shape [60000, 784]".into(),
        amount: 188_160_000,
        unit: "bytes",
        limit: 134_217_728,
        limit_name: "max_storage_buffer_binding_size",
    };
    let report = example_common::error_report(&example_common::naming_the_batch_size(limit, 59999));
    assert!(report.starts_with("error: training with --batch-size 59999 exceeds a device limit"), "{report}");
    assert!(report.contains("caused by: `zeros`: a tensor of shape [60000, 784]"), "{report}");
    // A shape mismatch is between the data and the model, not the batch size: said as it is.
    let shape = example_common::naming_the_batch_size(WgnnError::shape("matmul", "[2, 3] × [4, 5]"), 32);
    assert_eq!(example_common::error_report(&shape), "error: `matmul`: shape mismatch: [2, 3] × [4, 5]");
    let other = example_common::naming_the_batch_size(WgnnError::Training { detail: "the loss became NaN".into() }, 32);
    assert_eq!(example_common::error_report(&other), "error: training stopped: the loss became NaN");
}

/// The line after Ctrl-C says what was written: the model only when --save asked for it, "1 epoch".
#[test]
fn the_interrupted_line_says_what_was_written() {
    use example_common::outputs::Outputs;
    let out = Path::new("out");
    let one = History { epochs: vec![Default::default()], ..Default::default() };
    let without_save = Outputs { csv: out.join("history.csv"), png: out.join("curves.png"), model: None };
    assert_eq!(without_save.described(&one), "the history of the 1 epoch completed and its curves");
    assert_eq!(without_save.described(&History::default()), "the history of the 0 epochs completed");
    let with_save = Outputs { csv: out.join("history.csv"), png: out.join("curves.png"), model: Some("m".into()) };
    assert_eq!(
        with_save.described(&one),
        "the history of the 1 epoch completed, its curves and the model as trained so far"
    );
    assert_eq!(
        with_save.described(&History::default()),
        "the history of the 0 epochs completed and the model as trained so far"
    );
}

/// A software adapter is named as such in one line (training runs on the CPU), `--require-gpu`
/// makes it an error, and Mesa's XDG_RUNTIME_DIR complaint never reaches the user. On a GPU the
/// line is absent and `--require-gpu` trains.
#[test]
fn a_software_adapter_is_said_and_can_be_refused() {
    let software = common::gpu().is_cpu_adapter();
    let out = scratch("honesty");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(example("mnist_gpu"));
        cmd.args(["--data", MNIST_SMALL, "--train-rows", "64", "--epochs", "1", "--out"]).arg(&out).args(extra);
        outcome(cmd.env_remove("XDG_RUNTIME_DIR").env_remove("WGNN_REQUIRE_GPU").output().unwrap())
    };
    let (code, stdout, stderr) = run(&[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR") && !stdout.contains("XDG_RUNTIME_DIR"), "{stderr}");
    let notice = stdout.lines().filter(|l| l.contains("is a software adapter, so training runs on the CPU")).count();
    assert_eq!(notice, usize::from(software), "software adapter: {software}; {stdout}");

    let (code, stdout, stderr) = run(&["--require-gpu"]);
    if software {
        assert_eq!(code, Some(1), "{stdout}\n{stderr}");
        assert!(stderr.starts_with("error: adapter ") && stderr.contains("a GPU was required"), "{stderr}");
        assert!(!stdout.contains("epoch "), "trained on a software adapter: {stdout}");
    } else {
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    }
}

#[test]
fn cnn_mnist_trains_saves_and_resumes() {
    // Tiny filters on 256 rows: the example's whole path (progress, history, curves, save,
    // checkpoint, resume) in seconds; its default recipe is timed in README and BENCHMARKS.
    let dir = scratch("cnn");
    let run = |extra: &str| {
        let mut a =
            args(&format!("--data {MNIST_SMALL} --train-rows 256 --batch-size 64 --filters 2,4 --hidden 8 --out"));
        a.push(dir.join("out").display().to_string());
        a.extend(args(extra));
        outcome(Command::new(example("cnn_mnist")).args(&a).output().unwrap())
    };
    let ckpt = dir.join("ckpt");
    let (code, stdout, stderr) = run(&format!("--epochs 1 --checkpoint-dir {}", ckpt.display()));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("conv2d(2, 3×3, identity, no bias)") && stdout.contains("test accuracy"), "{stdout}");
    assert!(dir.join("out/history.csv").exists() && dir.join("out/curves.png").exists());
    let (code, stdout, stderr) = run(&format!("--epochs 2 --resume {}", ckpt.join("last.safetensors").display()));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("resumed from") && stdout.contains("epoch   2"), "{stdout}");
    let history = std::fs::read_to_string(dir.join("out/history.csv")).unwrap();
    assert_eq!(history.lines().count(), 3, "a header and both epochs: {history}");

    let (code, _, stderr) = outcome(Command::new(example("cnn_mnist")).args(args("--filters 3")).output().unwrap());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("expected two counts"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn char_gpt_trains_samples_saves_and_resumes() {
    // A GPT of one block, width 16, on the shipped text: the example's whole path (summary,
    // evaluations, history, curves, checkpoint, save, sample, resume) in seconds; its default
    // recipe is timed in README and BENCHMARKS.
    let dir = scratch("char_gpt");
    let run_batch = |batch: usize, extra: &str| {
        let mut a = args(&format!(
            "--n-layer 1 --n-head 2 --n-embd 16 --block 8 --batch {batch} --eval-every 2 --eval-batches 2 --warmup 1 \
             --sample-chars 40 --out"
        ));
        a.push(dir.join("out").display().to_string());
        a.extend(args(extra));
        outcome(Command::new(example("char_gpt")).args(&a).output().unwrap())
    };
    let run = |extra: &str| run_batch(4, extra);
    let ckpt = dir.join("ckpt");
    let saved = dir.join("gpt.safetensors");
    let (code, stdout, stderr) =
        run(&format!("--iters 4 --checkpoint-dir {} --save {}", ckpt.display(), saved.display()));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for part in ["65 distinct", "multi_head_attention(2 heads, causal, no bias)", "dense(64, gelu_erf, no bias)"] {
        assert!(stdout.contains(part), "{part:?} missing: {stdout}");
    }
    assert!(stdout.contains("iteration     2  train loss") && stdout.contains("iteration     4"), "{stdout}");
    assert!(stdout.contains("val loss") && stdout.contains("40 characters sampled after"), "{stdout}");
    assert!(dir.join("out/curves.png").exists() && saved.exists());
    let history = std::fs::read_to_string(dir.join("out/history.csv")).unwrap();
    assert_eq!(history.lines().count(), 3, "a header and two evaluations: {history}");
    // The saved model is the GPT of the flags: blocks of 8 characters.
    let model = Sequential::load(&saved, &Backend::Cpu).unwrap();
    assert_eq!(model.input_shape(), [8]);

    let (code, stdout, stderr) = run(&format!("--iters 6 --resume {}", ckpt.join("last.safetensors").display()));
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("resumed from") && stdout.contains("after iteration 4"), "{stdout}");
    assert!(stdout.contains("iteration     6") && !stdout.contains("iteration     2 "), "{stdout}");
    let history = std::fs::read_to_string(dir.join("out/history.csv")).unwrap();
    assert_eq!(history.lines().count(), 4, "a header and three evaluations: {history}");

    // Usage errors (exit 2) naming the flags.
    for (flags, needle) in [
        ("--iters 5", "multiple of --eval-every"),
        ("--n-head 3", "must divide --n-embd"),
        ("--warmup 250 --iters 250", "fewer than --iters"),
        ("--batch 0", "expected a whole number"),
    ] {
        let (code, _, stderr) = outcome(Command::new(example("char_gpt")).args(args(flags)).output().unwrap());
        assert_eq!(code, Some(2), "{flags}: {stderr}");
        assert!(stderr.contains(needle), "{flags}: {stderr}");
    }
    let (code, _, stderr) = run_batch(5, &format!("--iters 6 --resume {}", ckpt.join("last.safetensors").display()));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("trained with --batch 4"), "{stderr}");
    // The checkpoint keeps its dropout (none): resuming at another rate is not the same run.
    let (code, _, stderr) =
        run(&format!("--iters 6 --dropout 0.2 --resume {}", ckpt.join("last.safetensors").display()));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("trained with --dropout 0"), "{stderr}");
    // nanoGPT's dropout: after the embeddings, on the attention's probabilities, after both
    // projections into the residual stream.
    let (code, stdout, stderr) = run("--iters 2 --dropout 0.2");
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for part in ["multi_head_attention(2 heads, causal, no bias, dropout 0.2)", "dropout(0.2)", "val loss"] {
        assert!(stdout.contains(part), "{part:?} missing: {stdout}");
    }
    assert_eq!(stdout.matches("dropout(0.2)").count(), 3, "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The command lines read well: every flag has help, a negative number is a value (refused by
/// the flag's own check, not taken for a flag), the default data is found from any folder, a
/// closed pipe ends the run quietly, and the last line says what the time includes.
#[test]
fn the_command_lines_read_well() {
    for name in ["mnist_gpu", "cnn_mnist", "logistic_regression", "char_gpt"] {
        let (code, help, _) = outcome(Command::new(example(name)).arg("--help").output().unwrap());
        assert_eq!(code, Some(0));
        // Each flag's help follows it on its line (`--seed <SEED>  Seeds …`) or on the next one
        // (clap's long layout).
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.trim_start().starts_with("--")) {
            let mut words = line.split_whitespace().skip(1);
            let after_flag = match words.next() {
                Some(value) if value.starts_with('<') => words.next(),
                other => other,
            };
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            // A `[default: …]` alone is no help.
            let is_help = |text: &str| !text.is_empty() && !text.starts_with('-') && !text.starts_with('[');
            let has_help = after_flag.is_some_and(is_help) || is_help(next);
            assert!(has_help, "{name}: {line} has no help:\n{help}");
        }
        let (code, _, stderr) = outcome(Command::new(example(name)).args(["--lr", "-1"]).output().unwrap());
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("expected a finite number > 0, got \"-1\""), "{name}: {stderr}");
    }

    // From another folder, with the default --data; 1 epoch, and the final line's parts.
    let dir = scratch("elsewhere");
    let out = Command::new(example("mnist_gpu"))
        .args(["--train-rows", "64", "--epochs", "1", "--out", "out"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let (code, stdout, stderr) = outcome(out);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let trained = stdout.lines().find(|l| l.starts_with("trained ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(trained.starts_with("trained 1 epoch in "), "{trained}");
    assert!(trained.contains("s of training steps") && trained.contains("s of validation"), "{trained}");
    assert!(dir.join("out/history.csv").exists());

    // A missing archive names the flag that gives another.
    let missing = dir.join("nowhere.npz");
    let (code, _, stderr) = mnist_gpu([OsStr::new("--data"), missing.as_os_str()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("pass its path with --data PATH"), "{stderr}");

    // `mnist_gpu --save m.safetensors 2>&1 | head -1`: the reader leaves after the first line.
    // The run went on printing into the closed pipe: it exited 0 at the first line that failed,
    // before writing any output. Now it trains, writes every output asked for and exits 0.
    let piped = dir.join("piped");
    let (mut reader, writer) = std::io::pipe().unwrap();
    let mut child = Command::new(example("mnist_gpu"))
        .args(["--data", MNIST_SMALL, "--train-rows", "64", "--epochs", "2", "--out"])
        .arg(&piped)
        .arg("--save")
        .arg(piped.join("m.safetensors"))
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut reader, &mut first).unwrap();
    drop(reader);
    let status = child.wait().unwrap();
    let written: Vec<_> =
        std::fs::read_dir(&piped).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "written: {written:?}");
    for file in ["history.csv", "curves.png", "m.safetensors"] {
        assert!(piped.join(file).is_file(), "no {file} after the pipe closed; written: {written:?}");
    }
    let history = History::from_csv(&std::fs::read_to_string(piped.join("history.csv")).unwrap()).unwrap();
    assert_eq!(history.epochs.len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
