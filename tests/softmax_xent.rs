//! softmax_xent.wgsl (sparse labels and dense targets) and totals.wgsl against the CPU reference;
//! the reference's gradients against finite differences; extreme inputs; bad input. The other
//! losses are in tests/losses.rs.

mod common;
use common::loss_outputs::{expect_err, expected_dispatches, Got};
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::softmax_xent::{softmax, softmax_xent, softmax_xent_dense, SoftmaxXentOut, MAX_CLASSES};
use wgnn::internals::kernels::totals::{totals, totals_blocked};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Tensor, WgnnError};

/// Runs softmax_xent on the GPU with every output; totals start at `start`.
fn run_softmax_xent(
    gpu: &Gpu,
    logits: &[f32],
    labels: &[u32],
    n: usize,
    c: usize,
    grad_scale: f32,
    start: [f32; 2],
) -> Got {
    let lt = Tensor::from_slice(gpu, &[n, c], logits).unwrap();
    let yt = Tensor::from_u32(gpu, &[n], labels).unwrap();
    let loss = Tensor::zeros(gpu, &[n]).unwrap();
    let dlogits = Tensor::from_slice(gpu, &[n, c], &vec![f32::NAN; n * c]).unwrap();
    let correct = Tensor::zeros(gpu, &[n]).unwrap();
    let tot = Tensor::from_slice(gpu, &[2], &start).unwrap();
    let out = SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dlogits), correct_rows: &correct, totals: Some(&tot) };
    let plan = softmax_xent(gpu, &lt, &yt, grad_scale, &out).unwrap();
    gpu.run(&[&plan]).unwrap();
    Got {
        loss: loss.to_vec().unwrap(),
        dlogits: dlogits.to_vec().unwrap(),
        correct: correct.to_vec().unwrap(),
        totals: tot.to_vec().unwrap(),
        dispatches: plan.len(),
    }
}

fn check_softmax_xent(gpu: &Gpu, what: &str, logits: &[f32], labels: &[u32], n: usize, c: usize) {
    let grad_scale = 1.0 / n as f32;
    let start = [0.5, -2.0];
    let got = run_softmax_xent(gpu, logits, labels, n, c, grad_scale, start);
    let (loss, dlogits, correct) = cpu::softmax_xent(logits, labels, n, c, grad_scale);
    assert_close(&format!("{what} loss_rows"), &got.loss, &loss, 1e-5, 1e-4);
    assert_close(&format!("{what} dlogits"), &got.dlogits, &dlogits, 1e-6, 1e-4);
    assert_eq!(got.correct, correct, "{what} correct_rows");
    let [sl, sc] = cpu::totals(&loss, &correct);
    assert_close(&format!("{what} totals"), &got.totals, &[start[0] + sl, start[1] + sc], 1e-3, 1e-5);
    assert_eq!(got.dispatches, expected_dispatches(n, c), "{what} dispatches");
}

#[test]
fn softmax_xent_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(10);
    let mut shapes: Vec<(usize, usize)> = SIZES.iter().map(|&n| (n, 10)).collect();
    shapes.extend(SIZES.iter().map(|&c| (33, c)));
    shapes.extend([(1, 1), (64, 65), (65, 64), (127, 257), (257, 127), (2, 2000)]);
    // Totals fused into the loss dispatch up to the row and loop limits; past them, totals.wgsl.
    shapes.extend([(2048, 10), (2049, 10), (3000, 7), (65, 2048), (129, 2100)]);
    for (n, c) in shapes {
        let logits = rng.vec_uniform(n * c, -5.0, 5.0);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(c) as u32).collect();
        check_softmax_xent(&gpu, &format!("softmax_xent {n}x{c}"), &logits, &labels, n, c);
    }
}

#[test]
fn softmax_xent_per_token_over_a_gpt_batch() {
    // A character GPT's loss: every token of a [batch, block] window is a row of [batch·block,
    // vocab] logits with an integer target. Issue 23's recipes: 12·64 tokens and 64·256 tokens
    // over a vocabulary of 65, the gradient scaled by 1/tokens (the mean over tokens).
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for (batch, block, vocab) in [(12, 64, 65), (64, 256, 65)] {
        let n = batch * block;
        let logits = rng.vec_uniform(n * vocab, -2.0, 2.0);
        let targets: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
        check_softmax_xent(
            &gpu,
            &format!("softmax_xent {batch}·{block} tokens x {vocab}"),
            &logits,
            &targets,
            n,
            vocab,
        );
    }
}

#[test]
fn softmax_xent_large_batch_with_totals() {
    // 60,000 rows: the totals reduction loops 235 times per invocation, then a workgroup tree.
    let gpu = gpu();
    let mut rng = Rng::new(11);
    let (n, c) = (60_000, 10);
    let logits = rng.vec_uniform(n * c, -3.0, 3.0);
    // Labels agree with the argmax about half of the time, so the accuracy total is not trivial.
    let labels: Vec<u32> = (0..n)
        .map(|r| {
            let row = &logits[r * c..(r + 1) * c];
            let arg = (0..c).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            if rng.next_f32() < 0.5 {
                arg as u32
            } else {
                rng.below(c) as u32
            }
        })
        .collect();
    check_softmax_xent(&gpu, "softmax_xent 60000x10", &logits, &labels, n, c);
}

#[test]
fn softmax_xent_extreme_logits_are_finite() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for &scale in &[1000.0f32, 1e4] {
        let (n, c) = (65, 7);
        let logits: Vec<f32> =
            (0..n * c).map(|_| if rng.next_f32() < 0.5 { -scale } else { scale } * rng.uniform(0.5, 1.0)).collect();
        let labels: Vec<u32> = (0..n).map(|_| rng.below(c) as u32).collect();
        let got = run_softmax_xent(&gpu, &logits, &labels, n, c, 1.0 / n as f32, [0.0, 0.0]);
        for (name, v) in [("loss", &got.loss), ("dlogits", &got.dlogits), ("totals", &got.totals)] {
            assert!(v.iter().all(|x| x.is_finite()), "softmax_xent ±{scale}: {name} has a non-finite value");
        }
        check_softmax_xent(&gpu, &format!("softmax_xent ±{scale}"), &logits, &labels, n, c);
    }
    // All-equal rows of huge magnitude: loss log(C), first column wins the tie.
    let got = run_softmax_xent(&gpu, &[1e4; 3], &[0], 1, 3, 1.0, [0.0, 0.0]);
    assert_close("equal ±1e4 loss", &got.loss, &[3f32.ln()], 1e-5, 1e-5);
    assert_eq!(got.correct, [1.0]);
}

#[test]
fn softmax_xent_first_max_wins_ties() {
    let gpu = gpu();
    let logits = [1.0, 3.0, 3.0, 1.0, 3.0, 3.0, 2.0, 2.0, 2.0];
    let labels = [1, 2, 0];
    let got = run_softmax_xent(&gpu, &logits, &labels, 3, 3, 1.0, [0.0, 0.0]);
    assert_eq!(got.correct, [1.0, 0.0, 1.0]);
    assert_eq!(cpu::softmax_xent(&logits, &labels, 3, 3, 1.0).2, [1.0, 0.0, 1.0]);
}

/// A label ≥ C that the host could not check (written after the upload, so the tensor's known
/// maximum is stale) gives that row a NaN loss, 0 correct and softmax·grad_scale as its gradient,
/// as the CPU reference does; the other rows are unaffected. Guards the NaN the kernel makes at run
/// time since Tint refused it as a constant (issue 26), in the fused totals and in totals.wgsl's.
#[test]
fn softmax_xent_unchecked_label_out_of_range_gives_a_nan_loss_row() {
    let gpu = gpu();
    let mut rng = Rng::new(15);
    for (n, c) in [(6, 4), (3000, 7)] {
        let logits = rng.vec_uniform(n * c, -3.0, 3.0);
        let mut labels: Vec<u32> = (0..n).map(|_| rng.below(c) as u32).collect();
        let bad = [1, 4, n - 1];
        (labels[bad[0]], labels[bad[1]], labels[bad[2]]) = (c as u32, u32::MAX, c as u32 + 1);
        let lt = Tensor::from_slice(&gpu, &[n, c], &logits).unwrap();
        let yt = Tensor::zeros_u32(&gpu, &[n]).unwrap();
        yt.write_u32(&labels).unwrap();
        let loss = Tensor::zeros(&gpu, &[n]).unwrap();
        let dlogits = Tensor::zeros(&gpu, &[n, c]).unwrap();
        let correct = Tensor::zeros(&gpu, &[n]).unwrap();
        let tot = Tensor::zeros(&gpu, &[2]).unwrap();
        let out =
            SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dlogits), correct_rows: &correct, totals: Some(&tot) };
        let plan = softmax_xent(&gpu, &lt, &yt, 0.5, &out).expect("the host sees only the stale maximum 0");
        gpu.run(&[&plan]).unwrap();
        let (want_loss, want_dlogits, want_correct) = cpu::softmax_xent(&logits, &labels, n, c, 0.5);
        let got_loss = loss.to_vec().unwrap();
        for r in 0..n {
            let invalid = bad.contains(&r);
            assert_eq!(want_loss[r].is_nan(), invalid, "cpu row {r}: {}", want_loss[r]);
            assert_eq!(got_loss[r].is_nan(), invalid, "{n}x{c} row {r}: loss {}", got_loss[r]);
            if !invalid {
                assert_close(&format!("{n}x{c} loss row {r}"), &got_loss[r..r + 1], &want_loss[r..r + 1], 1e-5, 1e-4);
            }
        }
        assert_close(&format!("{n}x{c} dlogits"), &dlogits.to_vec().unwrap(), &want_dlogits, 1e-6, 1e-4);
        assert_eq!(correct.to_vec().unwrap(), want_correct, "{n}x{c} correct_rows");
        assert!(bad.iter().all(|&r| want_correct[r] == 0.0));
        let got_totals = tot.to_vec().unwrap();
        assert!(got_totals[0].is_nan(), "{n}x{c}: the loss total is {} with NaN rows", got_totals[0]);
        assert_eq!(got_totals[1], want_correct.iter().sum::<f32>(), "{n}x{c} correct total");
    }
}

#[test]
fn softmax_xent_evaluation_only_and_softmax() {
    let gpu = gpu();
    let mut rng = Rng::new(13);
    for &(n, c) in &[(1, 1), (7, 3), (63, 64), (257, 10), (3, 1000)] {
        let logits = rng.vec_uniform(n * c, -8.0, 8.0);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(c) as u32).collect();
        let lt = Tensor::from_slice(&gpu, &[n, c], &logits).unwrap();
        let yt = Tensor::from_u32(&gpu, &[n], &labels).unwrap();
        let loss = Tensor::zeros(&gpu, &[n]).unwrap();
        let correct = Tensor::zeros(&gpu, &[n]).unwrap();
        let probs = Tensor::zeros(&gpu, &[n, c]).unwrap();
        let out = SoftmaxXentOut { loss_rows: &loss, dlogits: None, correct_rows: &correct, totals: None };
        let plan = softmax_xent(&gpu, &lt, &yt, 1.0, &out).unwrap();
        assert_eq!(plan.len(), 1, "no totals: one dispatch");
        gpu.run(&[&plan, &softmax(&gpu, &lt, &probs).unwrap()]).unwrap();
        let (want_loss, _, want_correct) = cpu::softmax_xent(&logits, &labels, n, c, 1.0);
        assert_close(&format!("eval {n}x{c} loss"), &loss.to_vec().unwrap(), &want_loss, 1e-5, 1e-4);
        assert_eq!(correct.to_vec().unwrap(), want_correct, "eval {n}x{c} correct");
        assert_close(&format!("softmax {n}x{c}"), &probs.to_vec().unwrap(), &cpu::softmax(&logits, n, c), 1e-6, 1e-4);
    }
}

#[test]
fn softmax_xent_gradient_matches_finite_differences() {
    let mut rng = Rng::new(14);
    let (n, c) = (4, 5);
    let logits = rng.vec_uniform(n * c, -2.0, 2.0);
    let labels: Vec<u32> = (0..n).map(|_| rng.below(c) as u32).collect();
    let (_, dlogits, _) = cpu::softmax_xent(&logits, &labels, n, c, 1.0 / n as f32);
    let mean_loss =
        |z: &[f32]| cpu::softmax_xent(z, &labels, n, c, 1.0).0.iter().map(|&l| l as f64).sum::<f64>() / n as f64;
    let numeric = numeric_gradient(&logits, 1e-2, mean_loss);
    assert_close("d(mean softmax_xent)/dlogits", &dlogits, &numeric, 1e-3, 1e-2);
    let probs = cpu::softmax(&logits, n, c);
    for r in 0..n {
        let s: f32 = probs[r * c..(r + 1) * c].iter().sum();
        assert!((s - 1.0).abs() < 1e-6, "softmax row {r} sums to {s}");
    }
}

#[test]
fn totals_multi_pass_and_deterministic() {
    let gpu = gpu();
    let mut rng = Rng::new(15);
    for &(rows, block) in &[(1, 256), (255, 256), (70_001, 256), (70_001, 512), (5000, 2048)] {
        let a = rng.vec_uniform(rows, -1.0, 1.0);
        let b = rng.vec_uniform(rows, 0.0, 1.0);
        let at = Tensor::from_slice(&gpu, &[rows], &a).unwrap();
        let bt = Tensor::from_slice(&gpu, &[rows], &b).unwrap();
        let out = Tensor::from_slice(&gpu, &[2], &[9.0, 9.0]).unwrap();
        let plan = totals_blocked(&gpu, &at, &bt, &out, false, block).unwrap();
        gpu.run(&[&plan]).unwrap();
        let first = out.to_vec().unwrap();
        let want = cpu::totals(&a, &b);
        assert_close(&format!("totals {rows} rows, block {block}"), &first, &want, 1e-3, 1e-5);
        gpu.run(&[&plan]).unwrap();
        let again = out.to_vec().unwrap();
        assert_eq!(first.map_bits(), again.map_bits(), "totals {rows}/{block}: the same bits on every run");
    }
    let x = Tensor::zeros(&gpu, &[10]).unwrap();
    let out = Tensor::zeros(&gpu, &[2]).unwrap();
    let err = totals_blocked(&gpu, &x, &x, &out, true, 100).err().expect("a block not a multiple of 256 must fail");
    assert!(err.to_string().contains("totals"), "{err}");
    let err = totals(&gpu, &x, &Tensor::zeros(&gpu, &[9]).unwrap(), &out, true).err().expect("lengths must match");
    assert!(err.to_string().contains("totals"), "{err}");
}

trait Bits {
    fn map_bits(&self) -> Vec<u32>;
}
impl Bits for Vec<f32> {
    fn map_bits(&self) -> Vec<u32> {
        self.iter().map(|v| v.to_bits()).collect()
    }
}

#[test]
fn softmax_xent_bad_input_is_an_error_naming_the_kernel() {
    let gpu = gpu();
    let logits = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let labels = Tensor::from_u32(&gpu, &[4], &[0, 1, 2, 1]).unwrap();
    let loss = Tensor::zeros(&gpu, &[4]).unwrap();
    let correct = Tensor::zeros(&gpu, &[4]).unwrap();
    let dl = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let tot = Tensor::zeros(&gpu, &[2]).unwrap();
    let out = SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dl), correct_rows: &correct, totals: Some(&tot) };
    softmax_xent(&gpu, &logits, &labels, 0.25, &out).expect("valid call");

    let bad_labels = Tensor::from_u32(&gpu, &[4], &[0, 3, 1, 1]).unwrap();
    let err = expect_err(
        "label = C",
        softmax_xent(&gpu, &logits, &bad_labels, 0.25, &out),
        &["softmax_xent", "label 3", "3 classes"],
    );
    assert!(matches!(err, WgnnError::LabelOutOfRange { label: 3, classes: 3, .. }), "{err}");

    let f32_labels = Tensor::zeros(&gpu, &[4]).unwrap();
    let err = expect_err("f32 labels", softmax_xent(&gpu, &logits, &f32_labels, 0.25, &out), &["softmax_xent", "u32"]);
    assert!(matches!(err, WgnnError::DType { .. }), "{err}");
    let u32_logits = Tensor::zeros_u32(&gpu, &[4, 3]).unwrap();
    expect_err("u32 logits", softmax_xent(&gpu, &u32_logits, &labels, 0.25, &out), &["softmax_xent", "f32"]);

    let short_labels = Tensor::from_u32(&gpu, &[3], &[0, 1, 2]).unwrap();
    expect_err(
        "labels [3]",
        softmax_xent(&gpu, &logits, &short_labels, 0.25, &out),
        &["softmax_xent", "[4, 3]", "[3]"],
    );
    let flat = Tensor::zeros(&gpu, &[12]).unwrap();
    expect_err("rank-1 logits", softmax_xent(&gpu, &flat, &labels, 0.25, &out), &["softmax_xent", "[12]"]);
    let short = Tensor::zeros(&gpu, &[3]).unwrap();
    let wrong_loss = SoftmaxXentOut { loss_rows: &short, ..out };
    expect_err(
        "loss_rows [3]",
        softmax_xent(&gpu, &logits, &labels, 0.25, &wrong_loss),
        &["softmax_xent", "loss_rows", "[3]"],
    );
    let wrong_dl = Tensor::zeros(&gpu, &[3, 4]).unwrap();
    let wrong = SoftmaxXentOut { dlogits: Some(&wrong_dl), ..out };
    expect_err(
        "dlogits [3, 4]",
        softmax_xent(&gpu, &logits, &labels, 0.25, &wrong),
        &["softmax_xent", "dlogits", "[3, 4]"],
    );
    let wrong = SoftmaxXentOut { totals: Some(&short), ..out };
    expect_err("totals [3]", softmax_xent(&gpu, &logits, &labels, 0.25, &wrong), &["softmax_xent", "totals"]);
    let same = SoftmaxXentOut { correct_rows: &loss, ..out };
    expect_err("shared outputs", softmax_xent(&gpu, &logits, &labels, 0.25, &same), &["softmax_xent", "share memory"]);
    expect_err("NaN grad_scale", softmax_xent(&gpu, &logits, &labels, f32::NAN, &out), &["softmax_xent", "grad_scale"]);

    let empty = Tensor::zeros(&gpu, &[0, 3]).unwrap();
    let none = Tensor::from_u32(&gpu, &[0], &[]).unwrap();
    let err = expect_err("empty", softmax_xent(&gpu, &empty, &none, 1.0, &out), &["softmax_xent", "[0, 3]"]);
    assert!(matches!(err, WgnnError::EmptyTensor { .. }), "{err}");

    let wide = Tensor::zeros(&gpu, &[1, MAX_CLASSES + 1]).unwrap();
    let zero = Tensor::from_u32(&gpu, &[1], &[0]).unwrap();
    let one = Tensor::zeros(&gpu, &[1]).unwrap();
    let one_b = Tensor::zeros(&gpu, &[1]).unwrap();
    let wide_out = SoftmaxXentOut { loss_rows: &one, dlogits: None, correct_rows: &one_b, totals: None };
    expect_err("too many classes", softmax_xent(&gpu, &wide, &zero, 1.0, &wide_out), &["softmax_xent", "8193 classes"]);

    expect_err("softmax shape", softmax(&gpu, &logits, &wrong_dl), &["softmax", "probs", "[3, 4]"]);
    expect_err("softmax in place", softmax(&gpu, &logits, &logits), &["softmax", "share memory"]);
}

/// Runs softmax_xent_dense on the GPU with every output.
fn run_dense(gpu: &Gpu, logits: &[f32], targets: &[f32], n: usize, c: usize, grad_scale: f32, start: [f32; 2]) -> Got {
    let lt = Tensor::from_slice(gpu, &[n, c], logits).unwrap();
    let tt = Tensor::from_slice(gpu, &[n, c], targets).unwrap();
    let loss = Tensor::zeros(gpu, &[n]).unwrap();
    let dlogits = Tensor::from_slice(gpu, &[n, c], &vec![f32::NAN; n * c]).unwrap();
    let correct = Tensor::zeros(gpu, &[n]).unwrap();
    let tot = Tensor::from_slice(gpu, &[2], &start).unwrap();
    let out = SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dlogits), correct_rows: &correct, totals: Some(&tot) };
    let plan = softmax_xent_dense(gpu, &lt, &tt, grad_scale, &out).unwrap();
    gpu.run(&[&plan]).unwrap();
    Got {
        loss: loss.to_vec().unwrap(),
        dlogits: dlogits.to_vec().unwrap(),
        correct: correct.to_vec().unwrap(),
        totals: tot.to_vec().unwrap(),
        dispatches: plan.len(),
    }
}

fn check_dense(gpu: &Gpu, what: &str, logits: &[f32], targets: &[f32], n: usize, c: usize) -> Got {
    let grad_scale = 1.0 / n as f32;
    let start = [0.5, -2.0];
    let got = run_dense(gpu, logits, targets, n, c, grad_scale, start);
    let (loss, dlogits, correct) = cpu::softmax_xent_dense(logits, targets, n, c, grad_scale);
    assert_close(&format!("{what} loss_rows"), &got.loss, &loss, 1e-5, 1e-4);
    assert_close(&format!("{what} dlogits"), &got.dlogits, &dlogits, 1e-6, 1e-4);
    assert_eq!(got.correct, correct, "{what} correct_rows");
    let [sl, sc] = cpu::totals(&loss, &correct);
    assert_close(&format!("{what} totals"), &got.totals, &[start[0] + sl, start[1] + sc], 1e-3, 1e-4);
    assert_eq!(got.dispatches, expected_dispatches(n, c), "{what} dispatches");
    got
}

fn one_hot(labels: &[u32], c: usize) -> Vec<f32> {
    labels.iter().flat_map(|&l| (0..c).map(move |j| (j == l as usize) as u32 as f32)).collect()
}

fn soft_targets(rng: &mut Rng, n: usize, c: usize) -> Vec<f32> {
    let mut t = rng.vec_uniform(n * c, 0.0, 1.0);
    for row in t.chunks_mut(c) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    t
}

#[test]
fn softmax_xent_dense_matches_cpu_and_equals_sparse_on_one_hot() {
    let gpu = gpu();
    let mut rng = Rng::new(60);
    let mut shapes: Vec<(usize, usize)> = SIZES.iter().map(|&n| (n, 10)).collect();
    shapes.extend(SIZES.iter().map(|&c| (33, c)));
    shapes.extend([(1, 1), (64, 65), (257, 127), (2, 2000), (2048, 10), (2049, 10), (129, 2100)]);
    for (n, c) in shapes {
        let logits = rng.vec_uniform(n * c, -5.0, 5.0);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(c) as u32).collect();
        let what = format!("softmax_xent_dense {n}x{c}");
        let got = check_dense(&gpu, &format!("{what} one-hot"), &logits, &one_hot(&labels, c), n, c);
        let sparse = run_softmax_xent(&gpu, &logits, &labels, n, c, 1.0 / n as f32, [0.5, -2.0]);
        assert_close(&format!("{what} vs sparse loss"), &got.loss, &sparse.loss, 1e-5, 1e-5);
        assert_close(&format!("{what} vs sparse dlogits"), &got.dlogits, &sparse.dlogits, 1e-7, 1e-5);
        assert_eq!(got.correct, sparse.correct, "{what} vs sparse correct");
        check_dense(&gpu, &format!("{what} soft"), &logits, &soft_targets(&mut rng, n, c), n, c);
    }
}

#[test]
fn softmax_xent_dense_gradient_and_extremes() {
    let mut rng = Rng::new(61);
    let (n, c) = (4, 5);
    let logits = rng.vec_uniform(n * c, -2.0, 2.0);
    let targets = soft_targets(&mut rng, n, c);
    let (_, dlogits, _) = cpu::softmax_xent_dense(&logits, &targets, n, c, 1.0 / n as f32);
    let mean_loss =
        |z: &[f32]| cpu::softmax_xent_dense(z, &targets, n, c, 1.0).0.iter().map(|&l| l as f64).sum::<f64>() / n as f64;
    let numeric = numeric_gradient(&logits, 1e-2, mean_loss);
    assert_close("d(mean softmax_xent_dense)/dlogits", &dlogits, &numeric, 1e-3, 1e-2);
    // The definition −Σ t·log softmax, in f64.
    let (loss, _, _) = cpu::softmax_xent_dense(&logits, &targets, n, c, 1.0);
    for r in 0..n {
        let row: Vec<f64> = logits[r * c..(r + 1) * c].iter().map(|&z| z as f64).collect();
        let lse = row.iter().map(|z| z.exp()).sum::<f64>().ln();
        let want: f64 = (0..c).map(|j| -(targets[r * c + j] as f64) * (row[j] - lse)).sum();
        assert!((loss[r] as f64 - want).abs() < 1e-5, "row {r}: {} vs {want}", loss[r]);
    }

    let gpu = gpu();
    for &scale in &[1000.0f32, 1e4] {
        let (n, c) = (65, 7);
        let logits: Vec<f32> =
            (0..n * c).map(|_| if rng.next_f32() < 0.5 { -scale } else { scale } * rng.uniform(0.5, 1.0)).collect();
        let targets = soft_targets(&mut rng, n, c);
        let got = check_dense(&gpu, &format!("softmax_xent_dense ±{scale}"), &logits, &targets, n, c);
        for (name, v) in [("loss", &got.loss), ("dlogits", &got.dlogits), ("totals", &got.totals)] {
            assert!(v.iter().all(|x| x.is_finite()), "softmax_xent_dense ±{scale}: {name} has a non-finite value");
        }
    }
}

#[test]
fn softmax_xent_dense_bad_input_is_an_error_naming_the_kernel() {
    let gpu = gpu();
    let logits = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let targets = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let loss = Tensor::zeros(&gpu, &[4]).unwrap();
    let correct = Tensor::zeros(&gpu, &[4]).unwrap();
    let dl = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let tot = Tensor::zeros(&gpu, &[2]).unwrap();
    let out = SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dl), correct_rows: &correct, totals: Some(&tot) };
    softmax_xent_dense(&gpu, &logits, &targets, 0.25, &out).expect("valid call");
    let k = "softmax_xent_dense";
    let t43 = Tensor::zeros(&gpu, &[3, 4]).unwrap();
    expect_err("targets [3, 4]", softmax_xent_dense(&gpu, &logits, &t43, 0.25, &out), &[k, "targets", "[3, 4]"]);
    let tu = Tensor::zeros_u32(&gpu, &[4, 3]).unwrap();
    let err = expect_err("u32 targets", softmax_xent_dense(&gpu, &logits, &tu, 0.25, &out), &[k, "f32", "u32"]);
    assert!(matches!(err, WgnnError::DType { .. }), "{err}");
    let labels = Tensor::from_u32(&gpu, &[4], &[0, 1, 2, 0]).unwrap();
    expect_err("sparse labels", softmax_xent_dense(&gpu, &logits, &labels, 0.25, &out), &[k, "f32", "u32"]);
    let wrong = SoftmaxXentOut { dlogits: Some(&t43), ..out };
    expect_err("dlogits [3, 4]", softmax_xent_dense(&gpu, &logits, &targets, 0.25, &wrong), &[k, "dlogits"]);
    let short = Tensor::zeros(&gpu, &[3]).unwrap();
    let wrong = SoftmaxXentOut { loss_rows: &short, ..out };
    expect_err("loss_rows [3]", softmax_xent_dense(&gpu, &logits, &targets, 0.25, &wrong), &[k, "loss_rows", "[3]"]);
    let wrong = SoftmaxXentOut { dlogits: Some(&targets), ..out };
    expect_err("dlogits is targets", softmax_xent_dense(&gpu, &logits, &targets, 0.25, &wrong), &[k, "share memory"]);
    expect_err("NaN grad_scale", softmax_xent_dense(&gpu, &logits, &targets, f32::NAN, &out), &[k, "grad_scale"]);
    let empty = Tensor::zeros(&gpu, &[0, 3]).unwrap();
    let err = expect_err("empty", softmax_xent_dense(&gpu, &empty, &empty, 1.0, &out), &[k, "[0, 3]"]);
    assert!(matches!(err, WgnnError::EmptyTensor { .. }), "{err}");
    let wide = Tensor::zeros(&gpu, &[1, MAX_CLASSES + 1]).unwrap();
    let wide_t = Tensor::zeros(&gpu, &[1, MAX_CLASSES + 1]).unwrap();
    let one = Tensor::zeros(&gpu, &[1]).unwrap();
    let one_b = Tensor::zeros(&gpu, &[1]).unwrap();
    let wide_out = SoftmaxXentOut { loss_rows: &one, dlogits: None, correct_rows: &one_b, totals: None };
    expect_err("too many classes", softmax_xent_dense(&gpu, &wide, &wide_t, 1.0, &wide_out), &[k, "8193 classes"]);
}
