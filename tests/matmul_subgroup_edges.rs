//! The subgroup matmul by scalars (shaders/matmul_subgroup_edges.wgsl): products whose K, N or
//! transposed A's M is not a multiple of 4 (a vocabulary of 65, 10 classes) or whose views are
//! not 16-byte aligned. Checked against the CPU reference, and bit for bit against the register
//! kernel that ran these shapes before (the tuner may pick either: the results must not depend on
//! which). every_variant_and_form_matches_cpu (tests/matmul.rs) runs it on the edge sizes too.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::matmul::{
    choose_variant, matmul, matmul_column_sum, subgroup_narrow, Epilogue, MatmulOptions, MatmulVariant,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, GpuOptions, ProfileOverride, Tensor};

fn device(profile: ProfileOverride) -> Gpu {
    Gpu::with_options(&GpuOptions { profile, autotune: false, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

fn labels(plan: &wgnn::Plan) -> Vec<String> {
    plan.dispatches.iter().map(|d| d.label.clone()).collect()
}

/// (M, K, N, trans_a, trans_b): the tied head's three products at a small width, ragged K, N and
/// M in each form, a 32-row tile (M ≥ 64, K ≥ 128), one row, one column.
const SHAPES: [(usize, usize, usize, bool, bool); 9] = [
    (48, 32, 65, false, true),
    (48, 65, 32, false, false),
    (65, 48, 32, true, false),
    (70, 130, 66, false, false),
    (9, 7, 13, true, true),
    (100, 132, 21, false, false),
    (1, 9, 65, false, true),
    (33, 17, 1, true, false),
    (129, 250, 37, false, true),
];

#[test]
fn ragged_products_run_by_scalars_match_cpu_and_the_register_kernel_bit_for_bit() {
    let gpu = device(ProfileOverride::Adapter);
    if !gpu.profile().matmul.subgroup_kernel {
        eprintln!("the subgroup kernel does not run on {}: its refusal is checked below", gpu.describe());
    }
    let mut rng = Rng::new(65);
    for (i, &shape) in SHAPES.iter().enumerate() {
        let (m, k, n, ta, tb) = shape;
        let [(at, a), (bt, b)] = matmul_operands(&mut rng, &gpu, shape);
        let bias = rng.vec_uniform(n, -1.0, 1.0);
        let bias_t = Tensor::from_slice(&gpu, &[n], &bias).unwrap();
        let act = [Activation::Relu, Activation::Gelu, Activation::Identity][i % 3];
        let what = format!("{m}x{k}·{k}x{n} trans_a={ta} trans_b={tb} {act:?}");
        let mut outputs = Vec::new();
        for variant in [MatmulVariant::Subgroup, MatmulVariant::Register, MatmulVariant::RegisterTall] {
            let epilogue = Epilogue::BiasAct { bias: Some(&bias_t), act };
            let opts =
                MatmulOptions { trans_a: ta, trans_b: tb, epilogue, variant: Some(variant), ..Default::default() };
            let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
            let plan = matmul(&gpu, &at, &bt, &ct, &opts).unwrap();
            if variant == MatmulVariant::Subgroup {
                let want = if gpu.profile().matmul.subgroup_kernel { "edges" } else { "register" };
                assert!(labels(&plan).iter().all(|l| l.contains(want)), "{what}: {:?}", labels(&plan));
            }
            gpu.run(&[&plan]).unwrap();
            outputs.push(ct.to_vec().unwrap());
        }
        let z = cpu::matmul(&a, &b, m, k, n, ta, tb);
        let want = cpu::bias_act_forward(&z, Some(&bias), m, n, act);
        assert_close(&what, &outputs[0], &want, 2e-5 * (k as f32).sqrt(), 1e-4);
        // The same sums in the same order: equal to the bit (K < 256: neither splits it).
        assert!(outputs[0] == outputs[1] && outputs[0] == outputs[2], "{what}: subgroup ≠ register");
    }
}

#[test]
fn ragged_column_sums_match_cpu_and_the_register_kernel_bit_for_bit() {
    let gpu = device(ProfileOverride::Adapter);
    let mut rng = Rng::new(66);
    // dW = Xᵀ·dZ with db = Σ dZ: the tied head's (N = 65) and a 10-class layer's.
    for (m, k, n) in [(32, 48, 65), (64, 100, 10), (7, 3, 5)] {
        let [(at, a), (bt, b)] = matmul_operands(&mut rng, &gpu, (m, k, n, true, false));
        let mut outputs = Vec::new();
        for variant in [MatmulVariant::Subgroup, MatmulVariant::Register] {
            let opts = MatmulOptions { trans_a: true, variant: Some(variant), ..Default::default() };
            let (ct, st) = (Tensor::zeros(&gpu, &[m, n]).unwrap(), Tensor::zeros(&gpu, &[n]).unwrap());
            gpu.run(&[&matmul_column_sum(&gpu, &at, &bt, &ct, &st, &opts).unwrap()]).unwrap();
            outputs.push((ct.to_vec().unwrap(), st.to_vec().unwrap()));
        }
        let what = format!("{m}x{k}·{k}x{n} Aᵀ + column sums");
        assert_close(&what, &outputs[0].0, &cpu::matmul(&a, &b, m, k, n, true, false), 2e-5 * (k as f32).sqrt(), 1e-4);
        let sums: Vec<f32> = (0..n).map(|j| (0..k).map(|r| b[r * n + j]).sum()).collect();
        assert_close(&format!("{what}: sums"), &outputs[0].1, &sums, 1e-5 * k as f32, 1e-4);
        assert!(outputs[0] == outputs[1], "{what}: subgroup ≠ register");
    }
}

#[test]
fn the_cpu_adapter_policy_picks_it_for_ragged_products_but_not_narrow_ones_of_few_rows() {
    let (cpu_policy, gpu_policy) = (device(ProfileOverride::CpuAdapter), device(ProfileOverride::Gpu));
    let runs = cpu_policy.profile().matmul.subgroup_kernel;
    let ragged = if runs { MatmulVariant::Subgroup } else { MatmulVariant::Register };
    // The tied head's products at char_gpt's shapes.
    assert_eq!(choose_variant(&cpu_policy, 768, 65, 128, false, true), ragged);
    assert_eq!(choose_variant(&cpu_policy, 768, 128, 65, false, false), ragged);
    assert_eq!(choose_variant(&cpu_policy, 65, 128, 768, true, false), ragged);
    // 10 classes: the register kernel with its lanes along M where the rows are few (one 32-row
    // tile, below every split-K target); with rows enough, the subgroup kernel's 4-lane halves.
    assert_eq!(choose_variant(&cpu_policy, 32, 10, 64, false, false), MatmulVariant::RegisterTall);
    let rows = 32 * cpu_policy.profile().matmul.split_k_target_groups;
    assert!(subgroup_narrow(&cpu_policy, rows, 10));
    let halves = if runs { MatmulVariant::Subgroup } else { MatmulVariant::RegisterTall };
    assert_eq!(choose_variant(&cpu_policy, rows, 10, 64, false, false), halves);
    assert_eq!(choose_variant(&gpu_policy, 768, 65, 128, false, true), MatmulVariant::Register);
}
