//! The multi-head attention layer in a model: the GPU step against the CPU reference step for
//! step, fused and unfused, with each attention kernel forced and with the engine's pick, on odd
//! shapes (T 1, 7, 65; 12 channels in 3 heads; tails of 5 rows and batches of 1), causal and
//! not; its gradients (every slot, and its input's through the dense layer below) against finite
//! differences of the CPU reference's loss; causality (and its absence unmasked); nanoGPT's
//! initial weights; save and load; its settings and shapes as errors naming it; a batch whose
//! scores pass a device limit as a DeviceLimit error; attention dropout (GPU = CPU step for step,
//! not in predict, saved, older files loading without it).

mod common;

use common::fusion::StepLosses;
use common::safetensors_file::SafetensorsFile;
use common::{assert_close, backends, gpu, scratch, synthetic};
use wgnn::init::Initializer;
use wgnn::internals::kernels::attention_choice::AttentionKernel;
use wgnn::layers::MultiHeadAttention;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential, SequentialBuilder};
use wgnn::{Activation, Dataset, Layer, WgnnError};

/// `rows` random sequences `[t, c]` labelled into `classes`.
fn sequences(rows: usize, t: usize, c: usize, classes: usize, seed: u64) -> Dataset {
    synthetic(rows, t * c, classes, seed).with_sample_shape(&[t, c]).unwrap()
}

/// Causal attention with `heads` heads through `kernel` (None: the engine's pick), weights
/// drawn wider than nanoGPT's 0.02 so that the probabilities are far from uniform.
fn mha(heads: usize, kernel: Option<AttentionKernel>) -> Layer {
    mha_masked(heads, true, kernel)
}

/// [`mha`], causal or not.
fn mha_masked(heads: usize, causal: bool, kernel: Option<AttentionKernel>) -> Layer {
    let wide = Initializer::Normal { mean: 0.0, std: 0.4 };
    let layer = MultiHeadAttention::new(heads, causal);
    Layer::MultiHeadAttention(MultiHeadAttention { init: wide, proj_init: wide, kernel, ..layer })
}

/// `check_fusion`'s check (the fused GPU step, the unfused one and the CPU reference give the
/// same per-step losses and parameters; fused runs fewer dispatches) under SGD with momentum, not
/// Adam: the key bias's gradient is zero in exact arithmetic (a shift of every score of a row),
/// and Adam's g/√v turns each backend's rounding noise there into steps of lr.
fn check_reference(what: &str, build: &dyn Fn() -> SequentialBuilder, data: &Dataset, loss: Loss, opts: &FitOptions) {
    let run = |backend: &Backend, fused: bool| {
        let mut model = build().fused(fused).build(backend).unwrap();
        model.compile(loss, Optimizer::sgd(0.1, 0.9)).unwrap();
        let kernels = match backend {
            Backend::Gpu(_) => model.step_kernels(data, opts.batch_size).unwrap(),
            Backend::Cpu => Vec::new(),
        };
        let mut steps = StepLosses::default();
        model.fit_with(data, &FitOptions { progress_every: 1, ..*opts }, &mut steps).unwrap();
        (steps.losses, model.parameters().unwrap(), kernels)
    };
    let gpu = Backend::Gpu(gpu());
    let (want_losses, want_params, _) = run(&Backend::Cpu, false);
    let runs =
        [("gpu fused", run(&gpu, true)), ("gpu unfused", run(&gpu, false)), ("cpu fused", run(&Backend::Cpu, true))];
    for (how, (losses, params, _)) in &runs {
        assert_eq!(losses.len(), want_losses.len(), "{what}, {how}");
        assert_close(&format!("{what}, {how}: per-step loss"), losses, &want_losses, 1e-4, 1e-3);
        for (got, want) in params.iter().zip(&want_params) {
            assert_eq!((&got.name, &got.shape), (&want.name, &want.shape), "{what}, {how}");
            assert_close(&format!("{what}, {how}: {}", got.name), &got.values, &want.values, 1e-4, 1e-3);
        }
    }
    let (fused, unfused) = (&runs[0].1 .2, &runs[1].1 .2);
    assert!(fused.len() < unfused.len(), "{what}: fused {fused:?} vs unfused {unfused:?}");
}

const KERNELS: [Option<AttentionKernel>; 3] = [Some(AttentionKernel::Clear), Some(AttentionKernel::Flash), None];

#[test]
fn attention_models_train_like_the_reference_fused_and_unfused() {
    for kernel in KERNELS {
        let name = kernel.map_or("picked", AttentionKernel::name);
        // A dense layer with tanh below the attention: its gradient goes through the attention's
        // input gradient, which applies tanh′ in its matmul's epilogue when fused. 13 rows in
        // batches of 8: a tail of 5.
        let data = sequences(13, 7, 12, 4, 1);
        let build = || {
            Sequential::new([7, 12], 3)
                .flatten()
                .dense(84, Activation::Tanh)
                .reshape(&[7, 12])
                .add(mha(3, kernel))
                .flatten()
                .dense(4, Activation::Identity)
        };
        let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
        check_reference(&format!("T 7, {name}"), &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
        // Two attentions in a residual branch: x + mha(mha(x)), from the model's input,
        // under mean squared error; no bias.
        let build = || {
            let plain = MultiHeadAttention { use_bias: false, ..MultiHeadAttention::new(3, true) };
            Sequential::new([7, 12], 4)
                .residual(|b| {
                    b.add(mha(3, kernel)).add(Layer::MultiHeadAttention(MultiHeadAttention { kernel, ..plain }))
                })
                .activation(Activation::Tanh)
                .flatten()
                .dense(4, Activation::Sigmoid)
        };
        let targets = data.clone().with_targets(data.one_hot(4).unwrap(), 4).unwrap();
        check_reference(&format!("residual, {name}"), &build, &targets, Loss::MeanSquaredError, &opts);
        // Without the causal mask, every token attending to every token.
        let build = || {
            let unmasked = mha_masked(3, false, kernel);
            Sequential::new([7, 12], 11)
                .add(unmasked)
                .flatten()
                .dense(4, Activation::Tanh)
                .dense(4, Activation::Identity)
        };
        let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
        check_reference(&format!("T 7 unmasked, {name}"), &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
        // A GELU on the attention's output: fused, the output projection's epilogue applies it
        // and keeps its input for the backward.
        let build = || {
            Sequential::new([7, 12], 12)
                .add(mha(3, kernel))
                .activation(Activation::Gelu)
                .flatten()
                .dense(4, Activation::Identity)
        };
        check_reference(&format!("T 7 gelu, {name}"), &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
        // One token, and batches of one row.
        let data = sequences(3, 1, 12, 2, 2);
        let build = || {
            Sequential::new([1, 12], 5)
                .add(mha(3, kernel))
                .activation(Activation::Tanh)
                .flatten()
                .dense(2, Activation::Identity)
        };
        let opts = FitOptions { epochs: 1, batch_size: 1, ..Default::default() };
        check_reference(&format!("T 1, {name}"), &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
        // 65 tokens (past the flash kernels' tiles of 16 and the workgroups of 64), 5 rows.
        let data = sequences(5, 65, 12, 3, 3);
        let build = || {
            Sequential::new([65, 12], 6)
                .add(mha(3, kernel))
                .activation(Activation::Relu)
                .flatten()
                .dense(3, Activation::Identity)
        };
        let opts = FitOptions { epochs: 1, batch_size: 5, ..Default::default() };
        check_reference(&format!("T 65, {name}"), &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
    }
}

#[test]
fn the_attention_gradients_match_finite_differences() {
    // One SGD step over the whole batch moves each parameter by −lr·∂L/∂p, on the CPU reference:
    // every slot of the attention, and the dense layer's weight below it (reached only through
    // the attention's input gradient), against central differences of the evaluated loss.
    let data = sequences(6, 5, 6, 3, 4);
    let build = || {
        Sequential::new([5, 6], 7)
            .flatten()
            .dense(30, Activation::Tanh)
            .reshape(&[5, 6])
            .add(mha(2, None))
            .flatten()
            .dense(3, Activation::Identity)
            .build(&Backend::Cpu)
            .unwrap()
    };
    let lr = 0.5;
    let mut model = build();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(lr, 0.0)).unwrap();
    let before = model.parameters().unwrap();
    model.fit(&data, &FitOptions { epochs: 1, batch_size: 6, shuffle: false, ..Default::default() }).unwrap();
    let after = model.parameters().unwrap();
    let mut probe = build();
    probe.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(lr, 0.0)).unwrap();
    for name in ["layers.3.w_qkv", "layers.3.b_qkv", "layers.3.w_proj", "layers.3.b_proj", "layers.1.weight"] {
        let k = before.iter().position(|p| p.name == name).unwrap_or_else(|| panic!("no {name}"));
        let step: Vec<f32> = before[k].values.iter().zip(&after[k].values).map(|(b, a)| (b - a) / lr).collect();
        let numeric = common::numeric_gradient(&before[k].values, 1e-2, |w| {
            let mut params = before.clone();
            params[k].values = w.to_vec();
            probe.set_parameters(&params).unwrap();
            probe.evaluate(&data).unwrap().0 as f64
        });
        assert!(numeric.iter().any(|g| g.abs() > 1e-3), "{name}: a gradient of zero tests nothing");
        assert_close(&format!("{name}'s gradient"), &step, &numeric, 2e-3, 2e-2);
    }
}

#[test]
fn a_token_sees_only_the_tokens_before_it_unless_unmasked() {
    let (t, c) = (9, 12);
    let x: Vec<f32> = synthetic(2, t * c, 2, 5).to_f32();
    for backend in backends() {
        for kernel in KERNELS {
            let model = Sequential::new([t, c], 8).add(mha(3, kernel)).build(&backend).unwrap();
            let base = model.predict(&x, 2).unwrap();
            for changed in 1..t {
                // Every token from `changed` on replaced: the outputs before it stay.
                let mut y = x.clone();
                for row in y.chunks_mut(t * c) {
                    row[changed * c..].iter_mut().for_each(|v| *v = 1.5 - *v);
                }
                let out = model.predict(&y, 2).unwrap();
                let what = format!("{}, {kernel:?}, tokens from {changed} changed", model.backend_name());
                for r in 0..2 {
                    let (got, want) = (out.row(r), base.row(r));
                    assert_close(&what, &got[..changed * c], &want[..changed * c], 1e-6, 0.0);
                    let moved = got[changed * c..].iter().zip(&want[changed * c..]).any(|(a, b)| (a - b).abs() > 1e-3);
                    assert!(moved, "{what}: the changed tokens' outputs did not move");
                }
            }
            // Without the mask, the last token moves the first one's output.
            let model = Sequential::new([t, c], 8).add(mha_masked(3, false, kernel)).build(&backend).unwrap();
            let base = model.predict(&x, 2).unwrap();
            let mut y = x.clone();
            y[(t - 1) * c..t * c].iter_mut().for_each(|v| *v = 1.5 - *v);
            let out = model.predict(&y, 2).unwrap();
            let moved = out.row(0)[..c].iter().zip(&base.row(0)[..c]).any(|(a, b)| (a - b).abs() > 1e-3);
            assert!(moved, "{}, {kernel:?}: unmasked, the first token did not see the last", model.backend_name());
        }
    }
}

#[test]
fn an_attention_model_saves_loads_and_summarises() {
    let data = sequences(10, 6, 12, 2, 6);
    for backend in backends() {
        for layer in [
            mha(3, Some(AttentionKernel::Flash)),
            Layer::MultiHeadAttention(MultiHeadAttention { use_bias: false, ..MultiHeadAttention::new(4, true) }),
        ] {
            let mut model = Sequential::new([6, 12], 9)
                .residual(|b| b.add(layer.clone()))
                .flatten()
                .dense(2, Activation::Identity)
                .build(&backend)
                .unwrap();
            model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
            model.fit(&data, &FitOptions { epochs: 1, batch_size: 4, ..Default::default() }).unwrap();
            let summary = model.summary();
            let with_bias = matches!(layer, Layer::MultiHeadAttention(MultiHeadAttention { use_bias: true, .. }));
            // W_qkv 12·36, W_proj 12·12, and with biases 36 + 12.
            let (line, params) = match with_bias {
                true => ("multi_head_attention(3 heads, causal, flash kernels)", 12 * 36 + 36 + 144 + 12),
                false => ("multi_head_attention(4 heads, causal, no bias)", 12 * 36 + 144),
            };
            let row = summary.lines().find(|l| l.contains(&format!("│ {line}"))).unwrap_or_else(|| panic!("{summary}"));
            assert!(row.ends_with(&format!("[6, 12]          {params} parameters")), "{summary}");
            let path = scratch("mha").join("model.safetensors");
            model.save(&path).unwrap();
            let meta: serde_json::Value =
                serde_json::from_str(&SafetensorsFile::read(&path).metadata["wgnn.model"]).unwrap();
            assert_eq!(meta["format"], 4, "{meta}");
            assert_eq!(meta["layers"][0]["type"], "multi_head_attention", "{meta}");
            let loaded = Sequential::load(&path, &backend).unwrap();
            // The initialisers are not saved (the weights are): compare the settings that are.
            let settings = |m: &Sequential| match &m.layers()[0] {
                Layer::MultiHeadAttention(a) => (a.heads, a.causal, a.use_bias, a.kernel),
                other => panic!("{other:?}"),
            };
            assert_eq!(settings(&loaded), settings(&model));
            assert_eq!(loaded.parameters().unwrap(), model.parameters().unwrap());
            let rows = data.to_f32();
            assert_eq!(loaded.predict(&rows, 10).unwrap(), model.predict(&rows, 10).unwrap());
        }
    }
}

#[test]
fn the_initial_weights_are_nanogpts() {
    // normal(0, 0.02) for both projections, W_proj's scaled by 1/√(2·n_layer) on request (GPT-2's
    // residual scaling); zero biases. 12,288 and 4,096 draws: their spread within a few percent.
    let rms = |v: &[f32]| (v.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / v.len() as f64).sqrt();
    let plain = MultiHeadAttention::new(4, true);
    for (layer, proj_std) in [(plain, 0.02), (plain.scaled_projection(4), 0.02 / 8f64.sqrt())] {
        let model = Sequential::new([3, 64], 12).add(Layer::MultiHeadAttention(layer)).build(&Backend::Cpu).unwrap();
        let params = model.parameters().unwrap();
        let get = |name: &str| &params.iter().find(|p| p.name == format!("layers.0.{name}")).unwrap().values;
        let (qkv, proj) = (rms(get("w_qkv")), rms(get("w_proj")));
        assert!((qkv / 0.02 - 1.0).abs() < 0.05, "W_qkv's spread {qkv}");
        assert!((proj / proj_std - 1.0).abs() < 0.1, "W_proj's spread {proj}, want {proj_std}");
        assert!(get("b_qkv").iter().chain(get("b_proj")).all(|&b| b == 0.0));
    }
}

fn build_err(builder: SequentialBuilder) -> WgnnError {
    match builder.build(&Backend::Cpu) {
        Ok(_) => panic!("built"),
        Err(e) => e,
    }
}

#[test]
fn bad_attention_settings_and_shapes_are_errors_naming_the_layer() {
    let err = build_err(Sequential::new([7, 10], 0).multi_head_attention(3, true));
    assert!(matches!(err, WgnnError::Shape { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("layer 0 (multi_head_attention(3 heads, causal))") && text.contains("10 channels"), "{text}");
    let err = build_err(Sequential::new(12, 0).multi_head_attention(3, true));
    assert!(matches!(err, WgnnError::Shape { .. }) && err.to_string().contains("[T, C]"), "{err}");
    let err = build_err(Sequential::new([4, 12], 0).multi_head_attention(0, true));
    assert!(matches!(err, WgnnError::InvalidArgument { .. }) && err.to_string().contains("heads"), "{err}");
}

#[test]
fn a_batch_whose_scores_pass_a_binding_is_a_device_limit_error() {
    // The clear kernels keep [rows, heads, T, T] probabilities: enough rows of 1,024 tokens
    // pass the device's binding limit (whatever it is) while the batch itself stays small.
    let gpu = gpu();
    let limits = gpu.limits();
    let limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
    let (t, c, heads) = (1024usize, 4usize, 4usize);
    let per_row = (heads * t * t * 4) as u64;
    let rows = (limit / per_row + 1) as usize;
    let data = sequences(rows, t, c, 2, 7);
    let mut model = Sequential::new([t, c], 10)
        .add(Layer::MultiHeadAttention(MultiHeadAttention {
            kernel: Some(AttentionKernel::Clear),
            ..MultiHeadAttention::new(heads, true)
        }))
        .flatten()
        .dense(2, Activation::Identity)
        .build(&Backend::Gpu(gpu))
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let err = model.fit(&data, &FitOptions { epochs: 1, batch_size: rows, ..Default::default() }).unwrap_err();
    let WgnnError::DeviceLimit { op, what, .. } = &err else { panic!("{err:?}") };
    assert!(op.contains("multi_head_attention(4 heads, causal, clear kernels)"), "{err}");
    assert!(what.contains("scores") && what.contains(&format!("{rows} rows")), "{err}");
}

/// Attention dropout in a model: the fused and unfused GPU steps draw the CPU reference's masks
/// (each kernel family), with a dropout layer after the attention too (nanoGPT's resid_dropout);
/// the losses differ from the same model without dropout; `predict` does not drop.
#[test]
fn attention_dropout_trains_like_the_reference_and_predict_does_not_drop() {
    let data = sequences(13, 19, 12, 3, 12);
    let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
    let with = |rate: f32, kernel: Option<AttentionKernel>| {
        move || {
            let Layer::MultiHeadAttention(a) = mha(3, kernel) else { unreachable!() };
            Sequential::new([19, 12], 21)
                .residual(|b| b.add(Layer::MultiHeadAttention(a.with_dropout(rate))).dropout(rate))
                .flatten()
                .dense(3, Activation::Identity)
        }
    };
    for kernel in [Some(AttentionKernel::Clear), Some(AttentionKernel::Flash)] {
        let name = kernel.map_or("picked", AttentionKernel::name);
        check_reference(
            &format!("dropout 0.3, {name}"),
            &with(0.3, kernel),
            &data,
            Loss::SparseCategoricalCrossentropy,
            &opts,
        );
    }
    let losses = |rate: f32| {
        let mut model = with(rate, None)().build(&Backend::Gpu(gpu())).unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(0.1, 0.9)).unwrap();
        let mut steps = StepLosses::default();
        model.fit_with(&data, &FitOptions { progress_every: 1, ..opts }, &mut steps).unwrap();
        (steps.losses, model)
    };
    let ((dropped, model), (plain, _)) = (losses(0.5), losses(0.0));
    assert_ne!(dropped, plain, "dropout 0.5 trained as without");
    // predict runs without dropout: the same as a model of the same weights and rate 0.
    let path = scratch("mha_dropout_predict").join("model.safetensors");
    model.save(&path).unwrap();
    let mut file = SafetensorsFile::read(&path);
    let saved = &file.metadata["wgnn.model"];
    assert!(saved.contains("\"dropout\":0.5") && saved.contains("\"rate\":0.5"), "{saved}");
    let meta = saved.replace("\"dropout\":0.5", "\"dropout\":0.0");
    file.metadata.insert("wgnn.model".into(), meta.replace("\"rate\":0.5", "\"rate\":0.0"));
    let undropped_path = scratch("mha_dropout_predict").join("undropped.safetensors");
    file.write(&undropped_path);
    let undropped = Sequential::load(&undropped_path, &Backend::Gpu(gpu())).unwrap();
    let rows = data.to_f32();
    assert_eq!(model.predict(&rows, 13).unwrap(), undropped.predict(&rows, 13).unwrap());
}

/// The rate is saved, summarised and loaded back; a file written before attention dropout
/// existed (no `dropout` field) loads with none; a rate outside [0, 1) is refused.
#[test]
fn attention_dropout_is_saved_loaded_summarised_and_checked() {
    let data = sequences(6, 5, 12, 2, 13);
    let layer = MultiHeadAttention::new(3, true).with_dropout(0.25);
    let mut model = Sequential::new([5, 12], 9)
        .add(Layer::MultiHeadAttention(layer))
        .flatten()
        .dense(2, Activation::Identity)
        .build(&Backend::Cpu)
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    model.fit(&data, &FitOptions { epochs: 1, batch_size: 4, ..Default::default() }).unwrap();
    assert!(model.summary().contains("multi_head_attention(3 heads, causal, dropout 0.25)"), "{}", model.summary());
    let path = scratch("mha_dropout").join("model.safetensors");
    model.save(&path).unwrap();
    let mut file = SafetensorsFile::read(&path);
    let meta: serde_json::Value = serde_json::from_str(&file.metadata["wgnn.model"]).unwrap();
    assert_eq!(meta["layers"][0]["dropout"], 0.25, "{meta}");
    let rate = |m: &Sequential| match &m.layers()[0] {
        Layer::MultiHeadAttention(a) => a.dropout,
        other => panic!("{other:?}"),
    };
    assert_eq!(rate(&Sequential::load(&path, &Backend::Cpu).unwrap()), 0.25);
    // The same file as an older wgnn wrote it: the layer without the field.
    let mut old: serde_json::Value = meta.clone();
    old["layers"][0].as_object_mut().unwrap().remove("dropout");
    file.metadata.insert("wgnn.model".into(), old.to_string());
    let old_path = scratch("mha_dropout").join("old.safetensors");
    file.write(&old_path);
    let loaded = Sequential::load(&old_path, &Backend::Cpu).unwrap();
    assert_eq!(rate(&loaded), 0.0);
    assert_eq!(loaded.parameters().unwrap(), model.parameters().unwrap());
    for bad in [1.0, -0.1, f32::NAN] {
        let err = build_err(
            Sequential::new([5, 12], 1)
                .add(Layer::MultiHeadAttention(MultiHeadAttention::new(3, true).with_dropout(bad))),
        );
        assert!(err.to_string().contains("multi_head_attention") && err.to_string().contains("dropout"), "{err}");
    }
}
