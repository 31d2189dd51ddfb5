//! CPU reference of shaders/positional.wgsl: a learned positional embedding added to each
//! sample of a batch, and its gradient summed over the batch.

/// out[b, t, :] = x[b, t, :] + pos[t, :].  x: [batch, block, cols]; pos: [block_max ≥ block, cols]
/// → out [batch, block, cols].
pub fn positional_add_forward(x: &[f32], pos: &[f32], batch: usize, block: usize, cols: usize) -> Vec<f32> {
    assert_eq!(x.len(), batch * block * cols, "positional_add_forward: x must be batch × block × cols");
    assert!(pos.len() >= block * cols, "positional_add_forward: pos has fewer than block rows");
    x.chunks_exact(block * cols).flat_map(|sample| sample.iter().zip(pos).map(|(a, b)| a + b)).collect()
}

/// dpos[t, :] = Σ_b dy[b, t, :] for t < block, 0 for block ≤ t < block_max (dx is dy itself).
/// dy: [batch, block, cols] → dpos [block_max, cols].
pub fn positional_add_backward(dy: &[f32], batch: usize, block: usize, block_max: usize, cols: usize) -> Vec<f32> {
    assert_eq!(dy.len(), batch * block * cols, "positional_add_backward: dy must be batch × block × cols");
    let mut dpos = vec![0.0f32; block_max * cols];
    for sample in dy.chunks_exact(block * cols) {
        dpos.iter_mut().zip(sample).for_each(|(d, &g)| *d += g);
    }
    dpos
}
