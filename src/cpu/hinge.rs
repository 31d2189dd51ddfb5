//! CPU reference of shaders/hinge.wgsl.

/// Binary hinge loss.  logits, targets: `[n]` (targets in {−1, +1} or {0, 1}; y = +1 where t > 0,
/// else −1) → (loss_rows `[n]` = max(0, 1 − y·z), dlogits `[n]` = (y·z < 1 ? −y : 0)·grad_scale,
/// correct_rows `[n]` = 1.0 where (z > 0) == (y > 0)).
pub fn hinge(logits: &[f32], targets: &[f32], grad_scale: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(logits.len(), targets.len(), "hinge: logits and targets must have n values");
    let sign = |t: f32| if t > 0.0 { 1.0f32 } else { -1.0 };
    // NaN stays NaN (f32::max would give 0), as on the GPU.
    let hinge = |m: f32| if m < 0.0 { 0.0 } else { m };
    let loss = logits.iter().zip(targets).map(|(&z, &t)| hinge(1.0 - sign(t) * z)).collect();
    let dlogits = logits
        .iter()
        .zip(targets)
        .map(|(&z, &t)| if sign(t) * z < 1.0 { -sign(t) * grad_scale } else { 0.0 })
        .collect();
    let correct = logits.iter().zip(targets).map(|(&z, &t)| ((z > 0.0) == (t > 0.0)) as u32 as f32).collect();
    (loss, dlogits, correct)
}
