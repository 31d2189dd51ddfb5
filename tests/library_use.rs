//! The library as a Rust program uses it: quiet unless asked (no Mesa lines, no progress), progress
//! one flag away, predictions as rows and classes, evaluate and predict on a shared model, save
//! into a new folder, errors that read well from `main`.

mod common;

use std::process::Command;

use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential, Validation};
use wgnn::{Activation, Dataset, WgnnError};

/// The environment variable that makes this test binary the child of
/// `the_library_prints_nothing_unless_verbose`, and what the child does.
const CHILD_ENV: &str = "WGNN_LIBRARY_USE_CHILD";
const START: &str = "<child output starts>";
const END: &str = "<child output ends>";

/// Four separable clusters in 2-D.
fn clusters() -> Dataset {
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for i in 0..64 {
        let class = i % 4;
        let (cx, cy) = [(1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0), (1.0, -1.0)][class];
        let jitter = (i as f32 * 0.37).sin() * 0.2;
        rows.push([cx + jitter, cy - jitter]);
        labels.push(class as u32);
    }
    Dataset::from_rows(&rows, &labels).unwrap()
}

fn classifier(backend: &Backend) -> Sequential {
    let mut model =
        Sequential::new(2, 3).dense(8, Activation::Relu).dense(4, Activation::Softmax).build(backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(0.05)).unwrap();
    model
}

/// What the child process runs: a whole session of library calls, between markers on both streams.
/// libtest runs it on a thread of its own, so `Gpu::new` alone would leave `XDG_RUNTIME_DIR` unset:
/// the child calls `quiet_mesa` first, as such a program's `main` does.
fn child_session(verbose: bool) {
    println!("{START}");
    eprintln!("{START}");
    // SAFETY: libtest's main thread only waits for this test (one test, one test thread), and no
    // other thread of this process reads or writes the environment.
    unsafe { wgnn::quiet_mesa() };
    if cfg!(target_os = "linux") {
        let dir = std::env::var_os("XDG_RUNTIME_DIR").expect("quiet_mesa sets an unset XDG_RUNTIME_DIR");
        assert!(std::path::Path::new(&dir).is_absolute(), "{dir:?}");
    }
    let gpu = wgnn::Gpu::new().unwrap();
    let data = clusters();
    let mut model = classifier(&Backend::Gpu(gpu));
    let validation = Validation::Data(&data);
    model.fit(&data, &FitOptions { epochs: 2, batch_size: 16, validation, verbose, ..Default::default() }).unwrap();
    model.evaluate(&data).unwrap();
    model.predict_classes(&data).unwrap();
    println!("{END}");
    eprintln!("{END}");
}

/// The text between the markers.
fn between_markers(text: &str) -> &str {
    let start = text.find(START).map_or(0, |i| i + START.len());
    let end = text.find(END).unwrap_or_else(|| panic!("the child did not finish: {text}"));
    text[start..end].trim()
}

/// Creating a device after `quiet_mesa` (without `XDG_RUNTIME_DIR`, as in a container or CI job:
/// Mesa's Wayland probe complains then), training, evaluating and predicting print nothing at all; with `verbose` the
/// epoch lines come on stdout, and no bar where stderr is not a terminal.
#[test]
fn the_library_prints_nothing_unless_verbose() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        return child_session(mode == "verbose");
    }
    let run = |mode: &str| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "the_library_prints_nothing_unless_verbose", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, mode)
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{mode} child failed:\n{stdout}\n{stderr}");
        (between_markers(&stdout).to_string(), between_markers(&stderr).to_string())
    };
    let (stdout, stderr) = run("quiet");
    assert_eq!((stdout.as_str(), stderr.as_str()), ("", ""), "a quiet session printed something");
    let (stdout, stderr) = run("verbose");
    assert_eq!(stderr, "", "no bar and no Mesa line on a stderr that is not a terminal");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("epoch {:>3}  loss ", i + 1)), "{line}");
        assert!(line.contains("val acc") && line.contains(" s validation"), "{line}");
    }
}

/// The environment variable that makes this test binary the child of
/// `a_gpu_made_beside_other_threads_leaves_the_environment_alone`; its value is what
/// `XDG_RUNTIME_DIR` is set to in the child ("" for unset).
const THREADED_CHILD_ENV: &str = "WGNN_LIBRARY_USE_THREADED_CHILD";

/// Setting a variable while another thread may read the environment is undefined behaviour, so
/// `Gpu::new` beside a live thread leaves an unset or relative `XDG_RUNTIME_DIR` as it was.
#[test]
fn a_gpu_made_beside_other_threads_leaves_the_environment_alone() {
    if let Ok(expected) = std::env::var(THREADED_CHILD_ENV) {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || wait.recv());
        let gpu = wgnn::Gpu::new().unwrap();
        let now = std::env::var_os("XDG_RUNTIME_DIR");
        stop.send(()).unwrap();
        other.join().unwrap().unwrap();
        drop(gpu);
        let expected = (!expected.is_empty()).then(|| std::ffi::OsString::from(expected));
        assert_eq!(now, expected, "Gpu::new changed XDG_RUNTIME_DIR beside another thread");
        println!("{END}");
        return;
    }
    for value in ["", "relative/runtime"] {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child.args(["--exact", "a_gpu_made_beside_other_threads_leaves_the_environment_alone", "--nocapture"]);
        child.args(["--test-threads", "1"]).env(THREADED_CHILD_ENV, value);
        if value.is_empty() {
            child.env_remove("XDG_RUNTIME_DIR");
        } else {
            child.env("XDG_RUNTIME_DIR", value);
        }
        let out = child.output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && stdout.contains(END), "child with {value:?} failed:\n{stdout}\n{stderr}");
    }
}

#[test]
fn the_software_notice_speaks_to_a_library_user() {
    let gpu = common::gpu();
    match gpu.software_notice() {
        Some(notice) => {
            assert!(notice.contains("WGNN_ADAPTER=NAME") && notice.contains("GpuOptions::adapter"), "{notice}");
            assert!(notice.contains("WGNN_REQUIRE_GPU=1") && notice.contains("GpuOptions::require_gpu"), "{notice}");
            assert!(!notice.contains("--"), "a library user's program has no flags of ours: {notice}");
        }
        None => assert!(!gpu.is_cpu_adapter()),
    }
}

#[test]
fn errors_debug_print_as_their_report() {
    let err = WgnnError::invalid("fit", "call compile() before fit()");
    // What `fn main() -> Result<(), WgnnError>` prints after "Error: ".
    assert_eq!(format!("{err:?}"), "`fit`: invalid argument: call compile() before fit()");
    assert_eq!(format!("{err:#?}"), "WgnnError::InvalidArgument: `fit`: invalid argument: call compile() before fit()");
}

#[test]
fn save_creates_the_missing_folder_and_names_one_it_cannot() {
    let dir = common::scratch("save");
    let model = classifier(&Backend::Cpu);
    let path = dir.join("models/run 1/model.safetensors");
    model.save(&path).unwrap();
    let loaded = Sequential::load(&path, &Backend::Cpu).unwrap();
    let data = clusters();
    assert_eq!(loaded.predict_dataset(&data).unwrap(), model.predict_dataset(&data).unwrap());

    let file = dir.join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let err = model.save(file.join("sub/model.safetensors")).unwrap_err();
    match &err {
        WgnnError::Io { path, .. } => assert_eq!(path, &file.join("sub"), "{err}"),
        other => panic!("expected an I/O error naming the folder, got {other:#?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Evaluate and predict read the model only: a shared reference does.
fn accuracy_of(model: &Sequential, data: &Dataset) -> f32 {
    let classes = model.predict_classes(data).unwrap();
    let hits = classes.iter().zip(&data.labels).filter(|(p, l)| p == l).count();
    let (_, accuracy) = model.evaluate(data).unwrap();
    assert!((hits as f32 / data.rows as f32 - accuracy).abs() < 1e-6, "{hits} hits vs evaluate's {accuracy}");
    accuracy
}

#[test]
fn predictions_come_as_rows_classes_and_top_k() {
    let data = clusters();
    let mut model = classifier(&Backend::Gpu(common::gpu()));
    let history = model.fit(&data, &FitOptions { epochs: 30, batch_size: 16, ..Default::default() }).unwrap();
    assert!(history.epochs.iter().all(|r| r.val_seconds == 0.0), "no validation, no validation time");
    assert!(accuracy_of(&model, &data) > 0.9, "four clusters are learned");

    let p = model.predict_dataset(&data).unwrap();
    assert_eq!((p.num_rows(), p.width()), (64, 4));
    let by_rows = model.predict_rows(&[data.row_f32(5).unwrap(), data.row_f32(6).unwrap()]).unwrap();
    common::assert_close("predict_rows", by_rows.row(1), p.row(6), 1e-6, 1e-5);
    let top = p.top_k(2);
    for (row, classes) in top.iter().zip(p.argmax()) {
        assert_eq!(row[0].0, classes);
        assert!(row[0].1 >= row[1].1);
    }
    let err = model.predict_rows(&[[1.0f32, 2.0, 3.0]]).unwrap_err();
    assert!(err.to_string().contains("row 0 has 3 values; the model takes 2"), "{err}");
}

#[test]
fn one_output_classes_are_thresholded_and_regression_has_none() {
    let x: Vec<[f32; 1]> = (0..40).map(|i| [i as f32 / 10.0 - 2.0]).collect();
    let y: Vec<u32> = x.iter().map(|r| u32::from(r[0] > 0.0)).collect();
    let data = Dataset::from_rows(&x, &y).unwrap();
    let mut model = Sequential::new(1, 1).dense(1, Activation::Identity).build(&Backend::Cpu).unwrap();
    model.compile(Loss::BinaryCrossentropy, Optimizer::adam(0.1)).unwrap();
    model.fit(&data, &FitOptions { epochs: 40, batch_size: 40, ..Default::default() }).unwrap();
    let probabilities = model.predict_dataset(&data).unwrap();
    let classes = model.predict_classes(&data).unwrap();
    for (&p, &c) in probabilities.iter().zip(&classes) {
        assert_eq!(c, u32::from(p >= 0.5), "{p}");
    }
    assert!(accuracy_of(&model, &data) > 0.9);

    let targets: Vec<[f32; 1]> = x.iter().map(|r| [2.0 * r[0]]).collect();
    let values = Dataset::regression_rows(&x, &targets).unwrap();
    let mut regression = Sequential::new(1, 1).dense(1, Activation::Identity).build(&Backend::Cpu).unwrap();
    regression.compile(Loss::MeanSquaredError, Optimizer::adam(0.1)).unwrap();
    let err = regression.predict_classes(&values).unwrap_err();
    assert!(err.to_string().contains("predicts values, not classes"), "{err}");
}
