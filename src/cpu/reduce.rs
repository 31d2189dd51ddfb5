//! CPU reference of shaders/reduce.wgsl.

/// Σ_r x[r, c] for each column.  x: [rows, cols] → `[cols]`.
pub fn column_sum(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * cols, "column_sum: x must be rows × cols");
    let mut out = vec![0.0f32; cols];
    for r in 0..rows {
        for (c, o) in out.iter_mut().enumerate() {
            *o += x[r * cols + c];
        }
    }
    out
}
