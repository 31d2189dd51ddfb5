//! softmax_xent.wgsl, sigmoid_bce.wgsl and totals.wgsl against the CPU reference; the references'
//! gradients against finite differences; extreme logits; bad input.

mod common;
use common::*;
use wgnn::kernels::sigmoid_bce::{sigmoid_bce, SigmoidBceOut};
use wgnn::kernels::softmax_xent::{softmax, softmax_xent, SoftmaxXentOut, MAX_CLASSES};
use wgnn::kernels::totals::{totals, totals_blocked};
use wgnn::rng::Rng;
use wgnn::{cpu, Gpu, Tensor, WgnnError};

/// Outputs of one GPU softmax_xent call, downloaded.
struct Got {
    loss: Vec<f32>,
    dlogits: Vec<f32>,
    correct: Vec<f32>,
    totals: Vec<f32>,
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
}

#[test]
fn softmax_xent_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(10);
    let mut shapes: Vec<(usize, usize)> = SIZES.iter().map(|&n| (n, 10)).collect();
    shapes.extend(SIZES.iter().map(|&c| (33, c)));
    shapes.extend([(1, 1), (64, 65), (65, 64), (127, 257), (257, 127), (2, 2000)]);
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
    let u32_targets = Tensor::from_u32(&gpu, &[4], &[0, 1, 1, 0]).unwrap();
    let err =
        expect_err("u32 targets", sigmoid_bce(&gpu, &logits, &u32_targets, 0.25, &out), &["sigmoid_bce", "f32", "u32"]);
    assert!(matches!(err, WgnnError::DType { .. }), "{err}");
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
