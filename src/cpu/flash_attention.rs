//! CPU reference of shaders/flash_attention.wgsl: the same function as [`super::attention`]
//! (causal multi-head self-attention over qkv `[b, t, 3c]`), computed as FlashAttention-2 does:
//! the forward keeps each row's log-sum-exp instead of the probabilities, and the backward
//! rebuilds each probability from it (P_ij = exp(s_ij − lse_i)) and uses D_i = dO_i·O_i for the
//! softmax's row sum. Untiled: the tiles change the order of the sums, not what they sum.

use super::attention::{attention_forward_dropout, attention_forward_masked, key_end, AttentionDropout};

/// Causal self-attention.  qkv: [b, t, 3c] → (out `[b, t, c]`, lse `[b, nh, t]`).
pub fn flash_attention_forward(qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) -> (Vec<f32>, Vec<f32>) {
    flash_attention_forward_masked(qkv, b, t, c, nh, true)
}

/// [`flash_attention_forward`] with the causal mask (`causal`) or without.
pub fn flash_attention_forward_masked(
    qkv: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
) -> (Vec<f32>, Vec<f32>) {
    let (out, _, lse) = attention_forward_masked(qkv, b, t, c, nh, causal);
    (out, lse)
}

/// [`flash_attention_forward_masked`] with attention dropout: out = Σ_j P_ij M_ij v_j, lse the
/// softmax's (the mask weighs the values, not the sum).
pub fn flash_attention_forward_dropout(
    qkv: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
    dropout: &AttentionDropout,
) -> (Vec<f32>, Vec<f32>) {
    let (out, _, lse) = attention_forward_dropout(qkv, b, t, c, nh, causal, dropout);
    (out, lse)
}

/// The gradient of causal self-attention from the forward's `out` and `lse`.  dout, out:
/// [b, t, c], qkv: [b, t, 3c], lse: [b, nh, t] → dqkv: [b, t, 3c] (overwritten).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward(
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Vec<f32> {
    flash_attention_backward_masked(dout, qkv, out, lse, b, t, c, nh, true)
}

/// The gradient of [`flash_attention_forward_masked`] (`causal` as there).
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward_masked(
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
) -> Vec<f32> {
    backward(dout, qkv, out, lse, [b, t, c, nh], causal, None)
}

/// The gradient of [`flash_attention_forward_dropout`] (the same `dropout`: the same mask):
/// dP = (dO_i·v_j) M_ij, dS = P (dP − D_i) with D_i = dO_i·O_i still, dv_j = Σ_i P M dO_i.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_backward_dropout(
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    causal: bool,
    dropout: &AttentionDropout,
) -> Vec<f32> {
    backward(dout, qkv, out, lse, [b, t, c, nh], causal, Some(dropout))
}

/// `sizes`: b, t, c, nh.
fn backward(
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    sizes: [usize; 4],
    causal: bool,
    dropout: Option<&AttentionDropout>,
) -> Vec<f32> {
    let [b, t, c, nh] = sizes;
    assert!(nh > 0 && c.is_multiple_of(nh), "flash_attention_backward: c = {c} must be a multiple of nh = {nh}");
    assert_eq!(qkv.len(), b * t * 3 * c, "flash_attention_backward: qkv must be b × t × 3c");
    assert_eq!(dout.len(), b * t * c, "flash_attention_backward: dout must be b × t × c");
    assert_eq!(out.len(), b * t * c, "flash_attention_backward: out must be b × t × c");
    assert_eq!(lse.len(), b * nh * t, "flash_attention_backward: lse must be b × nh × t");
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    let row = |part: usize, bi: usize, ti: usize, h: usize| (bi * t + ti) * 3 * c + part * c + h * hs;
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
    let mut dqkv = vec![0.0f64; b * t * 3 * c];
    for bi in 0..b {
        for h in 0..nh {
            for ti in 0..t {
                let o = (bi * t + ti) * c + h * hs;
                let (go, oi) = (&dout[o..][..hs], &out[o..][..hs]);
                let d_i = dot(go, oi);
                let l_i = lse[(bi * nh + h) * t + ti] as f64;
                let q = &qkv[row(0, bi, ti, h)..][..hs];
                for tj in 0..key_end(ti, t, causal) {
                    let (k, v) = (&qkv[row(1, bi, tj, h)..][..hs], &qkv[row(2, bi, tj, h)..][..hs]);
                    let p = (dot(q, k) * scale - l_i).exp();
                    let m = dropout.map_or(1.0, |d| d.weight(((bi * nh + h) * t + ti) * t + tj));
                    let ds = p * (dot(go, v) * m - d_i) * scale;
                    for d in 0..hs {
                        dqkv[row(0, bi, ti, h) + d] += ds * k[d] as f64;
                        dqkv[row(1, bi, tj, h) + d] += ds * q[d] as f64;
                        dqkv[row(2, bi, tj, h) + d] += p * m * go[d] as f64;
                    }
                }
            }
        }
    }
    dqkv.into_iter().map(|x| x as f32).collect()
}
