//! CPU reference of shaders/softmax_grad.wgsl.

/// dz[r, c] = y[r, c]·(dy[r, c] − Σ_c' dy[r, c']·y[r, c']).  dy, y: [rows, cols] → dz: [rows, cols].
pub fn softmax_backward(dy: &[f32], y: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(dy.len(), rows * cols, "softmax_backward: dy must be rows × cols");
    assert_eq!(y.len(), rows * cols, "softmax_backward: y must be rows × cols");
    let mut dz = vec![0.0f32; rows * cols];
    for ((dz_row, dy_row), y_row) in dz.chunks_exact_mut(cols).zip(dy.chunks_exact(cols)).zip(y.chunks_exact(cols)) {
        let dot: f32 = dy_row.iter().zip(y_row).map(|(&g, &p)| g * p).sum();
        for ((d, &g), &p) in dz_row.iter_mut().zip(dy_row).zip(y_row) {
            *d = p * (g - dot);
        }
    }
    dz
}
