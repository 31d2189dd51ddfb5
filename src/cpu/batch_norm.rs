//! CPU reference of shaders/batch_norm.wgsl (sums in f64). PyTorch's BatchNorm1d conventions:
//! the batch is normalised with the biased variance; the running variance is updated with the
//! unbiased one; running = (1 − momentum)·running + momentum·batch.

use crate::activation::Activation;
use crate::config::BatchNormConfig;
use crate::cpu::pool2d::Pool2dDims;

/// Per-feature mean and biased variance.  x: [rows, cols] → (mean [cols], var [cols]).
fn column_mean_var(x: &[f32], rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0f64; cols];
    for row in x.chunks_exact(cols) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    let mut var = vec![0.0f64; cols];
    for row in x.chunks_exact(cols) {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v as f64 - m) * (v as f64 - m);
        }
    }
    var.iter_mut().for_each(|s| *s /= rows as f64);
    (mean, var)
}

/// Training forward: y = act(γ·(x − μ)/√(σ² + eps) + β) with the batch's μ and biased σ²
/// (`act` element-wise; identity for none); updates the running averages in place.
/// x: [rows ≥ 2, cols]; gamma, beta, running_mean, running_var: `[cols]` → (y [rows, cols],
/// mean `[cols]`, inv_std `[cols]`).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    rows: usize,
    cols: usize,
    cfg: &BatchNormConfig,
    act: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), rows * cols, "batch_norm_forward_train: x must be rows × cols");
    assert!(rows >= 2, "batch_norm_forward_train: training needs at least 2 rows");
    let (mean, var) = column_mean_var(x, rows, cols);
    let inv_std: Vec<f32> = var.iter().map(|&v| (1.0 / (v + cfg.eps as f64).sqrt()) as f32).collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let mom = cfg.momentum;
    for c in 0..cols {
        running_mean[c] = (1.0 - mom) * running_mean[c] + mom * mean[c];
        let unbiased = (var[c] * rows as f64 / (rows - 1) as f64) as f32;
        running_var[c] = (1.0 - mom) * running_var[c] + mom * unbiased;
    }
    let y = normalize(x, cols, |c, v| act.forward(gamma[c] * ((v - mean[c]) * inv_std[c]) + beta[c]));
    (y, mean, inv_std)
}

/// The training forward with the running statistics deferred: (y, mean, inv_std, pending_var),
/// pending_var being the batch's unbiased variance for [`batch_norm_commit_running`].
/// x: [rows ≥ 2, cols]; gamma, beta: `[cols]`; `act` as in [`batch_norm_forward_train`].
pub fn batch_norm_forward_train_deferred(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    cols: usize,
    cfg: &BatchNormConfig,
    act: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), rows * cols, "batch_norm_forward_train_deferred: x must be rows × cols");
    assert!(rows >= 2, "batch_norm_forward_train_deferred: training needs at least 2 rows");
    let (mean, var) = column_mean_var(x, rows, cols);
    let inv_std: Vec<f32> = var.iter().map(|&v| (1.0 / (v + cfg.eps as f64).sqrt()) as f32).collect();
    let pending_var = var.iter().map(|&v| (v * rows as f64 / (rows - 1) as f64) as f32).collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let y = normalize(x, cols, |c, v| act.forward(gamma[c] * ((v - mean[c]) * inv_std[c]) + beta[c]));
    (y, mean, inv_std, pending_var)
}

/// running_mean = (1 − momentum)·running_mean + momentum·batch_mean, running_var likewise with
/// pending_var; nothing when `skip` (the step was skipped).  All `[cols]`.
pub fn batch_norm_commit_running(
    batch_mean: &[f32],
    pending_var: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    skip: bool,
    cfg: &BatchNormConfig,
) {
    if skip {
        return;
    }
    let m = cfg.momentum;
    for (r, &b) in running_mean.iter_mut().zip(batch_mean) {
        *r = (1.0 - m) * *r + m * b;
    }
    for (r, &b) in running_var.iter_mut().zip(pending_var) {
        *r = (1.0 - m) * *r + m * b;
    }
}

/// Inference forward: y = act(γ·(x − running_mean)/√(running_var + eps) + β).  x: [rows, cols];
/// gamma, beta, running_mean, running_var: `[cols]` → y: [rows, cols].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_inference(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    rows: usize,
    cols: usize,
    cfg: &BatchNormConfig,
    act: Activation,
) -> Vec<f32> {
    assert_eq!(x.len(), rows * cols, "batch_norm_forward_inference: x must be rows × cols");
    normalize(x, cols, |c, v| {
        act.forward(gamma[c] * ((v - running_mean[c]) / (running_var[c] + cfg.eps).sqrt()) + beta[c])
    })
}

fn normalize(x: &[f32], cols: usize, f: impl Fn(usize, f32) -> f32) -> Vec<f32> {
    x.iter().enumerate().map(|(i, &v)| f(i % cols, v)).collect()
}

/// Backward of the training forward, with x̂ = (x − mean)·inv_std:
///   dβ = Σ_r dy,  dγ = Σ_r dy·x̂,  dx = γ·inv_std·(dy − dβ/rows − x̂·dγ/rows).
/// dy, x: [rows, cols]; gamma, mean, inv_std (saved by the forward): `[cols]`
/// → (dx [rows, cols], dgamma `[cols]`, dbeta `[cols]`).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    rows: usize,
    cols: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), rows * cols, "batch_norm_backward: x must be rows × cols");
    assert_eq!(dy.len(), rows * cols, "batch_norm_backward: dy must be rows × cols");
    let xhat = |i: usize| ((x[i] - mean[i % cols]) * inv_std[i % cols]) as f64;
    let mut dbeta = vec![0.0f64; cols];
    let mut dgamma = vec![0.0f64; cols];
    for i in 0..rows * cols {
        dbeta[i % cols] += dy[i] as f64;
        dgamma[i % cols] += dy[i] as f64 * xhat(i);
    }
    let n = rows as f64;
    let dx = (0..rows * cols)
        .map(|i| {
            let c = i % cols;
            let g = (gamma[c] * inv_std[c]) as f64;
            (g * (dy[i] as f64 - dbeta[c] / n - xhat(i) * dgamma[c] / n)) as f32
        })
        .collect();
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect();
    (dx, to_f32(dgamma), to_f32(dbeta))
}

/// [`batch_norm_backward`] where dy is the input gradient of the max pooling above, through the
/// activation between: dy = pool_dy·act′(y) at each window's argmax (y the pool's output, equal
/// to its input there), 0 elsewhere. pool_dy, argmax, y `[rows, ho, wo, c]` of pooling `d` over
/// x `[rows·h·w, c]`. (dx, dγ, dβ).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_through_max_pool(
    pool_dy: &[f32],
    argmax: &[u32],
    y: &[f32],
    act: Activation,
    d: &Pool2dDims,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    inv_std: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(pool_dy.len(), y.len(), "batch_norm_backward_through_max_pool: dy and y must match");
    let mut dy = vec![0.0f32; x.len()];
    for ((&g, &at), &yv) in pool_dy.iter().zip(argmax).zip(y) {
        dy[at as usize] += g * act.derivative_from_saved(yv);
    }
    batch_norm_backward(&dy, x, gamma, mean, inv_std, x.len() / d.channels, d.channels)
}
