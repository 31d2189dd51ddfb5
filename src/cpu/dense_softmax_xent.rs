//! CPU reference of shaders/dense_softmax_xent.wgsl.

use crate::activation::Activation;

/// The output layer and its softmax cross-entropy, forward and backward, for one batch:
/// h: [rows, k] (the layer below's output, activation `act`), w: [k, c], b: `[c]`, labels: `[rows]`
/// → (dz [rows, c] = (softmax(h·W + b) − onehot)·grad_scale, dh [rows, k] = (dz·Wᵀ) ⊙ act′(h),
/// Σ loss, Σ correct): what `matmul` + `softmax_xent` + `matmul` (Bᵀ, ActGrad epilogue) compute.
#[allow(clippy::too_many_arguments)]
pub fn dense_softmax_xent(
    h: &[f32],
    w: &[f32],
    b: &[f32],
    labels: &[u32],
    rows: usize,
    k: usize,
    c: usize,
    grad_scale: f32,
    act: Activation,
) -> (Vec<f32>, Vec<f32>, f32, f32) {
    assert!(!act.saves_input(), "dense_softmax_xent: h is the output of act, and {} needs its input", act.name());
    let mut logits = super::matmul(h, w, rows, k, c, false, false);
    for (i, z) in logits.iter_mut().enumerate() {
        *z += b[i % c];
    }
    let (loss, dz, correct) = super::softmax_xent(&logits, labels, rows, c, grad_scale);
    let mut dh = super::matmul(&dz, w, rows, c, k, false, true);
    for (g, &y) in dh.iter_mut().zip(h) {
        *g *= act.derivative_from_saved(y);
    }
    (dz, dh, loss.iter().sum(), correct.iter().sum())
}
