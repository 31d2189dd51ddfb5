//! CPU reference of shaders/attention.wgsl: multi-head self-attention, causal as llm.c's
//! `attention_forward` / `attention_backward` (train_gpt2.c).
//!
//! qkv is `[b, t, 3c]`: each token's query, key and value side by side, each `[c]` holding `nh`
//! heads of `hs = c / nh` values. Position `i` attends to positions `j ≤ i` with the scores
//! `q_i·k_j / √hs`, softmax over `j`; the output `[b, t, c]` is the probability-weighted sum of the
//! values, head by head. Without the causal mask (the `_masked` forms' `causal` false) position
//! `i` attends to every position. Sums in f64, so that this defines the result the kernels
//! approximate. The `_dropout` forms drop probabilities as PyTorch's
//! `scaled_dot_product_attention(dropout_p)` does in training, with the GPU's mask
//! ([`AttentionDropout`]).

use super::dropout::{dropout_constants, dropout_hash};

/// Attention dropout: probability (b, h, i, j) is kept with weight 1/(1 − rate) or dropped, by
/// the dropout layer's hash of (seed, t, ((b·nh + h)·t_len + i)·t_len + j) — the mask
/// `kernels::attention_dims::AttentionDropout` draws on the GPU at t = `step[0]` − lag.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDropout {
    pub rate: f32,
    pub seed: u32,
    /// The step the mask is drawn at.
    pub t: u32,
}

impl AttentionDropout {
    /// The weight of score `index` ([B, NH, T, T] order): 0 or 1/(1 − rate) (as f32, the GPU's).
    pub(crate) fn weight(&self, index: usize) -> f64 {
        let (threshold, keep_scale) = dropout_constants(self.rate);
        if dropout_hash(self.seed, self.t, index as u32) >= threshold {
            keep_scale as f64
        } else {
            0.0
        }
    }
}

/// The mask of `dropout` over scores `[b, nh, t, t]`: each entry 0 or 1/(1 − rate), 0 past the
/// causal mask (where `causal`), as the kernels weigh the probabilities.
pub fn attention_dropout_mask(b: usize, nh: usize, t: usize, causal: bool, dropout: &AttentionDropout) -> Vec<f32> {
    assert!(b * nh * t * t <= u32::MAX as usize, "attention_dropout_mask: at most 2^32 scores");
    (0..b * nh * t * t)
        .map(|idx| {
            let (i, j) = ((idx / t) % t, idx % t);
            if j < key_end(i, t, causal) {
                dropout.weight(idx) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// Where (bi, ti)'s query (part 0), key (1) or value (2) of head `h` starts in qkv.
fn at(part: usize, bi: usize, ti: usize, h: usize, t: usize, c: usize, hs: usize) -> usize {
    (bi * t + ti) * 3 * c + part * c + h * hs
}

/// Checks the lengths and returns the head size.
fn head_size(op: &str, qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) -> usize {
    assert!(nh > 0 && c.is_multiple_of(nh), "{op}: c = {c} must be a multiple of nh = {nh}");
    assert_eq!(qkv.len(), b * t * 3 * c, "{op}: qkv must be b × t × 3c");
    c / nh
}

/// One past the last key query `ti` attends to.
pub(crate) fn key_end(ti: usize, t: usize, causal: bool) -> usize {
    if causal {
        ti + 1
    } else {
        t
    }
}

/// The scaled scores of row (bi, h, ti) over keys 0..end.
#[allow(clippy::too_many_arguments)]
fn scores(qkv: &[f32], bi: usize, h: usize, ti: usize, end: usize, t: usize, c: usize, hs: usize) -> Vec<f64> {
    let scale = 1.0 / (hs as f64).sqrt();
    let q = &qkv[at(0, bi, ti, h, t, c, hs)..][..hs];
    (0..end)
        .map(|tj| {
            let k = &qkv[at(1, bi, tj, h, t, c, hs)..][..hs];
            q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale
        })
        .collect()
}

/// Causal self-attention.  qkv: [b, t, 3c] → (out `[b, t, c]`, probs `[b, nh, t, t]` with the
/// masked entries (key after query) exactly 0, lse `[b, nh, t]`: each row's log Σ exp(score), the
/// statistic the flash kernels keep instead of probs).
pub fn attention_forward(qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    attention_forward_masked(qkv, b, t, c, nh, true)
}

/// [`attention_forward`] with the causal mask (`causal`) or without (no entry of probs masked).
pub fn attention_forward_masked(
    qkv: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    forward(qkv, b, t, c, nh, causal, None)
}

/// [`attention_forward_masked`] with attention dropout: out = (P ⊙ M)·v; probs and lse are the
/// softmax's, P without the mask (M: [`attention_dropout_mask`]).
pub fn attention_forward_dropout(
    qkv: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
    dropout: &AttentionDropout,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    forward(qkv, b, t, c, nh, causal, Some(dropout))
}

fn forward(
    qkv: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
    dropout: Option<&AttentionDropout>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let hs = head_size("attention_forward", qkv, b, t, c, nh);
    let mut out = vec![0.0f32; b * t * c];
    let mut probs = vec![0.0f32; b * nh * t * t];
    let mut lse = vec![0.0f32; b * nh * t];
    for bi in 0..b {
        for h in 0..nh {
            for ti in 0..t {
                let s = scores(qkv, bi, h, ti, key_end(ti, t, causal), t, c, hs);
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = s.iter().map(|&x| (x - max).exp()).sum();
                let row = ((bi * nh + h) * t + ti) * t;
                lse[(bi * nh + h) * t + ti] = (max + sum.ln()) as f32;
                let mut acc = vec![0.0f64; hs];
                for (tj, &x) in s.iter().enumerate() {
                    let p = (x - max).exp() / sum;
                    probs[row + tj] = p as f32;
                    let w = p * dropout.map_or(1.0, |d| d.weight(row + tj));
                    let v = &qkv[at(2, bi, tj, h, t, c, hs)..][..hs];
                    for (a, &vd) in acc.iter_mut().zip(v) {
                        *a += w * vd as f64;
                    }
                }
                let o = &mut out[(bi * t + ti) * c + h * hs..][..hs];
                for (od, a) in o.iter_mut().zip(acc) {
                    *od = a as f32;
                }
            }
        }
    }
    (out, probs, lse)
}

/// The gradient of causal self-attention.  dout: [b, t, c], qkv: [b, t, 3c], probs: [b, nh, t, t]
/// (from [`attention_forward`]) → dqkv: [b, t, 3c] (overwritten, not accumulated).
pub fn attention_backward(
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<f32> {
    attention_backward_masked(dout, qkv, probs, b, t, c, nh, true)
}

/// The gradient of [`attention_forward_masked`] (`causal` as there).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_masked(
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
) -> Vec<f32> {
    backward(dout, qkv, probs, b, t, c, nh, causal, None)
}

/// The gradient of [`attention_forward_dropout`] (the same `dropout`: the same mask M):
/// dP = (dO·vᵀ) ⊙ M, dS = P ⊙ (dP − Σ P ⊙ dP), dv = (P ⊙ M)ᵀ dO.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_dropout(
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
    dropout: &AttentionDropout,
) -> Vec<f32> {
    backward(dout, qkv, probs, b, t, c, nh, causal, Some(dropout))
}

#[allow(clippy::too_many_arguments)]
fn backward(
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
    dropout: Option<&AttentionDropout>,
) -> Vec<f32> {
    let hs = head_size("attention_backward", qkv, b, t, c, nh);
    assert_eq!(dout.len(), b * t * c, "attention_backward: dout must be b × t × c");
    assert_eq!(probs.len(), b * nh * t * t, "attention_backward: probs must be b × nh × t × t");
    let scale = 1.0 / (hs as f64).sqrt();
    let mut dqkv = vec![0.0f64; b * t * 3 * c];
    for bi in 0..b {
        for h in 0..nh {
            for ti in 0..t {
                let end = key_end(ti, t, causal);
                let row = ((bi * nh + h) * t + ti) * t;
                let p = &probs[row..][..end];
                let weight = |tj: usize| dropout.map_or(1.0, |d| d.weight(row + tj));
                let go = &dout[(bi * t + ti) * c + h * hs..][..hs];
                // dP_j = (dO·v_j) M_j; through the softmax dS_j = P_j (dP_j − Σ_k P_k dP_k).
                let dp: Vec<f64> = (0..end)
                    .map(|tj| {
                        let v = &qkv[at(2, bi, tj, h, t, c, hs)..][..hs];
                        go.iter().zip(v).map(|(&g, &vd)| g as f64 * vd as f64).sum::<f64>() * weight(tj)
                    })
                    .collect();
                let dot: f64 = p.iter().zip(&dp).map(|(&pj, &d)| pj as f64 * d).sum();
                for tj in 0..end {
                    let ds = p[tj] as f64 * (dp[tj] - dot) * scale;
                    let kept = p[tj] as f64 * weight(tj);
                    for d in 0..hs {
                        let (qi, kj, vj) =
                            (at(0, bi, ti, h, t, c, hs), at(1, bi, tj, h, t, c, hs), at(2, bi, tj, h, t, c, hs));
                        dqkv[qi + d] += ds * qkv[kj + d] as f64;
                        dqkv[kj + d] += ds * qkv[qi + d] as f64;
                        dqkv[vj + d] += kept * go[d] as f64;
                    }
                }
            }
        }
    }
    dqkv.into_iter().map(|x| x as f32).collect()
}
