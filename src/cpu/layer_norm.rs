//! CPU reference of shaders/layer_norm.wgsl (sums in f64): PyTorch's `LayerNorm(cols)` over the
//! last axis, biased variance, γ and β each optional.

/// Forward: y = (x − μ)·rstd·γ + β per row (γ absent: 1, β absent: 0), rstd = 1/√(σ² + eps).
/// x: [rows, cols]; gamma, beta: `[cols]` → (y [rows, cols], mean `[rows]`, rstd `[rows]`).
pub fn layer_norm_forward(
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    rows: usize,
    cols: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), rows * cols, "layer_norm_forward: x must be rows × cols");
    let mut y = Vec::with_capacity(x.len());
    let (mut mean, mut rstd) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    for row in x.chunks_exact(cols) {
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / cols as f64;
        let rs = 1.0 / (var + eps as f64).sqrt();
        for (c, &v) in row.iter().enumerate() {
            let g = gamma.map_or(1.0, |g| g[c] as f64);
            let b = beta.map_or(0.0, |b| b[c] as f64);
            y.push(((v as f64 - m) * rs * g + b) as f32);
        }
        mean.push(m as f32);
        rstd.push(rs as f32);
    }
    (y, mean, rstd)
}

/// Backward, with x̂ = (x − μ)·rstd and g = dy·γ:
///   dx = rstd·(g − mean_cols(g) − x̂·mean_cols(g·x̂)),  dγ = Σ_rows dy·x̂,  dβ = Σ_rows dy.
/// dy, x: [rows, cols]; gamma: `[cols]` (absent: 1); mean, rstd: `[rows]` from the forward
/// → (dx [rows, cols], dgamma `[cols]`, dbeta `[cols]`).
pub fn layer_norm_backward(
    dy: &[f32],
    x: &[f32],
    gamma: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
    rows: usize,
    cols: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), rows * cols, "layer_norm_backward: x must be rows × cols");
    assert_eq!(dy.len(), rows * cols, "layer_norm_backward: dy must be rows × cols");
    let mut dx = Vec::with_capacity(x.len());
    let (mut dgamma, mut dbeta) = (vec![0.0f64; cols], vec![0.0f64; cols]);
    for r in 0..rows {
        let (m, rs) = (mean[r] as f64, rstd[r] as f64);
        let xhat: Vec<f64> = x[r * cols..(r + 1) * cols].iter().map(|&v| (v as f64 - m) * rs).collect();
        let dyr = &dy[r * cols..(r + 1) * cols];
        let g: Vec<f64> = dyr.iter().enumerate().map(|(c, &d)| d as f64 * gamma.map_or(1.0, |g| g[c] as f64)).collect();
        let mean_g = g.iter().sum::<f64>() / cols as f64;
        let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / cols as f64;
        for c in 0..cols {
            dx.push((rs * (g[c] - mean_g - xhat[c] * mean_gx)) as f32);
            dgamma[c] += dyr[c] as f64 * xhat[c];
            dbeta[c] += dyr[c] as f64;
        }
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect();
    (dx, to_f32(dgamma), to_f32(dbeta))
}

/// The parameters' half of [`layer_norm_backward`]: (dgamma = Σ_rows dy·x̂, dbeta = Σ_rows dy),
/// each `[cols]`. dy, x: [rows, cols]; mean, rstd: `[rows]` from the forward.
pub fn layer_norm_backward_params(
    dy: &[f32],
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    rows: usize,
    cols: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (_, dgamma, dbeta) = layer_norm_backward(dy, x, None, mean, rstd, rows, cols);
    (dgamma, dbeta)
}

/// dx of [`layer_norm_backward`] plus `addend` ([rows, cols]): the input gradient where another
/// reader of the layer's input has its gradient to add (a residual stream's sum).
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_dx_add(
    dy: &[f32],
    x: &[f32],
    gamma: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
    addend: &[f32],
    rows: usize,
    cols: usize,
) -> Vec<f32> {
    assert_eq!(addend.len(), rows * cols, "layer_norm_backward_dx_add: addend must be rows × cols");
    let (dx, _, _) = layer_norm_backward(dy, x, gamma, mean, rstd, rows, cols);
    addend.iter().zip(dx).map(|(a, d)| a + d).collect()
}
