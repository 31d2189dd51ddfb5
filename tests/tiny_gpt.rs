//! The GPT of `char_gpt` (examples/common/gpt.rs: pre-norm blocks of causal attention and an MLP
//! with exact GELU, no biases, layer norms without β, the head tied to the embedding, nanoGPT's
//! init), tiny: 2 layers, width 16, block 8, 2 heads, a vocabulary of 11 characters. Trained
//! with nanoGPT's AdamW (decay on matrices, warmup then cosine, clipping), the GPU step matches
//! the CPU reference step for step, fused and unfused; save → load → generate gives the same text
//! from the same seed on both backends; a batch or a block past a device limit is an error naming
//! it; a batch of 65,600 token rows trains as the reference; the device memory stays flat over
//! 1,000 steps. With nanoGPT's dropout (embeddings, attention probabilities, both residual
//! projections) the GPU steps still match the CPU reference, fused and unfused, and `generate`
//! does not drop.

mod common;
#[path = "../examples/common/gpt.rs"]
mod gpt;

use common::fusion::StepLosses;
use common::tiny_text::tiny_text;
use common::{assert_close, gpu, scratch};
use gpt::{gpt, gpt_with_dropout, nanogpt_adamw, GptConfig};
use wgnn::device::GpuOptions;
use wgnn::model::{Backend, Loss, Observer, Optimizer, Progress, Sequential, SequentialBuilder, TokenFitOptions};
use wgnn::{Gpu, Layer, TokenDataset, WgnnError};

const TINY: GptConfig = GptConfig { vocab: 11, block: 8, n_layer: 2, n_head: 2, n_embd: 16 };

/// [`tiny_text`], whose 11 characters are the tiny GPT's vocabulary.
fn text(len: usize, seed: u64) -> TokenDataset {
    let data = tiny_text(len, seed);
    assert_eq!(data.vocab_size(), TINY.vocab);
    data
}

fn tiny() -> SequentialBuilder {
    gpt(TINY, 7)
}

/// nanoGPT's optimizer over `steps` steps: a short warmup, then the cosine.
fn adamw(steps: usize) -> Optimizer {
    nanogpt_adamw(3e-3, 3e-4, 2, steps, 0.1)
}

/// (per-step losses, each evaluation's validation loss, every parameter) of a run.
type Run = (Vec<f32>, Vec<f32>, Vec<wgnn::model::Parameter>);

fn train(backend: &Backend, fused: bool, optimizer: Optimizer, opts: &TokenFitOptions) -> Run {
    train_model(&tiny, backend, fused, optimizer, opts)
}

fn train_model(
    build: &dyn Fn() -> SequentialBuilder,
    backend: &Backend,
    fused: bool,
    optimizer: Optimizer,
    opts: &TokenFitOptions,
) -> Run {
    let (train, val) = text(800, 3).split(0.8).unwrap();
    let mut model = build().fused(fused).build(backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, optimizer).unwrap();
    let mut steps = StepLosses::default();
    let history =
        model.fit_tokens_with(&train, Some(&val), &TokenFitOptions { progress_every: 1, ..*opts }, &mut steps).unwrap();
    let val_losses = history.epochs.iter().map(|r| r.val_loss.unwrap()).collect();
    (steps.losses, val_losses, model.parameters().unwrap())
}

#[test]
fn the_model_is_nanogpts() {
    let model = tiny().build(&Backend::Cpu).unwrap();
    // nanoGPT's count for these sizes: 12·C² a block, the tables, a γ per layer norm.
    let c = TINY.n_embd;
    let want = TINY.n_layer * 12 * c * c + TINY.vocab * c + TINY.block * c + (2 * TINY.n_layer + 1) * c;
    assert_eq!(model.parameter_count(), want, "{}", model.summary());
    let has_bias = |l: &Layer| match l {
        Layer::Dense(d) => d.use_bias,
        Layer::MultiHeadAttention(a) => a.use_bias,
        Layer::LayerNorm(n) => n.bias,
        _ => false,
    };
    assert!(!model.layers().iter().any(has_bias), "{}", model.summary());
    // nanoGPT's init: σ 0.02, and 0.02/√(2·n_layer) for the projections into the residual stream.
    let std = |values: &[f32]| (values.iter().map(|v| (v * v) as f64).sum::<f64>() / values.len() as f64).sqrt();
    for p in model.parameters().unwrap() {
        let s = std(&p.values);
        let want = match p.shape.as_slice() {
            [_] => {
                assert!(p.values.iter().all(|&v| v == 1.0), "{}: γ starts at 1", p.name);
                continue;
            }
            // The MLP's second dense ([4C, C]) and attention's W_proj ([C, C]).
            [a, b] if *b == c && (*a == 4 * c || *a == c) => 0.02 / (2.0 * TINY.n_layer as f64).sqrt(),
            _ => 0.02,
        };
        assert!((s - want).abs() < 0.25 * want, "{} {:?}: σ {s:.4}, want {want}", p.name, p.shape);
    }
}

#[test]
fn gpu_steps_match_the_cpu_reference_fused_and_unfused() {
    let opts = TokenFitOptions {
        batch_size: 5,
        steps: 8,
        eval_every: 4,
        eval_batches: 3,
        clip_norm: Some(1.0),
        ..Default::default()
    };
    // nanoGPT's AdamW, and SGD with momentum, whose steps do not divide by √v (where Adam would
    // turn the backends' rounding in a near-zero gradient into steps of lr).
    for (what, optimizer) in [("adamw", adamw(opts.steps)), ("sgd", Optimizer::sgd(0.3, 0.9))] {
        let (want_losses, want_vals, want_params) = train(&Backend::Cpu, false, optimizer, &opts);
        assert_eq!((want_losses.len(), want_vals.len()), (8, 2), "{what}");
        assert!(want_losses[7] < want_losses[0], "{what}: the loss moves: {want_losses:?}");
        let g = Backend::Gpu(gpu());
        for (how, fused, backend) in
            [("gpu fused", true, &g), ("gpu unfused", false, &g), ("cpu fused", true, &Backend::Cpu)]
        {
            let (losses, vals, params) = train(backend, fused, optimizer, &opts);
            assert_close(&format!("{what}, {how}: per-step loss"), &losses, &want_losses, 1e-4, 1e-3);
            assert_close(&format!("{what}, {how}: val loss"), &vals, &want_vals, 1e-4, 1e-3);
            assert_eq!(params.len(), want_params.len());
            for (p, w) in params.iter().zip(&want_params) {
                assert_eq!((&p.name, &p.shape), (&w.name, &w.shape));
                assert_close(&format!("{what}, {how}: {}", p.name), &p.values, &w.values, 1e-4, 1e-3);
            }
        }
    }
}

/// With dropout 0.2 where nanoGPT has it, the GPU steps draw the CPU reference's masks (the
/// dropout layers' and the attention's), fused and unfused; the losses are not those without.
#[test]
fn gpu_steps_with_dropout_match_the_cpu_reference_fused_and_unfused() {
    let opts = TokenFitOptions { batch_size: 5, steps: 8, eval_every: 4, eval_batches: 3, ..Default::default() };
    let dropped = || gpt_with_dropout(TINY, 0.2, 7);
    let optimizer = Optimizer::sgd(0.3, 0.9);
    let (want_losses, want_vals, want_params) = train_model(&dropped, &Backend::Cpu, false, optimizer, &opts);
    let (plain_losses, _, _) = train_model(&tiny, &Backend::Cpu, false, optimizer, &opts);
    assert_ne!(want_losses, plain_losses, "dropout 0.2 trained as without");
    let g = Backend::Gpu(gpu());
    // Guarded (skip_nonfinite_batches), t advances after the backward, not in the gather: the
    // masks key on t itself rather than t − 1, the same steps' masks.
    let guarded = TokenFitOptions { skip_nonfinite_batches: true, ..opts };
    for (how, fused, backend, opts) in [
        ("gpu fused", true, &g, &opts),
        ("gpu unfused", false, &g, &opts),
        ("gpu fused, guarded", true, &g, &guarded),
        ("cpu fused", true, &Backend::Cpu, &opts),
    ] {
        let (losses, vals, params) = train_model(&dropped, backend, fused, optimizer, opts);
        assert_close(&format!("dropout, {how}: per-step loss"), &losses, &want_losses, 1e-4, 1e-3);
        assert_close(&format!("dropout, {how}: val loss"), &vals, &want_vals, 1e-4, 1e-3);
        for (p, w) in params.iter().zip(&want_params) {
            assert_close(&format!("dropout, {how}: {}", p.name), &p.values, &w.values, 1e-4, 1e-3);
        }
    }
    let model = dropped().build(&Backend::Cpu).unwrap();
    let summary = model.summary();
    assert!(summary.contains("dropout(0.2)") && summary.contains("causal, no bias, dropout 0.2)"), "{summary}");
    assert_eq!(model.parameter_count(), tiny().build(&Backend::Cpu).unwrap().parameter_count());
    // After the head tied to the embedding, dropout would drop the logits.
    let err = dropped().dropout(0.2).build(&Backend::Cpu).err().expect("an error");
    assert!(err.to_string().contains("dropout on the output layer"), "{err}");
}

/// A model trained with dropout generates as the same weights without it (and the same on both
/// backends): generate() never drops.
#[test]
fn generate_does_not_drop() {
    let data = text(600, 10);
    let g = Backend::Gpu(gpu());
    let mut model = gpt_with_dropout(TINY, 0.5, 7).build(&g).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, adamw(10)).unwrap();
    model.fit_tokens(&data, None, &TokenFitOptions { batch_size: 6, steps: 10, ..Default::default() }).unwrap();
    let dir = scratch("generate_dropout");
    model.save(dir.join("dropped.safetensors")).unwrap();
    // The same file with every rate 0: the layers of rate 0 are the identity.
    let mut file = common::safetensors_file::SafetensorsFile::read(&dir.join("dropped.safetensors"));
    let meta = &file.metadata["wgnn.model"];
    assert!(meta.contains("\"dropout\":0.5") && meta.contains("\"rate\":0.5"), "{meta}");
    let undropped = meta.replace("\"dropout\":0.5", "\"dropout\":0.0").replace("\"rate\":0.5", "\"rate\":0.0");
    file.metadata.insert("wgnn.model".into(), undropped);
    file.write(&dir.join("undropped.safetensors"));
    let prompt = data.encode("abc").unwrap();
    let sample = |m: &Sequential| m.generate(&prompt, 30, 1.0, None, 5).unwrap();
    let text = sample(&model);
    for (what, path, backend) in [
        ("without dropout, gpu", "undropped.safetensors", &g),
        ("without dropout, cpu", "undropped.safetensors", &Backend::Cpu),
        ("with dropout, cpu", "dropped.safetensors", &Backend::Cpu),
    ] {
        let loaded = Sequential::load(dir.join(path), backend).unwrap();
        assert_eq!(sample(&loaded), text, "{what}");
    }
}

#[test]
fn save_load_generate_gives_the_same_text() {
    let data = text(600, 9);
    let path = scratch("generate").join("tiny_gpt.safetensors");
    let g = Backend::Gpu(gpu());
    let mut model = tiny().build(&g).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, adamw(20)).unwrap();
    let opts = TokenFitOptions { batch_size: 6, steps: 20, clip_norm: Some(1.0), ..Default::default() };
    model.fit_tokens(&data, None, &opts).unwrap();
    // Past the block of 8: the context is cropped to its last 8 characters.
    let prompt = data.encode("abcdefghij\nab").unwrap();
    let sample = |m: &Sequential, seed| data.decode(&m.generate(&prompt, 40, 0.8, Some(6), seed).unwrap()).unwrap();
    let text = sample(&model, 42);
    assert_eq!(text.len(), 40);
    assert_eq!(sample(&model, 42), text, "same seed, same text");
    assert_ne!(sample(&model, 43), text, "another seed, another text");
    model.save(&path).unwrap();
    let loaded = Sequential::load(&path, &g).unwrap();
    assert_eq!(loaded.summary(), model.summary());
    assert_eq!(sample(&loaded, 42), text, "loaded on the GPU");
    let on_cpu = Sequential::load(&path, &Backend::Cpu).unwrap();
    assert_eq!(sample(&on_cpu, 42), text, "loaded on the CPU");
}

fn expect_device_limit<T>(result: wgnn::Result<T>, parts: &[&str]) {
    let Err(err) = result else { panic!("expected a device-limit error with {parts:?}") };
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(matches!(err, WgnnError::DeviceLimit { .. }), "{err:?}");
}

#[test]
fn a_batch_or_block_past_a_device_limit_is_an_error_naming_it() {
    const BINDING: u64 = 64 << 10;
    let options =
        GpuOptions { limits: |l| wgpu::Limits { max_storage_buffer_binding_size: BINDING, ..l }, ..Default::default() };
    let small = Gpu::with_options(&options).unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let backend = Backend::Gpu(small);
    let data = text(3000, 1);
    // 200 windows × 8 positions × 64 MLP values × 4 bytes = 400 KiB in one binding.
    let mut model = tiny().build(&backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, adamw(4)).unwrap();
    let opts = TokenFitOptions { batch_size: 200, steps: 1, ..Default::default() };
    expect_device_limit(model.fit_tokens(&data, None, &opts), &["max_storage_buffer_binding_size", "200 rows"]);
    // A block of 256: a batch of 4 windows × 256 positions × 64 MLP values × 4 bytes = 256 KiB.
    let long = GptConfig { block: 256, ..TINY };
    let mut model = gpt(long, 7).build(&backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, adamw(4)).unwrap();
    let opts = TokenFitOptions { batch_size: 4, steps: 1, ..Default::default() };
    expect_device_limit(model.fit_tokens(&data, None, &opts), &["max_storage_buffer_binding_size", "[4, 256, 64]"]);
    // The tiny model trains within the limits on the same device.
    let mut model = tiny().build(&backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, adamw(4)).unwrap();
    model.fit_tokens(&data, None, &TokenFitOptions { batch_size: 8, steps: 4, ..Default::default() }).unwrap();
}

/// The engine's allocated bytes at every progress tick.
struct Allocated(Gpu, Vec<u64>);

impl Observer for Allocated {
    fn on_progress(&mut self, _: &Progress) {
        self.1.push(self.0.allocated_bytes());
    }
}

#[test]
fn device_memory_stays_flat_over_1000_steps() {
    // A device of its own: the other tests of this binary run beside it on the shared one.
    let device = Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let (train, val) = text(3000, 4).split(0.9).unwrap();
    let mut model = tiny().build(&Backend::Gpu(device.clone())).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, adamw(1000)).unwrap();
    let before = device.allocated_bytes();
    let mut seen = Allocated(device.clone(), Vec::new());
    let opts = TokenFitOptions {
        batch_size: 4,
        steps: 1000,
        eval_every: 250,
        eval_batches: 5,
        progress_every: 50,
        clip_norm: Some(1.0),
        ..Default::default()
    };
    let history = model.fit_tokens_with(&train, Some(&val), &opts, &mut seen).unwrap();
    assert_eq!(history.epochs.len(), 4);
    assert_eq!(seen.1.len(), 20);
    assert!(seen.1.iter().all(|&b| b == seen.1[0]), "allocated bytes per tick: {:?}", seen.1);
    let first = history.epochs[0].val_loss.unwrap();
    let last = history.epochs[3].val_loss.unwrap();
    assert!(last < first, "1,000 steps lower the validation loss: {first} → {last}");
    assert_eq!(device.allocated_bytes(), before, "the run's buffers are all released");
}

#[test]
fn a_batch_past_65535_workgroups_trains_as_the_reference() {
    // 8,200 windows of 8: 65,600 token rows, past the 65,535 workgroups a dispatch may have in one
    // dimension for layer norm's row kernels (a workgroup a row), whose dispatches fold the rows
    // past it into a second dimension. One step each, against the CPU reference.
    let data = text(5000, 5);
    let opts = TokenFitOptions { batch_size: 8200, steps: 1, progress_every: 1, ..Default::default() };
    let run = |backend: &Backend| {
        let mut model = tiny().build(backend).unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(0.5, 0.0)).unwrap();
        let mut steps = StepLosses::default();
        model.fit_tokens_with(&data, None, &opts, &mut steps).unwrap();
        (steps.losses, model.parameters().unwrap())
    };
    let (want_losses, want_params) = run(&Backend::Cpu);
    let (losses, params) = run(&Backend::Gpu(gpu()));
    assert_close("65,600-row step: loss", &losses, &want_losses, 1e-4, 1e-3);
    for (p, w) in params.iter().zip(&want_params) {
        assert_close(&format!("65,600-row step: {}", p.name), &p.values, &w.values, 1e-5, 1e-3);
    }
}

#[test]
fn a_token_steps_kernels_memory_and_device_time() {
    let g = gpu();
    let build = |fused: bool| {
        let mut model = tiny().fused(fused).build(&Backend::Gpu(g.clone())).unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, adamw(10)).unwrap();
        model
    };
    let data = text(600, 2);
    let opts = TokenFitOptions { batch_size: 4, clip_norm: Some(1.0), ..Default::default() };
    let fused = build(true).token_step_kernels(&data, &opts).unwrap();
    let unfused = build(false).token_step_kernels(&data, &opts).unwrap();
    assert!(fused.len() < unfused.len(), "fused {fused:?}\nunfused {unfused:?}");
    let unclipped = build(true).token_step_kernels(&data, &TokenFitOptions { clip_norm: None, ..opts }).unwrap();
    assert!(unclipped.len() < fused.len(), "clipping adds the norm's dispatches");
    // Parameters, gradients and Adam's two moments at least; more with a larger batch; the
    // token array (the data set) not counted.
    let model = build(true);
    let memory = model.token_step_memory_bytes(&data, &opts).unwrap();
    assert!(memory >= 16 * model.parameter_count() as u64, "{memory} bytes");
    let wider = model.token_step_memory_bytes(&data, &TokenFitOptions { batch_size: 8, ..opts }).unwrap();
    assert!(wider > memory, "batch 8: {wider} bytes, batch 4: {memory}");
    assert_eq!(model.token_step_memory_bytes(&text(6000, 2), &opts).unwrap(), memory, "the data set counted");
    let err = model.token_step_kernels(&data, &TokenFitOptions { clip_norm: Some(0.0), ..opts }).unwrap_err();
    assert!(err.to_string().contains("clip_norm"), "{err}");
    // Fused, the MLP's GELU and its residual sum run in its matmuls' epilogues (the GELU's
    // keeping its input for the backward), each sum shares its gradient with the branch's last
    // block (no copy), and each layer norm's input gradient adds the residual stream's other
    // gradient (no sum of their own): no element-wise pass is left per layer but attention's
    // sum, and one gradient copy in all (the positional embedding's). Unfused, the GELU, both
    // sums and both forks' gradient sums run alone in each layer.
    let count = |kernels: &[String], name: &str| kernels.iter().filter(|k| k.starts_with(name)).count();
    let n = TINY.n_layer;
    assert!(count(&fused, "bias_act::bias_act_forward") <= n, "{fused:?}");
    assert!(count(&fused, "bias_act::bias_act_backward") <= 1, "{fused:?}");
    assert!(count(&unfused, "bias_act::bias_act_forward") >= 5 * n, "{unfused:?}");
    // Each dispatch timed alone, and where it runs in the step, labelled in the step's order; a
    // device without timestamp queries says so.
    let mut model = build(true);
    let alone = model.profile_token_step(&data, &opts, 2);
    let in_order = model.profile_token_step_in_order(&data, &opts, 2);
    for timings in [alone, in_order] {
        match timings {
            Ok(timings) => {
                let labels: Vec<String> = timings.iter().map(|t| t.0.clone()).collect();
                assert_eq!(labels, fused);
                assert!(timings.iter().all(|t| t.1.is_finite() && t.1 >= 0.0), "{timings:?}");
            }
            Err(e) => {
                assert!(!g.profile().timestamps, "{e}");
                assert!(e.to_string().contains("TIMESTAMP_QUERY"), "{e}");
            }
        }
    }
    // The step timed whole: a device time per repetition and a wall time a step.
    match model.time_token_step(&data, &opts, 3) {
        Ok((device, wall)) => {
            assert_eq!(device.len(), 3, "{device:?}");
            assert!(device.iter().all(|t| t.is_finite() && *t >= 0.0), "{device:?}");
            assert!(wall.is_finite() && wall > 0.0, "{wall}");
        }
        Err(e) => {
            assert!(!g.profile().timestamps, "{e}");
            assert!(e.to_string().contains("TIMESTAMP_QUERY"), "{e}");
        }
    }
}
