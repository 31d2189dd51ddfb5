//! Token models in `Sequential` (issue 23): an embedding reading token ids, a positional
//! embedding, per-position dense layers and loss, the head tied to the embedding's table, trained
//! by `fit_tokens` on a `TokenDataset` and sampled by `generate`. The GPU step against the CPU
//! reference step for step (fused and unfused), the tables' gradients against finite
//! differences, save → load → generate, the errors, and the device memory over many steps.

mod common;

use common::fusion::{check_fusion, StepLosses};
use common::{assert_close, gpu, scratch, synthetic};
use wgnn::device::GpuOptions;
use wgnn::internals::rng::Rng;
use wgnn::layers::{Embedding, PositionalEmbedding};
use wgnn::model::{
    Backend, FitOptions, InputShape, Loss, Observer, Optimizer, Progress, Sequential, SequentialBuilder,
    TokenFitOptions, VALIDATION_WINDOW_SEED,
};
use wgnn::{Activation, Dataset, Gpu, Initializer, Layer, TokenDataset, WgnnError};

const VOCAB: usize = 11;
const BLOCK: usize = 8;
const WIDTH: usize = 16;

/// The tiny token model of the issue: embedding, positional embedding, a per-position dense
/// layer (relu), a linear one, the tied head.
fn tiny() -> SequentialBuilder {
    Sequential::new(InputShape::tokens(BLOCK), 7)
        .embedding(VOCAB, WIDTH)
        .positional_embedding(BLOCK)
        .dense(WIDTH, Activation::Relu)
        .dense(WIDTH, Activation::Identity)
        .dense_tied_to_embedding()
}

/// The same with its dense layers in a residual branch: the positional embedding's output a fork
/// (read by the branch and by the sum).
fn tiny_residual() -> SequentialBuilder {
    Sequential::new(InputShape::tokens(BLOCK), 7)
        .embedding(VOCAB, WIDTH)
        .positional_embedding(BLOCK)
        .residual(|b| b.dense(2 * WIDTH, Activation::Relu).dense(WIDTH, Activation::Identity))
        .dense_tied_to_embedding()
}

/// `len` tokens below `vocab` with some structure (a noisy cycle), so the loss moves.
fn tokens(len: usize, vocab: usize, seed: u64) -> TokenDataset {
    let mut rng = Rng::new(seed);
    let ids = (0..len).map(|i| if rng.below(4) == 0 { rng.below(vocab) as u32 } else { (i % vocab) as u32 }).collect();
    TokenDataset::from_tokens(ids, vocab, "test tokens").unwrap()
}

/// What a run gives: (per-step losses, each evaluation's (train, validation) loss, every
/// parameter).
type Run = (Vec<f32>, Vec<(f32, Option<f32>)>, Vec<wgnn::model::Parameter>);

/// (per-step losses, history's (train, val) losses, every parameter) of `steps` steps.
fn train(build: &dyn Fn() -> SequentialBuilder, backend: &Backend, fused: bool, opts: &TokenFitOptions) -> Run {
    let data = tokens(600, VOCAB, 3);
    let (train, val) = data.split(0.8).unwrap();
    let mut model = build().fused(fused).build(backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3)).unwrap();
    let mut steps = StepLosses::default();
    let history =
        model.fit_tokens_with(&train, Some(&val), &TokenFitOptions { progress_every: 1, ..*opts }, &mut steps).unwrap();
    let evals = history.epochs.iter().map(|r| (r.train_loss, r.val_loss)).collect();
    (steps.losses, evals, model.parameters().unwrap())
}

#[test]
fn gpu_steps_match_the_cpu_reference_fused_and_unfused() {
    let opts = TokenFitOptions { batch_size: 5, steps: 6, eval_every: 3, eval_batches: 3, ..Default::default() };
    let clipped = TokenFitOptions { clip_norm: Some(0.05), ..opts };
    let cases: [(&str, &dyn Fn() -> SequentialBuilder, TokenFitOptions); 3] =
        [("plain", &tiny, opts), ("clipped", &tiny, clipped), ("residual", &tiny_residual, opts)];
    for (what, build, opts) in cases {
        let (want_losses, want_evals, want_params) = train(build, &Backend::Cpu, false, &opts);
        assert_eq!(want_losses.len(), 6);
        assert_eq!(want_evals.len(), 2);
        assert!(want_losses.iter().all(|l| l.is_finite() && *l > 0.0), "{want_losses:?}");
        let g = Backend::Gpu(gpu());
        for (how, fused, backend) in
            [("gpu fused", true, &g), ("gpu unfused", false, &g), ("cpu fused", true, &Backend::Cpu)]
        {
            let (losses, evals, params) = train(build, backend, fused, &opts);
            assert_close(&format!("{what}, {how}: per-step loss"), &losses, &want_losses, 1e-4, 1e-3);
            for ((t, v), (wt, wv)) in evals.iter().zip(&want_evals) {
                assert_close(&format!("{what}, {how}: train loss"), &[*t], &[*wt], 1e-4, 1e-3);
                assert_close(&format!("{what}, {how}: val loss"), &[v.unwrap()], &[wv.unwrap()], 1e-4, 1e-3);
            }
            for (p, w) in params.iter().zip(&want_params) {
                assert_eq!(p.name, w.name);
                assert_close(&format!("{what}, {how}: {}", p.name), &p.values, &w.values, 1e-5, 1e-3);
            }
        }
    }
}

#[test]
fn training_lowers_the_validation_loss() {
    let opts = TokenFitOptions { batch_size: 8, steps: 60, eval_every: 30, eval_batches: 4, ..Default::default() };
    let (_, evals, _) = train(&tiny, &Backend::Gpu(gpu()), true, &opts);
    let (first, last) = (evals[0].1.unwrap(), evals[1].1.unwrap());
    // Start: ln 11 ≈ 2.4; the cycle is learnable.
    assert!(last < first && last < 2.0, "validation loss {first} → {last}");
}

/// The CPU reference's mean loss over the windows of step 0 at the validation seed.
fn loss_at(model: &Sequential, data: &TokenDataset, batch: usize) -> f64 {
    model.evaluate_tokens(data, batch, 1).unwrap().0 as f64
}

#[test]
fn the_tables_gradients_match_finite_differences() {
    let data = tokens(200, VOCAB, 5);
    let batch = 3;
    // Tables drawn wider than nanoGPT's 0.02, so that their gradients stand well above the f32
    // loss's rounding in the differences.
    let wide = Initializer::Normal { mean: 0.0, std: 0.5 };
    let mut model = Sequential::new(InputShape::tokens(BLOCK), 7)
        .add(Layer::Embedding(Embedding::new(VOCAB, WIDTH).with_init(wide)))
        .add(Layer::PositionalEmbedding(PositionalEmbedding { block: BLOCK, init: wide }))
        .dense(WIDTH, Activation::Relu)
        .dense(WIDTH, Activation::Identity)
        .dense_tied_to_embedding()
        .build(&Backend::Cpu)
        .unwrap();
    // SGD with lr 1: one step subtracts the gradient, on the windows evaluate_tokens reads.
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(1.0, 0.0)).unwrap();
    let before = model.parameters().unwrap();
    let opts =
        TokenFitOptions { batch_size: batch, steps: 1, seed: Some(VALIDATION_WINDOW_SEED), ..Default::default() };
    model.fit_tokens(&data, None, &opts).unwrap();
    let after = model.parameters().unwrap();
    model.set_parameters(&before).unwrap();
    let (ids, _) = data.windows(0, VALIDATION_WINDOW_SEED, batch, BLOCK).unwrap();
    // The embedding's table (rows of ids in the batch, one absent), then the positional table.
    let absent = (0..VOCAB as u32).find(|v| !ids.contains(v));
    let mut rows: Vec<(usize, usize)> = vec![(0, ids[0] as usize), (0, ids[5] as usize), (1, 0), (1, BLOCK - 1)];
    rows.extend(absent.map(|v| (0, v as usize)));
    let eps = 1e-2f32;
    for (slot, row) in rows {
        for col in [0, 7, WIDTH - 1] {
            let at = row * WIDTH + col;
            let grad = (before[slot].values[at] - after[slot].values[at]) as f64;
            let mut shifted = before.clone();
            shifted[slot].values[at] += eps;
            model.set_parameters(&shifted).unwrap();
            let up = loss_at(&model, &data, batch);
            shifted[slot].values[at] -= 2.0 * eps;
            model.set_parameters(&shifted).unwrap();
            let down = loss_at(&model, &data, batch);
            let numeric = (up - down) / (2.0 * eps as f64);
            let name = &before[slot].name;
            assert!(
                (grad - numeric).abs() <= 3e-5 + 2e-3 * numeric.abs(),
                "{name}[{row}, {col}]: gradient {grad} against finite difference {numeric}"
            );
        }
    }
    assert_eq!(before[0].name, "layers.0.table");
    assert_eq!(before[1].name, "layers.1.table");
}

#[test]
fn save_load_generate_gives_the_same_ids() {
    let data = tokens(400, VOCAB, 9);
    let path = scratch("generate").join("tiny.safetensors");
    let g = Backend::Gpu(gpu());
    let mut model = tiny().build(&g).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    let opts = TokenFitOptions { batch_size: 4, steps: 10, ..Default::default() };
    model.fit_tokens(&data, None, &opts).unwrap();
    let prompt = [1u32, 2, 3];
    // Past the block: the context is cropped to the last 8 tokens.
    let ids = model.generate(&prompt, 20, 0.8, Some(5), 42).unwrap();
    assert_eq!(ids.len(), 20);
    assert!(ids.iter().all(|&i| (i as usize) < VOCAB));
    assert_eq!(model.generate(&prompt, 20, 0.8, Some(5), 42).unwrap(), ids, "same seed, same ids");
    model.save(&path).unwrap();
    // The table is saved once: the tied head has none of its own.
    let names: Vec<String> = model.parameters().unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names.iter().filter(|n| n.ends_with("table")).count(), 2, "{names:?}");
    let loaded = Sequential::load(&path, &g).unwrap();
    assert_eq!(loaded.generate(&prompt, 20, 0.8, Some(5), 42).unwrap(), ids, "loaded on the GPU");
    let on_cpu = Sequential::load(&path, &Backend::Cpu).unwrap();
    assert_eq!(on_cpu.generate(&prompt, 20, 0.8, Some(5), 42).unwrap(), ids, "loaded on the CPU");
    assert_eq!(loaded.summary(), model.summary());
    // Greedy (top 1) is the argmax of the last position's logits.
    let greedy = on_cpu.generate(&prompt, 5, 1.0, Some(1), 0).unwrap();
    assert_eq!(loaded.generate(&prompt, 5, 1.0, Some(1), 7).unwrap(), greedy);
}

fn expect_err<T>(result: wgnn::Result<T>, parts: &[&str]) -> WgnnError {
    let Err(err) = result else { panic!("expected an error with {parts:?}") };
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    err
}

#[test]
fn bad_token_inputs_are_typed_errors() {
    let cpu = Backend::Cpu;
    // T > block.
    let long = Sequential::new(InputShape::tokens(BLOCK + 1), 1).embedding(VOCAB, WIDTH).positional_embedding(BLOCK);
    let err = expect_err(long.build(&cpu), &["positional_embedding(8)", "9 positions", "block of 8"]);
    assert!(matches!(err, WgnnError::Shape { .. }), "{err:?}");
    // An embedding that is not first; a tied head without one.
    let late = Sequential::new(4, 1).dense(4, Activation::Relu).add(wgnn::Layer::embedding(VOCAB, WIDTH));
    expect_err(late.build(&cpu), &["embedding(11, 16)", "first layer"]);
    let untied = Sequential::new(4, 1).dense(4, Activation::Relu).dense_tied_to_embedding();
    expect_err(untied.build(&cpu), &["dense_tied", "not an embedding"]);
    let model = tiny().build(&cpu).unwrap();
    // An id past the vocabulary, named with the layer.
    expect_err(model.generate(&[1, 11], 3, 1.0, None, 0), &["layer 0 (embedding(11, 16))", "token id 11"]);
    expect_err(model.generate(&[], 3, 1.0, None, 0), &["prompt"]);
    expect_err(model.generate(&[1], 3, 0.0, None, 0), &["temperature"]);
    expect_err(model.generate(&[1], 3, 1.0, Some(0), 0), &["top_k"]);
    // Attention without the mask reads later positions, which a short context pads.
    let open = Sequential::new(InputShape::tokens(BLOCK), 1)
        .embedding(VOCAB, WIDTH)
        .multi_head_attention(2, false)
        .dense_tied_to_embedding()
        .build(&cpu)
        .unwrap();
    expect_err(open.generate(&[1], 3, 1.0, None, 0), &["layer 1 (multi_head_attention", "causal attention"]);
    // A reshape may move values between positions: the padding would change the logits.
    let reshaped = Sequential::new(InputShape::tokens(BLOCK), 1)
        .embedding(VOCAB, WIDTH)
        .reshape(&[BLOCK, WIDTH])
        .dense_tied_to_embedding()
        .build(&cpu)
        .unwrap();
    expect_err(reshaped.generate(&[1], 3, 1.0, None, 0), &["layer 1 (reshape", "may mix positions"]);
    // A head scoring more ids than the embedding reads would feed back ids it has no row for.
    let wide_head = Sequential::new(InputShape::tokens(BLOCK), 1)
        .embedding(5, WIDTH)
        .dense(9, Activation::Identity)
        .build(&cpu)
        .unwrap();
    expect_err(wide_head.generate(&[1], 3, 1.0, None, 0), &["scores 9 ids", "embedding reads 5"]);
    // Two heads on one table: the embedding adds to one head's gradient, a second would overwrite it.
    let twice = Sequential::new(InputShape::tokens(BLOCK), 1)
        .embedding(WIDTH, WIDTH)
        .dense_tied_to_embedding()
        .dense_tied_to_embedding();
    expect_err(twice.build(&cpu), &["layer 2 (dense_tied", "layer 1 is tied to layer 0 already"]);
    // predict reads f32 rows; a token model reads ids.
    expect_err(model.predict(&[1.0; BLOCK], 1), &["layer 0 (embedding(11, 16))", "generate", "evaluate_tokens"]);
    // Softmax over a [T, C] sample's values would not be per position.
    let softmax = Sequential::new([BLOCK, WIDTH], 1).dense(4, Activation::Softmax);
    expect_err(softmax.build(&cpu), &["layer 0 (dense(4, softmax))", "per position", "[8, 16]"]);
    // A data set whose vocabulary is larger than the embedding's.
    let mut model = tiny().build(&Backend::Gpu(gpu())).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let wide = tokens(100, 20, 1);
    let opts = TokenFitOptions { batch_size: 2, steps: 1, ..Default::default() };
    expect_err(model.fit_tokens(&wide, None, &opts), &["vocabulary of 20 ids", "embedding(11, 16)"]);
    expect_err(model.evaluate_tokens(&tokens(100, VOCAB, 1), 2, usize::MAX), &["batches must be from 1 to"]);
    // Windows longer than the data; rows of a Dataset.
    let short = tokens(8, VOCAB, 1);
    expect_err(model.fit_tokens(&short, None, &opts), &["longer than the 8 tokens"]);
    let rows = Dataset::from_rows(&[[0.0f32; BLOCK]], [0]).unwrap();
    expect_err(model.evaluate(&rows), &["reads token ids", "fit_tokens"]);
    expect_err(
        model.fit_tokens(&tokens(100, VOCAB, 1), None, &TokenFitOptions { steps: 5, eval_every: 2, ..opts }),
        &["multiple of eval_every"],
    );
}

#[test]
fn a_batch_past_a_binding_is_an_error_naming_it() {
    const BINDING: u64 = 64 << 10;
    let options =
        GpuOptions { limits: |l| wgpu::Limits { max_storage_buffer_binding_size: BINDING, ..l }, ..Default::default() };
    let small = Gpu::with_options(&options).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let mut model = tiny().build(&Backend::Gpu(small)).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    // 256 windows × 8 positions × 16 values × 4 bytes = 128 KiB per activation.
    let opts = TokenFitOptions { batch_size: 256, steps: 1, ..Default::default() };
    let err = expect_err(
        model.fit_tokens(&tokens(1000, VOCAB, 1), None, &opts),
        &["max_storage_buffer_binding_size", "256 rows", "[256, 8, 16]"],
    );
    assert!(matches!(err, WgnnError::DeviceLimit { .. }), "{err:?}");
}

/// The engine's allocated bytes at every progress tick.
struct Allocated(Gpu, Vec<u64>);

impl Observer for Allocated {
    fn on_progress(&mut self, _: &Progress) {
        self.1.push(self.0.allocated_bytes());
    }
}

#[test]
fn device_memory_stays_flat_over_many_steps() {
    // A device of its own: the other tests of this binary run beside it on the shared one.
    let device = Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let data = tokens(2000, VOCAB, 4);
    let (train, val) = data.split(0.9).unwrap();
    let mut model = tiny().build(&Backend::Gpu(device.clone())).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let before = device.allocated_bytes();
    let mut seen = Allocated(device.clone(), Vec::new());
    let opts = TokenFitOptions {
        batch_size: 4,
        steps: 1000,
        eval_every: 250,
        eval_batches: 5,
        progress_every: 50,
        ..Default::default()
    };
    let history = model.fit_tokens_with(&train, Some(&val), &opts, &mut seen).unwrap();
    assert_eq!(history.epochs.len(), 4);
    assert_eq!(seen.1.len(), 20);
    assert!(seen.1.iter().all(|&b| b == seen.1[0]), "allocated bytes per tick: {:?}", seen.1);
    assert_eq!(device.allocated_bytes(), before, "the run's buffers are all released");
}

#[test]
fn a_resumed_run_continues_as_the_uninterrupted_one() {
    let data = tokens(300, VOCAB, 6);
    let (train, val) = data.split(0.8).unwrap();
    let dir = scratch("resume");
    let g = Backend::Gpu(gpu());
    let fresh = || {
        let mut m = tiny().build(&g).unwrap();
        m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3)).unwrap();
        m
    };
    let checkpoint = Some(wgnn::model::Checkpointing::every_epoch(&dir));
    let opts = TokenFitOptions { batch_size: 4, steps: 8, eval_every: 2, eval_batches: 2, ..Default::default() };
    let mut whole = fresh();
    let want = whole.fit_tokens(&train, Some(&val), &opts).unwrap();
    let mut first = fresh();
    first.fit_tokens(&train, Some(&val), &TokenFitOptions { steps: 4, checkpoint, ..opts }).unwrap();
    let mut resumed = Sequential::resume(dir.join("last.safetensors"), &g).unwrap();
    let got = resumed.fit_tokens(&train, Some(&val), &opts).unwrap();
    assert_eq!(got.epochs.len(), 4);
    for (a, b) in got.epochs.iter().zip(&want.epochs) {
        assert_eq!(a.epoch, b.epoch);
        assert_close("resumed val loss", &[a.val_loss.unwrap()], &[b.val_loss.unwrap()], 1e-6, 1e-5);
    }
    for (a, b) in resumed.parameters().unwrap().iter().zip(&whole.parameters().unwrap()) {
        assert_close(&format!("resumed {}", a.name), &a.values, &b.values, 1e-6, 1e-5);
    }
}

#[test]
fn a_dense_layer_applies_per_position_to_t_c_samples_in_fit() {
    // [5, 6] float samples: a dense layer per position (M = rows·5), flattened into a per-row
    // head; the fused step, the unfused one and the CPU reference agree. 45 rows in batches of 13.
    let data = synthetic(45, 30, 4, 2).with_sample_shape(&[5, 6]).unwrap();
    let build = || {
        Sequential::new([5, 6], 4)
            .dense(8, Activation::Relu)
            .dense(3, Activation::Tanh)
            .flatten()
            .dense(4, Activation::Identity)
    };
    let opts = FitOptions { epochs: 2, batch_size: 13, ..Default::default() };
    check_fusion("per-position dense", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
    let model = build().build(&Backend::Cpu).unwrap();
    assert_eq!(model.output_shape_of(0), Some(&[5, 8][..]));
    assert_eq!(model.parameter_count(), 6 * 8 + 8 + 8 * 3 + 3 + 15 * 4 + 4);
}

#[test]
fn two_gpu_runs_give_the_same_bits() {
    // The embedding's backward sums repeated ids in token order, without atomics.
    let opts = TokenFitOptions { batch_size: 6, steps: 4, eval_every: 2, eval_batches: 2, ..Default::default() };
    let g = Backend::Gpu(gpu());
    let (losses, _, params) = train(&tiny_residual, &g, true, &opts);
    let (again, _, params_again) = train(&tiny_residual, &g, true, &opts);
    assert_eq!(losses, again);
    for (a, b) in params.iter().zip(&params_again) {
        assert!(a.values.iter().zip(&b.values).all(|(x, y)| x.to_bits() == y.to_bits()), "{}", a.name);
    }
}
