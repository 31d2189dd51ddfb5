//! CPU reference of shaders/sigmoid_bce.wgsl.

/// Sigmoid + binary cross-entropy.  logits, targets: `[n]` →
/// (loss_rows `[n]` = max(z, 0) − z·t + log(1 + exp(−|z|)), dlogits `[n]` = (σ(z) − t)·grad_scale,
/// correct_rows `[n]` = 1.0 where (z > 0) == (t > 0.5)).
pub fn sigmoid_bce(logits: &[f32], targets: &[f32], grad_scale: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(logits.len(), targets.len(), "sigmoid_bce: logits and targets must have n values");
    let loss = logits.iter().zip(targets).map(|(&z, &t)| z.max(0.0) - z * t + (-z.abs()).exp().ln_1p()).collect();
    let dlogits = logits.iter().zip(targets).map(|(&z, &t)| (sigmoid(z) - t) * grad_scale).collect();
    let correct = logits.iter().zip(targets).map(|(&z, &t)| ((z > 0.0) == (t > 0.5)) as u32 as f32).collect();
    (loss, dlogits, correct)
}

/// σ(z) = 1 / (1 + exp(−z)), exponentiating only −|z|.
pub fn sigmoid(z: f32) -> f32 {
    let e = (-z.abs()).exp();
    if z >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// [`sigmoid_bce`] against integer labels 0/1 (sigmoid_bce.wgsl with `TARGETS_U32`): each label
/// is taken as the f32 target 0.0 or 1.0.
pub fn sigmoid_bce_labels(logits: &[f32], labels: &[u32], grad_scale: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let targets: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    sigmoid_bce(logits, &targets, grad_scale)
}
