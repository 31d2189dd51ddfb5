//! CPU reference of shaders/totals.wgsl.

/// (Σ a, Σ b).  a, b: `[rows]` → `[2]`. Summed in f64 (the GPU's fixed-order f32 tree differs in the
/// last bits).
pub fn totals(a: &[f32], b: &[f32]) -> [f32; 2] {
    assert_eq!(a.len(), b.len(), "totals: a and b must have the same length");
    let sum = |x: &[f32]| x.iter().map(|&v| v as f64).sum::<f64>() as f32;
    [sum(a), sum(b)]
}
