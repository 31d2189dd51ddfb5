//! sigmoid_bce.wgsl, mse.wgsl and hinge.wgsl against the CPU reference; the references' gradients
//! against finite differences; extreme inputs; bad input. softmax_xent and totals are in
//! tests/softmax_xent.rs.

mod common;
use common::loss_outputs::{expect_err, Got};
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::hinge::{hinge, HingeOut};
use wgnn::internals::kernels::mse::{mse, MseOut, MAX_OUTPUTS};
use wgnn::internals::kernels::sigmoid_bce::{sigmoid_bce, SigmoidBceOut};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Tensor, WgnnError};

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
