//! matmul.wgsl against the CPU reference: every variant × every form, edge sizes, accumulate, both
//! epilogues, split-K past lavapipe's loop cap, errors; the GPU policy's choices forced on any
//! adapter; and the reference's gradients by finite differences. op(A) gathered from a data set:
//! tests/matmul_gathered.rs.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::matmul::{
    choose_variant, matmul, matmul_column_sum, Epilogue, MatmulOptions, MatmulVariant,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, GpuOptions, ProfileOverride, Tensor, WgnnError};

const FORMS: [(bool, bool); 3] = [(false, false), (true, false), (false, true)];

/// Tolerance grows with K: f32 sums of K products of values in [-1, 1].
fn atol(k: usize) -> f32 {
    2e-5 * (k as f32).sqrt()
}

/// A device of its own on the default adapter with `profile`, and without `Features::SUBGROUP`
/// where `subgroups` is false (a device without the subgroup kernel, on any adapter). The
/// autotuner is off: these tests check the static policy's picks (`choose_variant`); the tuned
/// ones are checked in tests/autotune.rs.
fn device(profile: ProfileOverride, subgroups: bool) -> Gpu {
    let features = if subgroups { |f| f } else { |f: wgpu::Features| f - wgpu::Features::SUBGROUP };
    Gpu::with_options(&GpuOptions { profile, features, autotune: false, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

/// Uploads random A (stored as the form needs) and B, returns (A, B, host A, host B).
fn operands(
    gpu: &Gpu,
    rng: &mut Rng,
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> (Tensor, Tensor, Vec<f32>, Vec<f32>) {
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let a_shape = if ta { [k, m] } else { [m, k] };
    let b_shape = if tb { [n, k] } else { [k, n] };
    let at = Tensor::from_slice(gpu, &a_shape, &a).unwrap();
    let bt = Tensor::from_slice(gpu, &b_shape, &b).unwrap();
    (at, bt, a, b)
}

fn run_case(
    gpu: &Gpu,
    rng: &mut Rng,
    (m, k, n): (usize, usize, usize),
    (ta, tb): (bool, bool),
    variant: Option<MatmulVariant>,
) {
    let (at, bt, a, b) = operands(gpu, rng, m, k, n, ta, tb);
    let ct = Tensor::zeros(gpu, &[m, n]).unwrap();
    let opts = MatmulOptions { trans_a: ta, trans_b: tb, variant, ..Default::default() };
    gpu.run(&[&matmul(gpu, &at, &bt, &ct, &opts).unwrap()]).unwrap();
    let want = cpu::matmul(&a, &b, m, k, n, ta, tb);
    let what = format!("matmul {variant:?} {m}x{k}·{k}x{n} trans_a={ta} trans_b={tb}");
    assert_close(&what, &ct.to_vec().unwrap(), &want, atol(k), 1e-4);
}

#[test]
fn every_variant_and_form_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(10);
    // (M, K, N), mixing SIZES across the three; some multiples of 4 so the vec4 paths run too.
    let shapes = [
        (1, 1, 1),
        (7, 63, 65),
        (64, 64, 64),
        (65, 127, 7),
        (127, 257, 63),
        (257, 7, 1),
        (1, 65, 257),
        (63, 1, 127),
        (32, 784, 64),
        (12, 20, 8),
        (64, 10, 10),
        (20, 36, 68),
        // The subgroup kernel's 32-row tiles (M ≥ 64, K ≥ 128), partial in M and K.
        (100, 132, 20),
    ];
    for variant in MatmulVariant::ALL {
        for form in FORMS {
            for &shape in &shapes {
                run_case(&gpu, &mut rng, shape, form, Some(variant));
            }
        }
    }
}

#[test]
fn column_sums_of_b_match_cpu() {
    // dW = Xᵀ·dZ with db = Σ_rows dZ: fused into the register and subgroup kernels (one dispatch),
    // a separate column_sum for naive and tiled and under split-K (K past the loop cap only).
    // The static choice for `None` (the dispatch count depends on the pick), under the policy
    // $WGNN_PROFILE names, as on the shared device.
    let profile = std::env::var(wgnn::device::PROFILE_ENV).ok().and_then(|p| ProfileOverride::parse(&p));
    let gpu = device(profile.unwrap_or_default(), true);
    let mut rng = Rng::new(16);
    let shapes = [(1, 1, 1), (7, 63, 65), (64, 32, 64), (784, 32, 64), (64, 32, 10), (65, 127, 7), (20, 36, 68)];
    let variants = MatmulVariant::ALL.map(Some).into_iter().chain([None]);
    for variant in variants {
        for ta in [false, true] {
            for &(m, k, n) in shapes.iter().chain(&[(7, 300, 5), (3, 70_000, 5)]) {
                let (at, bt, a, b) = operands(&gpu, &mut rng, m, k, n, ta, false);
                let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
                let st = Tensor::from_slice(&gpu, &[n], &vec![f32::NAN; n]).unwrap();
                let opts = MatmulOptions { trans_a: ta, variant, ..Default::default() };
                let plan = matmul_column_sum(&gpu, &at, &bt, &ct, &st, &opts).unwrap();
                gpu.run(&[&plan]).unwrap();
                let (want_c, want_s) = cpu::matmul_column_sum(&a, &b, m, k, n, ta);
                let what = format!("matmul_column_sum {variant:?} {m}x{k}·{k}x{n} trans_a={ta}");
                assert_close(&format!("{what} C"), &ct.to_vec().unwrap(), &want_c, atol(k), 1e-4);
                assert_close(&format!("{what} sums"), &st.to_vec().unwrap(), &want_s, atol(k), 1e-4);
                // Fused except in the naive and tiled kernels and where K passes the loop cap
                // (2,048 per invocation in the register and subgroup kernels).
                let picked = variant.unwrap_or_else(|| choose_variant(&gpu, m, n, k, ta, false));
                if !matches!(picked, MatmulVariant::Naive | MatmulVariant::Tiled) && k <= 2048 {
                    assert_eq!(plan.len(), 1, "{what}: the sums belong in the matmul dispatch");
                } else {
                    assert!(plan.len() >= 2, "{what}: a matmul and a column_sum");
                }
            }
        }
    }
    // Errors: op(B) transposed, a wrong length, memory shared with C.
    let (at, bt, _, _) = operands(&gpu, &mut rng, 4, 8, 4, false, true);
    let ct = Tensor::zeros(&gpu, &[4, 4]).unwrap();
    let st = Tensor::zeros(&gpu, &[4]).unwrap();
    let bad = |opts: &MatmulOptions, s: &Tensor| matmul_column_sum(&gpu, &at, &bt, &ct, s, opts).err().unwrap();
    let err = bad(&MatmulOptions { trans_b: true, ..Default::default() }, &st);
    assert!(err.to_string().contains("matmul_column_sum") && err.to_string().contains("transposed"), "{err}");
    let (at, bt, _, _) = operands(&gpu, &mut rng, 4, 8, 4, false, false);
    let err = matmul_column_sum(&gpu, &at, &bt, &ct, &Tensor::zeros(&gpu, &[5]).unwrap(), &MatmulOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("col_sum must have 4 values"), "{err}");
    let err =
        matmul_column_sum(&gpu, &at, &bt, &ct, &ct.view(0, &[4]).unwrap(), &MatmulOptions::default()).err().unwrap();
    assert!(err.to_string().contains("shares memory"), "{err}");
}

#[test]
fn large_non_square_with_the_engine_choice() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    run_case(&gpu, &mut rng, (300, 1000, 200), (false, false), None);
}

#[test]
fn training_shapes_with_the_engine_choice() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for &(m, k, n, form) in &[
        (32, 784, 64, (false, false)),
        (256, 64, 10, (false, false)),
        (784, 32, 64, (true, false)),
        (32, 64, 784, (false, true)),
        (256, 10, 64, (false, true)),
        (256, 784, 64, (false, false)),
        (784, 256, 64, (true, false)),
        (64, 256, 64, (true, false)),
    ] {
        run_case(&gpu, &mut rng, (m, k, n), form, None);
    }
}

#[test]
fn k_past_the_loop_cap_is_split() {
    // 70,000 > 65,535: one invocation looping over all of K would be cut short on lavapipe.
    let gpu = gpu();
    let mut rng = Rng::new(13);
    for variant in MatmulVariant::ALL {
        for form in FORMS {
            run_case(&gpu, &mut rng, (4, 70_000, 8), form, Some(variant));
        }
    }
    run_case(&gpu, &mut rng, (3, 70_001, 5), (false, false), None);
}

#[test]
fn accumulate_adds_to_c() {
    let gpu = gpu();
    let mut rng = Rng::new(14);
    for variant in MatmulVariant::ALL {
        for form in FORMS {
            // The first shape is split for parallelism, the second (on lavapipe) is not.
            for &(m, k, n) in &[(7, 300, 5), (257, 63, 64)] {
                let (at, bt, a, b) = operands(&gpu, &mut rng, m, k, n, form.0, form.1);
                let start = rng.vec_uniform(m * n, -1.0, 1.0);
                let ct = Tensor::from_slice(&gpu, &[m, n], &start).unwrap();
                let opts = MatmulOptions {
                    trans_a: form.0,
                    trans_b: form.1,
                    accumulate: true,
                    variant: Some(variant),
                    ..Default::default()
                };
                gpu.run(&[&matmul(&gpu, &at, &bt, &ct, &opts).unwrap()]).unwrap();
                let want: Vec<f32> =
                    cpu::matmul(&a, &b, m, k, n, form.0, form.1).iter().zip(&start).map(|(p, s)| p + s).collect();
                let what = format!("accumulate {variant:?} {m}x{k}·{k}x{n} {form:?}");
                assert_close(&what, &ct.to_vec().unwrap(), &want, atol(k), 1e-4);
            }
        }
    }
}

#[test]
fn epilogues_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(15);
    let acts = [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::LeakyRelu(0.1),
        Activation::Gelu,
        Activation::GeluErf,
    ];
    for variant in MatmulVariant::ALL {
        for (i, &act) in acts.iter().enumerate() {
            let form = FORMS[i % 3];
            for &(m, k, n) in &[(9, 200, 6), (130, 64, 65), (64, 784, 64)] {
                let (at, bt, a, b) = operands(&gpu, &mut rng, m, k, n, form.0, form.1);
                let z = cpu::matmul(&a, &b, m, k, n, form.0, form.1);
                let what = format!("{variant:?} {act:?} {m}x{k}·{k}x{n} {form:?}");

                // Forward: C = act(A·B + bias), with and without bias.
                let bias = rng.vec_uniform(n, -1.0, 1.0);
                let bias_t = Tensor::from_slice(&gpu, &[n], &bias).unwrap();
                for with_bias in [true, false] {
                    let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
                    let epilogue = Epilogue::BiasAct { bias: with_bias.then_some(&bias_t), act };
                    let opts = MatmulOptions {
                        trans_a: form.0,
                        trans_b: form.1,
                        epilogue,
                        variant: Some(variant),
                        ..Default::default()
                    };
                    gpu.run(&[&matmul(&gpu, &at, &bt, &ct, &opts).unwrap()]).unwrap();
                    let want = cpu::bias_act_forward(&z, with_bias.then_some(&bias[..]), m, n, act);
                    assert_close(
                        &format!("bias_act {what} bias={with_bias}"),
                        &ct.to_vec().unwrap(),
                        &want,
                        atol(k),
                        1e-4,
                    );
                }

                // Backward: C = (A·B) ⊙ act'(Y), Y what the forward saved (z for the GELUs).
                let pre = rng.vec_uniform(m * n, -2.0, 2.0);
                let y = if act.saves_input() { pre } else { cpu::bias_act_forward(&pre, None, m, n, act) };
                let yt = Tensor::from_slice(&gpu, &[m, n], &y).unwrap();
                let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
                let opts = MatmulOptions {
                    trans_a: form.0,
                    trans_b: form.1,
                    epilogue: Epilogue::ActGrad { y: &yt, act },
                    variant: Some(variant),
                    ..Default::default()
                };
                gpu.run(&[&matmul(&gpu, &at, &bt, &ct, &opts).unwrap()]).unwrap();
                let want: Vec<f32> = z.iter().zip(&y).map(|(&g, &o)| g * act.derivative_from_saved(o)).collect();
                assert_close(&format!("act_grad {what}"), &ct.to_vec().unwrap(), &want, atol(k), 1e-4);
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors_naming_matmul_and_the_shapes() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let b = Tensor::zeros(&gpu, &[5, 2]).unwrap();
    let c = Tensor::zeros(&gpu, &[4, 2]).unwrap();
    let opts = MatmulOptions::default();
    let err = matmul(&gpu, &a, &b, &c, &opts).err().expect("inner dimensions 3 vs 5 must fail");
    assert!(matches!(err, WgnnError::Shape { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("matmul") && msg.contains("[4, 3]") && msg.contains("[5, 2]"), "{msg}");

    let b = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    let wrong_c = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    let msg = matmul(&gpu, &a, &b, &wrong_c, &opts).err().expect("wrong C must fail").to_string();
    assert!(msg.contains("matmul") && msg.contains("[2, 4]") && msg.contains("[4, 2]"), "{msg}");

    // trans_a: A [4, 3] is [K, M] = op(A) [3, 4], which does not fit B [3, 2].
    let msg = matmul(&gpu, &a, &b, &c, &MatmulOptions { trans_a: true, ..Default::default() })
        .err()
        .expect("transposed mismatch must fail")
        .to_string();
    assert!(msg.contains("matmul") && msg.contains("Aᵀ"), "{msg}");

    let empty = Tensor::zeros(&gpu, &[0, 3]).unwrap();
    let err = matmul(&gpu, &empty, &b, &c, &opts).err().expect("empty must fail");
    assert!(
        matches!(err, WgnnError::EmptyTensor { .. })
            && err.to_string().contains("matmul")
            && err.to_string().contains("[0, 3]"),
        "{err}"
    );

    let labels = Tensor::zeros_u32(&gpu, &[4, 3]).unwrap();
    let err = matmul(&gpu, &labels, &b, &c, &opts).err().expect("u32 must fail");
    assert!(matches!(err, WgnnError::DType { .. }) && err.to_string().contains("matmul"), "{err}");

    let vector = Tensor::zeros(&gpu, &[12]).unwrap();
    let msg = matmul(&gpu, &vector, &b, &c, &opts).err().expect("rank 1 must fail").to_string();
    assert!(msg.contains("matmul") && msg.contains("[12]"), "{msg}");

    let square = Tensor::zeros(&gpu, &[4, 4]).unwrap();
    let msg = matmul(&gpu, &square, &square, &square, &opts).err().expect("C = A must fail").to_string();
    assert!(msg.contains("matmul") && msg.contains("shares memory"), "{msg}");

    let bias = Tensor::zeros(&gpu, &[3]).unwrap();
    let epilogue = Epilogue::BiasAct { bias: Some(&bias), act: Activation::Relu };
    let msg = matmul(&gpu, &a, &b, &c, &MatmulOptions { epilogue, ..Default::default() })
        .err()
        .expect("bias of 3 must fail")
        .to_string();
    assert!(msg.contains("matmul") && msg.contains("bias") && msg.contains("[3]"), "{msg}");

    let y = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    let epilogue = Epilogue::ActGrad { y: &y, act: Activation::Relu };
    let msg = matmul(&gpu, &a, &b, &c, &MatmulOptions { epilogue, ..Default::default() })
        .err()
        .expect("Y [2, 4] must fail")
        .to_string();
    assert!(msg.contains("matmul") && msg.contains("[2, 4]"), "{msg}");

    let epilogue = Epilogue::BiasAct { bias: None, act: Activation::Relu };
    let msg = matmul(&gpu, &a, &b, &c, &MatmulOptions { epilogue, accumulate: true, ..Default::default() })
        .err()
        .expect("accumulate with an epilogue must fail")
        .to_string();
    assert!(msg.contains("matmul") && msg.contains("accumulate"), "{msg}");
}

#[test]
fn engine_choice_and_pipeline_cache() {
    // A device of its own: tests running in parallel on the shared one build pipelines meanwhile.
    let gpu = Gpu::new().unwrap();
    // Every choice is a real variant, and building a plan twice for new shapes of the same class
    // builds no new pipeline.
    let v = choose_variant(&gpu, 256, 64, 784, false, false);
    assert!(MatmulVariant::ALL.contains(&v));
    let make = |m: usize| {
        let a = Tensor::zeros(&gpu, &[m, 64]).unwrap();
        let b = Tensor::zeros(&gpu, &[64, 64]).unwrap();
        let c = Tensor::zeros(&gpu, &[m, 64]).unwrap();
        matmul(&gpu, &a, &b, &c, &MatmulOptions { variant: Some(MatmulVariant::Register), ..Default::default() })
            .unwrap();
    };
    make(4096);
    let before = gpu.pipeline_count();
    make(8192);
    make(4100);
    assert_eq!(gpu.pipeline_count(), before, "a new shape must reuse the cached pipeline");
}

#[test]
fn the_gpu_policy_runs_its_kernels_on_any_adapter() {
    // A GPU's choices forced on whatever adapter this is (lavapipe in CI): tiles for large
    // products, 4×8 register blocks in 16×4 workgroups, and K split until about 256 workgroups.
    let gpu = device(ProfileOverride::Gpu, true);
    let policy = gpu.profile().matmul;
    assert_eq!((policy.register_workgroup, policy.split_k_target_groups), ([16, 4], 256));
    let mut rng = Rng::new(17);
    let product = |rng: &mut Rng, (m, k, n): (usize, usize, usize), variant: Option<MatmulVariant>| {
        let (at, bt, a, b) = operands(&gpu, rng, m, k, n, false, false);
        let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
        let plan = matmul(&gpu, &at, &bt, &ct, &MatmulOptions { variant, ..Default::default() }).unwrap();
        gpu.run(&[&plan]).unwrap();
        let what = format!("gpu policy {variant:?} {m}x{k}·{k}x{n}");
        assert_close(&what, &ct.to_vec().unwrap(), &cpu::matmul(&a, &b, m, k, n, false, false), atol(k), 1e-4);
        plan.dispatches.iter().map(|d| (d.label.clone(), d.workgroups)).collect::<Vec<_>>()
    };
    // The engine's picks: tiled from 128×128 (K ≥ 64) on, 4×8 registers below, never the subgroup
    // kernel; each matches the reference.
    assert_eq!(choose_variant(&gpu, 256, 256, 256, false, false), MatmulVariant::Tiled);
    assert_eq!(product(&mut rng, (256, 256, 256), None)[0].0, "matmul::matmul_tiled");
    for (m, k, n) in [(32, 784, 64), (256, 64, 10), (200, 128, 32), (64, 256, 64)] {
        assert_eq!(choose_variant(&gpu, m, n, k, false, false), MatmulVariant::Register, "{m}x{k}·{k}x{n}");
        let label = product(&mut rng, (m, k, n), None)[0].0.clone();
        assert!(label.starts_with("matmul::matmul_register"), "{label}");
    }
    // 16×4 workgroups of 4×8 blocks: 200×32 outputs take 1 × 13 of them (a CPU adapter's 16×1
    // would take 1 × 50), K not split (13 workgroups want 20 chunks, but K = 128 keeps one).
    assert_eq!(
        product(&mut rng, (200, 128, 32), Some(MatmulVariant::Register)),
        [("matmul::matmul_register".into(), [1, 13, 1])]
    );
    // The split-K target: 64×64 outputs are 4 workgroups, so K = 4096 is split into 32 chunks of
    // 128 (a CPU adapter's target of 2 per thread splits it in 2, as the loop cap asks), then
    // summed by a second dispatch.
    let dispatches = product(&mut rng, (64, 4096, 64), Some(MatmulVariant::Register));
    assert_eq!(dispatches.len(), 2, "{dispatches:?}");
    assert_eq!(dispatches[0].1, [1, 4, 32], "{dispatches:?}");
    assert_eq!(dispatches[1].0, "matmul::matmul_reduce");
    // The subgroup kernel, asked for by name, still runs where the hardware has it (the policy
    // only stops the engine from picking it).
    let picked = product(&mut rng, (64, 256, 64), Some(MatmulVariant::Subgroup))[0].0.clone();
    let want = if policy.subgroup_kernel { "matmul_subgroup::matmul_subgroup" } else { "matmul::matmul_register" };
    assert_eq!(picked, want);
}

#[test]
fn reference_gradients_match_finite_differences() {
    // L = Σ W ⊙ op(A)·op(B); dL/dC = W, so dop(A) = W·op(B)ᵀ and dop(B) = op(A)ᵀ·W, computed with
    // the reference itself, then mapped back to the stored layout.
    let mut rng = Rng::new(16);
    let (m, k, n) = (3, 4, 5);
    for (ta, tb) in FORMS {
        let a = rng.vec_uniform(m * k, -1.0, 1.0);
        let b = rng.vec_uniform(k * n, -1.0, 1.0);
        let w = rng.vec_uniform(m * n, -1.0, 1.0);
        let loss = |a: &[f32], b: &[f32]| dot(&w, &cpu::matmul(a, b, m, k, n, ta, tb));
        // dA stored: [m, k] = W·op(B)ᵀ, or [k, m] = op(B)·Wᵀ when trans_a.
        let da = if ta { cpu::matmul(&b, &w, k, n, m, tb, true) } else { cpu::matmul(&w, &b, m, n, k, false, !tb) };
        // dB stored: [k, n] = op(A)ᵀ·W, or [n, k] = Wᵀ·op(A) when trans_b.
        let db = if tb { cpu::matmul(&w, &a, n, m, k, true, ta) } else { cpu::matmul(&a, &w, k, m, n, !ta, false) };
        let num_da = numeric_gradient(&a, 1e-2, |ap| loss(ap, &b));
        let num_db = numeric_gradient(&b, 1e-2, |bp| loss(&a, bp));
        assert_close(&format!("dA trans_a={ta} trans_b={tb}"), &da, &num_da, 1e-3, 1e-3);
        assert_close(&format!("dB trans_a={ta} trans_b={tb}"), &db, &num_db, 1e-3, 1e-3);
    }
}
