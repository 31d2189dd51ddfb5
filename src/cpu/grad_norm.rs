//! CPU reference of shaders/grad_norm.wgsl: clipping by global norm.

/// [min(1, max_norm / (‖grad‖₂ + 1e-6)), ‖grad‖₂] (PyTorch's `clip_grad_norm_`): the sum of
/// squares in f64, the norm rounded to f32 once, the factor in f32 as the shader computes it.
/// The shader sums the squares in f32, so a sum past f32's range is an infinite norm here too
/// (factor 0, as PyTorch's float32 CUDA reduction gives), even where the norm itself would fit.
/// A NaN norm gives the factor 1 (the gradients stay NaN).
/// grad: `[len]`.
pub fn clip_factor(grad: &[f32], max_norm: f32) -> [f32; 2] {
    let squares = grad.iter().map(|&g| g as f64 * g as f64).sum::<f64>();
    let norm = if squares > f32::MAX as f64 { f32::INFINITY } else { squares.sqrt() as f32 };
    let factor = max_norm / (norm + 1e-6);
    [if factor < 1.0 { factor } else { 1.0 }, norm]
}
