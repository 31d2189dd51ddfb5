//! The attention rows: the clear and flash kernels' forward and backward at one shape, without
//! dropout and with attention dropout 0.1 (`clear+dropout`, `flash+dropout`).

use super::{time_cpu, up, Bench, Work};
use wgnn::internals::cpu;
use wgnn::internals::kernels::attention::{
    attention_backward, attention_backward_dropout, attention_forward, attention_forward_dropout,
};
use wgnn::internals::kernels::attention_choice::{choose_attention_kernel, AttentionKernel};
use wgnn::internals::kernels::attention_dims::{AttentionDims, AttentionDropout};
use wgnn::internals::kernels::flash_attention::{
    flash_attention_backward, flash_attention_backward_dropout, flash_attention_forward,
    flash_attention_forward_dropout, flash_attention_supported,
};
use wgnn::internals::rng::Rng;
use wgnn::Plan;
use wgnn::Tensor;

/// Both families at B, T, C, NH: the forward validated on out, the backward (after one forward)
/// on dqkv. Work counts the causal half's products once (forward 2, backward 4 of [T, T]·hs,
/// though the flash backward recomputes the scores), so the rates compare the families.
pub fn bench_attention(bench: &mut Bench, rng: &mut Rng, b: usize, t: usize, c: usize, nh: usize) {
    let shape = format!("B{b} T{t} C{c} NH{nh}");
    let labels =
        ["clear", "flash"].map(|k| [format!("attention {k} {shape}"), format!("attention_backward {k} {shape}")]);
    if !labels.iter().flatten().any(|l| bench.wants(l)) {
        return;
    }
    let gpu = bench.gpu.clone();
    let dims = AttentionDims::new("bench", b, t, c, nh).unwrap();
    let qkv = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let (cpu_forward_s, (out, probs, _)) = time_cpu(|| cpu::attention_forward(&qkv, b, t, c, nh));
    let (cpu_backward_s, dqkv) = time_cpu(|| cpu::attention_backward(&dout, &qkv, &probs, b, t, c, nh));
    let (qkv_t, dout_t) = (up(&gpu, &[b, t, 3 * c], &qkv), up(&gpu, &[b, t, c], &dout));
    let out_t = Tensor::zeros(&gpu, &[b, t, c]).unwrap();
    let dqkv_t = Tensor::zeros(&gpu, &[b, t, 3 * c]).unwrap();
    let pairs = (b * nh * t * (t + 1)) as f64 * (c / nh) as f64;
    let picked = choose_attention_kernel(&gpu, &dims);
    for kernel in [AttentionKernel::Clear, AttentionKernel::Flash] {
        if kernel == AttentionKernel::Flash && !flash_attention_supported(&dims) {
            continue;
        }
        let (forward, backward) = match kernel {
            AttentionKernel::Clear => {
                let probs = Tensor::zeros(&gpu, &dims.scores_shape()).unwrap();
                let dscores = Tensor::zeros(&gpu, &dims.scores_shape()).unwrap();
                let forward = attention_forward(&gpu, &qkv_t, &out_t, &probs, nh).unwrap();
                (forward, attention_backward(&gpu, &dout_t, &qkv_t, &probs, &dscores, &dqkv_t, nh).unwrap())
            }
            AttentionKernel::Flash => {
                let lse = Tensor::zeros(&gpu, &dims.rows_shape()).unwrap();
                let delta = Tensor::zeros(&gpu, &dims.rows_shape()).unwrap();
                let forward = flash_attention_forward(&gpu, &qkv_t, &out_t, &lse, nh).unwrap();
                let backward = flash_attention_backward(&gpu, &dout_t, &qkv_t, &out_t, &lse, &delta, &dqkv_t, nh);
                (forward, backward.unwrap())
            }
        };
        let name = kernel.name();
        let tol = (1e-5, 1e-3);
        if bench.wants(&format!("attention {name} {shape}")) {
            let work = Work::Flops(2.0 * pairs);
            let s = shape.clone();
            bench.row("attention", name, s, picked == kernel, &forward, &out_t, &out, tol, work, cpu_forward_s, None);
        }
        if bench.wants(&format!("attention_backward {name} {shape}")) {
            gpu.run(&[&forward]).unwrap();
            let (work, s) = (Work::Flops(4.0 * pairs), shape.clone());
            let tol = (4e-5, 2e-3);
            bench.row(
                "attention_backward",
                name,
                s,
                picked == kernel,
                &backward,
                &dqkv_t,
                &dqkv,
                tol,
                work,
                cpu_backward_s,
                None,
            );
        }
        bench_dropout(bench, kernel, &dims, picked, [&qkv_t, &dout_t, &out_t, &dqkv_t], &qkv, &dout);
    }
}

/// The attention dropout rows of `kernel` (rate 0.1, a fixed step), validated against the CPU
/// reference's dropout: what dropout adds over the rows without it.
fn bench_dropout(
    bench: &mut Bench,
    kernel: AttentionKernel,
    dims: &AttentionDims,
    picked: AttentionKernel,
    tensors: [&Tensor; 4],
    qkv: &[f32],
    dout: &[f32],
) {
    let [qkv_t, dout_t, out_t, dqkv_t] = tensors;
    let (b, t, c, nh) = (dims.batch, dims.seq, dims.channels, dims.heads);
    let shape = format!("B{b} T{t} C{c} NH{nh}");
    let name = format!("{}+dropout", kernel.name());
    let labels = [format!("attention {name} {shape}"), format!("attention_backward {name} {shape}")];
    if !labels.iter().any(|l| bench.wants(l)) {
        return;
    }
    let gpu = bench.gpu.clone();
    let reference = cpu::AttentionDropout { rate: 0.1, seed: 7, t: 1 };
    let (cpu_forward_s, (out, probs, _)) =
        time_cpu(|| cpu::attention_forward_dropout(qkv, b, t, c, nh, true, &reference));
    let (cpu_backward_s, dqkv) =
        time_cpu(|| cpu::attention_backward_dropout(dout, qkv, &probs, b, t, c, nh, true, &reference));
    let step = Tensor::from_u32(&gpu, &[1], &[1]).unwrap();
    let d = AttentionDropout { rate: 0.1, seed: 7, step: &step, lag: 0 };
    let (forward, backward): (Plan, Plan) = match kernel {
        AttentionKernel::Clear => {
            let [probs, dropped, dscores] = [0; 3].map(|_| Tensor::zeros(&gpu, &dims.scores_shape()).unwrap());
            let forward = attention_forward_dropout(&gpu, qkv_t, out_t, &probs, &dropped, nh, true, &d).unwrap();
            let backward =
                attention_backward_dropout(&gpu, dout_t, qkv_t, &probs, &dropped, &dscores, dqkv_t, nh, true, &d);
            (forward, backward.unwrap())
        }
        AttentionKernel::Flash => {
            let [lse, delta] = [0; 2].map(|_| Tensor::zeros(&gpu, &dims.rows_shape()).unwrap());
            let forward = flash_attention_forward_dropout(&gpu, qkv_t, out_t, &lse, nh, true, &d).unwrap();
            let backward =
                flash_attention_backward_dropout(&gpu, dout_t, qkv_t, out_t, &lse, &delta, dqkv_t, nh, true, &d);
            (forward, backward.unwrap())
        }
    };
    let pairs = (b * nh * t * (t + 1)) as f64 * (c / nh) as f64;
    if bench.wants(&labels[0]) {
        let work = Work::Flops(2.0 * pairs);
        let (s, tol) = (shape.clone(), (1e-5, 1e-3));
        bench.row("attention", &name, s, picked == kernel, &forward, out_t, &out, tol, work, cpu_forward_s, None);
    }
    if bench.wants(&labels[1]) {
        gpu.run(&[&forward]).unwrap();
        let (work, tol) = (Work::Flops(4.0 * pairs), (4e-5, 2e-3));
        bench.row(
            "attention_backward",
            &name,
            shape,
            picked == kernel,
            &backward,
            dqkv_t,
            &dqkv,
            tol,
            work,
            cpu_backward_s,
            None,
        );
    }
}
