//! The element-wise and per-parameter rows: bias + activation both ways, column sums, the row
//! gather, the clip factor, every optimizer's update and dropout.

use super::{time_cpu, up, Bench, Work};
use wgnn::internals::cpu;
use wgnn::internals::kernels::bias_act::{bias_act_backward, bias_act_forward};
use wgnn::internals::kernels::dropout::{dropout_backward, dropout_forward};
use wgnn::internals::kernels::gather::{gather_rows, BatchStart, GpuRows};
use wgnn::internals::kernels::grad_norm::clip_factor;
use wgnn::internals::kernels::optimizer::{
    adadelta_update, adagrad_update, adam_update, adamw_update, rmsprop_update, sgd_update, AdadeltaConfig,
    AdagradConfig, AdamConfig, EpsPlacement, LrSchedule, RmsPropConfig, SgdConfig,
};
use wgnn::internals::kernels::reduce::column_sum;
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Tensor};

pub(super) fn bench_bias_act_forward(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols} relu");
    if !bench.wants(&format!("bias_act_forward fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let x = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let bias = rng.vec_uniform(cols, -1.0, 1.0);
    let (xt, bt, yt) = (
        Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap(),
        Tensor::from_slice(&gpu, &[cols], &bias).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
    );
    let plan = bias_act_forward(&gpu, &xt, Some(&bt), &yt, Activation::Relu).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::bias_act_forward(&x, Some(&bias), rows, cols, Activation::Relu));
    let bytes = 4.0 * (2 * rows * cols + cols) as f64;
    bench.row(
        "bias_act_forward",
        "fused",
        shape,
        true,
        &plan,
        &yt,
        &want,
        (1e-6, 1e-5),
        Work::Bytes(bytes),
        cpu_s,
        None,
    );
}

pub(super) fn bench_bias_act_backward(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols} relu +db");
    if !bench.wants(&format!("bias_act_backward fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let y = cpu::bias_act_forward(&rng.vec_uniform(rows * cols, -1.0, 1.0), None, rows, cols, Activation::Relu);
    let (dyt, yt) =
        (Tensor::from_slice(&gpu, &[rows, cols], &dy).unwrap(), Tensor::from_slice(&gpu, &[rows, cols], &y).unwrap());
    let (dzt, dbt) = (Tensor::zeros(&gpu, &[rows, cols]).unwrap(), Tensor::zeros(&gpu, &[cols]).unwrap());
    let plan = bias_act_backward(&gpu, &dyt, &yt, &dzt, Some(&dbt), Activation::Relu, false).unwrap();
    let (cpu_s, (_, db)) = time_cpu(|| cpu::bias_act_backward(&dy, &y, rows, cols, Activation::Relu));
    // dy and y read, dz written, then dz read again by the column sum.
    let bytes = 4.0 * (4 * rows * cols + cols) as f64;
    // Validated on db, which depends on every dz.
    bench.row(
        "bias_act_backward",
        "fused",
        shape,
        true,
        &plan,
        &dbt,
        &db,
        (1e-3, 1e-4),
        Work::Bytes(bytes),
        cpu_s,
        None,
    );
}

pub(super) fn bench_column_sum(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    if !bench.wants(&format!("column_sum chunked {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let x = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (xt, out) = (Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap(), Tensor::zeros(&gpu, &[cols]).unwrap());
    let plan = column_sum(&gpu, &xt, &out, false).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::column_sum(&x, rows, cols));
    bench.row(
        "column_sum",
        "chunked",
        shape,
        true,
        &plan,
        &out,
        &want,
        (1e-3, 1e-4),
        Work::Bytes(4.0 * (rows * cols) as f64),
        cpu_s,
        None,
    );
}

/// A training batch gathered from a resident u8 data set (MNIST-like), scaled by 1/255.
pub(super) fn bench_gather(bench: &mut Bench, rng: &mut Rng, total: usize, dim: usize, rows: usize) {
    let shape = format!("{rows}x{dim} of {total}");
    if !bench.wants(&format!("gather_rows u8 {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let bytes: Vec<u8> = (0..total * dim).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u32> = (0..total).map(|_| rng.below(10) as u32).collect();
    let mut order: Vec<u32> = (0..total as u32).collect();
    rng.shuffle(&mut order);
    let src = GpuRows {
        scale: 1.0 / 255.0,
        ..GpuRows::upload(&gpu, &wgnn::data::Features::U8(bytes.clone()), &labels, dim).unwrap()
    };
    let idx = Tensor::from_u32(&gpu, &[total], &order).unwrap();
    let step = Tensor::zeros_u32(&gpu, &[2]).unwrap();
    let (x, y) = (Tensor::zeros(&gpu, &[rows, dim]).unwrap(), Tensor::zeros_u32(&gpu, &[rows]).unwrap());
    let start = BatchStart::Counter { epoch_step: &step, stride: rows, parity: 0, t: None };
    let plan = gather_rows(&gpu, &src, &idx, start, &x, &y).unwrap();
    let as_f32: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
    let (cpu_s, (want, _)) =
        time_cpu(|| cpu::gather_rows(&as_f32, &labels, dim, &order, 0, rows, 1.0 / 255.0, 0.0, None));
    let moved = (rows * dim) as f64 * 5.0 + 8.0 * rows as f64;
    bench.row("gather_rows", "u8", shape, true, &plan, &x, &want, (1e-6, 1e-6), Work::Bytes(moved), cpu_s, None);
}

/// Clipping's factor and norm over `len` gradients (two dispatches), validated against the CPU.
pub(super) fn bench_clip_factor(bench: &mut Bench, rng: &mut Rng, len: usize) {
    let variant = if len.is_multiple_of(4) { "vec4" } else { "f32" };
    let shape = format!("{len}");
    if !bench.wants(&format!("clip_factor {variant} {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let g = rng.vec_uniform(len, -1.0, 1.0);
    let grad = up(&gpu, &[len], &g);
    let out = Tensor::zeros(&gpu, &[2]).unwrap();
    let plan = clip_factor(&gpu, &grad, &out, 1.0).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::clip_factor(&g, 1.0));
    let work = Work::Bytes(len as f64 * 4.0);
    bench.row("clip_factor", variant, shape, true, &plan, &out, &want, (0.0, 2e-6), work, cpu_s, None);
}

/// One in-place update of `len` parameters, validated on the parameters after the first run.
pub(super) fn bench_optimizer(bench: &mut Bench, rng: &mut Rng, kernel: &str, len: usize) {
    let shape = format!("{len}");
    // Whole tensors (offset 0): the vec4 module takes every length that is a multiple of 4.
    let variant = if len.is_multiple_of(4) { "vec4" } else { "scalar" };
    if !bench.wants(&format!("{kernel} {variant} {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let param = rng.vec_uniform(len, -1.0, 1.0);
    let grad = rng.vec_uniform(len, -1.0, 1.0);
    let (pt, gt) = (up(&gpu, &[len], &param), up(&gpu, &[len], &grad));
    let states: Vec<Tensor> = (0..2).map(|_| Tensor::zeros(&gpu, &[len]).unwrap()).collect();
    let step = Tensor::from_u32(&gpu, &[1], &[1]).unwrap();
    // time_cpu repeats its closure: each call starts from fresh copies (the copy is timed too).
    let fresh = || (param.clone(), vec![0.0f32; len], vec![0.0f32; len]);
    let schedule = LrSchedule::Constant;
    let adam = AdamConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-7,
        weight_decay: 0.01,
        schedule,
        eps_placement: EpsPlacement::Torch,
        decay: wgnn::config::DecayMask::All,
    };
    let (plan, (cpu_s, want), state_tensors) = match kernel {
        "sgd_update" => {
            let cfg = SgdConfig { lr: 0.01, momentum: 0.9, nesterov: true, weight_decay: 0.0, schedule };
            let plan = sgd_update(&gpu, &pt, &gt, Some(&states[0]), &cfg).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, _) = fresh();
                    cpu::sgd_update(&mut p, &grad, Some(&mut s1), &cfg);
                    p
                }),
                1,
            )
        }
        "adam_update" => {
            let plan = adam_update(&gpu, &pt, &gt, &states[0], &states[1], &step, &adam).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, mut s2) = fresh();
                    cpu::adam_update(&mut p, &grad, &mut s1, &mut s2, 1, &adam);
                    p
                }),
                2,
            )
        }
        "adamw_update" => {
            let plan = adamw_update(&gpu, &pt, &gt, &states[0], &states[1], &step, &adam).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, mut s2) = fresh();
                    cpu::adamw_update(&mut p, &grad, &mut s1, &mut s2, 1, &adam);
                    p
                }),
                2,
            )
        }
        "rmsprop_update" => {
            let cfg = RmsPropConfig {
                lr: 1e-3,
                rho: 0.9,
                eps: 1e-7,
                momentum: 0.0,
                weight_decay: 0.0,
                schedule,
                eps_placement: EpsPlacement::Torch,
            };
            let plan = rmsprop_update(&gpu, &pt, &gt, &states[0], None, Some(&step), &cfg).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, _) = fresh();
                    cpu::rmsprop_update(&mut p, &grad, &mut s1, None, 1, &cfg);
                    p
                }),
                1,
            )
        }
        "adagrad_update" => {
            let cfg = AdagradConfig {
                lr: 0.01,
                initial_accumulator: 0.1,
                eps: 1e-7,
                weight_decay: 0.0,
                schedule,
                eps_placement: EpsPlacement::Torch,
            };
            let plan = adagrad_update(&gpu, &pt, &gt, &states[0], &step, &cfg).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, _) = fresh();
                    cpu::adagrad_update(&mut p, &grad, &mut s1, 1, &cfg);
                    p
                }),
                1,
            )
        }
        "adadelta_update" => {
            let cfg = AdadeltaConfig { lr: 1.0, rho: 0.95, eps: 1e-7, weight_decay: 0.0, schedule };
            let plan = adadelta_update(&gpu, &pt, &gt, &states[0], &states[1], Some(&step), &cfg).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, mut s2) = fresh();
                    cpu::adadelta_update(&mut p, &grad, &mut s1, &mut s2, 1, &cfg);
                    p
                }),
                2,
            )
        }
        other => panic!("no optimizer bench for {other}"),
    };
    // param read and written, grad read, each state read and written.
    let bytes = 4.0 * len as f64 * (3 + 2 * state_tensors) as f64;
    let family = if variant == "vec4" { "optimizer_vec4" } else { "optimizer" };
    assert_eq!(plan.dispatches[0].label, format!("{family}::{kernel}"), "{kernel} {shape}");
    bench.row(kernel, variant, shape, true, &plan, &pt, &want, (1e-6, 1e-5), Work::Bytes(bytes), cpu_s, None);
}

pub(super) fn bench_dropout(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols} p=0.5");
    let gpu = bench.gpu.clone();
    let x = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let xt = up(&gpu, &[rows, cols], &x);
    let (yt, mt, dxt) = (
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
    );
    let step = Tensor::from_u32(&gpu, &[1], &[3]).unwrap();
    let bytes = 4.0 * (3 * rows * cols) as f64;
    if bench.wants(&format!("dropout_forward hash {shape}")) {
        let plan = dropout_forward(&gpu, &xt, &yt, &mt, 0.5, 7, &step, 0).unwrap();
        let (cpu_s, (want, _)) = time_cpu(|| cpu::dropout_forward(&x, 0.5, 7, 3));
        bench.row(
            "dropout_forward",
            "hash",
            shape.clone(),
            true,
            &plan,
            &yt,
            &want,
            (0.0, 0.0),
            Work::Bytes(bytes),
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("dropout_backward mask {shape}")) {
        let (_, mask) = cpu::dropout_forward(&x, 0.5, 7, 3);
        let mt = up(&gpu, &[rows, cols], &mask);
        let plan = dropout_backward(&gpu, &xt, &mt, &dxt).unwrap();
        let (cpu_s, want) = time_cpu(|| cpu::dropout_backward(&x, &mask));
        bench.row(
            "dropout_backward",
            "mask",
            shape,
            true,
            &plan,
            &dxt,
            &want,
            (0.0, 0.0),
            Work::Bytes(bytes),
            cpu_s,
            None,
        );
    }
}
