//! op(A) gathered from the resident data set (matmul_gathered: a training step's first layer
//! reading its batch where it lies) against the CPU reference: the forward with its epilogue, the
//! labels and step counters, the weight gradient with the bias gradient, guarded and fixed starts;
//! and its refusals, on every adapter.

mod common;
use common::*;
use wgnn::data::Features;
use wgnn::internals::cpu;
use wgnn::internals::kernels::gather::{BatchStart, GpuRows};
use wgnn::internals::kernels::matmul::{
    matmul_gathered, matmul_gathered_supported, Epilogue, GatheredA, MatmulOptions,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, GpuOptions, ProfileOverride, Tensor, WgnnError};

/// Tolerance grows with K: f32 sums of K products of values in [-1, 1].
fn atol(k: usize) -> f32 {
    2e-5 * (k as f32).sqrt()
}

/// Whether op(A) gathered from a data set runs on `gpu`: it exists for the subgroup kernel alone,
/// which needs subgroups of at least 8. Where it cannot, the test says so (its refusal is checked
/// on every adapter by `gathered_a_refuses_what_it_cannot_read`).
fn gathered_runs_on(gpu: &Gpu) -> bool {
    let runs = gpu.profile().matmul.subgroup_kernel;
    if !runs {
        eprintln!(
            "op(A) gathered: not run on {} ({}): it needs the subgroup kernel",
            gpu.describe(),
            gpu.profile().describe()
        );
    }
    runs
}

#[test]
fn gathered_a_matches_the_cpu_reference() {
    // A training step's first layer reading its batch from the u8 data set where it lies: the
    // forward product with its epilogue, the batch's labels and the step counters; then the weight
    // gradient over the rows padded to a multiple of 4, with the bias gradient, advancing nothing.
    let gpu = gpu();
    if !gathered_runs_on(&gpu) {
        return;
    }
    let mut rng = Rng::new(21);
    let (scale, shift) = (1.0 / 255.0, -0.25);
    // (data-set rows, features, batch rows, N): a batch of 5 over 784 features gives a single
    // workgroup, so K is split (the labels and counters then come from the first split).
    const CASES: [(usize, usize, usize, usize); 6] =
        [(9, 4, 1, 4), (97, 20, 13, 8), (300, 36, 33, 12), (60, 784, 5, 8), (200, 784, 32, 64), (600, 784, 256, 64)];
    for (total, dim, rows, n) in CASES {
        let bytes: Vec<u8> = (0..total * dim).map(|_| rng.below(256) as u8).collect();
        let labels: Vec<u32> = (0..total).map(|_| rng.below(10) as u32).collect();
        let mut idx: Vec<u32> = (0..total as u32).collect();
        rng.shuffle(&mut idx);
        let as_f32: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
        let src = GpuRows { scale, shift, ..GpuRows::upload(&gpu, &Features::U8(bytes), &labels, dim).unwrap() };
        let idx_t = Tensor::from_u32(&gpu, &[total], &idx).unwrap();
        let what = format!("gathered {total}x{dim}, {rows} rows, N {n}");

        // The second batch of the epoch (the first where there is only one), read from the odd cell.
        let step = if total >= 2 * rows { 1 } else { 0 };
        let epoch_step = Tensor::from_u32(&gpu, &[2], &[99, step as u32]).unwrap();
        let t = Tensor::from_u32(&gpu, &[1], &[5]).unwrap();
        let start = BatchStart::Counter { epoch_step: &epoch_step, stride: rows, parity: 1, t: Some(&t) };
        let w = rng.vec_uniform(dim * n, -0.5, 0.5);
        let bias = rng.vec_uniform(n, -0.5, 0.5);
        let (w_t, bias_t) =
            (Tensor::from_slice(&gpu, &[dim, n], &w).unwrap(), Tensor::from_slice(&gpu, &[n], &bias).unwrap());
        let h = Tensor::zeros(&gpu, &[rows, n]).unwrap();
        let y = Tensor::zeros_u32(&gpu, &[rows]).unwrap();
        let forward = GatheredA { src: &src, idx: &idx_t, start, rows, stored_rows: rows, labels: Some(&y) };
        assert!(matmul_gathered_supported(&gpu, &forward, n, false, false), "{what}");
        let epilogue = Epilogue::BiasAct { bias: Some(&bias_t), act: Activation::Relu };
        let opts = MatmulOptions { epilogue, ..Default::default() };
        gpu.run(&[&matmul_gathered(&gpu, &forward, &w_t, &h, None, &opts).unwrap()]).unwrap();
        let a = cpu::matmul_gathered_a(&as_f32, dim, &idx, step * rows, rows, rows, scale, shift);
        let want = cpu::bias_act_forward(
            &cpu::matmul(&a, &w, rows, dim, n, false, false),
            Some(&bias),
            rows,
            n,
            Activation::Relu,
        );
        assert_close(&format!("{what}: forward"), &h.to_vec().unwrap(), &want, atol(dim), 1e-4);
        let want_y: Vec<u32> = (0..rows).map(|r| labels[idx[step * rows + r] as usize]).collect();
        assert_eq!(y.to_vec_u32().unwrap(), want_y, "{what}: labels");
        let (mut cells, mut t_want) = ([99, step as u32], 5);
        cpu::gather_counters(&mut cells, 1, Some(&mut t_want));
        assert_eq!(epoch_step.to_vec_u32().unwrap(), cells, "{what}: position cells");
        assert_eq!(t.to_vec_u32().unwrap(), [t_want], "{what}: t");

        // dW = Aᵀ·dZ and db over the padded rows, whose dZ rows are zero.
        let padded = rows.next_multiple_of(4);
        let mut dz = rng.vec_uniform(padded * n, -1.0, 1.0);
        dz[rows * n..].fill(0.0);
        let dz_t = Tensor::from_slice(&gpu, &[padded, n], &dz).unwrap();
        let (dw, db) = (Tensor::zeros(&gpu, &[dim, n]).unwrap(), Tensor::zeros(&gpu, &[n]).unwrap());
        let weight_grad = GatheredA { stored_rows: padded, labels: None, ..forward };
        let opts = MatmulOptions { trans_a: true, ..Default::default() };
        gpu.run(&[&matmul_gathered(&gpu, &weight_grad, &dz_t, &dw, Some(&db), &opts).unwrap()]).unwrap();
        let a = cpu::matmul_gathered_a(&as_f32, dim, &idx, step * rows, rows, padded, scale, shift);
        let want = cpu::matmul(&a, &dz, dim, padded, n, true, false);
        assert_close(&format!("{what}: dW"), &dw.to_vec().unwrap(), &want, atol(padded), 1e-4);
        assert_close(
            &format!("{what}: db"),
            &db.to_vec().unwrap(),
            &cpu::column_sum(&dz, padded, n),
            atol(padded),
            1e-4,
        );
        assert_eq!(epoch_step.to_vec_u32().unwrap(), cells, "{what}: dW must not move the position");
        assert_eq!(t.to_vec_u32().unwrap(), [t_want], "{what}: dW must not advance t");

        // A counter start without t (a guarded step, where step_guard advances t): the position
        // moves on, t does not. From the epoch's first batch, read from the even cell.
        epoch_step.write_u32(&[0, 99]).unwrap();
        let mut cells = [0, 99];
        let guarded = BatchStart::Counter { epoch_step: &epoch_step, stride: rows, parity: 0, t: None };
        let y2 = Tensor::zeros_u32(&gpu, &[rows]).unwrap();
        let c2 = Tensor::zeros(&gpu, &[rows, n]).unwrap();
        let unguarded = GatheredA { start: guarded, labels: Some(&y2), ..forward };
        gpu.run(&[&matmul_gathered(&gpu, &unguarded, &w_t, &c2, None, &MatmulOptions::default()).unwrap()]).unwrap();
        cpu::gather_counters(&mut cells, 0, None);
        assert_eq!(epoch_step.to_vec_u32().unwrap(), cells, "{what}: guarded position cells");
        assert_eq!(t.to_vec_u32().unwrap(), [t_want], "{what}: a guarded step's product must not advance t");

        // A fixed start, no labels: the product alone.
        let at = total - rows;
        let fixed = GatheredA { start: BatchStart::At(at), labels: None, ..forward };
        let c = Tensor::zeros(&gpu, &[rows, n]).unwrap();
        gpu.run(&[&matmul_gathered(&gpu, &fixed, &w_t, &c, None, &MatmulOptions::default()).unwrap()]).unwrap();
        let a = cpu::matmul_gathered_a(&as_f32, dim, &idx, at, rows, rows, scale, shift);
        let want = cpu::matmul(&a, &w, rows, dim, n, false, false);
        assert_close(&format!("{what}: at {at}"), &c.to_vec().unwrap(), &want, atol(dim), 1e-4);
    }
}

#[test]
fn gathered_a_refuses_what_it_cannot_read() {
    // A device without the subgroup kernel (any adapter, SUBGROUP not requested) refuses even the
    // layout it reads, with a typed error naming the kernel.
    let features = |f: wgpu::Features| f - wgpu::Features::SUBGROUP;
    let options = GpuOptions { profile: ProfileOverride::Adapter, features, autotune: false, ..Default::default() };
    let no_subgroups = Gpu::with_options(&options).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    assert!(!no_subgroups.profile().matmul.subgroup_kernel);
    for gpu in [gpu(), no_subgroups] {
        refusals(&gpu);
    }
}

fn refusals(gpu: &Gpu) {
    let labels = [0u32, 1, 2];
    let idx = Tensor::from_u32(gpu, &[3], &[2, 0, 1]).unwrap();
    let w = Tensor::zeros(gpu, &[8, 4]).unwrap();
    let c = Tensor::zeros(gpu, &[2, 4]).unwrap();
    let u8_rows = GpuRows::upload(gpu, &Features::U8(vec![7; 24]), &labels, 8).unwrap();
    let a = GatheredA { src: &u8_rows, idx: &idx, start: BatchStart::At(0), rows: 2, stored_rows: 2, labels: None };
    let opts = MatmulOptions::default();
    if !gathered_runs_on(gpu) {
        assert!(!matmul_gathered_supported(gpu, &a, 4, false, false));
        let err = matmul_gathered(gpu, &a, &w, &c, None, &opts).err().expect("no subgroup kernel");
        assert!(matches!(err, WgnnError::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("matmul_gathered") && err.to_string().contains("subgroup kernel"), "{err}");
        return;
    }
    assert!(matmul_gathered(gpu, &a, &w, &c, None, &opts).is_ok());

    // f32 features: not the layout the kernel reads.
    let f32_rows = GpuRows::upload(gpu, &Features::F32(vec![0.5; 24]), &labels, 8).unwrap();
    let f32_a = GatheredA { src: &f32_rows, ..a };
    assert!(!matmul_gathered_supported(gpu, &f32_a, 4, false, false));
    let msg = matmul_gathered(gpu, &f32_a, &w, &c, None, &opts).err().expect("f32 features must fail").to_string();
    assert!(msg.contains("matmul_gathered") && msg.contains("f32"), "{msg}");

    // Rows past the index list.
    let late = GatheredA { start: BatchStart::At(2), ..a };
    let err = matmul_gathered(gpu, &late, &w, &c, None, &opts).err().expect("rows 2..4 of 3 must fail");
    assert!(matches!(err, WgnnError::Shape { .. }) && err.to_string().contains("2..4"), "{err}");

    // Labels only come with op(A) = A.
    let y = Tensor::zeros_u32(gpu, &[2]).unwrap();
    let dz = Tensor::zeros(gpu, &[4, 4]).unwrap();
    let dw = Tensor::zeros(gpu, &[8, 4]).unwrap();
    let weight_grad = GatheredA { stored_rows: 4, labels: Some(&y), ..a };
    let msg =
        matmul_gathered(gpu, &weight_grad, &dz, &dw, None, &MatmulOptions { trans_a: true, ..Default::default() })
            .err()
            .expect("labels with Aᵀ must fail")
            .to_string();
    assert!(msg.contains("matmul_gathered") && msg.contains("labels"), "{msg}");

    // A batch larger than the stored A, or a forward A of more rows than the batch.
    let msg =
        matmul_gathered(gpu, &GatheredA { rows: 3, ..a }, &w, &c, None, &opts).err().expect("3 rows in 2").to_string();
    assert!(msg.contains("matmul_gathered") && msg.contains("3 batch rows"), "{msg}");
}
