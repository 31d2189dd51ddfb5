//! The layer-norm layer (`Layer::LayerNorm`) in models: over a `[T, C]` sample's rows, a `[F]`
//! sample and an image's channels, with and without β, in a residual branch; the GPU step
//! against the CPU reference, fused and unfused, at awkward widths; finite differences w.r.t. γ,
//! β and the layer's input (through the dense layer below it); save/load; γ and β free of
//! weight decay on matrices; bad settings as errors naming the layer. (The kernels:
//! tests/layer_norm.rs.)

mod common;

use common::fusion::check_fusion;
use common::safetensors_file::SafetensorsFile;
use common::{assert_close, backends, scratch, synthetic};
use wgnn::internals::kernels::optimizer::{AdamConfig, DecayMask};
use wgnn::internals::rng::Rng;
use wgnn::layers::LayerNormConfig;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential, SequentialBuilder};
use wgnn::Activation::{Gelu, Identity, Relu, Tanh};
use wgnn::{Dataset, Layer};

const NO_BIAS: LayerNormConfig = LayerNormConfig { epsilon: 1e-5, bias: false };

/// `rows` samples of `[t, c]`, 3 classes.
fn tokens(rows: usize, t: usize, c: usize, seed: u64) -> Dataset {
    synthetic(rows, t * c, 3, seed).with_sample_shape(&[t, c]).unwrap()
}

#[test]
fn layer_norm_on_token_rows_trains_like_the_reference_fused_and_unfused() {
    // LN over each of 3 rows of C per sample (C = 1: x̂ is 0, the output β), then a dense
    // head; the second LN without β. 21 rows in batches of 8: a tail of 5.
    for c in [1, 3, 65] {
        let data = tokens(21, 3, c, 5 + c as u64);
        let build = || {
            Sequential::new([3, c], 4).layer_norm().layer_norm_with(NO_BIAS).flatten().dense(6, Tanh).dense(3, Identity)
        };
        let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
        check_fusion(&format!("[3, {c}] tokens"), &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
    }
}

#[test]
fn layer_norm_over_an_images_channels_trains_like_the_reference() {
    // After a convolution, each pixel's channels normalised on their own (ConvNeXt's
    // channels-last LayerNorm): 5×4×2 images, 3 filters.
    let data = synthetic(14, 5 * 4 * 2, 3, 12).with_sample_shape(&[5, 4, 2]).unwrap();
    let build = || {
        Sequential::new([5, 4, 2], 8)
            .conv2d_same(3, (3, 3), Identity)
            .layer_norm()
            .activation(Relu)
            .flatten()
            .dense(3, Identity)
    };
    let opts = FitOptions { epochs: 2, batch_size: 4, ..Default::default() };
    check_fusion("conv → layer norm", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
}

#[test]
fn layer_norm_on_features_and_in_a_residual_branch_trains_like_the_reference() {
    // A pre-norm block as a transformer has (x + dense(LN(x))), LN → dense → …, a final LN
    // without β before the head, on widths 1, 3 and 65.
    for f in [1, 3, 65] {
        let data = synthetic(21, f, 3, 9 + f as u64);
        let build = || {
            Sequential::new(f, 6)
                .layer_norm()
                .dense(5, Gelu)
                .residual(|b| b.layer_norm().dense(5, Relu))
                .layer_norm_with(NO_BIAS)
                .dense(3, Identity)
        };
        let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
        check_fusion(&format!("[{f}] features"), &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
    }
}

/// Random γ and β for every layer norm, drawn the same way for every model built from one seed.
fn perturbed(mut weights: Vec<(Vec<f32>, Vec<f32>)>, layers: &[Layer]) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut rng = Rng::new(77);
    let norms = layers.iter().filter(|l| matches!(l, Layer::Dense(_) | Layer::LayerNorm(_)));
    for ((gamma, beta), layer) in weights.iter_mut().zip(norms) {
        if matches!(layer, Layer::LayerNorm(_)) {
            *gamma = rng.vec_uniform(gamma.len(), 0.5, 1.5);
            *beta = rng.vec_uniform(beta.len(), -0.5, 0.5);
        }
    }
    weights
}

#[test]
fn the_gradients_through_layer_norm_match_finite_differences() {
    // One SGD step over the whole batch moves each parameter by −lr·∂L/∂p: γ and β of each layer
    // norm (one over 4 rows of 3 per sample, one over a sample of 12), and W and b of the dense
    // layer below them, whose gradient passes through the layer norms' input gradient, against
    // central differences of the evaluated loss.
    let data = synthetic(10, 5, 3, 4);
    for backend in backends() {
        for fused in [true, false] {
            let build = || {
                Sequential::new(5, 9)
                    .dense(12, Tanh)
                    .reshape(&[4, 3])
                    .layer_norm()
                    .flatten()
                    .layer_norm()
                    .dense(3, Identity)
                    .fused(fused)
                    .build(&backend)
                    .unwrap()
            };
            let lr = 0.5;
            let mut model = build();
            let before = perturbed(model.weights().unwrap(), model.layers());
            model.set_weights(&before).unwrap();
            model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(lr, 0.0)).unwrap();
            let opts = FitOptions { epochs: 1, batch_size: 10, shuffle: false, ..Default::default() };
            model.fit(&data, &opts).unwrap();
            let after = model.weights().unwrap();
            let mut probe = build();
            probe.compile(Loss::SparseCategoricalCrossentropy, Optimizer::sgd(lr, 0.0)).unwrap();
            // weights(): the dense layer, the two layer norms (γ, β), the head.
            for (layer, what) in [(0, "dense below"), (1, "LN over rows"), (2, "LN over the sample")] {
                for (part, pick) in [("first", 0), ("second", 1)] {
                    let get = |w: &(Vec<f32>, Vec<f32>)| if pick == 0 { w.0.clone() } else { w.1.clone() };
                    let (b, a) = (get(&before[layer]), get(&after[layer]));
                    let step: Vec<f32> = b.iter().zip(&a).map(|(b, a)| (b - a) / lr).collect();
                    let numeric = common::numeric_gradient(&b, 3e-3, |w| {
                        let mut weights = before.clone();
                        match pick {
                            0 => weights[layer].0 = w.to_vec(),
                            _ => weights[layer].1 = w.to_vec(),
                        }
                        probe.set_weights(&weights).unwrap();
                        probe.evaluate(&data).unwrap().0 as f64
                    });
                    let name = format!("{} (fused {fused}): {what}'s {part} tensor", model.backend_name());
                    assert!(step.iter().any(|&g| g.abs() > 1e-4), "{name}: no gradient {step:?}");
                    assert_close(&name, &step, &numeric, 2e-3, 2e-2);
                }
            }
        }
    }
}

#[test]
fn a_layer_norm_model_saves_loads_and_summarises() {
    let data = tokens(12, 2, 5, 3);
    let x = data.to_f32();
    let dir = scratch("layer-norm-layer");
    let build = |backend: &Backend| {
        Sequential::new([2, 5], 3)
            .layer_norm()
            .layer_norm_with(LayerNormConfig { epsilon: 1e-3, bias: false })
            .flatten()
            .dense(3, Identity)
            .build(backend)
            .unwrap()
    };
    for backend in backends() {
        let mut model = build(&backend);
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        model.fit(&data, &FitOptions { epochs: 2, batch_size: 4, ..Default::default() }).unwrap();
        // γ `weight` and β `bias`, [C] each; the second norm has no β.
        let names: Vec<(String, Vec<usize>)> =
            model.parameters().unwrap().into_iter().map(|p| (p.name, p.shape)).collect();
        let want = [("layers.0.weight", 5), ("layers.0.bias", 5), ("layers.1.weight", 5)];
        for (name, len) in want {
            assert!(names.contains(&(name.to_string(), vec![len])), "{name} in {names:?}");
        }
        assert!(!names.iter().any(|(n, _)| n == "layers.1.bias"), "{names:?}");
        assert_eq!(model.parameter_count(), 5 + 5 + 5 + 10 * 3 + 3);
        let summary = model.summary();
        assert!(summary.contains("layer_norm ") && summary.contains("layer_norm(eps 0.001, no bias)"), "{summary}");
        let path = dir.join("ln.safetensors");
        model.save(&path).unwrap();
        let meta = &SafetensorsFile::read(&path).metadata["wgnn.model"];
        assert!(meta.contains("\"format\":4") && meta.contains("layer_norm"), "{meta}");
        let loaded = Sequential::load(&path, &backend).unwrap();
        assert_eq!(loaded.layers(), model.layers());
        assert_eq!(loaded.parameters().unwrap(), model.parameters().unwrap());
        let (p, q) =
            (model.predict(&x, data.rows).unwrap().into_vec(), loaded.predict(&x, data.rows).unwrap().into_vec());
        assert_eq!(p, q, "predictions after load");
        assert_eq!(model.evaluate(&data).unwrap(), loaded.evaluate(&data).unwrap());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gamma_and_beta_do_not_decay_under_decay_on_matrices() {
    // One AdamW step from the same weights: with decay on matrices, γ and β end as with no decay
    // at all, the dense kernel as with decay on everything.
    let data = tokens(16, 2, 4, 8);
    let one_step = FitOptions { epochs: 1, batch_size: 16, shuffle: false, ..Default::default() };
    for backend in backends() {
        let trained = |decay, weight_decay| {
            let mut m = Sequential::new([2, 4], 1).layer_norm().flatten().dense(3, Identity).build(&backend).unwrap();
            let cfg = AdamConfig { weight_decay, decay, ..AdamConfig::torch(1e-2) };
            m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::AdamW(cfg)).unwrap();
            m.fit(&data, &one_step).unwrap();
            m.parameters().unwrap()
        };
        let (matrices, all, none) =
            (trained(DecayMask::Matrices, 0.5), trained(DecayMask::All, 0.5), trained(DecayMask::All, 0.0));
        let names: Vec<&str> = matrices.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]);
        for ((m, a), n) in matrices.iter().zip(&all).zip(&none) {
            // Only the dense kernel is a matrix.
            let want = if m.name == "layers.2.weight" { a } else { n };
            assert_close(&format!("{}: after one step", m.name), &m.values, &want.values, 1e-7, 1e-6);
            if m.name.ends_with("weight") {
                assert!(a.values != n.values, "{}: the decay must show", m.name);
            }
        }
    }
}

#[test]
fn bad_settings_are_errors_naming_the_layer() {
    for epsilon in [0.0, -1.0, f32::NAN] {
        let cfg = LayerNormConfig { epsilon, ..Default::default() };
        let build: SequentialBuilder = Sequential::new(4, 1).dense(3, Relu).layer_norm_with(cfg).dense(2, Identity);
        let err = build.build(&Backend::Cpu).err().expect("a bad epsilon");
        assert!(err.to_string().contains("layer 1 (layer_norm(eps") && err.to_string().contains("epsilon"), "{err}");
    }
}
