//! The matmul epilogues that save a pass of their own against the CPU reference: C = act(A·B + b)
//! keeping the pre-activation A·B + b (what a GELU's backward reads), and C = act(A·B + b + R)
//! (a residual sum after a dense layer), on every variant and register tile, every form, edge
//! sizes and split-K; and the arguments they refuse.

mod common;
use common::*;
use wgnn::internals::cpu;
use wgnn::internals::kernels::matmul::{matmul, matmul_column_sum, Epilogue, MatmulOptions, MatmulVariant};
use wgnn::internals::kernels::matmul_register::{matmul_register, RegisterTile};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Plan, Tensor, WgnnError};

const FORMS: [(bool, bool); 3] = [(false, false), (true, false), (false, true)];

/// Tolerance grows with K: f32 sums of K products of values in [-1, 1].
fn atol(k: usize) -> f32 {
    2e-5 * (k as f32).sqrt()
}

/// Which kernel runs the product: a variant of `matmul` (None: the engine's pick) or a tile of
/// `matmul_register`.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    Variant(Option<MatmulVariant>),
    Tile(RegisterTile),
}

fn plan(gpu: &Gpu, kernel: Kernel, [a, b, c]: [&Tensor; 3], opts: MatmulOptions) -> Result<Plan, WgnnError> {
    match kernel {
        Kernel::Variant(variant) => matmul(gpu, a, b, c, &MatmulOptions { variant, ..opts }),
        Kernel::Tile(tile) => matmul_register(gpu, a, b, c, &opts, tile),
    }
}

fn kernels() -> Vec<Kernel> {
    let variants = MatmulVariant::ALL.into_iter().map(|v| Kernel::Variant(Some(v)));
    variants.chain([Kernel::Variant(None)]).chain(RegisterTile::PRESETS.map(Kernel::Tile)).collect()
}

/// One product of `shape` in `form` through both epilogues, with and without a bias, against
/// cpu::matmul then cpu::bias_act_forward (and the residual added first).
fn check(
    gpu: &Gpu,
    rng: &mut Rng,
    kernel: Kernel,
    (m, k, n): (usize, usize, usize),
    form: (bool, bool),
    act: Activation,
) {
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let at = Tensor::from_slice(gpu, &if form.0 { [k, m] } else { [m, k] }, &a).unwrap();
    let bt = Tensor::from_slice(gpu, &if form.1 { [n, k] } else { [k, n] }, &b).unwrap();
    let z = cpu::matmul(&a, &b, m, k, n, form.0, form.1);
    let bias = rng.vec_uniform(n, -1.0, 1.0);
    let bias_t = Tensor::from_slice(gpu, &[n], &bias).unwrap();
    let r = rng.vec_uniform(m * n, -1.0, 1.0);
    let rt = Tensor::from_slice(gpu, &[m, n], &r).unwrap();
    let what = format!("{kernel:?} {act:?} {m}x{k}·{k}x{n} {form:?}");
    let base = MatmulOptions { trans_a: form.0, trans_b: form.1, ..Default::default() };
    for with_bias in [true, false] {
        let bias_h = with_bias.then_some(&bias[..]);
        let bias_d = with_bias.then_some(&bias_t);
        let pre_want = cpu::bias_act_forward(&z, bias_h, m, n, Activation::Identity);

        let (ct, pre) = (Tensor::zeros(gpu, &[m, n]).unwrap(), Tensor::zeros(gpu, &[m, n]).unwrap());
        let opts = MatmulOptions { epilogue: Epilogue::BiasActKeep { bias: bias_d, act, pre: &pre }, ..base };
        gpu.run(&[&plan(gpu, kernel, [&at, &bt, &ct], opts).unwrap()]).unwrap();
        let want = cpu::bias_act_forward(&z, bias_h, m, n, act);
        assert_close(&format!("keep: C {what} bias={with_bias}"), &ct.to_vec().unwrap(), &want, atol(k), 1e-4);
        assert_close(&format!("keep: pre {what} bias={with_bias}"), &pre.to_vec().unwrap(), &pre_want, atol(k), 1e-4);

        let ct = Tensor::zeros(gpu, &[m, n]).unwrap();
        let opts = MatmulOptions { epilogue: Epilogue::Residual { bias: bias_d, residual: &rt, act }, ..base };
        gpu.run(&[&plan(gpu, kernel, [&at, &bt, &ct], opts).unwrap()]).unwrap();
        let want = cpu::bias_act_forward(&pre_want, Some(&r[..]), 1, m * n, act);
        assert_close(&format!("residual {what} bias={with_bias}"), &ct.to_vec().unwrap(), &want, atol(k), 1e-4);
    }
}

#[test]
fn keeping_and_residual_epilogues_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(77);
    let acts =
        [Activation::Identity, Activation::GeluErf, Activation::Gelu, Activation::Relu, Activation::LeakyRelu(0.1)];
    // Every kernel: one split for parallelism (few outputs, long K: the reduction's epilogue),
    // and in turn odd sizes (scalar kernels), a vec4 shape, the GPT's MLP shape at a small M.
    let shapes = [(9, 201, 6), (130, 63, 65), (64, 128, 64), (36, 128, 512)];
    for (i, kernel) in kernels().into_iter().enumerate() {
        for (s, shape) in [(8, 1024, 8), shapes[i % shapes.len()]].into_iter().enumerate() {
            let act = acts[(i + s) % acts.len()];
            check(&gpu, &mut rng, kernel, shape, FORMS[(i + s) % FORMS.len()], act);
        }
    }
}

#[test]
fn the_epilogues_refuse_what_they_cannot_write() {
    let gpu = gpu();
    let a = Tensor::zeros(&gpu, &[8, 4]).unwrap();
    let b = Tensor::zeros(&gpu, &[4, 8]).unwrap();
    let c = Tensor::zeros(&gpu, &[8, 8]).unwrap();
    let act = Activation::GeluErf;
    let expect = |result: Result<Plan, WgnnError>, words: &[&str]| {
        let msg = result.map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("matmul"), "{msg}");
        for w in words {
            assert!(msg.contains(w), "{w:?} not in {msg}");
        }
    };
    for kernel in [Kernel::Variant(None), Kernel::Tile(RegisterTile::PRESETS[0])] {
        // A pre-activation or residual of another shape than C.
        let wrong = Tensor::zeros(&gpu, &[8, 4]).unwrap();
        let keep =
            |pre| MatmulOptions { epilogue: Epilogue::BiasActKeep { bias: None, act, pre }, ..Default::default() };
        expect(plan(&gpu, kernel, [&a, &b, &c], keep(&wrong)), &["pre", "[8, 8]", "[8, 4]"]);
        let add = |residual| MatmulOptions {
            epilogue: Epilogue::Residual { bias: None, residual, act },
            ..Default::default()
        };
        expect(plan(&gpu, kernel, [&a, &b, &c], add(&wrong)), &["residual", "[8, 8]", "[8, 4]"]);
        // Written over C, or bound writable beside a read-only operand of its buffer.
        expect(plan(&gpu, kernel, [&a, &b, &c], keep(&c)), &["pre shares memory with C"]);
        expect(plan(&gpu, kernel, [&a, &b, &c], add(&c)), &["C shares memory with the residual"]);
        let shared = Tensor::zeros(&gpu, &[2, 64]).unwrap();
        let (a_part, r_part) = (shared.view(0, &[8, 4]).unwrap(), shared.view(64, &[8, 8]).unwrap());
        expect(plan(&gpu, kernel, [&a_part, &b, &c], add(&r_part)), &["shares a buffer with A"]);
    }
    // Column sums (a weight gradient's) take no epilogue of these.
    let (at, b8) = (Tensor::zeros(&gpu, &[8, 4]).unwrap(), Tensor::zeros(&gpu, &[8, 8]).unwrap());
    let (c48, pre, sums) = (
        Tensor::zeros(&gpu, &[4, 8]).unwrap(),
        Tensor::zeros(&gpu, &[4, 8]).unwrap(),
        Tensor::zeros(&gpu, &[8]).unwrap(),
    );
    let epilogue = Epilogue::BiasActKeep { bias: None, act, pre: &pre };
    let opts = MatmulOptions { trans_a: true, epilogue, ..Default::default() };
    expect(matmul_column_sum(&gpu, &at, &b8, &c48, &sums, &opts), &["column sums take no epilogue"]);
}
