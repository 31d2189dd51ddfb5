//! shaders/flash_attention.wgsl (causal self-attention tiled as FlashAttention-2) against its CPU
//! reference and against the clear kernels (shaders/attention.wgsl) on the same shapes; its CPU
//! reference against the clear one (the same function); long rows near the loop budget; bad input.

mod common;
use common::attention_shapes::attention_shapes;
use common::loss_outputs::expect_err;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::attention::{attention_backward, attention_forward};
use wgnn::internals::kernels::attention_dims::AttentionDims;
use wgnn::internals::kernels::flash_attention::{
    flash_attention_backward, flash_attention_backward_rows, flash_attention_forward, flash_attention_forward_rows,
    flash_attention_supported, FLASH_MAX_HEAD_SIZE,
};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Tensor};

/// Outputs of one forward and backward, downloaded.
struct Got {
    out: Vec<f32>,
    dqkv: Vec<f32>,
    /// lse for the flash kernels.
    lse: Vec<f32>,
}

fn nan_tensor(gpu: &Gpu, shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, shape, &vec![f32::NAN; shape.iter().product()]).unwrap()
}

/// The flash forward and backward on the GPU; every output starts as NaN so that an unwritten
/// value shows.
fn run_flash(gpu: &Gpu, qkv: &[f32], dout: &[f32], (b, t, nh, hs): (usize, usize, usize, usize)) -> Got {
    let c = nh * hs;
    let qkv_t = Tensor::from_slice(gpu, &[b, t, 3 * c], qkv).unwrap();
    let dout_t = Tensor::from_slice(gpu, &[b, t, c], dout).unwrap();
    let out = nan_tensor(gpu, &[b, t, c]);
    let lse = nan_tensor(gpu, &[b, nh, t]);
    let delta = nan_tensor(gpu, &[b, nh, t]);
    let dqkv = nan_tensor(gpu, &[b, t, 3 * c]);
    let forward = flash_attention_forward(gpu, &qkv_t, &out, &lse, nh).unwrap();
    let backward = flash_attention_backward(gpu, &dout_t, &qkv_t, &out, &lse, &delta, &dqkv, nh).unwrap();
    assert_eq!((forward.len(), backward.len()), (1, 2), "dispatches");
    gpu.run(&[&forward, &backward]).unwrap();
    Got { out: out.to_vec().unwrap(), dqkv: dqkv.to_vec().unwrap(), lse: lse.to_vec().unwrap() }
}

/// The clear forward and backward on the GPU.
fn run_clear(gpu: &Gpu, qkv: &[f32], dout: &[f32], (b, t, nh, hs): (usize, usize, usize, usize)) -> Got {
    let c = nh * hs;
    let qkv_t = Tensor::from_slice(gpu, &[b, t, 3 * c], qkv).unwrap();
    let dout_t = Tensor::from_slice(gpu, &[b, t, c], dout).unwrap();
    let out = nan_tensor(gpu, &[b, t, c]);
    let probs = nan_tensor(gpu, &[b, nh, t, t]);
    let dscores = nan_tensor(gpu, &[b, nh, t, t]);
    let dqkv = nan_tensor(gpu, &[b, t, 3 * c]);
    let forward = attention_forward(gpu, &qkv_t, &out, &probs, nh).unwrap();
    let backward = attention_backward(gpu, &dout_t, &qkv_t, &probs, &dscores, &dqkv, nh).unwrap();
    gpu.run(&[&forward, &backward]).unwrap();
    Got { out: out.to_vec().unwrap(), dqkv: dqkv.to_vec().unwrap(), lse: Vec::new() }
}

/// Flash against its CPU reference and against the clear kernels at (B, T, NH, hs).
fn check(gpu: &Gpu, rng: &mut Rng, (b, t, nh, hs): (usize, usize, usize, usize), range: f32) {
    let c = nh * hs;
    let what = format!("flash attention B{b} T{t} NH{nh} hs{hs} ±{range}");
    let qkv = rng.vec_uniform(b * t * 3 * c, -range, range);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let got = run_flash(gpu, &qkv, &dout, (b, t, nh, hs));
    let (out, lse) = cpu::flash_attention_forward(&qkv, b, t, c, nh);
    let dqkv = cpu::flash_attention_backward(&dout, &qkv, &out, &lse, b, t, c, nh);
    let tol = range * range;
    assert_close(&format!("{what} out"), &got.out, &out, 1e-5 * tol, 1e-4);
    assert_close(&format!("{what} lse"), &got.lse, &lse, 1e-5 * tol, 1e-5);
    assert_close(&format!("{what} dqkv"), &got.dqkv, &dqkv, 2e-5 * tol, 1e-3);
    // Every number of rows per invocation (the wrapper picks 4 in the forward up to T 529 at hs 32,
    // 2 in dq up to 1,044), on heads of 8 and 5 (vec4 and scalar): each is a pipeline of its own,
    // compiled in ~0.3 s on lavapipe.
    let qkv_t = Tensor::from_slice(gpu, &[b, t, 3 * c], &qkv).unwrap();
    let rows_tried: &[usize] = if hs == 8 || hs == 5 { &[1, 2, 4] } else { &[] };
    for &rows in rows_tried {
        let (out_t, lse_t) = (nan_tensor(gpu, &[b, t, c]), nan_tensor(gpu, &[b, nh, t]));
        gpu.run(&[&flash_attention_forward_rows(gpu, &qkv_t, &out_t, &lse_t, nh, rows).unwrap()]).unwrap();
        assert_close(&format!("{what} out, {rows} rows"), &out_t.to_vec().unwrap(), &out, 1e-5 * tol, 1e-4);
        assert_close(&format!("{what} lse, {rows} rows"), &lse_t.to_vec().unwrap(), &lse, 1e-5 * tol, 1e-5);
        // The backward's dq at as many rows, from the reference's out and lse.
        let (out_ref, lse_ref) = (Tensor::from_slice(gpu, &[b, t, c], &out).unwrap(), lse_t);
        let dout_t = Tensor::from_slice(gpu, &[b, t, c], &dout).unwrap();
        let (delta_t, dqkv_t) = (nan_tensor(gpu, &[b, nh, t]), nan_tensor(gpu, &[b, t, 3 * c]));
        let backward =
            flash_attention_backward_rows(gpu, &dout_t, &qkv_t, &out_ref, &lse_ref, &delta_t, &dqkv_t, nh, rows);
        gpu.run(&[&backward.unwrap()]).unwrap();
        assert_close(&format!("{what} dqkv, {rows} rows"), &dqkv_t.to_vec().unwrap(), &dqkv, 2e-5 * tol, 1e-3);
    }
    let clear = run_clear(gpu, &qkv, &dout, (b, t, nh, hs));
    assert_close(&format!("{what} out = clear out"), &got.out, &clear.out, 1e-5 * tol, 1e-4);
    assert_close(&format!("{what} dqkv = clear dqkv"), &got.dqkv, &clear.dqkv, 4e-5 * tol, 2e-3);
}

#[test]
fn flash_attention_matches_cpu_and_the_clear_kernels() {
    let gpu = gpu();
    let mut rng = Rng::new(30);
    for shape in attention_shapes() {
        check(&gpu, &mut rng, shape, 1.0);
    }
    // Heads that are not a multiple of 4 (the vec4 chunks' last lanes), the largest head, and
    // rows spanning several key tiles of 16 with a partial last one.
    for shape in [(2, 17, 3, 5), (1, 33, 2, 63), (2, 9, 2, FLASH_MAX_HEAD_SIZE), (1, 47, 1, 6)] {
        check(&gpu, &mut rng, shape, 1.0);
    }
}

/// Scores of up to ±200: the running maximum keeps the online softmax finite, and a maximum that
/// grows from tile to tile rescales what was summed before.
#[test]
fn flash_attention_large_scores_are_finite_and_match() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    check(&gpu, &mut rng, (2, 70, 2, 32), 20.0);
    // Keys whose scores increase with position: every tile raises the maximum.
    let (b, t, nh, hs) = (1, 50, 1, 4);
    let c = nh * hs;
    let mut qkv = vec![0.0f32; b * t * 3 * c];
    for i in 0..t {
        for d in 0..hs {
            qkv[i * 3 * c + d] = 1.0;
            qkv[i * 3 * c + c + d] = i as f32;
            qkv[i * 3 * c + 2 * c + d] = (i * hs + d) as f32 / 10.0;
        }
    }
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let got = run_flash(&gpu, &qkv, &dout, (b, t, nh, hs));
    assert!(got.out.iter().chain(&got.dqkv).chain(&got.lse).all(|x| x.is_finite()), "a non-finite output");
    let (out, lse) = cpu::flash_attention_forward(&qkv, b, t, c, nh);
    assert_close("increasing scores out", &got.out, &out, 1e-4, 1e-4);
    assert_close("increasing scores lse", &got.lse, &lse, 1e-4, 1e-5);
    let dqkv = cpu::flash_attention_backward(&dout, &qkv, &out, &lse, b, t, c, nh);
    assert_close("increasing scores dqkv", &got.dqkv, &dqkv, 1e-3, 1e-3);
}

/// Long rows: T = 700 with heads of 64 loops ~48,000 times in the forward's last invocations (one
/// row each), just within the budget that keeps clear of lavapipe's loop cap (a kernel past the
/// cap would stop early and differ).
#[test]
fn flash_attention_long_rows_match_the_clear_kernels() {
    let gpu = gpu();
    let mut rng = Rng::new(32);
    let (b, t, nh, hs) = (1, 700, 1, 64);
    let c = nh * hs;
    let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let got = run_flash(&gpu, &qkv, &dout, (b, t, nh, hs));
    let clear = run_clear(&gpu, &qkv, &dout, (b, t, nh, hs));
    assert_close("T700 out", &got.out, &clear.out, 1e-5, 1e-3);
    assert_close("T700 dqkv", &got.dqkv, &clear.dqkv, 4e-5, 2e-3);
}

/// The CPU references of the two families agree: FlashAttention-2's backward (P rebuilt from lse,
/// D = dout·out) is the clear backward's function (whose dqkv tests/attention.rs checks against
/// finite differences).
#[test]
fn flash_cpu_reference_is_the_clear_one() {
    let mut rng = Rng::new(33);
    for (b, t, nh, hs) in [(1, 1, 1, 1), (2, 9, 3, 5), (3, 65, 4, 8)] {
        let c = nh * hs;
        let qkv = rng.vec_uniform(b * t * 3 * c, -2.0, 2.0);
        let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
        let (out, probs, lse) = cpu::attention_forward(&qkv, b, t, c, nh);
        let (flash_out, flash_lse) = cpu::flash_attention_forward(&qkv, b, t, c, nh);
        assert_eq!((&out, &lse), (&flash_out, &flash_lse));
        let clear = cpu::attention_backward(&dout, &qkv, &probs, b, t, c, nh);
        let flash = cpu::flash_attention_backward(&dout, &qkv, &out, &lse, b, t, c, nh);
        assert_close(&format!("cpu dqkv B{b} T{t} NH{nh} hs{hs}"), &flash, &clear, 1e-5, 1e-4);
    }
}

#[test]
fn flash_attention_bad_input_is_an_error_naming_the_op_and_shapes() {
    let gpu = gpu();
    let qkv = Tensor::zeros(&gpu, &[2, 5, 12]).unwrap();
    let out = Tensor::zeros(&gpu, &[2, 5, 4]).unwrap();
    let lse = Tensor::zeros(&gpu, &[2, 2, 5]).unwrap();
    let delta = Tensor::zeros(&gpu, &[2, 2, 5]).unwrap();
    let dqkv = Tensor::zeros(&gpu, &[2, 5, 12]).unwrap();
    flash_attention_forward(&gpu, &qkv, &out, &lse, 2).expect("a valid call");
    expect_err(
        "heads 3 of 4",
        flash_attention_forward(&gpu, &qkv, &out, &lse, 3),
        &["flash_attention_forward", "3 heads"],
    );
    let wrong = Tensor::zeros(&gpu, &[2, 5]).unwrap();
    expect_err(
        "lse",
        flash_attention_forward(&gpu, &qkv, &out, &wrong, 2),
        &["flash_attention_forward", "lse", "[2, 5]"],
    );
    expect_err(
        "delta",
        flash_attention_backward(&gpu, &out, &qkv, &out, &lse, &wrong, &dqkv, 2),
        &["flash_attention_backward", "delta", "[2, 5]"],
    );
    expect_err(
        "dout is out",
        flash_attention_backward(&gpu, &out, &qkv, &out, &lse, &delta, &dqkv, 2),
        &["flash_attention_backward", "share memory"],
    );
    // A head past the registers: an error that points to the clear kernels.
    let big = FLASH_MAX_HEAD_SIZE + 1;
    let qkv_big = Tensor::zeros(&gpu, &[1, 3, 3 * big]).unwrap();
    let out_big = Tensor::zeros(&gpu, &[1, 3, big]).unwrap();
    let lse_big = Tensor::zeros(&gpu, &[1, 1, 3]).unwrap();
    expect_err(
        "head too large",
        flash_attention_forward(&gpu, &qkv_big, &out_big, &lse_big, 1),
        &["flash_attention_forward", "[1, 3, 195]", "head size 65", "attention_forward"],
    );
    let dims = |t, c, nh| AttentionDims::new("test", 1, t, c, nh).unwrap();
    assert!(flash_attention_supported(&dims(708, 64, 1)) && !flash_attention_supported(&dims(709, 64, 1)));
    assert!(flash_attention_supported(&dims(1336, 128, 4)) && !flash_attention_supported(&dims(1337, 128, 4)));
    // Rows per invocation: 1, 2 or 4, within the loop budget (4 rows up to T 529 at hs 32).
    let qkv_t = Tensor::zeros(&gpu, &[1, 530, 3 * 32]).unwrap();
    let (out_t, lse_t) = (Tensor::zeros(&gpu, &[1, 530, 32]).unwrap(), Tensor::zeros(&gpu, &[1, 1, 530]).unwrap());
    flash_attention_forward_rows(&gpu, &qkv_t, &out_t, &lse_t, 1, 2).expect("2 rows fit");
    for rows in [0, 3, 4] {
        expect_err(
            &format!("{rows} rows"),
            flash_attention_forward_rows(&gpu, &qkv_t, &out_t, &lse_t, 1, rows),
            &["flash_attention_forward", &format!("{rows} rows per invocation")],
        );
    }
    let (delta_t, dqkv_t) = (Tensor::zeros(&gpu, &[1, 1, 530]).unwrap(), Tensor::zeros(&gpu, &[1, 530, 96]).unwrap());
    for rows in [0, 3] {
        expect_err(
            &format!("backward {rows} rows"),
            flash_attention_backward_rows(&gpu, &out_t, &qkv_t, &out_t, &lse_t, &delta_t, &dqkv_t, 1, rows),
            &["flash_attention_backward", &format!("{rows} rows per invocation")],
        );
    }
}
