//! Attention dropout in both kernel families (shaders/attention.wgsl and flash_attention.wgsl
//! built with DROPOUT) against the CPU reference on awkward shapes at rates 0.1 and 0.5: the
//! output, the clear kernels' dropped probabilities (the same mask, bit for bit) and dqkv; the
//! dropped fraction close to the rate; the reference's backward against finite differences with
//! the mask fixed; repeated runs bit-identical and another step another mask; bad input.

mod common;
use common::loss_outputs::expect_err;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::attention::{attention_backward_dropout, attention_forward_dropout};
use wgnn::internals::kernels::attention_dims::AttentionDropout;
use wgnn::internals::kernels::flash_attention::{flash_attention_backward_dropout, flash_attention_forward_dropout};
use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Tensor};

/// (B, T, NH, hs): T not a multiple of the flash tile (16) or the workgroup (64), heads 1 and 3,
/// head sizes 8 and 32 (vec4 loads) and 5 (scalar loads).
const SHAPES: [(usize, usize, usize, usize); 5] =
    [(2, 19, 1, 8), (1, 37, 3, 32), (3, 5, 3, 8), (1, 70, 1, 32), (2, 9, 3, 5)];

/// The step counter holds 9 and the kernels key on 9 − lag 2 = 7: the CPU's t.
const COUNTER: u32 = 9;
const LAG: u32 = 2;

fn nan_tensor(gpu: &Gpu, shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, shape, &vec![f32::NAN; shape.iter().product()]).unwrap()
}

/// What one forward and backward with dropout downloads.
struct Got {
    out: Vec<f32>,
    dqkv: Vec<f32>,
    /// The clear kernels' P ⊙ M; empty for flash.
    dropped: Vec<f32>,
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    Clear,
    Flash,
}

#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &Gpu,
    family: Family,
    qkv: &[f32],
    dout: &[f32],
    (b, t, nh, hs): (usize, usize, usize, usize),
    causal: bool,
    rate: f32,
    seed: u32,
    counter: u32,
) -> Got {
    let c = nh * hs;
    let qkv_t = Tensor::from_slice(gpu, &[b, t, 3 * c], qkv).unwrap();
    let dout_t = Tensor::from_slice(gpu, &[b, t, c], dout).unwrap();
    let step = Tensor::from_u32(gpu, &[1], &[counter]).unwrap();
    let d = AttentionDropout { rate, seed, step: &step, lag: LAG };
    let out = nan_tensor(gpu, &[b, t, c]);
    let dqkv = nan_tensor(gpu, &[b, t, 3 * c]);
    match family {
        Family::Clear => {
            let probs = nan_tensor(gpu, &[b, nh, t, t]);
            let dropped = nan_tensor(gpu, &[b, nh, t, t]);
            let dscores = nan_tensor(gpu, &[b, nh, t, t]);
            let f = attention_forward_dropout(gpu, &qkv_t, &out, &probs, &dropped, nh, causal, &d).unwrap();
            let bw =
                attention_backward_dropout(gpu, &dout_t, &qkv_t, &probs, &dropped, &dscores, &dqkv, nh, causal, &d)
                    .unwrap();
            gpu.run(&[&f, &bw]).unwrap();
            Got { out: out.to_vec().unwrap(), dqkv: dqkv.to_vec().unwrap(), dropped: dropped.to_vec().unwrap() }
        }
        Family::Flash => {
            let lse = nan_tensor(gpu, &[b, nh, t]);
            let delta = nan_tensor(gpu, &[b, nh, t]);
            let f = flash_attention_forward_dropout(gpu, &qkv_t, &out, &lse, nh, causal, &d).unwrap();
            let bw = flash_attention_backward_dropout(gpu, &dout_t, &qkv_t, &out, &lse, &delta, &dqkv, nh, causal, &d)
                .unwrap();
            gpu.run(&[&f, &bw]).unwrap();
            Got { out: out.to_vec().unwrap(), dqkv: dqkv.to_vec().unwrap(), dropped: Vec::new() }
        }
    }
}

#[test]
fn attention_dropout_matches_cpu_on_awkward_shapes() {
    let gpu = gpu();
    let mut rng = Rng::new(230);
    for shape @ (b, t, nh, hs) in SHAPES {
        let c = nh * hs;
        for (rate, causal) in [(0.1, true), (0.5, true), (0.5, false)] {
            let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
            let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
            let seed = rng.next_u64() as u32;
            let d = cpu::AttentionDropout { rate, seed, t: COUNTER - LAG };
            let (out, probs, lse) = cpu::attention_forward_dropout(&qkv, b, t, c, nh, causal, &d);
            let dqkv = cpu::attention_backward_dropout(&dout, &qkv, &probs, b, t, c, nh, causal, &d);
            let flash_dqkv = cpu::flash_attention_backward_dropout(&dout, &qkv, &out, &lse, b, t, c, nh, causal, &d);
            let what = format!("B{b} T{t} NH{nh} hs{hs} p {rate} causal {causal}");
            // The two references compute the same gradient (D_i = dO_i·O_i holds with the mask).
            assert_close(&format!("{what}: flash reference dqkv"), &flash_dqkv, &dqkv, 1e-5, 1e-4);
            for family in [Family::Clear, Family::Flash] {
                let name = if family == Family::Clear { "clear" } else { "flash" };
                let got = run(&gpu, family, &qkv, &dout, shape, causal, rate, seed, COUNTER);
                assert_close(&format!("{what} {name} out"), &got.out, &out, 1e-5, 1e-4);
                assert_close(&format!("{what} {name} dqkv"), &got.dqkv, &dqkv, 2e-5, 1e-3);
                if family == Family::Clear {
                    let mask = cpu::attention_dropout_mask(b, nh, t, causal, &d);
                    let want: Vec<f32> = probs.iter().zip(&mask).map(|(&p, &m)| p * m).collect();
                    // The same mask: every dropped entry 0 exactly where the reference drops it.
                    for (k, (&g, &m)) in got.dropped.iter().zip(&mask).enumerate() {
                        assert_eq!(g == 0.0, m == 0.0 || probs[k] == 0.0, "{what}: score {k} dropped {g} vs mask {m}");
                    }
                    assert_close(&format!("{what} clear dropped"), &got.dropped, &want, 1e-6, 1e-4);
                }
            }
        }
    }
}

/// The mask drops a fraction of the scores within 4σ of the rate, on the CPU and (the clear
/// kernels' dropped probabilities, positive wherever kept) on the GPU, the same scores.
#[test]
fn attention_dropout_drops_close_to_the_rate() {
    let gpu = gpu();
    let mut rng = Rng::new(231);
    let (b, t, nh, hs) = (2, 64, 3, 8);
    let c = nh * hs;
    let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    for rate in [0.1f32, 0.5] {
        let d = cpu::AttentionDropout { rate, seed: 77, t: COUNTER - LAG };
        let mask = cpu::attention_dropout_mask(b, nh, t, true, &d);
        // The causal entries: j ≤ i.
        let causal = (0..mask.len()).filter(|&k| k % t <= (k / t) % t);
        let n = causal.clone().count() as f64;
        let dropped = causal.clone().filter(|&k| mask[k] == 0.0).count() as f64;
        let sigma = (rate as f64 * (1.0 - rate as f64) / n).sqrt();
        let fraction = dropped / n;
        assert!((fraction - rate as f64).abs() < 4.0 * sigma, "p {rate}: {fraction} of {n} scores dropped");
        let kept = 1.0 / (1.0 - rate);
        assert!(mask.iter().all(|&m| m == 0.0 || m == kept), "p {rate}: a weight other than 0 and 1/(1 − p)");
        let got = run(&gpu, Family::Clear, &qkv, &dout, (b, t, nh, hs), true, rate, 77, COUNTER);
        let gpu_dropped = causal.filter(|&k| got.dropped[k] == 0.0).count() as f64;
        assert_eq!(gpu_dropped, dropped, "p {rate}: the GPU drops other scores");
    }
}

/// The references' dqkv is the gradient of Σ w·out with the mask fixed (same seed and t), by
/// central differences of the reference's forward over every value of qkv.
#[test]
fn attention_dropout_backward_matches_finite_differences() {
    let mut rng = Rng::new(232);
    for ((b, t, nh, hs), rate, causal) in
        [((1, 5, 1, 3), 0.5, true), ((2, 7, 3, 2), 0.1, true), ((1, 6, 3, 8), 0.5, false), ((2, 3, 1, 8), 0.1, false)]
    {
        let c = nh * hs;
        let d = cpu::AttentionDropout { rate, seed: 5, t: 3 };
        let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
        let w = rng.vec_uniform(b * t * c, -1.0, 1.0);
        let (out, probs, lse) = cpu::attention_forward_dropout(&qkv, b, t, c, nh, causal, &d);
        let clear = cpu::attention_backward_dropout(&w, &qkv, &probs, b, t, c, nh, causal, &d);
        let flash = cpu::flash_attention_backward_dropout(&w, &qkv, &out, &lse, b, t, c, nh, causal, &d);
        let numeric =
            numeric_gradient(&qkv, 1e-2, |x| dot(&w, &cpu::attention_forward_dropout(x, b, t, c, nh, causal, &d).0));
        let what = format!("dqkv B{b} T{t} NH{nh} hs{hs} p {rate} causal {causal}");
        assert_close(&format!("{what} clear"), &clear, &numeric, 2e-4, 1e-2);
        assert_close(&format!("{what} flash"), &flash, &numeric, 2e-4, 1e-2);
    }
}

/// Two runs at the same seed and step give the same bits; the next step draws another mask.
#[test]
fn attention_dropout_runs_are_bit_identical_and_steps_differ() {
    let gpu = gpu();
    let mut rng = Rng::new(233);
    let shape @ (b, t, nh, hs) = (2, 21, 3, 8);
    let c = nh * hs;
    let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    for family in [Family::Clear, Family::Flash] {
        let first = run(&gpu, family, &qkv, &dout, shape, true, 0.5, 11, COUNTER);
        let again = run(&gpu, family, &qkv, &dout, shape, true, 0.5, 11, COUNTER);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&first.out), bits(&again.out), "out differs between runs");
        assert_eq!(bits(&first.dqkv), bits(&again.dqkv), "dqkv differs between runs");
        let next = run(&gpu, family, &qkv, &dout, shape, true, 0.5, 11, COUNTER + 1);
        assert_ne!(bits(&first.out), bits(&next.out), "the next step drew the same mask");
        let other_seed = run(&gpu, family, &qkv, &dout, shape, true, 0.5, 12, COUNTER);
        assert_ne!(bits(&first.out), bits(&other_seed.out), "another seed drew the same mask");
    }
}

#[test]
fn attention_dropout_bad_input_is_an_error_naming_the_op() {
    let gpu = gpu();
    let qkv = Tensor::zeros(&gpu, &[2, 5, 12]).unwrap();
    let out = Tensor::zeros(&gpu, &[2, 5, 4]).unwrap();
    let probs = Tensor::zeros(&gpu, &[2, 2, 5, 5]).unwrap();
    let dropped = Tensor::zeros(&gpu, &[2, 2, 5, 5]).unwrap();
    let lse = Tensor::zeros(&gpu, &[2, 2, 5]).unwrap();
    let step = Tensor::from_u32(&gpu, &[1], &[3]).unwrap();
    let ok = AttentionDropout { rate: 0.2, seed: 1, step: &step, lag: 0 };
    attention_forward_dropout(&gpu, &qkv, &out, &probs, &dropped, 2, true, &ok).expect("a valid call");
    flash_attention_forward_dropout(&gpu, &qkv, &out, &lse, 2, true, &ok).expect("a valid call");
    let rate_one = AttentionDropout { rate: 1.0, ..ok };
    expect_err(
        "rate 1",
        attention_forward_dropout(&gpu, &qkv, &out, &probs, &dropped, 2, true, &rate_one),
        &["attention_forward", "dropout rate"],
    );
    expect_err(
        "rate 1 (flash)",
        flash_attention_forward_dropout(&gpu, &qkv, &out, &lse, 2, true, &rate_one),
        &["flash_attention_forward", "dropout rate"],
    );
    let f32_step = Tensor::zeros(&gpu, &[1]).unwrap();
    let bad_step = AttentionDropout { step: &f32_step, ..ok };
    expect_err(
        "f32 step",
        flash_attention_forward_dropout(&gpu, &qkv, &out, &lse, 2, true, &bad_step),
        &["flash_attention_forward", "u32"],
    );
    let small = Tensor::zeros(&gpu, &[2, 2, 5, 4]).unwrap();
    expect_err(
        "dropped",
        attention_forward_dropout(&gpu, &qkv, &out, &probs, &small, 2, true, &ok),
        &["attention_forward", "dropped", "[2, 2, 5, 4]"],
    );
    expect_err(
        "dropped is probs",
        attention_forward_dropout(&gpu, &qkv, &out, &probs, &probs, 2, true, &ok),
        &["attention_forward", "share memory"],
    );
}
