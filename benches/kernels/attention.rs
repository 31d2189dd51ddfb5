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
    flash_attention_backward, flash_attention_backward_dropout, flash_attention_backward_rows,
    flash_attention_backward_subgroup, flash_attention_forward, flash_attention_forward_dropout,
    flash_attention_forward_rows, flash_attention_forward_subgroup, flash_attention_supported,
};
use wgnn::internals::kernels::flash_attention_subgroup::flash_subgroup_runs;
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
    if flash_attention_supported(&dims) {
        let cpu_s = (cpu_forward_s, cpu_backward_s);
        bench_flash_rows(bench, (&shape, &dims), [&qkv_t, &dout_t, &out_t, &dqkv_t], (&out, &dqkv), pairs, cpu_s);
    }
}

/// The flash kernels at each number of query rows per invocation (plain: `flash rows R`) and per
/// lane (subgroup: `flash_sg rows R`), forward and backward: `*` marks the wrappers' pick (its
/// plan's kernels and, for the forward, its dispatch count and labels compared).
fn bench_flash_rows(
    bench: &mut Bench,
    (shape, dims): (&str, &AttentionDims),
    t: [&Tensor; 4],
    want: (&[f32], &[f32]),
    pairs: f64,
    cpu_s: (f64, f64),
) {
    let gpu = bench.gpu.clone();
    let [qkv_t, dout_t, out_t, dqkv_t] = t;
    let nh = dims.heads;
    let [lse, delta] = [0; 2].map(|_| Tensor::zeros(&gpu, &dims.rows_shape()).unwrap());
    let labels = |p: &Plan| p.dispatches.iter().map(|d| d.label.clone()).collect::<Vec<_>>();
    let picked_forward = labels(&flash_attention_forward(&gpu, qkv_t, out_t, &lse, nh).unwrap());
    let picked_backward =
        labels(&flash_attention_backward(&gpu, dout_t, qkv_t, out_t, &lse, &delta, dqkv_t, nh).unwrap());
    let bindings = [qkv_t, out_t, &lse, dout_t, &delta, dqkv_t, &lse];
    let subgroups = flash_subgroup_runs(&gpu, dims, &bindings);
    for (family, rows) in [("flash", 1), ("flash", 2), ("flash", 4), ("flash_sg", 1), ("flash_sg", 2), ("flash_sg", 4)]
    {
        if family == "flash_sg" && !subgroups {
            continue;
        }
        let variant = format!("{family} rows {rows}");
        let forward = match family {
            "flash" => flash_attention_forward_rows(&gpu, qkv_t, out_t, &lse, nh, rows),
            _ => flash_attention_forward_subgroup(&gpu, qkv_t, out_t, &lse, nh, rows, true),
        };
        let backward = match family {
            "flash" => flash_attention_backward_rows(&gpu, dout_t, qkv_t, out_t, &lse, &delta, dqkv_t, nh, rows),
            _ => flash_attention_backward_subgroup(&gpu, dout_t, qkv_t, out_t, &lse, &delta, dqkv_t, nh, rows, true),
        };
        // A row count past the loop budget at this T is refused: no row.
        let (Ok(forward), Ok(backward)) = (forward, backward) else { continue };
        // The wrappers' pick: the same kernels on the same grid (so the same rows).
        if bench.wants(&format!("attention {variant} {shape}")) {
            let is_pick = labels(&forward) == picked_forward
                && forward.dispatches[0].workgroups
                    == flash_attention_forward(&gpu, qkv_t, out_t, &lse, nh).unwrap().dispatches[0].workgroups;
            let work = Work::Flops(2.0 * pairs);
            let tol = (1e-5, 1e-3);
            let s = shape.to_string();
            bench.row("attention", &variant, s, is_pick, &forward, out_t, want.0, tol, work, cpu_s.0, None);
        }
        if bench.wants(&format!("attention_backward {variant} {shape}")) {
            gpu.run(&[&forward]).unwrap();
            let picked = flash_attention_backward(&gpu, dout_t, qkv_t, out_t, &lse, &delta, dqkv_t, nh).unwrap();
            let is_pick = labels(&backward) == picked_backward
                && backward.dispatches[0].workgroups == picked.dispatches[0].workgroups;
            let work = Work::Flops(4.0 * pairs);
            let tol = (4e-5, 2e-3);
            let s = shape.to_string();
            bench.row("attention_backward", &variant, s, is_pick, &backward, dqkv_t, want.1, tol, work, cpu_s.1, None);
        }
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
