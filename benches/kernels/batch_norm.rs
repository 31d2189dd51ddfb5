//! The batch norm rows: the training forward, its statistics and the backward, against the CPU
//! reference.

use super::{time_cpu, up, Bench, Work};
use wgnn::internals::cpu;
use wgnn::internals::kernels::batch_norm::{
    batch_norm_backward, batch_norm_commit_running, batch_norm_forward_inference, batch_norm_forward_train,
    batch_norm_forward_train_deferred, BatchNormConfig,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Tensor};

pub(super) fn bench_batch_norm(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    let gpu = bench.gpu.clone();
    let cfg = BatchNormConfig::default();
    let x = rng.vec_uniform(rows * cols, -2.0, 2.0);
    let gamma = rng.vec_uniform(cols, 0.5, 1.5);
    let beta = rng.vec_uniform(cols, -0.5, 0.5);
    let (xt, gt, bt) = (up(&gpu, &[rows, cols], &x), up(&gpu, &[cols], &gamma), up(&gpu, &[cols], &beta));
    let feature = || Tensor::zeros(&gpu, &[cols]).unwrap();
    let (mean_t, inv_t, run_mean_t) = (feature(), feature(), feature());
    let run_var_t = up(&gpu, &[cols], &vec![1.0; cols]);
    let yt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
    let (mut run_mean, mut run_var) = (vec![0.0f32; cols], vec![1.0f32; cols]);
    let (y_want, mean, inv_std) = cpu::batch_norm_forward_train(
        &x,
        &gamma,
        &beta,
        &mut run_mean,
        &mut run_var,
        rows,
        cols,
        &cfg,
        Activation::Identity,
    );
    let bytes = 4.0 * (2 * rows * cols) as f64;
    if bench.wants(&format!("batch_norm_forward_train chunked {shape}")) {
        let plan = batch_norm_forward_train(
            &gpu,
            &xt,
            &gt,
            &bt,
            &yt,
            &mean_t,
            &inv_t,
            &run_mean_t,
            &run_var_t,
            &cfg,
            Activation::Identity,
        )
        .unwrap();
        let (cpu_s, _) = time_cpu(|| {
            let (mut m, mut v) = (vec![0.0f32; cols], vec![1.0f32; cols]);
            cpu::batch_norm_forward_train(&x, &gamma, &beta, &mut m, &mut v, rows, cols, &cfg, Activation::Identity)
        });
        let work = Work::Bytes(bytes + 4.0 * (rows * cols) as f64);
        bench.row(
            "batch_norm_forward_train",
            "chunked",
            shape.clone(),
            true,
            &plan,
            &yt,
            &y_want,
            (1e-4, 1e-4),
            work,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("batch_norm_forward_train deferred {shape}")) {
        let pending_t = feature();
        let plan = batch_norm_forward_train_deferred(
            &gpu,
            &xt,
            &gt,
            &bt,
            &yt,
            &mean_t,
            &inv_t,
            &pending_t,
            &cfg,
            Activation::Identity,
        )
        .unwrap();
        let (cpu_s, _) = time_cpu(|| {
            cpu::batch_norm_forward_train_deferred(&x, &gamma, &beta, rows, cols, &cfg, Activation::Identity)
        });
        let work = Work::Bytes(bytes + 4.0 * (rows * cols) as f64);
        bench.row(
            "batch_norm_forward_train",
            "deferred",
            shape.clone(),
            true,
            &plan,
            &yt,
            &y_want,
            (1e-4, 1e-4),
            work,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("batch_norm_commit_running cols {shape}")) {
        // One commit of the batch's statistics into running ones at (0, 1), as the first step's.
        let (_, batch_mean, _, pending) =
            cpu::batch_norm_forward_train_deferred(&x, &gamma, &beta, rows, cols, &cfg, Activation::Identity);
        let (bm, pv) = (up(&gpu, &[cols], &batch_mean), up(&gpu, &[cols], &pending));
        let (rm, rv) = (feature(), up(&gpu, &[cols], &vec![1.0; cols]));
        let plan = batch_norm_commit_running(&gpu, &bm, &pv, &rm, &rv, None, &cfg).unwrap();
        let (cpu_s, want) = time_cpu(|| {
            let (mut m, mut v) = (vec![0.0f32; cols], vec![1.0f32; cols]);
            cpu::batch_norm_commit_running(&batch_mean, &pending, &mut m, &mut v, false, &cfg);
            m
        });
        let work = Work::Bytes(4.0 * (6 * cols) as f64);
        bench.row(
            "batch_norm_commit_running",
            "cols",
            shape.clone(),
            true,
            &plan,
            &rm,
            &want,
            (1e-5, 1e-5),
            work,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("batch_norm_forward_inference rows {shape}")) {
        let rm = up(&gpu, &[cols], &mean);
        let var: Vec<f32> = inv_std.iter().map(|s| 1.0 / (s * s) - cfg.eps).collect();
        let rv = up(&gpu, &[cols], &var);
        let plan =
            batch_norm_forward_inference(&gpu, &xt, &gt, &bt, &rm, &rv, &yt, &cfg, Activation::Identity).unwrap();
        let (cpu_s, want) = time_cpu(|| {
            cpu::batch_norm_forward_inference(&x, &gamma, &beta, &mean, &var, rows, cols, &cfg, Activation::Identity)
        });
        bench.row(
            "batch_norm_forward_inference",
            "rows",
            shape.clone(),
            true,
            &plan,
            &yt,
            &want,
            (1e-4, 1e-4),
            Work::Bytes(bytes),
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("batch_norm_backward chunked {shape}")) {
        let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
        let dyt = up(&gpu, &[rows, cols], &dy);
        let (mt, it) = (up(&gpu, &[cols], &mean), up(&gpu, &[cols], &inv_std));
        let (dxt, dgt, dbt) = (Tensor::zeros(&gpu, &[rows, cols]).unwrap(), feature(), feature());
        let plan = batch_norm_backward(&gpu, &dyt, &xt, &gt, &mt, &it, &dxt, &dgt, &dbt, false).unwrap();
        let (cpu_s, (want, _, _)) = time_cpu(|| cpu::batch_norm_backward(&dy, &x, &gamma, &mean, &inv_std, rows, cols));
        let work = Work::Bytes(4.0 * (5 * rows * cols) as f64);
        bench.row("batch_norm_backward", "chunked", shape, true, &plan, &dxt, &want, (1e-4, 1e-3), work, cpu_s, None);
    }
}
