//! matmul_register.wgsl against the CPU reference: every preset tile × every form (all four
//! transpose combinations) on awkward shapes, the vec4 and scalar staging, accumulate, both
//! epilogues, column sums, split-K past lavapipe's loop cap, tile checks and argument errors.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::matmul::{Epilogue, MatmulOptions};
use wgnn::internals::kernels::matmul_register::{
    matmul_register, matmul_register_column_sum, matmul_register_supported, RegisterTile,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Plan, Tensor, WgnnError};

const FORMS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

/// Tolerance grows with K: f32 sums of K products of values in [-1, 1].
fn atol(k: usize) -> f32 {
    2e-5 * (k as f32).sqrt()
}

/// Uploads random A (stored as the form needs) and B, returns (A, B, host A, host B).
fn operands(
    gpu: &Gpu,
    rng: &mut Rng,
    (m, k, n): (usize, usize, usize),
    (ta, tb): (bool, bool),
) -> (Tensor, Tensor, Vec<f32>, Vec<f32>) {
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let at = Tensor::from_slice(gpu, &if ta { [k, m] } else { [m, k] }, &a).unwrap();
    let bt = Tensor::from_slice(gpu, &if tb { [n, k] } else { [k, n] }, &b).unwrap();
    (at, bt, a, b)
}

fn options(form: (bool, bool)) -> MatmulOptions<'static> {
    MatmulOptions { trans_a: form.0, trans_b: form.1, ..Default::default() }
}

/// Runs C = op(A)·op(B) with `tile` and checks it; returns the plan.
fn run_case(gpu: &Gpu, rng: &mut Rng, shape: (usize, usize, usize), form: (bool, bool), tile: RegisterTile) -> Plan {
    let (m, k, n) = shape;
    let (at, bt, a, b) = operands(gpu, rng, shape, form);
    // NaN start: every output must be written.
    let ct = Tensor::from_slice(gpu, &[m, n], &vec![f32::NAN; m * n]).unwrap();
    let plan = matmul_register(gpu, &at, &bt, &ct, &options(form), tile).unwrap();
    gpu.run(&[&plan]).unwrap();
    let want = cpu::matmul(&a, &b, m, k, n, form.0, form.1);
    let what = format!("matmul_register {} {m}x{k}·{k}x{n} {form:?}", tile.name());
    assert_close(&what, &ct.to_vec().unwrap(), &want, atol(k), 1e-4);
    plan
}

/// Whether the plan's main dispatch stages with vec4 loads.
fn staged_vec4(plan: &Plan) -> bool {
    plan.dispatches.iter().any(|d| d.label.ends_with("mmr_vec4"))
}

// Every (tile, form, staging) is a pipeline, and llvmpipe takes ~1 s to compile one of these: the
// tests below pair tiles, forms and shapes so that they share the ~20 that the first one builds
// (each tile and each form with both stagings; the epilogue, accumulate and split-K are uniforms,
// not pipelines).

/// Shapes whose contiguous dimensions are all multiples of 4 (vec4 staging in every form), and
/// shapes with odd ones (scalar staging in every form); partial last tiles along every axis.
const VEC4_SHAPES: [(usize, usize, usize); 4] = [(20, 36, 68), (132, 20, 136), (64, 64, 64), (4, 8, 12)];
const SCALAR_SHAPES: [(usize, usize, usize); 7] =
    [(1, 1, 1), (7, 63, 65), (65, 127, 7), (127, 257, 63), (257, 7, 1), (1, 65, 257), (63, 1, 127)];

/// The staging the pairing gives tile i and form j: tile 0 both, the others alternate.
fn stagings(i: usize, j: usize) -> &'static [bool] {
    match (i, (i + j) % 2) {
        (0, _) => &[true, false],
        (_, 0) => &[true],
        _ => &[false],
    }
}

#[test]
fn every_tile_and_form_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(30);
    for (i, tile) in RegisterTile::PRESETS.into_iter().enumerate() {
        assert!(matmul_register_supported(&gpu, tile), "{} must fit every device", tile.name());
        for (j, form) in FORMS.into_iter().enumerate() {
            for &vec4 in stagings(i, j) {
                let shapes: &[(usize, usize, usize)] = if vec4 { &VEC4_SHAPES } else { &SCALAR_SHAPES };
                for &shape in shapes {
                    let plan = run_case(&gpu, &mut rng, shape, form, tile);
                    assert_eq!(staged_vec4(&plan), vec4, "{} {shape:?} {form:?}: vec4 staging", tile.name());
                }
            }
        }
    }
}

#[test]
fn larger_and_non_square_shapes_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    // Several tiles per axis with partial last ones, sizes up to ~300, one large non-square; the
    // (tile, form, staging) as paired above.
    let cases = [
        ((300, 300, 300), (true, false), RegisterTile::T128X128_8X8),
        ((299, 181, 263), (true, true), RegisterTile::T64X64_4X4),
        ((257, 129, 131), (true, true), RegisterTile::T128X64_8X4),
        ((131, 300, 257), (false, false), RegisterTile::T64X64_8X8),
        ((300, 1000, 200), (false, false), RegisterTile::T64X64_4X4),
        ((784, 256, 64), (true, false), RegisterTile::T64X64_8X8),
    ];
    for (shape, form, tile) in cases {
        run_case(&gpu, &mut rng, shape, form, tile);
    }
}

#[test]
fn k_past_the_loop_cap_is_split() {
    // 70,000 > 65,535: one invocation looping over all of K would be cut short on lavapipe. The
    // 64×64 tiles take it; the larger ones (a whole tile computed for 4×8 outputs, seconds on
    // lavapipe) a K of a little over two chunks.
    let gpu = gpu();
    let mut rng = Rng::new(32);
    for (i, tile) in RegisterTile::PRESETS.into_iter().enumerate() {
        let kc = tile.max_kc() as usize;
        assert!(kc.is_multiple_of(tile.bk as usize) && kc <= 4096, "{}: K chunk {kc}", tile.name());
        let k = if tile.bm == 64 { 70_000 } else { 2 * kc + 4 };
        let plan = run_case(&gpu, &mut rng, (4, k, 8), FORMS[i], tile);
        assert_eq!(plan.len(), 2, "{} {:?}: the chunks and their reduction", tile.name(), FORMS[i]);
    }
    run_case(&gpu, &mut rng, (3, 70_001, 5), (false, true), RegisterTile::T64X64_4X4);
}

#[test]
fn accumulate_adds_to_c() {
    let gpu = gpu();
    let mut rng = Rng::new(33);
    for (j, form) in FORMS.into_iter().enumerate() {
        let tile = RegisterTile::PRESETS[(j + 1) % 4];
        // The first shape is split for parallelism, the second is not (a single chunk).
        for &(m, k, n) in &[(7, 301, 5), (257, 63, 64)] {
            let (at, bt, a, b) = operands(&gpu, &mut rng, (m, k, n), form);
            let start = rng.vec_uniform(m * n, -1.0, 1.0);
            let ct = Tensor::from_slice(&gpu, &[m, n], &start).unwrap();
            let opts = MatmulOptions { accumulate: true, ..options(form) };
            let plan = matmul_register(&gpu, &at, &bt, &ct, &opts, tile).unwrap();
            gpu.run(&[&plan]).unwrap();
            let want: Vec<f32> =
                cpu::matmul(&a, &b, m, k, n, form.0, form.1).iter().zip(&start).map(|(p, s)| p + s).collect();
            let what = format!("accumulate {} {m}x{k}·{k}x{n} {form:?}", tile.name());
            assert_close(&what, &ct.to_vec().unwrap(), &want, atol(k), 1e-4);
            assert_eq!(plan.len(), if k > 300 { 2 } else { 1 }, "{what}: split for parallelism or not");
        }
    }
}

#[test]
fn epilogues_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(34);
    let acts = [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::LeakyRelu(0.1),
        Activation::Gelu,
        Activation::GeluErf,
    ];
    for (i, &act) in acts.iter().enumerate() {
        let form = FORMS[i % FORMS.len()];
        // Split for parallelism, not split, and a vec4 forward shape.
        for &(m, k, n) in &[(9, 201, 6), (130, 63, 65), (64, 784, 64)] {
            let tile = if m == 64 { RegisterTile::T64X64_4X4 } else { RegisterTile::PRESETS[(i + 1) % 4] };
            let (at, bt, a, b) = operands(&gpu, &mut rng, (m, k, n), form);
            let z = cpu::matmul(&a, &b, m, k, n, form.0, form.1);
            let what = format!("{} {act:?} {m}x{k}·{k}x{n} {form:?}", tile.name());

            // Forward: C = act(A·B + bias), with and without bias.
            let bias = rng.vec_uniform(n, -1.0, 1.0);
            let bias_t = Tensor::from_slice(&gpu, &[n], &bias).unwrap();
            for with_bias in [true, false] {
                let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
                let epilogue = Epilogue::BiasAct { bias: with_bias.then_some(&bias_t), act };
                let opts = MatmulOptions { epilogue, ..options(form) };
                gpu.run(&[&matmul_register(&gpu, &at, &bt, &ct, &opts, tile).unwrap()]).unwrap();
                let want = cpu::bias_act_forward(&z, with_bias.then_some(&bias[..]), m, n, act);
                let got = ct.to_vec().unwrap();
                assert_close(&format!("bias_act {what} bias={with_bias}"), &got, &want, atol(k), 1e-4);
            }

            // Backward: C = (A·B) ⊙ act'(Y), Y what the forward saved (z for the GELUs).
            let pre = rng.vec_uniform(m * n, -2.0, 2.0);
            let y = if act.saves_input() { pre } else { cpu::bias_act_forward(&pre, None, m, n, act) };
            let yt = Tensor::from_slice(&gpu, &[m, n], &y).unwrap();
            let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
            let opts = MatmulOptions { epilogue: Epilogue::ActGrad { y: &yt, act }, ..options(form) };
            gpu.run(&[&matmul_register(&gpu, &at, &bt, &ct, &opts, tile).unwrap()]).unwrap();
            let want: Vec<f32> = z.iter().zip(&y).map(|(&g, &o)| g * act.derivative_from_saved(o)).collect();
            assert_close(&format!("act_grad {what}"), &ct.to_vec().unwrap(), &want, atol(k), 1e-4);
        }
    }
}

#[test]
fn column_sums_of_b_match_cpu() {
    // dW = Xᵀ·dZ with db = Σ_rows dZ: in the matmul dispatch where K is one chunk, a separate
    // column_sum where it is split (K past the tile's chunk). A pipeline per tile: the scalar
    // shapes with op(A) = A, the vec4 ones with Aᵀ.
    let gpu = gpu();
    let mut rng = Rng::new(35);
    for (i, tile) in RegisterTile::PRESETS.into_iter().enumerate() {
        let ta = i % 2 == 1;
        let shapes: &[(usize, usize, usize)] = if ta {
            &[(784, 32, 64), (64, 256, 12), (132, 36, 260), (4, 4, 4)]
        } else {
            &[(1, 1, 1), (7, 63, 65), (65, 127, 7), (64, 257, 10), (3, 5000, 5)]
        };
        for &(m, k, n) in shapes {
            let (at, bt, a, b) = operands(&gpu, &mut rng, (m, k, n), (ta, false));
            let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
            let st = Tensor::from_slice(&gpu, &[n], &vec![f32::NAN; n]).unwrap();
            let opts = options((ta, false));
            let plan = matmul_register_column_sum(&gpu, &at, &bt, &ct, &st, &opts, tile).unwrap();
            gpu.run(&[&plan]).unwrap();
            let (want_c, want_s) = cpu::matmul_column_sum(&a, &b, m, k, n, ta);
            let what = format!("matmul_register_column_sum {} {m}x{k}·{k}x{n} trans_a={ta}", tile.name());
            assert_close(&format!("{what} C"), &ct.to_vec().unwrap(), &want_c, atol(k), 1e-4);
            assert_close(&format!("{what} sums"), &st.to_vec().unwrap(), &want_s, atol(k), 1e-4);
            if k <= tile.max_kc() as usize {
                assert_eq!(plan.len(), 1, "{what}: the sums belong in the matmul dispatch");
            } else {
                // A column_sum (of 2 dispatches past its 4,096-row chunk), the chunks, the reduction.
                assert!(plan.len() >= 3, "{what}: a column_sum, the chunks and their reduction");
            }
        }
    }
}

#[test]
fn tiles_are_checked() {
    let gpu = gpu();
    let (a, b, c) = (
        Tensor::zeros(&gpu, &[8, 8]).unwrap(),
        Tensor::zeros(&gpu, &[8, 8]).unwrap(),
        Tensor::zeros(&gpu, &[8, 8]).unwrap(),
    );
    let opts = MatmulOptions::default();
    let base = RegisterTile::T64X64_4X4;
    for (bad, needle) in [
        (RegisterTile { tm: 2, ..base }, "4 or 8"),
        (RegisterTile { bm: 60, tm: 8, ..base }, "multiples of tm"),
        (RegisterTile { bk: 6, ..base }, "multiple of 4"),
        // 16×16 invocations staging 64·4/4 = 64 vec4s: not one each.
        (RegisterTile { bk: 4, ..base }, "whole vec4s"),
    ] {
        assert!(!matmul_register_supported(&gpu, bad));
        let err = matmul_register(&gpu, &a, &b, &c, &opts, bad).err().expect("a malformed tile must fail");
        let msg = err.to_string();
        assert!(msg.contains("matmul_register") && msg.contains(&bad.name()) && msg.contains(needle), "{msg}");
    }
    // Past the device's workgroup memory and invocation limits.
    let limits = gpu.limits().clone();
    let wide_k = limits.max_compute_workgroup_storage_size / (2 * 64 * 4) + 4;
    let too_much_memory = RegisterTile { bk: wide_k.next_multiple_of(16), ..base };
    let too_many_threads =
        RegisterTile { bm: 4 * (limits.max_compute_invocations_per_workgroup + 1), bn: 4, bk: 16, tm: 4, tn: 4 };
    for bad in [too_much_memory, too_many_threads] {
        assert!(!matmul_register_supported(&gpu, bad));
        let err = matmul_register(&gpu, &a, &b, &c, &opts, bad).err().expect("a tile past the limits must fail");
        assert!(matches!(err, WgnnError::DeviceLimit { .. }) && err.to_string().contains("matmul_register"), "{err}");
    }
}

#[test]
fn bad_arguments_are_errors_naming_the_op_and_the_shapes() {
    let gpu = gpu();
    let tile = RegisterTile::T64X64_4X4;
    let a = Tensor::zeros(&gpu, &[4, 3]).unwrap();
    let b = Tensor::zeros(&gpu, &[5, 2]).unwrap();
    let c = Tensor::zeros(&gpu, &[4, 2]).unwrap();
    let opts = MatmulOptions::default();
    let err = matmul_register(&gpu, &a, &b, &c, &opts, tile).err().expect("inner dimensions 3 vs 5 must fail");
    let msg = err.to_string();
    assert!(matches!(err, WgnnError::Shape { .. }), "{err}");
    assert!(msg.contains("matmul_register") && msg.contains("[4, 3]") && msg.contains("[5, 2]"), "{msg}");

    let b = Tensor::zeros(&gpu, &[3, 2]).unwrap();
    let wrong_c = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    let msg = matmul_register(&gpu, &a, &b, &wrong_c, &opts, tile).err().expect("wrong C must fail").to_string();
    assert!(msg.contains("[2, 4]") && msg.contains("[4, 2]"), "{msg}");

    let msg = matmul_register(&gpu, &a, &b, &c, &options((true, false)), tile)
        .err()
        .expect("transposed mismatch must fail")
        .to_string();
    assert!(msg.contains("matmul_register") && msg.contains("Aᵀ"), "{msg}");

    let empty = Tensor::zeros(&gpu, &[0, 3]).unwrap();
    let err = matmul_register(&gpu, &empty, &b, &c, &opts, tile).err().expect("empty must fail");
    assert!(matches!(err, WgnnError::EmptyTensor { .. }), "{err}");

    let labels = Tensor::zeros_u32(&gpu, &[4, 3]).unwrap();
    let err = matmul_register(&gpu, &labels, &b, &c, &opts, tile).err().expect("u32 must fail");
    assert!(matches!(err, WgnnError::DType { .. }), "{err}");

    let vector = Tensor::zeros(&gpu, &[12]).unwrap();
    let msg = matmul_register(&gpu, &vector, &b, &c, &opts, tile).err().expect("rank 1 must fail").to_string();
    assert!(msg.contains("matmul_register") && msg.contains("[12]"), "{msg}");

    let square = Tensor::zeros(&gpu, &[4, 4]).unwrap();
    let msg = matmul_register(&gpu, &square, &square, &square, &opts, tile).err().expect("C = A").to_string();
    assert!(msg.contains("shares memory"), "{msg}");

    let bias = Tensor::zeros(&gpu, &[3]).unwrap();
    let epilogue = Epilogue::BiasAct { bias: Some(&bias), act: Activation::Relu };
    let msg = matmul_register(&gpu, &a, &b, &c, &MatmulOptions { epilogue, ..opts }, tile)
        .err()
        .expect("bias of 3 must fail")
        .to_string();
    assert!(msg.contains("bias") && msg.contains("[3]"), "{msg}");

    let y = Tensor::zeros(&gpu, &[2, 4]).unwrap();
    let epilogue = Epilogue::ActGrad { y: &y, act: Activation::Relu };
    let msg = matmul_register(&gpu, &a, &b, &c, &MatmulOptions { epilogue, ..opts }, tile)
        .err()
        .expect("Y [2, 4] must fail")
        .to_string();
    assert!(msg.contains("Y") && msg.contains("[2, 4]"), "{msg}");

    let epilogue = Epilogue::BiasAct { bias: None, act: Activation::Relu };
    let msg = matmul_register(&gpu, &a, &b, &c, &MatmulOptions { epilogue, accumulate: true, ..opts }, tile)
        .err()
        .expect("accumulate with an epilogue must fail")
        .to_string();
    assert!(msg.contains("accumulate"), "{msg}");

    let sums = Tensor::zeros(&gpu, &[2]).unwrap();
    let b_stored_nk = Tensor::zeros(&gpu, &[2, 3]).unwrap();
    let msg = matmul_register_column_sum(&gpu, &a, &b_stored_nk, &c, &sums, &options((false, true)), tile)
        .err()
        .expect("column sums of a transposed B must fail")
        .to_string();
    assert!(msg.contains("transposed"), "{msg}");
    let msg = matmul_register_column_sum(&gpu, &a, &b, &c, &Tensor::zeros(&gpu, &[3]).unwrap(), &opts, tile)
        .err()
        .expect("3 sums for 2 columns must fail")
        .to_string();
    assert!(msg.contains("col_sum must have 2 values"), "{msg}");
}

#[test]
fn a_new_shape_reuses_the_pipeline() {
    // A device of its own: tests running in parallel on the shared one build pipelines meanwhile.
    let gpu = Gpu::new().unwrap();
    let make = |m: usize| {
        let a = Tensor::zeros(&gpu, &[m, 64]).unwrap();
        let b = Tensor::zeros(&gpu, &[64, 64]).unwrap();
        let c = Tensor::zeros(&gpu, &[m, 64]).unwrap();
        matmul_register(&gpu, &a, &b, &c, &MatmulOptions::default(), RegisterTile::T64X64_4X4).unwrap();
    };
    make(4096);
    let before = gpu.pipeline_count();
    make(8192);
    make(4100);
    assert_eq!(gpu.pipeline_count(), before, "a new shape must reuse the cached pipeline");
}
