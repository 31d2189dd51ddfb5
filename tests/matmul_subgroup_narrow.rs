//! The subgroup matmul's two 16-row halves of 4 lanes (NARROW in shaders/matmul_subgroup.wgsl),
//! taken for outputs of at most 16 columns with enough rows: checked against the CPU reference in
//! every form (op(A) and op(B) transposed or not, bias and activation, column sums, split K) and
//! bit for bit against the register kernel, whose sums it adds in the same order. The rows are
//! sized from the device's split-K target, so that the halves run under every profile. (The
//! kernel's other 4-lane mode, K_HALVES, runs only where op(A) is read in place: tests/conv2d_implicit.rs.)

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::matmul::{
    matmul, matmul_column_sum, subgroup_narrow, Epilogue, MatmulOptions, MatmulVariant,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, GpuOptions, ProfileOverride, Tensor};

fn device() -> Gpu {
    Gpu::with_options(&GpuOptions { profile: ProfileOverride::Adapter, autotune: false, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

/// Rows enough for the halves on `gpu`, plus `extra` (a last tile cut short).
fn narrow_rows(gpu: &Gpu, extra: usize) -> usize {
    32 * gpu.profile().matmul.split_k_target_groups + extra
}

#[test]
fn narrow_products_match_cpu_and_the_register_kernel_bit_for_bit() {
    let gpu = device();
    let mut rng = Rng::new(16);
    // (extra rows, K, N, trans_a, trans_b): 16, 12, 8 and 4 columns; K a few 16-long chunks, a
    // partial last one, one step; ragged ones (N 10, K 9) through the scalar module.
    let cases: [(usize, usize, usize, bool, bool); 7] = [
        (0, 64, 16, false, false),
        (5, 100, 12, false, true),
        (17, 36, 8, true, false),
        (31, 4, 4, false, false),
        (1, 300, 16, true, true),
        (9, 64, 10, false, false),
        (3, 9, 16, false, true),
    ];
    for (i, &(extra, k, n, ta, tb)) in cases.iter().enumerate() {
        let m = narrow_rows(&gpu, extra);
        assert!(subgroup_narrow(&gpu, m, n), "{m} rows, {n} columns: the halves should run");
        let [(at, a), (bt, b)] = matmul_operands(&mut rng, &gpu, (m, k, n, ta, tb));
        let bias = rng.vec_uniform(n, -1.0, 1.0);
        let bias_t = Tensor::from_slice(&gpu, &[n], &bias).unwrap();
        let act = [Activation::Relu, Activation::Identity, Activation::Gelu][i % 3];
        let what = format!("{m}x{k}·{k}x{n} trans_a={ta} trans_b={tb} {act:?}");
        let mut outputs = Vec::new();
        for variant in [MatmulVariant::Subgroup, MatmulVariant::Register] {
            let epilogue = Epilogue::BiasAct { bias: Some(&bias_t), act };
            let opts =
                MatmulOptions { trans_a: ta, trans_b: tb, epilogue, variant: Some(variant), ..Default::default() };
            let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
            gpu.run(&[&matmul(&gpu, &at, &bt, &ct, &opts).unwrap()]).unwrap();
            outputs.push(ct.to_vec().unwrap());
        }
        let z = cpu::matmul(&a, &b, m, k, n, ta, tb);
        let want = cpu::bias_act_forward(&z, Some(&bias), m, n, act);
        assert_close(&what, &outputs[0], &want, 2e-5 * (k as f32).sqrt(), 1e-4);
        if k < 256 {
            // Neither kernel splits K this short: the same sums in the same order.
            assert!(outputs[0] == outputs[1], "{what}: subgroup ≠ register");
        }
    }
}

#[test]
fn narrow_weight_gradients_with_column_sums_match_cpu() {
    let gpu = device();
    let mut rng = Rng::new(17);
    // dW = Xᵀ·dZ with db = Σ dZ, M the layer's inputs: K (the batch) within one pass, and long
    // enough to be split.
    for (extra, k, n) in [(7, 48, 16), (0, 96, 8), (2, 5000, 12)] {
        let m = narrow_rows(&gpu, extra);
        let [(at, a), (bt, b)] = matmul_operands(&mut rng, &gpu, (m, k, n, true, false));
        let opts = MatmulOptions { trans_a: true, variant: Some(MatmulVariant::Subgroup), ..Default::default() };
        let (ct, st) = (Tensor::zeros(&gpu, &[m, n]).unwrap(), Tensor::zeros(&gpu, &[n]).unwrap());
        gpu.run(&[&matmul_column_sum(&gpu, &at, &bt, &ct, &st, &opts).unwrap()]).unwrap();
        let what = format!("{m}x{k}·{k}x{n} Aᵀ + column sums");
        let want = cpu::matmul(&a, &b, m, k, n, true, false);
        assert_close(&what, &ct.to_vec().unwrap(), &want, 2e-5 * (k as f32).sqrt(), 1e-4);
        let sums: Vec<f32> = (0..n).map(|j| (0..k).map(|r| b[r * n + j]).sum()).collect();
        assert_close(&format!("{what}: sums"), &st.to_vec().unwrap(), &sums, 1e-5 * k as f32, 1e-4);
    }
}

#[test]
fn wide_outputs_and_few_rows_keep_the_eight_lane_tiles() {
    let gpu = device();
    let target = gpu.profile().matmul.split_k_target_groups;
    assert!(!subgroup_narrow(&gpu, 32 * target, 17), "17 columns fill more than 4 lanes");
    assert!(!subgroup_narrow(&gpu, 32 * target - 32, 16), "fewer row tiles than the split-K target");
    assert!(subgroup_narrow(&gpu, 32 * target, 1));
}
