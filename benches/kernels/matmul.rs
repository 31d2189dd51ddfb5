//! The matmul rows: every variant and form of the product at a shape (with the autotuner's pick), the column-sum
//! product, op(A) gathered from a u8 data set, and the GPU-class register kernel's tiles.

use super::{compare, host_sgemm, time_cpu, up, Bench, Work};
use std::time::Instant;
use wgnn::autotune::MatmulShape;
use wgnn::data::Features;
use wgnn::internals::cpu;
use wgnn::internals::kernels::gather::{gather_rows, BatchStart, GpuRows};
use wgnn::internals::kernels::matmul::{
    choose_variant, matmul, matmul_column_sum, matmul_gathered, matmul_gathered_supported, Epilogue, GatheredA,
    MatmulOptions, MatmulVariant,
};
use wgnn::internals::kernels::matmul_register::{matmul_register, matmul_register_supported, RegisterTile};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Tensor};

/// One matmul shape and form: the CPU reference and sgemm once, then a row per variant.
pub(super) fn bench_matmul(bench: &mut Bench, rng: &mut Rng, (m, k, n): (usize, usize, usize), (ta, tb): (bool, bool)) {
    let form = match (ta, tb) {
        (false, false) => "",
        (true, false) => "Aᵀ",
        (false, true) => "Bᵀ",
        (true, true) => "AᵀBᵀ",
    };
    let shape = format!("{m}x{k}·{k}x{n} {form}");
    let labels: Vec<String> = MatmulVariant::ALL.iter().map(|v| format!("matmul {} {shape}", v.name())).collect();
    if !labels.iter().any(|l| bench.wants(l)) {
        return;
    }
    let gpu = bench.gpu.clone();
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let at = Tensor::from_slice(&gpu, &if ta { [k, m] } else { [m, k] }, &a).unwrap();
    let bt = Tensor::from_slice(&gpu, &if tb { [n, k] } else { [k, n] }, &b).unwrap();
    let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();

    // The reference is slow (f64 sums): time one call only.
    let t = Instant::now();
    let want = cpu::matmul(&a, &b, m, k, n, ta, tb);
    let cpu_ref_s = t.elapsed().as_secs_f64();
    // Strides express the transposes, so sgemm reads the same layouts as the kernel.
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let (sgemm_s, _) = time_cpu(|| host_sgemm(m, k, n, &a, (rsa, csa), &b, (rsb, csb)));

    let picked = choose_variant(&gpu, m, n, k, ta, tb);
    let tol = (2e-5 * (k as f32).sqrt(), 1e-4);
    for (variant, label) in MatmulVariant::ALL.into_iter().zip(&labels) {
        if !bench.wants(label) {
            continue;
        }
        // The scalar variants take seconds per call on a CPU adapter at the largest shapes: the
        // default run keeps them to 1024³ without transposes; a filter naming them runs them all.
        let slow = matches!(variant, MatmulVariant::Naive | MatmulVariant::Tiled)
            && gpu.is_cpu_adapter()
            && m * n * k > 1 << 28;
        let named = bench.filter.as_ref().is_some_and(|f| f.contains(variant.name()));
        let plain_cube = m == n && n == k && !ta && !tb;
        if slow && !named && !plain_cube {
            println!(
                "{:<18} {:<14} {shape:<24} skipped (slow on a CPU adapter; filter `{}` runs it)",
                "matmul",
                variant.name(),
                variant.name()
            );
            continue;
        }
        let opts = MatmulOptions { trans_a: ta, trans_b: tb, variant: Some(variant), ..Default::default() };
        let plan = matmul(&gpu, &at, &bt, &ct, &opts).unwrap();
        let work = Work::Flops(2.0 * (m * n * k) as f64);
        bench.row(
            "matmul",
            variant.name(),
            shape.clone(),
            variant == picked,
            &plan,
            &ct,
            &want,
            tol,
            work,
            cpu_ref_s,
            Some(sgemm_s),
        );
    } // The autotuner's pick at this shape (a fresh tune on a device of its own with every candidate
      // timed: `Bench::tuned`), beside the static one starred above.
    if bench.wants(&format!("matmul tuned {shape}")) {
        let tuned = bench.tuned.clone();
        let opts = MatmulOptions { trans_a: ta, trans_b: tb, ..Default::default() };
        let (at, bt) = (at.to_vec().unwrap(), bt.to_vec().unwrap());
        let (a_shape, b_shape) = (if ta { [k, m] } else { [m, k] }, if tb { [n, k] } else { [k, n] });
        let at = Tensor::from_slice(&tuned, &a_shape, &at).unwrap();
        let bt = Tensor::from_slice(&tuned, &b_shape, &bt).unwrap();
        let ct = Tensor::zeros(&tuned, &[m, n]).unwrap();
        let plan = matmul(&tuned, &at, &bt, &ct, &opts).unwrap();
        let key = MatmulShape::of(m, n, k, &opts, false);
        let pick = tuned.tuned_picks().into_iter().rfind(|p| p.shape == key);
        let name = format!("tuned:{}", pick.map_or("?".into(), |p| p.kernel.name()));
        let work = Work::Flops(2.0 * (m * n * k) as f64);
        let gpu = std::mem::replace(&mut bench.gpu, tuned);
        bench.row("matmul", &name, shape.clone(), false, &plan, &ct, &want, tol, work, cpu_ref_s, Some(sgemm_s));
        bench.gpu = gpu;
    }
}

/// dW = Xᵀ·dZ with db = Σ_rows dZ (the engine's variant): validated on C, the sums checked too.
pub(super) fn bench_matmul_column_sum(bench: &mut Bench, rng: &mut Rng, (m, k, n): (usize, usize, usize)) {
    let shape = format!("{m}x{k}·{k}x{n} Aᵀ +colsum");
    let variant = choose_variant(&bench.gpu, m, n, k, true, false);
    if !bench.wants(&format!("matmul_column_sum {} {shape}", variant.name())) {
        return;
    }
    let gpu = bench.gpu.clone();
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let (at, bt) = (up(&gpu, &[k, m], &a), up(&gpu, &[k, n], &b));
    let (ct, st) = (Tensor::zeros(&gpu, &[m, n]).unwrap(), Tensor::zeros(&gpu, &[n]).unwrap());
    let opts = MatmulOptions { trans_a: true, ..Default::default() };
    let plan = matmul_column_sum(&gpu, &at, &bt, &ct, &st, &opts).unwrap();
    let (cpu_s, (want, want_sums)) = time_cpu(|| cpu::matmul_column_sum(&a, &b, m, k, n, true));
    gpu.run(&[&plan]).unwrap();
    let (sums_err, sums_ok) = compare(&st.to_vec().unwrap(), &want_sums, 1e-4 * (k as f32).sqrt(), 1e-4);
    assert!(sums_ok, "matmul_column_sum {shape}: column sums off by {sums_err}");
    let tol = (2e-5 * (k as f32).sqrt(), 1e-4);
    let work = Work::Flops(2.0 * (m * n * k) as f64);
    bench.row("matmul_column_sum", variant.name(), shape, true, &plan, &ct, &want, tol, work, cpu_s, None);
}

/// A training step's first layer on u8 data: its forward product (ReLU epilogue) and its weight
/// gradient with the bias gradient, reading the batch from the data set in place (`gathered`, one
/// dispatch) against gathering it first (`gather+matmul`, two).
pub(super) fn bench_matmul_gathered(bench: &mut Bench, rng: &mut Rng, rows: usize, dim: usize, n: usize) {
    let gpu = bench.gpu.clone();
    let total = 4 * rows;
    let bytes: Vec<u8> = (0..total * dim).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u32> = (0..total).map(|_| rng.below(10) as u32).collect();
    let mut idx: Vec<u32> = (0..total as u32).collect();
    rng.shuffle(&mut idx);
    let as_f32: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
    let (scale, shift) = (1.0 / 255.0, 0.0);
    let src = GpuRows { scale, shift, ..GpuRows::upload(&gpu, &Features::U8(bytes), &labels, dim).unwrap() };
    let idx_t = Tensor::from_u32(&gpu, &[total], &idx).unwrap();
    let at = rows;
    let x_host = cpu::matmul_gathered_a(&as_f32, dim, &idx, at, rows, rows, scale, shift);
    let (x, y) = (Tensor::zeros(&gpu, &[rows, dim]).unwrap(), Tensor::zeros_u32(&gpu, &[rows]).unwrap());
    let gather = || gather_rows(&gpu, &src, &idx_t, BatchStart::At(at), &x, &y).unwrap();
    let forward =
        GatheredA { src: &src, idx: &idx_t, start: BatchStart::At(at), rows, stored_rows: rows, labels: Some(&y) };
    if !matmul_gathered_supported(&gpu, &forward, n, false, false) {
        return;
    }
    let (w, bias) = (rng.vec_uniform(dim * n, -0.1, 0.1), rng.vec_uniform(n, -0.1, 0.1));
    let (wt, bt) = (up(&gpu, &[dim, n], &w), up(&gpu, &[n], &bias));
    let h = Tensor::zeros(&gpu, &[rows, n]).unwrap();
    let flops = Work::Flops(2.0 * (rows * dim * n) as f64);
    let options =
        MatmulOptions { epilogue: Epilogue::BiasAct { bias: Some(&bt), act: Activation::Relu }, ..Default::default() };
    let (cpu_s, want) = time_cpu(|| {
        cpu::bias_act_forward(
            &cpu::matmul(&x_host, &w, rows, dim, n, false, false),
            Some(&bias),
            rows,
            n,
            Activation::Relu,
        )
    });
    let shape = format!("{rows}x{dim}·{dim}x{n} (u8 rows)");
    if bench.wants(&format!("matmul_gathered forward {shape}")) {
        let plan = matmul_gathered(&gpu, &forward, &wt, &h, None, &options).unwrap();
        bench.row(
            "matmul_gathered",
            "forward",
            shape.clone(),
            true,
            &plan,
            &h,
            &want,
            (1e-5, 1e-4),
            flops,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("matmul_gathered gather+matmul {shape}")) {
        let mut plan = gather();
        plan.extend(matmul(&gpu, &x, &wt, &h, &options).unwrap());
        bench.row("matmul_gathered", "gather+matmul", shape, false, &plan, &h, &want, (1e-5, 1e-4), flops, cpu_s, None);
    }

    // dW = Xᵀ·dZ with db, over rows padded to a multiple of 4 (dZ's extra rows zero).
    let padded = rows.next_multiple_of(4);
    let mut dz = rng.vec_uniform(padded * n, -1.0, 1.0);
    dz[rows * n..].fill(0.0);
    let dzt = up(&gpu, &[padded, n], &dz);
    let (dw, db) = (Tensor::zeros(&gpu, &[dim, n]).unwrap(), Tensor::zeros(&gpu, &[n]).unwrap());
    let a_padded = cpu::matmul_gathered_a(&as_f32, dim, &idx, at, rows, padded, scale, shift);
    let (cpu_s, want) = time_cpu(|| cpu::matmul(&a_padded, &dz, dim, padded, n, true, false));
    let transposed = MatmulOptions { trans_a: true, ..Default::default() };
    let shape = format!("{dim}x{padded}·{padded}x{n} (u8 rows)");
    if bench.wants(&format!("matmul_gathered weight_grad {shape}")) {
        let weight_grad = GatheredA { stored_rows: padded, labels: None, ..forward };
        let plan = matmul_gathered(&gpu, &weight_grad, &dzt, &dw, Some(&db), &transposed).unwrap();
        bench.row(
            "matmul_gathered",
            "weight_grad",
            shape.clone(),
            true,
            &plan,
            &dw,
            &want,
            (1e-5, 1e-4),
            flops,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("matmul_gathered gather+matmul_column_sum {shape}")) {
        // The gather writes `rows` rows of a padded x whose extra rows stay zero.
        let x_padded = Tensor::zeros(&gpu, &[padded, dim]).unwrap();
        let x_rows = x_padded.view(0, &[rows, dim]).unwrap();
        let mut plan = gather_rows(&gpu, &src, &idx_t, BatchStart::At(at), &x_rows, &y).unwrap();
        plan.extend(matmul_column_sum(&gpu, &x_padded, &dzt, &dw, &db, &transposed).unwrap());
        bench.row(
            "matmul_gathered",
            "gather+matmul_column_sum",
            shape,
            false,
            &plan,
            &dw,
            &want,
            (1e-5, 1e-4),
            flops,
            cpu_s,
            None,
        );
    }
}

/// The GPU-class matmul (`matmul_register`, workgroup tiles in workgroup memory, register blocks)
/// at one shape and form, a row per preset tile. Products past 2³¹ multiply-adds are validated
/// against sgemm (the f64 reference would take minutes) and, on a CPU adapter, run only when the
/// filter names their shape (`cargo bench --bench kernels -- "matmul_register 64x64x16/4x4 4096x4096"`).
pub(super) fn bench_matmul_register(
    bench: &mut Bench,
    rng: &mut Rng,
    (m, k, n): (usize, usize, usize),
    (ta, tb): (bool, bool),
) {
    let form = match (ta, tb) {
        (false, false) => "",
        (true, false) => "Aᵀ",
        (false, true) => "Bᵀ",
        (true, true) => "AᵀBᵀ",
    };
    let shape = format!("{m}x{k}·{k}x{n} {form}");
    let labels: Vec<String> =
        RegisterTile::PRESETS.iter().map(|t| format!("matmul_register {} {shape}", t.name())).collect();
    if !labels.iter().any(|l| bench.wants(l)) {
        return;
    }
    let gpu = bench.gpu.clone();
    let huge = m * n * k > 1 << 31;
    let named = bench.filter.as_ref().is_some_and(|f| f.contains(&format!("{m}x{k}")));
    if huge && gpu.is_cpu_adapter() && !named {
        println!(
            "{:<18} {:<14} {shape:<24} skipped (minutes on a CPU adapter; a filter naming it runs it)",
            "matmul_register", "all tiles"
        );
        return;
    }
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let at = Tensor::from_slice(&gpu, &if ta { [k, m] } else { [m, k] }, &a).unwrap();
    let bt = Tensor::from_slice(&gpu, &if tb { [n, k] } else { [k, n] }, &b).unwrap();
    let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let (sgemm_s, c) = time_cpu(|| host_sgemm(m, k, n, &a, (rsa, csa), &b, (rsb, csb)));
    let (want, cpu_ref_s) = if huge {
        (c, sgemm_s)
    } else {
        let t = Instant::now();
        let want = cpu::matmul(&a, &b, m, k, n, ta, tb);
        (want, t.elapsed().as_secs_f64())
    };
    let tol = (2e-5 * (k as f32).sqrt(), 1e-4);
    for (tile, label) in RegisterTile::PRESETS.into_iter().zip(&labels) {
        if !bench.wants(label) || !matmul_register_supported(&gpu, tile) {
            continue;
        }
        let opts = MatmulOptions { trans_a: ta, trans_b: tb, ..Default::default() };
        let plan = matmul_register(&gpu, &at, &bt, &ct, &opts, tile).unwrap();
        let work = Work::Flops(2.0 * (m * n * k) as f64);
        let name = tile.name();
        bench.row(
            "matmul_register",
            &name,
            shape.clone(),
            false,
            &plan,
            &ct,
            &want,
            tol,
            work,
            cpu_ref_s,
            Some(sgemm_s),
        );
    }
}
