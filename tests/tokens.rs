//! TokenDataset and the GPU's batches of random windows (token_batch.wgsl): windows equal to
//! the CPU reference's on awkward sizes, reproducible from (seed, step), offsets covering every
//! start and exact up to millions of tokens, the step counter's advance against its reference,
//! bad input as errors, and Tiny Shakespeare from
//! assets/ (65 characters, 1,115,394 tokens, nanoGPT's split).

mod common;
use common::*;
use wgnn::internals::cpu::token_batch::{advance_step as cpu_advance, token_windows as cpu_windows, window_offsets};
use wgnn::internals::kernels::token_batch::{advance_step, token_windows, GpuTokens};
use wgnn::{Gpu, Tensor, TokenDataset, WgnnError};

/// The GPU's (x, y) for `data` at (seed, t) for each t.
fn gpu_batches(
    gpu: &Gpu,
    data: &TokenDataset,
    seed: u64,
    batch: usize,
    block: usize,
    ts: &[u32],
) -> Vec<(Vec<u32>, Vec<u32>)> {
    let tokens = GpuTokens::upload(gpu, data).unwrap();
    let step = Tensor::zeros_u32(gpu, &[1]).unwrap();
    let b = tokens.batch(gpu, &step, seed, batch, block).unwrap();
    ts.iter()
        .map(|&t| {
            step.write_u32(&[t]).unwrap();
            gpu.run(&[&b.plan]).unwrap();
            (b.x.to_vec_u32().unwrap(), b.y.to_vec_u32().unwrap())
        })
        .collect()
}

fn counting(len: usize, vocab: usize) -> TokenDataset {
    TokenDataset::from_tokens((0..len).map(|i| (i * 7 % vocab) as u32).collect(), vocab, "counting").unwrap()
}

#[test]
fn gpu_windows_match_the_reference_on_awkward_sizes() {
    let gpu = gpu();
    let ts = [0u32, 1, 2, 17, 1000];
    for (len, batch, block) in [(2, 1, 1), (3, 5, 2), (100, 13, 7), (1000, 12, 64), (70_001, 3, 257), (5000, 300, 256)]
    {
        let data = counting(len, 61);
        let got = gpu_batches(&gpu, &data, 42, batch, block, &ts);
        for (&t, (x, y)) in ts.iter().zip(&got) {
            let what = format!("len {len} batch {batch} block {block} t {t}");
            let (want_x, want_y) = data.windows(t, 42, batch, block).unwrap();
            assert_eq!(x, &want_x, "{what}: x");
            assert_eq!(y, &want_y, "{what}: y");
            // Each row is a window: y is x shifted by one token.
            for b in 0..batch {
                assert_eq!(x[b * block + 1..(b + 1) * block], y[b * block..(b + 1) * block - 1], "{what}: row {b}");
            }
        }
    }
}

/// The GPU's (x, y) of rows `first..first + batch` of the batch at (seed, t).
fn gpu_rows(gpu: &Gpu, data: &TokenDataset, t: u32, first: usize, batch: usize, block: usize) -> (Vec<u32>, Vec<u32>) {
    let tokens = GpuTokens::upload(gpu, data).unwrap();
    let step = Tensor::from_u32(gpu, &[1], &[t]).unwrap();
    let x = Tensor::zeros_u32(gpu, &[batch, block]).unwrap();
    let y = Tensor::zeros_u32(gpu, &[batch, block]).unwrap();
    gpu.run(&[&token_windows(gpu, &tokens.tokens, &step, 42, first, &x, &y).unwrap()]).unwrap();
    (x.to_vec_u32().unwrap(), y.to_vec_u32().unwrap())
}

#[test]
fn windows_from_a_row_match_the_reference_and_shard_the_batch() {
    let gpu = gpu();
    // Awkward offsets: 1, a prime, one past a workgroup, and the last rows the hash numbers.
    for (len, first, batch, block, t) in
        [(3, 1, 5, 2, 0u32), (100, 13, 7, 7, 3), (1000, 257, 12, 64, 1000), (5000, u32::MAX as usize - 3, 4, 9, 17)]
    {
        let data = counting(len, 61);
        let what = format!("len {len} first {first} batch {batch} block {block} t {t}");
        let got = gpu_rows(&gpu, &data, t, first, batch, block);
        assert_eq!(got, data.windows_from(t, 42, first, batch, block).unwrap(), "{what}");
        assert_eq!(got, cpu_windows(data.tokens(), t, 42, first, batch, block), "{what}: the reference");
    }
    // Rank r of R at batch b draws rows [r·b, (r+1)·b) of the batch one process draws at R·b.
    let data = counting(10_000, 65);
    for (ranks, b) in [(2, 6), (3, 5)] {
        for t in [0u32, 9] {
            let (whole_x, whole_y) = data.windows(t, 42, ranks * b, 16).unwrap();
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for r in 0..ranks {
                let (rx, ry) = gpu_rows(&gpu, &data, t, r * b, b, 16);
                x.extend(rx);
                y.extend(ry);
            }
            assert_eq!((x, y), (whole_x, whole_y), "{ranks} ranks at batch {b}, t {t}");
        }
    }
    // Another row's window is another draw: the shards are not copies of each other.
    assert_ne!(gpu_rows(&gpu, &data, 4, 0, 6, 16), gpu_rows(&gpu, &data, 4, 6, 6, 16));
}

#[test]
fn batches_are_reproducible_from_seed_and_step() {
    let gpu = gpu();
    let data = counting(10_000, 65);
    let ts = [3u32, 4, 3];
    let runs = gpu_batches(&gpu, &data, 7, 12, 64, &ts);
    assert_eq!(runs[0], runs[2], "the same step twice");
    assert_ne!(runs[0], runs[1], "another step, another batch");
    let again = gpu_batches(&gpu, &data, 7, 12, 64, &ts);
    assert_eq!(runs, again, "another upload, the same batches");
    let other_seed = gpu_batches(&gpu, &data, 8, 12, 64, &ts);
    assert_ne!(runs[0], other_seed[0], "another seed, another batch");
    // Seeds that differ only in their high word differ too.
    let high = gpu_batches(&gpu, &data, 7 | (1 << 40), 12, 64, &ts);
    assert_ne!(runs[0], high[0], "the seed's high word counts");
}

#[test]
fn offsets_cover_every_start_and_stay_exact_for_millions_of_tokens() {
    let gpu = gpu();
    // Identity tokens: x[b, 0] is the window's offset.
    let offsets_on_gpu = |len: usize, block: usize, batch: usize, t: u32| {
        let data = TokenDataset::from_tokens((0..len as u32).collect(), len, "identity").unwrap();
        let (x, _) = gpu_batches(&gpu, &data, 99, batch, block, &[t]).pop().unwrap();
        (0..batch).map(|b| x[b * block] as usize).collect::<Vec<_>>()
    };
    // 7 starts (len 10, block 3): 7,000 draws, each start about 1,000 times, none past the last.
    let mut counts = [0usize; 7];
    for t in 0..7 {
        let got = offsets_on_gpu(10, 3, 1000, t);
        assert_eq!(got, window_offsets(10, 3, t, 99, 0, 1000), "t {t}");
        for o in got {
            counts[o] += 1;
        }
    }
    assert!(counts.iter().all(|&c| (850..=1150).contains(&c)), "start counts {counts:?}");
    // 5,000,000 tokens: the 32 × 32-bit product behind each offset, exact on the GPU.
    let len = 5_000_000;
    let got = offsets_on_gpu(len, 1, 4096, 5);
    assert_eq!(got, window_offsets(len, 1, 5, 99, 0, 4096));
    assert!(*got.iter().max().unwrap() > len * 9 / 10, "offsets reach the end");
}

#[test]
fn advance_step_matches_the_reference_and_wraps() {
    let gpu = gpu();
    for start in [vec![0u32], vec![41, 7], vec![u32::MAX, 1]] {
        let step = Tensor::from_u32(&gpu, &[start.len()], &start).unwrap();
        let plan = advance_step(&gpu, &step).unwrap();
        let mut want = start.clone();
        for _ in 0..3 {
            gpu.run(&[&plan]).unwrap();
            cpu_advance(&mut want);
            assert_eq!(step.to_vec_u32().unwrap(), want, "from {start:?}");
        }
    }
    // Only t moves: the second cell (a guarded step's skip flag) is left as it is.
    let bad = Tensor::zeros_u32(&gpu, &[3]).unwrap();
    let err = advance_step(&gpu, &bad).err().expect("a [3] counter is refused");
    assert!(err.to_string().contains("advance_step"), "{err}");
    let float = Tensor::zeros(&gpu, &[1]).unwrap();
    assert!(advance_step(&gpu, &float).is_err());
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let text = |r: wgnn::Result<TokenDataset>| r.unwrap_err().to_string();
    let out = text(TokenDataset::from_tokens(vec![0, 3, 9, 2], 5, "ids.bin"));
    assert!(out.contains("ids.bin") && out.contains("token 9") && out.contains("position 2"), "{out}");
    assert!(text(TokenDataset::from_tokens(vec![0], 0, "v0")).contains("vocab_size 0"));
    assert!(text(TokenDataset::from_tokens(vec![], 5, "none")).contains("no tokens"));
    let data = counting(50, 13);
    for (what, batch, block, words) in [
        ("block + 1 > len", 4, 50, &["block + 1 = 51", "50 tokens"][..]),
        ("block = len − 1 fits", 4, 49, &[][..]),
        ("batch 0", 0, 8, &["batch 0"][..]),
        ("block 0", 4, 0, &["block 0"][..]),
    ] {
        let got = data.windows(0, 1, batch, block);
        match words.is_empty() {
            true => assert!(got.is_ok(), "{what}: {:?}", got.err()),
            false => {
                let e = got.unwrap_err().to_string();
                assert!(e.contains("TokenDataset::windows") && words.iter().all(|w| e.contains(w)), "{what}: {e}");
            }
        }
    }
    let e = data.windows_from(0, 1, usize::MAX, 2, 8).unwrap_err().to_string();
    assert!(e.contains("TokenDataset::windows") && e.contains("2^32"), "{e}");
    let gpu = gpu();
    let tokens = GpuTokens::upload(&gpu, &data).unwrap();
    let step = Tensor::zeros_u32(&gpu, &[1]).unwrap();
    let e = tokens.batch(&gpu, &step, 1, 4, 50).err().unwrap().to_string();
    assert!(e.contains("GpuTokens::batch") && e.contains("block + 1 = 51"), "{e}");
    let x = Tensor::zeros_u32(&gpu, &[4, 8]).unwrap();
    let y = Tensor::zeros_u32(&gpu, &[4, 8]).unwrap();
    let flat = Tensor::zeros_u32(&gpu, &[32]).unwrap();
    let f32_step = Tensor::zeros(&gpu, &[1]).unwrap();
    let y_short = Tensor::zeros_u32(&gpu, &[4, 7]).unwrap();
    for (what, r, word) in [
        ("x not [batch, block]", token_windows(&gpu, &tokens.tokens, &step, 1, 0, &flat, &y), "[batch, block]"),
        ("y short", token_windows(&gpu, &tokens.tokens, &step, 1, 0, &x, &y_short), "y"),
        ("f32 step", token_windows(&gpu, &tokens.tokens, &f32_step, 1, 0, &x, &y), "u32"),
        ("x is y", token_windows(&gpu, &tokens.tokens, &step, 1, 0, &x, &x), "share memory"),
        ("rows past 2^32", token_windows(&gpu, &tokens.tokens, &step, 1, u32::MAX as usize - 2, &x, &y), "2^32"),
    ] {
        let e = r.err().unwrap_or_else(|| panic!("{what}: accepted")).to_string();
        assert!(e.contains("token_windows") && e.contains(word), "{what}: {e}");
    }
    // Text: a character outside the vocabulary, an id past it, ids without a vocabulary.
    let abc = TokenDataset::from_text(b"abcabc", "abc").unwrap();
    assert!(abc.encode("abd").unwrap_err().to_string().contains("'d'"));
    assert!(abc.decode(&[0, 3]).unwrap_err().to_string().contains("id 3"));
    assert!(data.decode(&[0]).unwrap_err().to_string().contains("no vocabulary"));
    for f in [0.0, 1.0, f64::NAN] {
        assert!(abc.split(f).is_err(), "fraction {f}");
    }
    assert!(abc.split(0.1).unwrap_err().to_string().contains("empty"), "6 tokens at 0.1");
    // Files: a missing one and an empty one, named.
    let dir = scratch("tokens");
    let missing = dir.join("missing.txt");
    match TokenDataset::from_text_file(&missing) {
        Err(e @ WgnnError::Io { .. }) => assert!(e.to_string().contains("missing.txt"), "{e}"),
        other => panic!("missing file: {other:?}"),
    }
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    match TokenDataset::from_text_file(&empty) {
        Err(e @ WgnnError::Data { .. }) => assert!(e.to_string().contains("empty.txt"), "{e}"),
        other => panic!("empty file: {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tiny_shakespeare_loads_as_nanogpt_prepares_it() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tinyshakespeare/input.txt");
    let data = TokenDataset::from_text_file(&path).unwrap();
    assert_eq!(data.len(), 1_115_394);
    assert_eq!(data.vocab_size(), 65);
    let vocab = data.vocabulary().unwrap();
    assert_eq!(&vocab[..5], b"\n !$&", "sorted: newline, space, ...");
    assert_eq!(data.encode("First").unwrap(), [18, 47, 56, 57, 58], "nanoGPT's stoi");
    assert_eq!(data.decode(&data.tokens()[..13]).unwrap(), "First Citizen");
    assert_eq!(data.decode(data.tokens()).unwrap().as_bytes(), std::fs::read(&path).unwrap(), "round trip");
    let (train, val) = data.split(0.9).unwrap();
    assert_eq!((train.len(), val.len()), (1_003_854, 111_540), "nanoGPT's split");
    assert_eq!((train.vocab_size(), val.vocab_size()), (65, 65));
    assert_eq!(val.tokens()[0], data.tokens()[1_003_854]);
    // nanoGPT's small recipe's batch (12 windows of 64 + 1) on the GPU, as the reference draws it.
    let got = gpu_batches(&gpu(), &train, 1337, 12, 64, &[1, 2000]);
    for ((x, y), t) in got.iter().zip([1u32, 2000]) {
        assert_eq!((x.clone(), y.clone()), cpu_windows(train.tokens(), t, 1337, 0, 12, 64), "t {t}");
        assert!(x.iter().chain(y).all(|&id| id < 65));
    }
}
