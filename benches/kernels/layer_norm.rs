//! The layer norm rows: the forward, the backward's input gradient and its parameters' half
//! (dγ, dβ: per-chunk column sums, then their total) at one shape, each against the CPU
//! reference. Bytes count each pass's reads and writes of [rows, cols] values.

use super::{time_cpu, up, Bench, Work};
use wgnn::internals::cpu;
use wgnn::internals::kernels::layer_norm::{
    layer_norm_backward, layer_norm_backward_params, layer_norm_forward, LAYER_NORM_EPS,
};
use wgnn::internals::rng::Rng;
use wgnn::Tensor;

/// `variant`: the lane width the wrapper takes (vec4 where cols is a multiple of 4).
pub fn bench_layer_norm(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let variant = if cols.is_multiple_of(4) { "vec4" } else { "f32" };
    let shape = format!("{rows}x{cols}");
    let labels = ["layer_norm_forward", "layer_norm_backward_dx", "layer_norm_backward_params"];
    let label = |kernel: &str| format!("{kernel} {variant} {shape}");
    if !labels.iter().any(|l| bench.wants(&label(l))) {
        return;
    }
    let gpu = bench.gpu.clone();
    let x: Vec<f32> = (0..rows * cols).map(|_| 1.0 + 2.0 * rng.normal()).collect();
    let gamma = rng.vec_uniform(cols, 0.5, 2.0);
    let beta = rng.vec_uniform(cols, -1.0, 1.0);
    let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (cpu_forward_s, (y, mean, rstd)) =
        time_cpu(|| cpu::layer_norm_forward(&x, Some(&gamma), Some(&beta), rows, cols, LAYER_NORM_EPS));
    let (cpu_backward_s, (dx, dgamma, _)) =
        time_cpu(|| cpu::layer_norm_backward(&dy, &x, Some(&gamma), &mean, &rstd, rows, cols));
    let (x_t, dy_t) = (up(&gpu, &[rows, cols], &x), up(&gpu, &[rows, cols], &dy));
    let (gamma_t, beta_t) = (up(&gpu, &[cols], &gamma), up(&gpu, &[cols], &beta));
    let (mean_t, rstd_t) = (up(&gpu, &[rows], &mean), up(&gpu, &[rows], &rstd));
    let zeros = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let (y_t, dx_t, dgamma_t, dbeta_t) = (zeros(&[rows, cols]), zeros(&[rows, cols]), zeros(&[cols]), zeros(&[cols]));
    let (fwd_mean, fwd_rstd) = (zeros(&[rows]), zeros(&[rows]));
    let values = (rows * cols * 4) as f64;
    let tol = (1e-4, 1e-4);
    if bench.wants(&label("layer_norm_forward")) {
        let plan =
            layer_norm_forward(&gpu, &x_t, Some(&gamma_t), Some(&beta_t), &y_t, &fwd_mean, &fwd_rstd, LAYER_NORM_EPS)
                .unwrap();
        // x read 3 times, y written once.
        let work = Work::Bytes(4.0 * values);
        let s = shape.clone();
        bench.row("layer_norm_forward", variant, s, true, &plan, &y_t, &y, tol, work, cpu_forward_s, None);
    }
    if bench.wants(&label("layer_norm_backward_dx")) {
        let plan =
            layer_norm_backward(&gpu, &dy_t, &x_t, Some(&gamma_t), &mean_t, &rstd_t, &dx_t, None, None, false).unwrap();
        // dy and x read twice each, dx written once.
        let work = Work::Bytes(5.0 * values);
        let s = shape.clone();
        bench.row("layer_norm_backward_dx", variant, s, true, &plan, &dx_t, &dx, tol, work, cpu_backward_s, None);
    }
    if bench.wants(&label("layer_norm_backward_params")) {
        let plan =
            layer_norm_backward_params(&gpu, &dy_t, &x_t, &mean_t, &rstd_t, Some(&dgamma_t), Some(&dbeta_t), false)
                .unwrap();
        // dy and x read once each; dγ checked here, dβ by the tests.
        let (work, tol) = (Work::Bytes(2.0 * values), (1e-3, 1e-4));
        let (k, s) = ("layer_norm_backward_params", shape);
        bench.row(k, variant, s, true, &plan, &dgamma_t, &dgamma, tol, work, cpu_backward_s, None);
    }
}
