//! CPU reference of shaders/mse.wgsl.

/// Mean squared error.  pred, targets: [n, d] →
/// (loss_rows `[n]` = mean over d of (p − t)², dpred [n, d] = 2(p − t)/d · grad_scale,
/// abs_rows `[n]` = mean over d of |p − t|).
pub fn mse(pred: &[f32], targets: &[f32], n: usize, d: usize, grad_scale: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(pred.len(), n * d, "mse: predictions must be n × d");
    assert_eq!(targets.len(), n * d, "mse: targets must be n × d");
    let inv_d = 1.0 / d as f32;
    let dscale = 2.0 * inv_d * grad_scale;
    let mut loss = vec![0.0f32; n];
    let mut dpred = vec![0.0f32; n * d];
    let mut abs = vec![0.0f32; n];
    for r in 0..n {
        let (mut sq, mut ab) = (0.0f32, 0.0f32);
        for c in 0..d {
            let e = pred[r * d + c] - targets[r * d + c];
            sq += e * e;
            ab += e.abs();
            dpred[r * d + c] = e * dscale;
        }
        loss[r] = sq * inv_d;
        abs[r] = ab * inv_d;
    }
    (loss, dpred, abs)
}
