//! shaders/attention.wgsl (causal self-attention, scores written) against the CPU reference on
//! awkward shapes; the reference's dqkv against finite differences of its forward; the mask, the
//! rows' sums and large scores; bad input. The flash kernels are in tests/flash_attention.rs.

mod common;
use common::attention_shapes::attention_shapes;
use common::loss_outputs::expect_err;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::attention::{attention_backward, attention_forward};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Tensor};

struct Clear {
    out: Vec<f32>,
    probs: Vec<f32>,
    dqkv: Vec<f32>,
}

/// The clear forward and backward on the GPU; dqkv starts as NaN so that an unwritten value shows.
fn run_clear(gpu: &Gpu, qkv: &[f32], dout: &[f32], (b, t, nh, hs): (usize, usize, usize, usize)) -> Clear {
    let c = nh * hs;
    let qkv_t = Tensor::from_slice(gpu, &[b, t, 3 * c], qkv).unwrap();
    let dout_t = Tensor::from_slice(gpu, &[b, t, c], dout).unwrap();
    let out = Tensor::from_slice(gpu, &[b, t, c], &vec![f32::NAN; b * t * c]).unwrap();
    let probs = Tensor::from_slice(gpu, &[b, nh, t, t], &vec![f32::NAN; b * nh * t * t]).unwrap();
    let dscores = Tensor::zeros(gpu, &[b, nh, t, t]).unwrap();
    let dqkv = Tensor::from_slice(gpu, &[b, t, 3 * c], &vec![f32::NAN; b * t * 3 * c]).unwrap();
    let forward = attention_forward(gpu, &qkv_t, &out, &probs, nh).unwrap();
    let backward = attention_backward(gpu, &dout_t, &qkv_t, &probs, &dscores, &dqkv, nh).unwrap();
    gpu.run(&[&forward, &backward]).unwrap();
    Clear { out: out.to_vec().unwrap(), probs: probs.to_vec().unwrap(), dqkv: dqkv.to_vec().unwrap() }
}

#[test]
fn attention_matches_cpu_on_awkward_shapes() {
    let gpu = gpu();
    let mut rng = Rng::new(23);
    for (b, t, nh, hs) in attention_shapes() {
        let c = nh * hs;
        let what = format!("attention B{b} T{t} NH{nh} hs{hs}");
        let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
        let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
        let got = run_clear(&gpu, &qkv, &dout, (b, t, nh, hs));
        let (out, probs, _) = cpu::attention_forward(&qkv, b, t, c, nh);
        let dqkv = cpu::attention_backward(&dout, &qkv, &probs, b, t, c, nh);
        assert_close(&format!("{what} out"), &got.out, &out, 1e-5, 1e-4);
        assert_close(&format!("{what} probs"), &got.probs, &probs, 1e-6, 1e-4);
        assert_close(&format!("{what} dqkv"), &got.dqkv, &dqkv, 2e-5, 1e-3);
    }
}

/// Keys after the query get exactly 0, and each row's probabilities sum to 1; scores of ±200
/// (q and k of ±20 over 32 values, scaled) stay finite, the row maximum being subtracted.
#[test]
fn attention_mask_is_exact_and_large_scores_are_finite() {
    let gpu = gpu();
    let mut rng = Rng::new(24);
    let (b, t, nh, hs) = (2, 33, 2, 32);
    let c = nh * hs;
    let qkv = rng.vec_uniform(b * t * 3 * c, -20.0, 20.0);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let got = run_clear(&gpu, &qkv, &dout, (b, t, nh, hs));
    for (r, row) in got.probs.chunks(t).enumerate() {
        let i = r % t;
        assert!(row[i + 1..].iter().all(|&p| p == 0.0), "row {r}: a masked probability is not exactly 0");
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row {r} sums to {sum}");
    }
    for (name, v) in [("out", &got.out), ("dqkv", &got.dqkv)] {
        assert!(v.iter().all(|x| x.is_finite()), "a non-finite value in {name}");
    }
    let (out, probs, _) = cpu::attention_forward(&qkv, b, t, c, nh);
    assert_close("±20 out", &got.out, &out, 1e-4, 1e-3);
    let dqkv = cpu::attention_backward(&dout, &qkv, &probs, b, t, c, nh);
    assert_close("±20 dqkv", &got.dqkv, &dqkv, 1e-3, 1e-2);
}

/// The reference's dqkv is the gradient of Σ w·out (w: fixed random weights, so dout = w), by
/// central differences of the reference's forward over every value of qkv.
#[test]
fn attention_backward_matches_finite_differences() {
    let mut rng = Rng::new(25);
    for (b, t, nh, hs) in [(1, 1, 1, 1), (2, 5, 2, 3), (1, 7, 1, 8), (2, 4, 3, 2)] {
        let c = nh * hs;
        let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
        let w = rng.vec_uniform(b * t * c, -1.0, 1.0);
        let (_, probs, _) = cpu::attention_forward(&qkv, b, t, c, nh);
        let analytic = cpu::attention_backward(&w, &qkv, &probs, b, t, c, nh);
        let numeric = numeric_gradient(&qkv, 1e-2, |x| dot(&w, &cpu::attention_forward(x, b, t, c, nh).0));
        assert_close(&format!("dqkv B{b} T{t} NH{nh} hs{hs}"), &analytic, &numeric, 2e-4, 1e-2);
    }
}

#[test]
fn attention_bad_input_is_an_error_naming_the_op_and_shapes() {
    let gpu = gpu();
    let qkv = Tensor::zeros(&gpu, &[2, 5, 12]).unwrap();
    let out = Tensor::zeros(&gpu, &[2, 5, 4]).unwrap();
    let probs = Tensor::zeros(&gpu, &[2, 2, 5, 5]).unwrap();
    let dscores = Tensor::zeros(&gpu, &[2, 2, 5, 5]).unwrap();
    let dqkv = Tensor::zeros(&gpu, &[2, 5, 12]).unwrap();
    attention_forward(&gpu, &qkv, &out, &probs, 2).expect("a valid call");
    let not_3c = Tensor::zeros(&gpu, &[2, 5, 13]).unwrap();
    expect_err("qkv not 3C", attention_forward(&gpu, &not_3c, &out, &probs, 2), &["attention_forward", "[2, 5, 13]"]);
    let flat = Tensor::zeros(&gpu, &[10, 12]).unwrap();
    expect_err("qkv 2-D", attention_forward(&gpu, &flat, &out, &probs, 2), &["attention_forward", "[10, 12]"]);
    expect_err("heads 3 of 4", attention_forward(&gpu, &qkv, &out, &probs, 3), &["attention_forward", "3 heads"]);
    expect_err("heads 0", attention_forward(&gpu, &qkv, &out, &probs, 0), &["attention_forward", "0 heads"]);
    let wrong_out = Tensor::zeros(&gpu, &[2, 5, 5]).unwrap();
    expect_err("out", attention_forward(&gpu, &qkv, &wrong_out, &probs, 2), &["attention_forward", "out", "[2, 5, 5]"]);
    expect_err("probs", attention_forward(&gpu, &qkv, &out, &dqkv, 2), &["attention_forward", "probs", "[2, 5, 12]"]);
    expect_err(
        "dqkv",
        attention_backward(&gpu, &out, &qkv, &probs, &dscores, &out, 2),
        &["attention_backward", "dqkv", "[2, 5, 4]"],
    );
    expect_err(
        "dqkv is qkv",
        attention_backward(&gpu, &out, &qkv, &probs, &dscores, &qkv, 2),
        &["attention_backward", "share memory"],
    );
}
