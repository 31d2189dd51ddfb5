//! The loss rows: softmax cross-entropy (alone and fused with the output layer), softmax and its
//! backward, the step guard, the single-output losses and mean squared error.

use super::{time_cpu, up, Bench, Work};
use wgnn::internals::cpu;
use wgnn::internals::kernels::dense_softmax_xent::{
    dense_softmax_xent, dense_softmax_xent_preferred, DenseSoftmaxXentOut, UNIFORM_WINDOW_FLOATS,
};
use wgnn::internals::kernels::hinge::{hinge, HingeOut};
use wgnn::internals::kernels::matmul::{matmul, Epilogue, MatmulOptions};
use wgnn::internals::kernels::mse::{mse, MseOut};
use wgnn::internals::kernels::sigmoid_bce::{sigmoid_bce, SigmoidBceOut};
use wgnn::internals::kernels::softmax_grad::softmax_backward;
use wgnn::internals::kernels::softmax_xent::{softmax, softmax_xent, SoftmaxXentOut};
use wgnn::internals::kernels::step_guard::guard_step;
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Tensor};

pub(super) fn bench_softmax_xent(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols} +totals");
    if !bench.wants(&format!("softmax_xent fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let logits = rng.vec_uniform(rows * cols, -5.0, 5.0);
    let labels: Vec<u32> = (0..rows).map(|_| rng.below(cols) as u32).collect();
    let (lt, yt) = (up(&gpu, &[rows, cols], &logits), Tensor::from_u32(&gpu, &[rows], &labels).unwrap());
    let (loss, dlogits, correct, totals) = (
        Tensor::zeros(&gpu, &[rows]).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
        Tensor::zeros(&gpu, &[rows]).unwrap(),
        Tensor::zeros(&gpu, &[2]).unwrap(),
    );
    let out =
        SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dlogits), correct_rows: &correct, totals: Some(&totals) };
    let plan = softmax_xent(&gpu, &lt, &yt, 1.0 / rows as f32, &out).unwrap();
    let (cpu_s, (_, want, _)) = time_cpu(|| cpu::softmax_xent(&logits, &labels, rows, cols, 1.0 / rows as f32));
    let bytes = 4.0 * (2 * rows * cols + 4 * rows) as f64;
    bench.row(
        "softmax_xent",
        "fused",
        shape,
        true,
        &plan,
        &dlogits,
        &want,
        (1e-6, 1e-4),
        Work::Bytes(bytes),
        cpu_s,
        None,
    );
}

/// The output layer of a training step (K inputs through relu, C classes): fused into one
/// dispatch, and as the three it replaces (the forward product, softmax_xent, dX = dZ·Wᵀ ⊙ relu′),
/// both validated on dX and timed in the same run.
pub(super) fn bench_dense_softmax_xent(bench: &mut Bench, rng: &mut Rng, rows: usize, k: usize, c: usize) {
    let shape = format!("{rows}x{k}·{k}x{c}");
    let (want_fused, want_unfused) = (
        bench.wants(&format!("dense_softmax_xent fused {shape}")),
        bench.wants(&format!("dense_softmax_xent unfused {shape}")),
    );
    if !want_fused && !want_unfused {
        return;
    }
    let gpu = bench.gpu.clone();
    let act = Activation::Relu;
    let h = cpu::bias_act_forward(&rng.vec_uniform(rows * k, -2.0, 2.0), None, rows, k, act);
    let (w, b) = (rng.vec_uniform(k * c, -0.5, 0.5), rng.vec_uniform(c, -0.5, 0.5));
    let labels: Vec<u32> = (0..rows).map(|_| rng.below(c) as u32).collect();
    let (ht, wt, bt) = (up(&gpu, &[rows, k], &h), up(&gpu, &[k, c], &w), up(&gpu, &[c], &b));
    let yt = Tensor::from_u32(&gpu, &[rows], &labels).unwrap();
    let zeros = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let (dz, dh, totals) = (zeros(&[rows, c]), zeros(&[rows, k]), zeros(&[2]));
    let scale = 1.0 / rows as f32;
    let (cpu_s, (_, want, _, _)) = time_cpu(|| cpu::dense_softmax_xent(&h, &w, &b, &labels, rows, k, c, scale, act));
    let flops = Work::Flops(4.0 * (rows * k * c) as f64);
    // What a training step on this adapter runs.
    let fused_picked = dense_softmax_xent_preferred(&gpu, rows, k, c);
    if want_fused {
        // W and b in one buffer with the room after them that the model gives its parameters:
        // the kernel reads them through a uniform window. Then apart: from storage.
        let b_at = (k * c).next_multiple_of(64);
        let mut flat = vec![0.0; b_at + UNIFORM_WINDOW_FLOATS];
        flat[..k * c].copy_from_slice(&w);
        flat[b_at..b_at + c].copy_from_slice(&b);
        let both = up(&gpu, &[flat.len()], &flat);
        let (w_view, b_view) = (both.view(0, &[k, c]).unwrap(), both.view(b_at, &[c]).unwrap());
        let out = DenseSoftmaxXentOut { dz: &dz, dh: &dh, totals: &totals };
        for (variant, (w_src, b_src)) in [("fused", (&w_view, &b_view)), ("fused (W in storage)", (&wt, &bt))] {
            let plan = dense_softmax_xent(&gpu, &ht, w_src, b_src, &yt, act, scale, &out).unwrap();
            let picked = fused_picked && variant == "fused";
            bench.row(
                "dense_softmax_xent",
                variant,
                shape.clone(),
                picked,
                &plan,
                &dh,
                &want,
                (1e-6, 1e-4),
                flops,
                cpu_s,
                None,
            );
        }
    }
    if want_unfused {
        let (logits, loss, correct) = (zeros(&[rows, c]), zeros(&[rows]), zeros(&[rows]));
        let forward = MatmulOptions {
            epilogue: Epilogue::BiasAct { bias: Some(&bt), act: Activation::Identity },
            ..Default::default()
        };
        let mut plan = matmul(&gpu, &ht, &wt, &logits, &forward).unwrap();
        let out =
            SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dz), correct_rows: &correct, totals: Some(&totals) };
        plan.extend(softmax_xent(&gpu, &logits, &yt, scale, &out).unwrap());
        let backward =
            MatmulOptions { trans_b: true, epilogue: Epilogue::ActGrad { y: &ht, act }, ..Default::default() };
        plan.extend(matmul(&gpu, &dz, &wt, &dh, &backward).unwrap());
        bench.row(
            "dense_softmax_xent",
            "unfused",
            shape,
            !fused_picked,
            &plan,
            &dh,
            &want,
            (1e-6, 1e-4),
            flops,
            cpu_s,
            None,
        );
    }
}

pub(super) fn bench_softmax(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    if !bench.wants(&format!("softmax rows {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let logits = rng.vec_uniform(rows * cols, -5.0, 5.0);
    let (lt, probs) = (up(&gpu, &[rows, cols], &logits), Tensor::zeros(&gpu, &[rows, cols]).unwrap());
    let plan = softmax(&gpu, &lt, &probs).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::softmax(&logits, rows, cols));
    let bytes = 4.0 * (2 * rows * cols) as f64;
    bench.row("softmax", "rows", shape, true, &plan, &probs, &want, (1e-6, 1e-4), Work::Bytes(bytes), cpu_s, None);
}

pub(super) fn bench_softmax_backward(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    if !bench.wants(&format!("softmax_backward rows {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let y = cpu::softmax(&rng.vec_uniform(rows * cols, -5.0, 5.0), rows, cols);
    let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (dyt, yt) = (up(&gpu, &[rows, cols], &dy), up(&gpu, &[rows, cols], &y));
    let dz = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
    let plan = softmax_backward(&gpu, &dyt, &yt, &dz).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::softmax_backward(&dy, &y, rows, cols));
    let bytes = 4.0 * (3 * rows * cols) as f64;
    bench.row(
        "softmax_backward",
        "rows",
        shape,
        true,
        &plan,
        &dz,
        &want,
        (1e-6, 1e-4),
        Work::Bytes(bytes),
        cpu_s,
        None,
    );
}

/// guard_step: one invocation per training step (when non-finite batches are skipped), validated
/// on the totals after one finite batch.
pub(super) fn bench_guard_step(bench: &mut Bench) {
    if !bench.wants("guard_step single 1") {
        return;
    }
    let gpu = bench.gpu.clone();
    let counters = Tensor::zeros_u32(&gpu, &[2]).unwrap();
    let batch_totals = up(&gpu, &[2], &[1.5, 20.0]);
    let totals = Tensor::zeros(&gpu, &[4]).unwrap();
    let plan = guard_step(&gpu, &counters, &batch_totals, &totals, 32).unwrap();
    let (cpu_s, want) = time_cpu(|| {
        let (mut c, mut b, mut t) = ([0u32; 2], [1.5f32, 20.0], [0.0f32; 4]);
        cpu::guard_step(&mut c, &mut b, &mut t, 32);
        t
    });
    bench.row(
        "guard_step",
        "single",
        "1".into(),
        true,
        &plan,
        &totals,
        &want,
        (0.0, 0.0),
        Work::Bytes(40.0),
        cpu_s,
        None,
    );
}

/// sigmoid_bce and hinge: single-output losses over n rows, validated on the gradient.
pub(super) fn bench_single_output_loss(bench: &mut Bench, rng: &mut Rng, kernel: &str, n: usize) {
    let shape = format!("{n}x1");
    if !bench.wants(&format!("{kernel} fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let logits = rng.vec_uniform(n, -5.0, 5.0);
    let targets: Vec<f32> = (0..n).map(|_| rng.below(2) as f32).collect();
    let (lt, tt) = (up(&gpu, &[n, 1], &logits), up(&gpu, &[n], &targets));
    let outs: Vec<Tensor> = (0..3).map(|_| Tensor::zeros(&gpu, &[n]).unwrap()).collect();
    let out = SigmoidBceOut { loss_rows: &outs[0], dlogits: Some(&outs[1]), correct_rows: &outs[2], totals: None };
    let scale = 1.0 / n as f32;
    let (plan, (cpu_s, (_, want, _))) = if kernel == "hinge" {
        let out: &HingeOut = &out;
        (hinge(&gpu, &lt, &tt, scale, out).unwrap(), time_cpu(|| cpu::hinge(&logits, &targets, scale)))
    } else {
        (sigmoid_bce(&gpu, &lt, &tt, scale, &out).unwrap(), time_cpu(|| cpu::sigmoid_bce(&logits, &targets, scale)))
    };
    let bytes = 4.0 * (5 * n) as f64;
    bench.row(kernel, "fused", shape, true, &plan, &outs[1], &want, (1e-7, 1e-4), Work::Bytes(bytes), cpu_s, None);
}

pub(super) fn bench_mse(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    if !bench.wants(&format!("mse fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let pred = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let targets = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (pt, tt) = (up(&gpu, &[rows, cols], &pred), up(&gpu, &[rows, cols], &targets));
    let (loss, dpred, abs) = (
        Tensor::zeros(&gpu, &[rows]).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
        Tensor::zeros(&gpu, &[rows]).unwrap(),
    );
    let out = MseOut { loss_rows: &loss, dpred: Some(&dpred), abs_rows: &abs, totals: None };
    let scale = 1.0 / rows as f32;
    let plan = mse(&gpu, &pt, &tt, scale, &out).unwrap();
    let (cpu_s, (_, want, _)) = time_cpu(|| cpu::mse(&pred, &targets, rows, cols, scale));
    let bytes = 4.0 * (3 * rows * cols + 2 * rows) as f64;
    bench.row("mse", "fused", shape, true, &plan, &dpred, &want, (1e-7, 1e-4), Work::Bytes(bytes), cpu_s, None);
}
