//! Thousands of seeded random mutations of valid files fed to every loader — `.npy` and `.npz`
//! data, safetensors models with their metadata, checkpoints (also inside a checkpoint folder a
//! run then trains into) — under a memory cap: each is `Ok` or an error naming the file, never a
//! panic or an abort (issue 21, item 1). The tuner cache's mutations are a unit test beside it
//! (`src/device/tune_cache.rs`), its reader being internal.
//!
//! The loop runs in a child process of this test binary under `ulimit -v` (an address-space cap):
//! an allocation the size checks let through past the cap aborts the child, and the parent then
//! fails naming the last case. The size checks read the same cap (`wgnn::host_memory`), so a
//! declared layer larger than it is refused as such.

mod common;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use npyz::zip::write::FileOptions;
use npyz::zip::{CompressionMethod, ZipWriter};
use npyz::WriterBuilder;
use wgnn::data::Dataset;
use wgnn::internals::rng::Rng;
use wgnn::model::{Backend, Checkpointing, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Layer};

const CHILD_ENV: &str = "WGNN_LOADER_FUZZ_CHILD";
const TEST_NAME: &str = "mutated_files_load_or_fail_clearly_never_abort";
/// The child's address space, KiB: far above what the loaders need for these small files, far
/// below what a declared 10^10-unit layer would take.
const CAP_KIB: u64 = 3 << 20;
/// Mutations per loader.
const CASES: usize = 1500;

#[test]
fn mutated_files_load_or_fail_clearly_never_abort() {
    if std::env::var_os(CHILD_ENV).is_some() {
        fuzz_every_loader();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {CAP_KIB} && exec \"$0\" \"$@\""))
        .arg(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
    assert!(
        out.status.success(),
        "the fuzzing child ended with {:?} (134: an abort, 101: a panic); its last lines:\n{}",
        out.status,
        tail.join("\n")
    );
    // The child did run every loader's cases (not a silently empty loop).
    let stdout = String::from_utf8_lossy(&out.stdout);
    for kind in ["model", "load_weights", "checkpoint", "npy", "npz", "checkpoint dir"] {
        assert!(stdout.contains(&format!("fuzzed {kind}: ")), "no summary for {kind}:\n{stdout}");
    }
}

/// Rebuilds a file around a mutated text header: (the valid file, the new header) → the bytes.
type Reframe<'a> = &'a dyn Fn(&[u8], &[u8]) -> Vec<u8>;

/// Loads a file, keeping only whether it loaded.
type Loader<'a> = &'a dyn Fn(&Path) -> wgnn::Result<()>;

/// One mutation of `valid`: a few bytes changed, a truncation, a chunk inserted or dropped, or —
/// where `header` gives the text part of the format — a number in it replaced by a value chosen
/// to break sizes (then `reframe` rebuilds the file around the new header).
fn mutate(valid: &[u8], rng: &mut Rng, header: Option<(std::ops::Range<usize>, Reframe)>) -> Vec<u8> {
    const SIZES: [&str; 12] = [
        "0",
        "1",
        "2",
        "3",
        "7",
        "65536",
        "100000",
        "4294967296",
        "10000000000",
        "18446744073709551615",
        "-1",
        "1e308",
    ];
    let mut b = valid.to_vec();
    let choice = rng.below(if header.is_some() { 7 } else { 5 });
    match choice {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let i = rng.below(b.len());
            b[i] = [0x00, 0xFF, 0x7F, 0x80, rng.next_u64() as u8][rng.below(5)];
        }
        2 => b.truncate(rng.below(b.len())),
        3 => {
            let i = rng.below(b.len());
            let chunk: Vec<u8> = b[i..(i + 1 + rng.below(16)).min(b.len())].to_vec();
            let at = rng.below(b.len());
            b.splice(at..at, chunk);
        }
        4 => {
            let i = rng.below(b.len());
            b.drain(i..(i + 1 + rng.below(16)).min(b.len()));
        }
        _ => {
            let (range, reframe) = header.unwrap();
            let mut text = valid[range.clone()].to_vec();
            // The runs of digits; one (or, in a third of cases, two) replaced.
            let runs: Vec<(usize, usize)> = {
                let mut runs = Vec::new();
                let mut i = 0;
                while i < text.len() {
                    if text[i].is_ascii_digit() {
                        let start = i;
                        while i < text.len() && text[i].is_ascii_digit() {
                            i += 1;
                        }
                        runs.push((start, i));
                    } else {
                        i += 1;
                    }
                }
                runs
            };
            let mut picks: Vec<usize> = (0..1 + (rng.below(3) == 0) as usize).map(|_| rng.below(runs.len())).collect();
            picks.sort_unstable();
            picks.dedup();
            for &p in picks.iter().rev() {
                let (s, e) = runs[p];
                text.splice(s..e, SIZES[rng.below(SIZES.len())].bytes());
            }
            if choice == 6 {
                let i = rng.below(text.len());
                text[i] = b"[]{}\",:-.e0 "[rng.below(12)];
            }
            b = reframe(valid, &text);
        }
    }
    b
}

/// A loader's outcome: `Ok`, or an error whose message names `file` (a path, not a panic).
fn check_outcome<T>(kind: &str, case: usize, file: &Path, outcome: wgnn::Result<T>, counts: &mut [usize; 2]) {
    match outcome {
        Ok(_) => counts[0] += 1,
        Err(e) => {
            let message = e.to_string();
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(message.contains(name), "{kind} case {case}: the error does not name {name}: {message}");
            counts[1] += 1;
        }
    }
}

/// The bytes after a safetensors file's 8-byte length: its JSON header.
fn safetensors_header(bytes: &[u8]) -> std::ops::Range<usize> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    8..8 + n
}

/// A safetensors file with `header` in place of its own (the length prefix rewritten).
fn safetensors_reframed(valid: &[u8], header: &[u8]) -> Vec<u8> {
    let old = safetensors_header(valid);
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&valid[old.end..]);
    b
}

/// The text header of a `.npy` file (after its magic, version and 2-byte length).
fn npy_header(bytes: &[u8]) -> std::ops::Range<usize> {
    let n = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    10..10 + n
}

fn npy_reframed(valid: &[u8], header: &[u8]) -> Vec<u8> {
    let old = npy_header(valid);
    let mut b = valid[..8].to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header);
    b.extend_from_slice(&valid[old.end..]);
    b
}

fn npy_bytes<T: npyz::AutoSerialize + Copy>(shape: &[u64], values: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut out).begin_nd().unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
    out
}

/// An archive of two stored members with the given `.npy` bytes (CRCs computed by the writer,
/// so a mutated header reaches the parser).
fn npz_bytes(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut zip = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = FileOptions::default().compression_method(CompressionMethod::Stored);
    for (name, bytes) in [("x.npy", x), ("y.npy", y)] {
        zip.start_file(name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn fuzz_every_loader() {
    let dir = common::scratch("loaders");
    let cpu = Backend::Cpu;
    let mut rng = Rng::new(21);
    let data = common::synthetic(24, 36, 3, 1);

    // A compiled convolutional model with batch norm, saved; and an MLP's Adam checkpoint.
    let conv = || {
        Sequential::new([6, 6, 1], 1)
            .conv2d(2, (3, 3), Activation::Relu)
            .batch_norm()
            .add(Layer::max_pool2d((2, 2)))
            .flatten()
            .dense(3, Activation::Identity)
    };
    let mut model = conv().build(&cpu).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    model.fit(&data, &FitOptions { batch_size: 8, ..Default::default() }).unwrap();
    let model_path = dir.join("model.safetensors");
    model.save(&model_path).unwrap();
    let mlp = || Sequential::new(36, 2).dense(5, Activation::Relu).batch_norm().dense(3, Activation::Identity);
    let mut trained = mlp().build(&cpu).unwrap();
    trained.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    let history = trained.fit(&data, &FitOptions { batch_size: 8, ..Default::default() }).unwrap();
    let checkpoint_path = dir.join("checkpoint.safetensors");
    trained.save_checkpoint(&checkpoint_path, 1, &history).unwrap();

    let safetensors_loaders: [(&str, &Path, Loader); 3] = [
        ("model", &model_path, &|p| Sequential::load(p, &cpu).map(drop)),
        ("load_weights", &model_path, &|p| conv().build(&cpu).unwrap().load_weights(p)),
        ("checkpoint", &checkpoint_path, &|p| Sequential::resume(p, &cpu).map(drop)),
    ];
    for (kind, valid_path, load) in safetensors_loaders {
        let valid = std::fs::read(valid_path).unwrap();
        let path = dir.join(format!("mutated-{}.safetensors", kind.replace(' ', "-")));
        let mut counts = [0, 0];
        for case in 0..CASES {
            let bytes = mutate(&valid, &mut rng, Some((safetensors_header(&valid), &safetensors_reframed)));
            std::fs::write(&path, &bytes).unwrap();
            eprintln!("{kind} case {case}");
            check_outcome(kind, case, &path, load(&path), &mut counts);
        }
        println!("fuzzed {kind}: {} loaded, {} refused", counts[0], counts[1]);
    }

    // .npy: features f32 [24, 36] and labels i64 [24], each mutated with the other valid.
    let x = npy_bytes(&[24, 36], &data.to_f32());
    let y = npy_bytes(&[24], &data.labels.iter().map(|&l| l as i64).collect::<Vec<_>>());
    let (x_path, y_path) = (dir.join("x.npy"), dir.join("y.npy"));
    let mut counts = [0, 0];
    for case in 0..CASES {
        let (mutated_x, mutated_y) = match case % 2 {
            0 => (mutate(&x, &mut rng, Some((npy_header(&x), &npy_reframed))), y.clone()),
            _ => (x.clone(), mutate(&y, &mut rng, Some((npy_header(&y), &npy_reframed)))),
        };
        std::fs::write(&x_path, &mutated_x).unwrap();
        std::fs::write(&y_path, &mutated_y).unwrap();
        eprintln!("npy case {case}");
        let bad = if case % 2 == 0 { &x_path } else { &y_path };
        check_outcome("npy", case, bad, Dataset::from_npy(&x_path, &y_path), &mut counts);
    }
    println!("fuzzed npy: {} loaded, {} refused", counts[0], counts[1]);

    // .npz: the archive's bytes mutated, or a member's header mutated inside a sound archive.
    let valid_npz = npz_bytes(&x, &y);
    let npz_path = dir.join("data.npz");
    let mut counts = [0, 0];
    for case in 0..CASES {
        let bytes = match case % 3 {
            0 => mutate(&valid_npz, &mut rng, None),
            1 => npz_bytes(&mutate(&x, &mut rng, Some((npy_header(&x), &npy_reframed))), &y),
            _ => npz_bytes(&x, &mutate(&y, &mut rng, Some((npy_header(&y), &npy_reframed)))),
        };
        std::fs::write(&npz_path, &bytes).unwrap();
        eprintln!("npz case {case}");
        check_outcome("npz", case, &npz_path, Dataset::from_npz(&npz_path, "x", "y"), &mut counts);
    }
    println!("fuzzed npz: {} loaded, {} refused", counts[0], counts[1]);

    // A checkpoint folder holding a mutated last.safetensors, a garbage lock file and a stale
    // temporary file: a run trains into it (replacing what is there), and resumes from it.
    let valid = std::fs::read(&checkpoint_path).unwrap();
    let mut counts = [0, 0];
    for case in 0..CASES / 50 {
        let folder = dir.join(format!("checkpoints-{case}"));
        std::fs::create_dir_all(&folder).unwrap();
        let last = folder.join("last.safetensors");
        std::fs::write(&last, mutate(&valid, &mut rng, Some((safetensors_header(&valid), &safetensors_reframed))))
            .unwrap();
        std::fs::write(folder.join(wgnn::model::LOCK_FILE), mutate(b"garbage lock", &mut rng, None)).unwrap();
        std::fs::write(folder.join(".last.safetensors.tmp"), &valid[..valid.len() / 2]).unwrap();
        eprintln!("checkpoint dir case {case}");
        check_outcome("checkpoint dir", case, &last, Sequential::resume(&last, &cpu).map(drop), &mut counts);
        let mut m = mlp().build(&cpu).unwrap();
        m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        let options =
            FitOptions { batch_size: 8, checkpoint: Some(Checkpointing::every_epoch(&folder)), ..Default::default() };
        let fitted = m.fit(&data, &options);
        assert!(fitted.is_ok(), "checkpoint dir case {case}: training into the folder: {:?}", fitted.err());
        Sequential::resume(&last, &cpu).unwrap_or_else(|e| panic!("checkpoint dir case {case}: {e}"));
    }
    println!("fuzzed checkpoint dir: {} loaded, {} refused", counts[0], counts[1]);
    let _ = std::fs::remove_dir_all(&dir);
}
