//! CPU reference of shaders/dropout.wgsl: the same hash, so the masks are bit-identical.

/// PCG-RXS-M-XS hash of one u32 (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020).
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The random word of element `index` at (seed, step): two keyed rounds over the index.
pub fn dropout_hash(seed: u32, step: u32, index: u32) -> u32 {
    let key = pcg_hash(seed ^ pcg_hash(step));
    pcg_hash(pcg_hash(index ^ key) ^ pcg_hash(key))
}

/// The hash threshold and mask scale for rate p in [0, 1): keep iff hash ≥ ⌊p·2³²⌋, so
/// P(keep) = 1 − p to within 2⁻³²; kept values are scaled by 1 / (1 − p).
pub fn dropout_constants(rate: f32) -> (u32, f32) {
    assert!((0.0..1.0).contains(&rate), "dropout: rate {rate} must be in [0, 1)");
    let threshold = (rate as f64 * 4_294_967_296.0).floor().min(u32::MAX as f64) as u32;
    (threshold, 1.0 / (1.0 - rate))
}

/// Inverted dropout.  x: `[len]` → (y `[len]`, mask `[len]`); `mask[i]` is 0 or 1/(1−p), y = x ⊙ mask.
pub fn dropout_forward(x: &[f32], rate: f32, seed: u32, step: u32) -> (Vec<f32>, Vec<f32>) {
    assert!(x.len() <= u32::MAX as usize, "dropout_forward: at most 2^32 − 1 values");
    let (threshold, scale) = dropout_constants(rate);
    let mask: Vec<f32> =
        (0..x.len()).map(|i| if dropout_hash(seed, step, i as u32) >= threshold { scale } else { 0.0 }).collect();
    let y = x.iter().zip(&mask).map(|(&v, &m)| v * m).collect();
    (y, mask)
}

/// dX = dY ⊙ mask.  dy, mask: `[len]` → dx: `[len]`.
pub fn dropout_backward(dy: &[f32], mask: &[f32]) -> Vec<f32> {
    assert_eq!(dy.len(), mask.len(), "dropout_backward: dy and mask must have the same length");
    dy.iter().zip(mask).map(|(&g, &m)| g * m).collect()
}
