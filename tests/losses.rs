//! softmax_xent.wgsl, sigmoid_bce.wgsl, mse.wgsl, hinge.wgsl and totals.wgsl against the CPU
//! reference; the references' gradients against finite differences; extreme inputs; bad input.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::sigmoid_bce::{sigmoid_bce, SigmoidBceOut};
use wgnn::internals::kernels::softmax_xent::{softmax, softmax_xent, SoftmaxXentOut, MAX_CLASSES};
use wgnn::internals::kernels::totals::{totals, totals_blocked};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Tensor, WgnnError};

/// Outputs of one GPU softmax_xent call, downloaded.
struct Got {
    loss: Vec<f32>,
    dlogits: Vec<f32>,
    correct: Vec<f32>,
    totals: Vec<f32>,
    /// 1 where the loss dispatch adds the totals itself, 2 where totals.wgsl does.
    dispatches: usize,
}

/// How many dispatches a loss with totals takes at n×c: the totals fused into the loss dispatch
/// up to 2,048 rows while one invocation loops at most 16,384 times (rows per invocation × 4c).
fn expected_dispatches(n: usize, c: usize) -> usize {
    if n <= 2048 && n.div_ceil(64) * 4 * c <= 16_384 {
        1
    } else {
        2
    }
}

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

/// Asserts `result` is an error whose message contains every one of `needles`.
fn expect_err<T>(what: &str, result: wgnn::Result<T>, needles: &[&str]) -> WgnnError {
    let err = match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e,
    };
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "{what}: message {msg:?} does not contain {n:?}");
    }
    err
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

/// Runs sigmoid_bce on the GPU with every output (logits shaped `shape`); totals start at `start`.
fn run_sigmoid_bce(
    gpu: &Gpu,
    shape: &[usize],
    logits: &[f32],
    targets: &[f32],
    grad_scale: f32,
    start: [f32; 2],
) -> Got {
    let n = logits.len();
    let zt = Tensor::from_slice(gpu, shape, logits).unwrap();
    let tt = Tensor::from_slice(gpu, &[n], targets).unwrap();
    let loss = Tensor::zeros(gpu, &[n]).unwrap();
    let dlogits = Tensor::from_slice(gpu, shape, &vec![f32::NAN; n]).unwrap();
    let correct = Tensor::zeros(gpu, &[n]).unwrap();
    let tot = Tensor::from_slice(gpu, &[2], &start).unwrap();
    let out = SigmoidBceOut { loss_rows: &loss, dlogits: Some(&dlogits), correct_rows: &correct, totals: Some(&tot) };
    let plan = sigmoid_bce(gpu, &zt, &tt, grad_scale, &out).unwrap();
    gpu.run(&[&plan]).unwrap();
    Got {
        loss: loss.to_vec().unwrap(),
        dlogits: dlogits.to_vec().unwrap(),
        correct: correct.to_vec().unwrap(),
        totals: tot.to_vec().unwrap(),
        dispatches: plan.len(),
    }
}

fn check_sigmoid_bce(gpu: &Gpu, what: &str, shape: &[usize], logits: &[f32], targets: &[f32]) {
    let grad_scale = 1.0 / logits.len() as f32;
    let start = [1.5, 3.0];
    let got = run_sigmoid_bce(gpu, shape, logits, targets, grad_scale, start);
    let (loss, dlogits, correct) = cpu::sigmoid_bce(logits, targets, grad_scale);
    assert_close(&format!("{what} loss_rows"), &got.loss, &loss, 1e-5, 1e-4);
    assert_close(&format!("{what} dlogits"), &got.dlogits, &dlogits, 1e-7, 1e-4);
    assert_eq!(got.correct, correct, "{what} correct_rows");
    let [sl, sc] = cpu::totals(&loss, &correct);
    assert_close(&format!("{what} totals"), &got.totals, &[start[0] + sl, start[1] + sc], 1e-3, 1e-5);
}

/// Targets: hard 0/1 labels with some soft values in between.
fn bce_targets(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(4) {
            0 => 0.0,
            1 => 1.0,
            2 => 0.5,
            _ => rng.next_f32(),
        })
        .collect()
}

#[test]
fn sigmoid_bce_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(30);
    for &n in SIZES.iter().chain(&[60_000]) {
        let logits = rng.vec_uniform(n, -6.0, 6.0);
        let targets = bce_targets(&mut rng, n);
        check_sigmoid_bce(&gpu, &format!("sigmoid_bce [{n}, 1]"), &[n, 1], &logits, &targets);
        check_sigmoid_bce(&gpu, &format!("sigmoid_bce [{n}]"), &[n], &logits, &targets);
    }
}

#[test]
fn sigmoid_bce_extreme_logits_are_finite() {
    let gpu = gpu();
    for &scale in &[1000.0f32, 1e4] {
        let logits: Vec<f32> = [-1.0f32, 1.0].iter().flat_map(|s| [0.0, 0.25, 0.5, 1.0].map(|_| s * scale)).collect();
        let targets: Vec<f32> = (0..2).flat_map(|_| [0.0, 0.25, 0.5, 1.0]).collect();
        let got = run_sigmoid_bce(&gpu, &[8, 1], &logits, &targets, 0.125, [0.0, 0.0]);
        for (name, v) in [("loss", &got.loss), ("dlogits", &got.dlogits), ("totals", &got.totals)] {
            assert!(v.iter().all(|x| x.is_finite()), "sigmoid_bce ±{scale}: {name} has a non-finite value: {v:?}");
        }
        // A confident right answer costs nothing; a confident wrong one costs |z|.
        assert_eq!(got.loss[0], 0.0, "z = -{scale}, t = 0");
        assert_eq!(got.loss[4], scale, "z = {scale}, t = 0");
        check_sigmoid_bce(&gpu, &format!("sigmoid_bce ±{scale}"), &[8, 1], &logits, &targets);
    }
}

#[test]
fn sigmoid_bce_evaluation_only() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let n = 127;
    let logits = rng.vec_uniform(n, -4.0, 4.0);
    let targets = bce_targets(&mut rng, n);
    let zt = Tensor::from_slice(&gpu, &[n, 1], &logits).unwrap();
    let tt = Tensor::from_slice(&gpu, &[n], &targets).unwrap();
    let loss = Tensor::zeros(&gpu, &[n]).unwrap();
    let correct = Tensor::zeros(&gpu, &[n]).unwrap();
    let out = SigmoidBceOut { loss_rows: &loss, dlogits: None, correct_rows: &correct, totals: None };
    let plan = sigmoid_bce(&gpu, &zt, &tt, 1.0, &out).unwrap();
    assert_eq!(plan.len(), 1, "no totals: one dispatch");
    gpu.run(&[&plan]).unwrap();
    let (want_loss, _, want_correct) = cpu::sigmoid_bce(&logits, &targets, 1.0);
    assert_close("sigmoid_bce eval loss", &loss.to_vec().unwrap(), &want_loss, 1e-5, 1e-4);
    assert_eq!(correct.to_vec().unwrap(), want_correct, "sigmoid_bce eval correct");
}

#[test]
fn sigmoid_bce_gradient_matches_finite_differences() {
    let mut rng = Rng::new(32);
    let n = 9;
    let logits = rng.vec_uniform(n, -4.0, 4.0);
    let targets = bce_targets(&mut rng, n);
    let (_, dlogits, _) = cpu::sigmoid_bce(&logits, &targets, 1.0 / n as f32);
    let mean_loss = |z: &[f32]| cpu::sigmoid_bce(z, &targets, 1.0).0.iter().map(|&l| l as f64).sum::<f64>() / n as f64;
    let numeric = numeric_gradient(&logits, 1e-2, mean_loss);
    assert_close("d(mean sigmoid_bce)/dlogits", &dlogits, &numeric, 1e-3, 1e-2);
    // The stable form equals the textbook −t·log σ(z) − (1−t)·log(1−σ(z)) where that is finite.
    let (loss, _, _) = cpu::sigmoid_bce(&logits, &targets, 1.0);
    let textbook: Vec<f32> = logits
        .iter()
        .zip(&targets)
        .map(|(&z, &t)| {
            let s = 1.0 / (1.0 + (-(z as f64)).exp());
            (-(t as f64) * s.ln() - (1.0 - t as f64) * (1.0 - s).ln()) as f32
        })
        .collect();
    assert_close("sigmoid_bce vs textbook", &loss, &textbook, 1e-5, 1e-4);
}

#[test]
fn sigmoid_bce_u32_labels_match_cpu() {
    let gpu = gpu();
    let n = 37;
    let mut rng = Rng::new(11);
    let logits = rng.vec_uniform(n, -6.0, 6.0);
    let labels: Vec<u32> = (0..n).map(|i| (i % 3 == 0) as u32).collect();
    let zt = Tensor::from_slice(&gpu, &[n, 1], &logits).unwrap();
    let yt = Tensor::from_u32(&gpu, &[n], &labels).unwrap();
    let (loss, dl, correct) =
        (Tensor::zeros(&gpu, &[n]).unwrap(), Tensor::zeros(&gpu, &[n, 1]).unwrap(), Tensor::zeros(&gpu, &[n]).unwrap());
    let out = SigmoidBceOut { loss_rows: &loss, dlogits: Some(&dl), correct_rows: &correct, totals: None };
    gpu.run(&[&sigmoid_bce(&gpu, &zt, &yt, 1.0 / n as f32, &out).unwrap()]).unwrap();
    let (want_loss, want_dl, want_correct) = cpu::sigmoid_bce_labels(&logits, &labels, 1.0 / n as f32);
    assert_close("sigmoid_bce u32 labels: loss", &loss.to_vec().unwrap(), &want_loss, 1e-5, 1e-4);
    assert_close("sigmoid_bce u32 labels: dlogits", &dl.to_vec().unwrap(), &want_dl, 1e-6, 1e-4);
    assert_eq!(correct.to_vec().unwrap(), want_correct, "sigmoid_bce u32 labels: correct");
}

#[test]
fn sigmoid_bce_bad_input_is_an_error_naming_the_kernel() {
    let gpu = gpu();
    let logits = Tensor::zeros(&gpu, &[4, 1]).unwrap();
    let targets = Tensor::zeros(&gpu, &[4]).unwrap();
    let loss = Tensor::zeros(&gpu, &[4]).unwrap();
    let correct = Tensor::zeros(&gpu, &[4]).unwrap();
    let dl = Tensor::zeros(&gpu, &[4, 1]).unwrap();
    let tot = Tensor::zeros(&gpu, &[2]).unwrap();
    let out = SigmoidBceOut { loss_rows: &loss, dlogits: Some(&dl), correct_rows: &correct, totals: Some(&tot) };
    sigmoid_bce(&gpu, &logits, &targets, 0.25, &out).expect("valid call");

    let two = Tensor::zeros(&gpu, &[4, 2]).unwrap();
    expect_err("[4, 2] logits", sigmoid_bce(&gpu, &two, &targets, 0.25, &out), &["sigmoid_bce", "[4, 2]"]);
    let short = Tensor::zeros(&gpu, &[3]).unwrap();
    expect_err("targets [3]", sigmoid_bce(&gpu, &logits, &short, 0.25, &out), &["sigmoid_bce", "targets", "[3]"]);
    // u32 targets are labels 0/1 (what a model's gather yields); a known label above 1 is refused.
    let labels = Tensor::from_u32(&gpu, &[4], &[0, 1, 1, 0]).unwrap();
    sigmoid_bce(&gpu, &logits, &labels, 0.25, &out).expect("u32 labels");
    let three = Tensor::from_u32(&gpu, &[4], &[0, 1, 2, 0]).unwrap();
    let err = expect_err("label 2", sigmoid_bce(&gpu, &logits, &three, 0.25, &out), &["sigmoid_bce", "0 or 1", "2"]);
    assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err}");
    let wrong = SigmoidBceOut { dlogits: Some(&short), ..out };
    expect_err("dlogits [3]", sigmoid_bce(&gpu, &logits, &targets, 0.25, &wrong), &["sigmoid_bce", "dlogits", "[3]"]);
    let wrong = SigmoidBceOut { correct_rows: &short, ..out };
    expect_err(
        "correct_rows [3]",
        sigmoid_bce(&gpu, &logits, &targets, 0.25, &wrong),
        &["sigmoid_bce", "correct_rows"],
    );
    let wrong = SigmoidBceOut { totals: Some(&short), ..out };
    expect_err("totals [3]", sigmoid_bce(&gpu, &logits, &targets, 0.25, &wrong), &["sigmoid_bce", "totals"]);
    let wrong = SigmoidBceOut { dlogits: Some(&targets), ..out };
    expect_err(
        "dlogits is targets",
        sigmoid_bce(&gpu, &logits, &targets, 0.25, &wrong),
        &["sigmoid_bce", "share memory"],
    );
    expect_err(
        "inf grad_scale",
        sigmoid_bce(&gpu, &logits, &targets, f32::INFINITY, &out),
        &["sigmoid_bce", "grad_scale"],
    );
    let empty = Tensor::zeros(&gpu, &[0, 1]).unwrap();
    let err = expect_err("empty", sigmoid_bce(&gpu, &empty, &empty, 1.0, &out), &["sigmoid_bce", "[0, 1]"]);
    assert!(matches!(err, WgnnError::EmptyTensor { .. }), "{err}");
}

// ---- mse, hinge, softmax_xent_dense ----

use wgnn::internals::kernels::hinge::{hinge, HingeOut};
use wgnn::internals::kernels::mse::{mse, MseOut, MAX_OUTPUTS};
use wgnn::internals::kernels::softmax_xent::softmax_xent_dense;

/// Runs mse on the GPU with every output (predictions and targets shaped `shape`).
fn run_mse(gpu: &Gpu, shape: &[usize], pred: &[f32], targets: &[f32], grad_scale: f32, start: [f32; 2]) -> Got {
    let n = shape[0];
    let pt = Tensor::from_slice(gpu, shape, pred).unwrap();
    let tt = Tensor::from_slice(gpu, shape, targets).unwrap();
    let loss = Tensor::zeros(gpu, &[n]).unwrap();
    let dpred = Tensor::from_slice(gpu, shape, &vec![f32::NAN; pred.len()]).unwrap();
    let abs = Tensor::zeros(gpu, &[n]).unwrap();
    let tot = Tensor::from_slice(gpu, &[2], &start).unwrap();
    let out = MseOut { loss_rows: &loss, dpred: Some(&dpred), abs_rows: &abs, totals: Some(&tot) };
    let plan = mse(gpu, &pt, &tt, grad_scale, &out).unwrap();
    gpu.run(&[&plan]).unwrap();
    Got {
        loss: loss.to_vec().unwrap(),
        dlogits: dpred.to_vec().unwrap(),
        correct: abs.to_vec().unwrap(),
        totals: tot.to_vec().unwrap(),
        dispatches: plan.len(),
    }
}

fn check_mse(gpu: &Gpu, what: &str, shape: &[usize], pred: &[f32], targets: &[f32]) -> Got {
    let n = shape[0];
    let d = shape.get(1).copied().unwrap_or(1);
    let grad_scale = 1.0 / n as f32;
    let start = [0.25, -1.0];
    let got = run_mse(gpu, shape, pred, targets, grad_scale, start);
    let (loss, dpred, abs) = cpu::mse(pred, targets, n, d, grad_scale);
    assert_close(&format!("{what} loss_rows"), &got.loss, &loss, 1e-5, 1e-4);
    assert_close(&format!("{what} dpred"), &got.dlogits, &dpred, 1e-7, 1e-4);
    assert_close(&format!("{what} abs_rows"), &got.correct, &abs, 1e-5, 1e-4);
    let [sl, sa] = cpu::totals(&loss, &abs);
    assert_close(&format!("{what} totals"), &got.totals, &[start[0] + sl, start[1] + sa], 1e-3, 1e-4);
    got
}

#[test]
fn mse_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(40);
    let mut shapes: Vec<Vec<usize>> = SIZES.iter().map(|&n| vec![n, 3]).collect();
    shapes.extend(SIZES.iter().map(|&d| vec![9, d]));
    shapes.extend(SIZES.iter().map(|&n| vec![n]));
    shapes.extend([vec![1, 1], vec![64, 65], vec![257, 127], vec![2, 3000], vec![20_000, 1]]);
    for shape in shapes {
        let len: usize = shape.iter().product();
        let pred = rng.vec_uniform(len, -3.0, 3.0);
        let targets = rng.vec_uniform(len, -3.0, 3.0);
        check_mse(&gpu, &format!("mse {shape:?}"), &shape, &pred, &targets);
    }
}

#[test]
fn mse_gradient_matches_finite_differences_and_extremes_are_finite() {
    let mut rng = Rng::new(41);
    let (n, d) = (4, 3);
    let pred = rng.vec_uniform(n * d, -2.0, 2.0);
    let targets = rng.vec_uniform(n * d, -2.0, 2.0);
    let (_, dpred, _) = cpu::mse(&pred, &targets, n, d, 1.0 / n as f32);
    let mean_loss = |p: &[f32]| cpu::mse(p, &targets, n, d, 1.0).0.iter().map(|&l| l as f64).sum::<f64>() / n as f64;
    assert_close("d(mean mse)/dpred", &dpred, &numeric_gradient(&pred, 1e-2, mean_loss), 1e-3, 1e-2);
    // Hand-checked row: p = [1, 2], t = [0, 4]: loss (1 + 4)/2, abs (1 + 2)/2, d = [1, -2]·2/2.
    let (loss, d1, abs) = cpu::mse(&[1.0, 2.0], &[0.0, 4.0], 1, 2, 1.0);
    assert_eq!((loss, d1, abs), (vec![2.5], vec![1.0, -2.0], vec![1.5]));

    let gpu = gpu();
    for &scale in &[1e4f32, 1e15] {
        let (n, d) = (65, 7);
        let pred: Vec<f32> = (0..n * d).map(|i| if i % 3 == 0 { -scale } else { scale }).collect();
        let targets: Vec<f32> = (0..n * d).map(|i| if i % 2 == 0 { -scale } else { scale }).collect();
        let got = check_mse(&gpu, &format!("mse ±{scale}"), &[n, d], &pred, &targets);
        for (name, v) in [("loss", &got.loss), ("dpred", &got.dlogits), ("abs", &got.correct), ("totals", &got.totals)]
        {
            assert!(v.iter().all(|x| x.is_finite()), "mse ±{scale}: {name} has a non-finite value");
        }
    }
}

#[test]
fn mse_evaluation_only_and_bad_input() {
    let gpu = gpu();
    let p = Tensor::from_slice(&gpu, &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let t = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    let loss = Tensor::zeros(&gpu, &[3]).unwrap();
    let abs = Tensor::zeros(&gpu, &[3]).unwrap();
    let eval = MseOut { loss_rows: &loss, dpred: None, abs_rows: &abs, totals: None };
    let plan = mse(&gpu, &p, &t, 1.0, &eval).unwrap();
    assert_eq!(plan.len(), 1, "no totals: one dispatch");
    gpu.run(&[&plan]).unwrap();
    assert_eq!(loss.to_vec().unwrap(), [2.5, 12.5, 30.5]);
    assert_eq!(abs.to_vec().unwrap(), [1.5, 3.5, 5.5]);

    let dp = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    let tot = Tensor::zeros(&gpu, &[2]).unwrap();
    let out = MseOut { loss_rows: &loss, dpred: Some(&dp), abs_rows: &abs, totals: Some(&tot) };
    let k = "mse";
    let t32 = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    expect_err("targets [2, 3]", mse(&gpu, &p, &t32, 1.0, &out), &[k, "targets", "[3, 2]", "[2, 3]"]);
    let tu = Tensor::zeros_u32(&gpu, &[3, 2]).unwrap();
    let err = expect_err("u32 targets", mse(&gpu, &p, &tu, 1.0, &out), &[k, "f32", "u32"]);
    assert!(matches!(err, WgnnError::DType { .. }), "{err}");
    expect_err("u32 predictions", mse(&gpu, &tu, &t, 1.0, &out), &[k, "f32", "u32"]);
    let rank3 = Tensor::zeros(&gpu, &[3, 2, 1]).unwrap();
    expect_err("rank 3", mse(&gpu, &rank3, &rank3, 1.0, &out), &[k, "[3, 2, 1]"]);
    let wrong = MseOut { dpred: Some(&t32), ..out };
    expect_err("dpred [2, 3]", mse(&gpu, &p, &t, 1.0, &wrong), &[k, "dpred", "[2, 3]"]);
    let short = Tensor::zeros(&gpu, &[2]).unwrap();
    let wrong = MseOut { loss_rows: &short, ..out };
    expect_err("loss_rows [2]", mse(&gpu, &p, &t, 1.0, &wrong), &[k, "loss_rows", "[2]"]);
    let wrong = MseOut { abs_rows: &short, ..out };
    expect_err("abs_rows [2]", mse(&gpu, &p, &t, 1.0, &wrong), &[k, "abs_rows", "[2]"]);
    let wrong = MseOut { totals: Some(&loss), ..out };
    expect_err("totals [3]", mse(&gpu, &p, &t, 1.0, &wrong), &[k, "totals"]);
    let wrong = MseOut { dpred: Some(&t), ..out };
    expect_err("dpred is targets", mse(&gpu, &p, &t, 1.0, &wrong), &[k, "share memory"]);
    expect_err("NaN grad_scale", mse(&gpu, &p, &t, f32::NAN, &out), &[k, "grad_scale"]);
    let empty = Tensor::zeros(&gpu, &[0, 2]).unwrap();
    let err = expect_err("empty", mse(&gpu, &empty, &empty, 1.0, &out), &[k, "[0, 2]"]);
    assert!(matches!(err, WgnnError::EmptyTensor { .. }), "{err}");
    let wide = Tensor::zeros(&gpu, &[1, MAX_OUTPUTS + 1]).unwrap();
    let wide_t = Tensor::zeros(&gpu, &[1, MAX_OUTPUTS + 1]).unwrap();
    let one = Tensor::zeros(&gpu, &[1]).unwrap();
    let one_b = Tensor::zeros(&gpu, &[1]).unwrap();
    let wide_out = MseOut { loss_rows: &one, dpred: None, abs_rows: &one_b, totals: None };
    expect_err("too wide", mse(&gpu, &wide, &wide_t, 1.0, &wide_out), &[k, "16385 outputs"]);
}

/// Runs hinge on the GPU with every output (logits shaped `shape`).
fn run_hinge(gpu: &Gpu, shape: &[usize], logits: &[f32], targets: &[f32], grad_scale: f32, start: [f32; 2]) -> Got {
    let n = logits.len();
    let zt = Tensor::from_slice(gpu, shape, logits).unwrap();
    let tt = Tensor::from_slice(gpu, &[n], targets).unwrap();
    let loss = Tensor::zeros(gpu, &[n]).unwrap();
    let dlogits = Tensor::from_slice(gpu, shape, &vec![f32::NAN; n]).unwrap();
    let correct = Tensor::zeros(gpu, &[n]).unwrap();
    let tot = Tensor::from_slice(gpu, &[2], &start).unwrap();
    let out = HingeOut { loss_rows: &loss, dlogits: Some(&dlogits), correct_rows: &correct, totals: Some(&tot) };
    let plan = hinge(gpu, &zt, &tt, grad_scale, &out).unwrap();
    gpu.run(&[&plan]).unwrap();
    Got {
        loss: loss.to_vec().unwrap(),
        dlogits: dlogits.to_vec().unwrap(),
        correct: correct.to_vec().unwrap(),
        totals: tot.to_vec().unwrap(),
        dispatches: plan.len(),
    }
}

fn check_hinge(gpu: &Gpu, what: &str, shape: &[usize], logits: &[f32], targets: &[f32]) -> Got {
    let grad_scale = 1.0 / logits.len() as f32;
    let start = [2.0, 1.0];
    let got = run_hinge(gpu, shape, logits, targets, grad_scale, start);
    let (loss, dlogits, correct) = cpu::hinge(logits, targets, grad_scale);
    assert_close(&format!("{what} loss_rows"), &got.loss, &loss, 1e-6, 1e-6);
    assert_eq!(got.dlogits, dlogits, "{what} dlogits");
    assert_eq!(got.correct, correct, "{what} correct_rows");
    let [sl, sc] = cpu::totals(&loss, &correct);
    assert_close(&format!("{what} totals"), &got.totals, &[start[0] + sl, start[1] + sc], 1e-3, 1e-5);
    got
}

#[test]
fn hinge_matches_cpu_with_both_label_conventions() {
    let gpu = gpu();
    let mut rng = Rng::new(50);
    for &n in SIZES.iter().chain(&[60_000]) {
        let logits = rng.vec_uniform(n, -3.0, 3.0);
        let pm: Vec<f32> = (0..n).map(|_| if rng.below(2) == 0 { -1.0 } else { 1.0 }).collect();
        let zero_one: Vec<f32> = pm.iter().map(|&y| (y > 0.0) as u32 as f32).collect();
        let a = check_hinge(&gpu, &format!("hinge ±1 [{n}, 1]"), &[n, 1], &logits, &pm);
        let b = check_hinge(&gpu, &format!("hinge 0/1 [{n}]"), &[n], &logits, &zero_one);
        assert_eq!(a.loss, b.loss, "hinge [{n}]: {{0, 1}} labels must mean {{−1, +1}}");
    }
    // Hand-checked: y = +1, z = 0.25 → 0.75; y = −1, z = 0.25 → 1.25; margins ≥ 1 cost nothing,
    // and the kink y·z = 1 has gradient 0.
    let got = run_hinge(&gpu, &[4], &[0.25, 0.25, 3.0, 1.0], &[1.0, 0.0, 1.0, 1.0], 1.0, [0.0, 0.0]);
    assert_eq!(got.loss, [0.75, 1.25, 0.0, 0.0]);
    assert_eq!(got.dlogits, [-1.0, 1.0, 0.0, 0.0]);
    assert_eq!(got.correct, [1.0, 0.0, 1.0, 1.0]);
}

#[test]
fn hinge_gradient_matches_finite_differences_and_extremes_are_finite() {
    let mut rng = Rng::new(51);
    let n = 16;
    // Logits away from the kink y·z = 1, where the loss is not differentiable.
    let logits: Vec<f32> =
        (0..n).map(|_| rng.uniform(-3.0, 3.0)).map(|z| if (z.abs() - 1.0).abs() < 0.1 { z * 1.3 } else { z }).collect();
    let targets: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
    let (_, dlogits, _) = cpu::hinge(&logits, &targets, 1.0 / n as f32);
    let mean_loss = |z: &[f32]| cpu::hinge(z, &targets, 1.0).0.iter().map(|&l| l as f64).sum::<f64>() / n as f64;
    assert_close("d(mean hinge)/dlogits", &dlogits, &numeric_gradient(&logits, 1e-2, mean_loss), 1e-3, 1e-2);

    let gpu = gpu();
    for &scale in &[1e4f32, 1e30] {
        let logits = [-scale, scale, -scale, scale];
        let targets = [1.0, 1.0, -1.0, 0.0];
        let got = check_hinge(&gpu, &format!("hinge ±{scale}"), &[4, 1], &logits, &targets);
        for (name, v) in [("loss", &got.loss), ("dlogits", &got.dlogits), ("totals", &got.totals)] {
            assert!(v.iter().all(|x| x.is_finite()), "hinge ±{scale}: {name} has a non-finite value");
        }
    }
}

#[test]
fn hinge_evaluation_only_and_bad_input() {
    let gpu = gpu();
    let logits = Tensor::from_slice(&gpu, &[3, 1], &[0.5, -2.0, 2.0]).unwrap();
    let targets = Tensor::from_slice(&gpu, &[3], &[1.0, 1.0, -1.0]).unwrap();
    let loss = Tensor::zeros(&gpu, &[3]).unwrap();
    let correct = Tensor::zeros(&gpu, &[3]).unwrap();
    let eval = HingeOut { loss_rows: &loss, dlogits: None, correct_rows: &correct, totals: None };
    let plan = hinge(&gpu, &logits, &targets, 1.0, &eval).unwrap();
    assert_eq!(plan.len(), 1, "no totals: one dispatch");
    gpu.run(&[&plan]).unwrap();
    assert_eq!(loss.to_vec().unwrap(), [0.5, 3.0, 3.0]);
    assert_eq!(correct.to_vec().unwrap(), [1.0, 0.0, 0.0]);

    let dl = Tensor::zeros(&gpu, &[3, 1]).unwrap();
    let tot = Tensor::zeros(&gpu, &[2]).unwrap();
    let out = HingeOut { loss_rows: &loss, dlogits: Some(&dl), correct_rows: &correct, totals: Some(&tot) };
    let k = "hinge";
    let two = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    expect_err("[3, 2] logits", hinge(&gpu, &two, &targets, 1.0, &out), &[k, "[3, 2]"]);
    let short = Tensor::zeros(&gpu, &[2]).unwrap();
    expect_err("targets [2]", hinge(&gpu, &logits, &short, 1.0, &out), &[k, "targets", "[2]"]);
    let tu = Tensor::from_u32(&gpu, &[3], &[0, 1, 1]).unwrap();
    let err = expect_err("u32 targets", hinge(&gpu, &logits, &tu, 1.0, &out), &[k, "f32", "u32"]);
    assert!(matches!(err, WgnnError::DType { .. }), "{err}");
    let wrong = HingeOut { dlogits: Some(&short), ..out };
    expect_err("dlogits [2]", hinge(&gpu, &logits, &targets, 1.0, &wrong), &[k, "dlogits", "[2]"]);
    let wrong = HingeOut { correct_rows: &short, ..out };
    expect_err("correct_rows [2]", hinge(&gpu, &logits, &targets, 1.0, &wrong), &[k, "correct_rows"]);
    let three = Tensor::zeros(&gpu, &[3]).unwrap();
    let wrong = HingeOut { totals: Some(&three), ..out };
    expect_err("totals [3]", hinge(&gpu, &logits, &targets, 1.0, &wrong), &[k, "totals"]);
    let wrong = HingeOut { correct_rows: &loss, ..out };
    expect_err("shared outputs", hinge(&gpu, &logits, &targets, 1.0, &wrong), &[k, "share memory"]);
    expect_err("inf grad_scale", hinge(&gpu, &logits, &targets, f32::INFINITY, &out), &[k, "grad_scale"]);
    let empty = Tensor::zeros(&gpu, &[0]).unwrap();
    let err = expect_err("empty", hinge(&gpu, &empty, &empty, 1.0, &out), &[k, "[0]"]);
    assert!(matches!(err, WgnnError::EmptyTensor { .. }), "{err}");
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
