//! The training library end to end: GPU against the CPU reference, step for step; a real data set
//! learned; evaluate and predict agreeing; bad input rejected.

mod common;
use common::fusion::StepLosses;
use common::*;
use wgnn::data::{load_mnist, Dataset};
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential, Validation};
use wgnn::{Activation, Gpu, GpuOptions, ProfileOverride, WgnnError};

/// A device of its own on the default adapter with `profile`, and without `Features::SUBGROUP`
/// where `subgroups` is false (a device without the subgroup kernel, on any adapter).
fn device(profile: ProfileOverride, subgroups: bool) -> Gpu {
    let features = if subgroups { |f| f } else { |f: wgpu::Features| f - wgpu::Features::SUBGROUP };
    // The autotuner off: these tests check the static policy's kernel picks (a tuned pick may
    // differ from adapter to adapter and run to run).
    Gpu::with_options(&GpuOptions { profile, features, autotune: false, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

/// The kernels of one training step of `model` on `data` at `batch` rows, in order.
fn step_kernels(model: &mut Sequential, data: &Dataset, batch: usize) -> Vec<String> {
    model.step_kernels(data, batch).unwrap()
}

fn mlp(backend: &Backend, inputs: usize, hidden: usize, classes: usize, seed: u64) -> Sequential {
    Sequential::new(inputs, seed)
        .dense(hidden, Activation::Relu)
        .dense(classes, Activation::Identity)
        .build(backend)
        .unwrap()
}

#[test]
fn two_layer_mlp_ten_steps_match_the_cpu_reference() {
    let gpu = gpu();
    // 10 steps of 16 rows, plus a partial 11th of 5 rows.
    let data = synthetic(165, 37, 5, 1);
    for optimizer in [Optimizer::adam(1e-2), Optimizer::sgd(0.05, 0.9)] {
        let mut losses = Vec::new();
        let mut weights = Vec::new();
        for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
            let mut model = mlp(&backend, 37, 23, 5, 7);
            model.compile(Loss::SparseCategoricalCrossentropy, optimizer).unwrap();
            let mut steps = StepLosses::default();
            let options = FitOptions {
                epochs: 1,
                batch_size: 16,
                shuffle: true,
                validation: Validation::None,
                progress_every: 1,
                checkpoint: None,
                early_stopping: None,
                skip_nonfinite_batches: false,
                clip_norm: None,
                cancel: None,
                verbose: false,
            };
            model.fit_with(&data, &options, &mut steps).unwrap();
            assert_eq!(steps.losses.len(), 11, "one tick per step");
            losses.push(steps.losses);
            weights.push(model.weights().unwrap());
        }
        assert_close(&format!("{optimizer:?}: per-step loss, gpu vs cpu"), &losses[0], &losses[1], 1e-4, 1e-4);
        for (i, ((wg, bg), (wc, bc))) in weights[0].iter().zip(&weights[1]).enumerate() {
            assert_close(&format!("{optimizer:?}: layer {i} W after 11 steps"), wg, wc, 1e-4, 1e-3);
            assert_close(&format!("{optimizer:?}: layer {i} b after 11 steps"), bg, bc, 1e-4, 1e-3);
        }
        // The loss must actually fall: a model that never updated would also "match".
        let (first, last) = (losses[0][..3].iter().sum::<f32>(), losses[0][8..].iter().sum::<f32>());
        assert!(last < first, "{optimizer:?}: loss did not fall: {:?}", losses[0]);
    }
}

#[test]
fn odd_batch_sizes_match_the_cpu_reference_on_the_fast_kernels() {
    // Batches of 13 rows (and a tail of 11): the weight gradients run over the rows padded to 16,
    // whose extra rows stay zero, so they take the same kernels as a batch of 16 and give the same
    // result as the reference. Under each policy, forced on whatever adapter this is.
    let data = synthetic(50, 36, 8, 3);
    let fit = |backend: &Backend| {
        let mut model = Sequential::new(36, 5)
            .dense(24, Activation::Relu)
            .dropout(0.2)
            .dense(8, Activation::Identity)
            .build(backend)
            .unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        let options = FitOptions { epochs: 3, batch_size: 13, ..Default::default() };
        let history = model.fit(&data, &options).unwrap();
        let losses: Vec<f32> = history.epochs.iter().map(|r| r.train_loss).collect();
        (losses, model.weights().unwrap(), model)
    };
    let (want_losses, want_weights, _) = fit(&Backend::Cpu);
    for profile in [ProfileOverride::CpuAdapter, ProfileOverride::Gpu] {
        let gpu = device(profile, true);
        let (losses, weights, mut model) = fit(&Backend::Gpu(gpu.clone()));
        assert_close(&format!("{profile:?}, batch 13: epoch losses, gpu vs cpu"), &losses, &want_losses, 1e-4, 1e-4);
        for (i, ((wg, bg), (wc, bc))) in weights.iter().zip(&want_weights).enumerate() {
            assert_close(&format!("{profile:?}, batch 13: layer {i} W"), wg, wc, 1e-4, 1e-3);
            assert_close(&format!("{profile:?}, batch 13: layer {i} b"), bg, bc, 1e-4, 1e-3);
        }
        assert!(losses[2] < losses[0], "{profile:?}: loss did not fall: {losses:?}");
        // Every product of the step, dW included, on a vec4 kernel: the subgroup one where the
        // policy picks it and the device has it, else 4×8 (or 8×4) register blocks.
        let matmul = gpu.profile().matmul;
        let fast = match matmul.prefer_subgroup && matmul.subgroup_kernel {
            true => "matmul_subgroup::matmul_subgroup",
            false => "matmul::matmul_register",
        };
        let kernels = step_kernels(&mut model, &data, 13);
        let products: Vec<&String> = kernels.iter().filter(|l| l.starts_with("matmul")).collect();
        assert_eq!(products.len(), 5, "{profile:?}: {kernels:?}");
        assert!(products.iter().all(|l| l.as_str() == fast), "{profile:?}: {fast} wanted: {kernels:?}");
    }
}

#[test]
fn the_output_layer_runs_fused_with_its_loss_where_it_can() {
    // The tutorial's shape: dense → dense → logits with sparse cross-entropy trains with the
    // output layer's forward, loss and dX in one dispatch; a dropout layer under the output
    // needs its mask between them, so that model keeps them apart. (Fused steps are compared with
    // the CPU reference in the tests above and in model_activations, model_batch_norm and
    // reliability; unfused ones where a dropout layer sits under the output.)
    let gpu = gpu();
    let data = synthetic(64, 12, 4, 9);
    for dropout in [0.0, 0.3] {
        let mut model = Sequential::new(12, 1)
            .dense(16, Activation::Relu)
            .dense(8, Activation::Tanh)
            .dropout(dropout)
            .dense(4, Activation::Softmax)
            .build(&Backend::Gpu(gpu.clone()))
            .unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        let labels: Vec<String> = model.step_kernels(&data, 16).unwrap();
        let fused = labels.iter().any(|l| l.starts_with("dense_softmax_xent"));
        assert_eq!(fused, dropout == 0.0, "dropout {dropout}: {labels:?}");
        // The model's parameters leave room for the kernel's uniform window over W and b.
        assert_eq!(fused, labels.iter().any(|l| l.starts_with("dense_softmax_xent_uniform")), "{labels:?}");
        if fused {
            // One dispatch computes the output layer's forward, loss and dX: no loss or softmax
            // runs alone. (The step's total depends on the matmul variants the tuner picks, so it
            // is not asserted.)
            assert_eq!(labels.iter().filter(|l| l.starts_with("dense_softmax_xent")).count(), 1, "{labels:?}");
            assert!(!labels.iter().any(|l| l.starts_with("softmax")), "{labels:?}");
        }
    }
}

fn mnist_slice(rows: usize, offset: usize) -> (Dataset, Dataset) {
    let (train, test) = load_mnist(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/mnist.npz")).unwrap();
    let train_rows: Vec<usize> = (offset..offset + rows).collect();
    let test_rows: Vec<usize> = (0..1000).collect();
    (train.subset(&train_rows).unwrap(), test.subset(&test_rows).unwrap())
}

#[test]
fn the_first_layer_reads_u8_batches_in_place_and_matches_the_cpu_reference() {
    // u8 features (MNIST) whose rows are whole words: under the CPU-adapter policy, on a device
    // with the subgroup kernel, the step has no gather dispatch: the first layer's forward product
    // and weight gradient read the batch from the data set (the forward one writing the labels and
    // advancing the counters). Under a GPU's policy, or without the subgroup kernel, the batch is
    // gathered first. Either way step for step as the reference. 141 rows in batches of 13: 10 full
    // steps and a tail of 11, the weight gradient over padded rows; the dropout masks key on t,
    // which the forward product advances.
    let (train, _) = mnist_slice(141, 500);
    let fit = |backend: &Backend| {
        let mut model = Sequential::new(784, 4)
            .dense(24, Activation::Relu)
            .dropout(0.25)
            .dense(10, Activation::Identity)
            .build(backend)
            .unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3)).unwrap();
        let mut steps = StepLosses::default();
        let options = FitOptions { epochs: 2, batch_size: 13, progress_every: 1, ..Default::default() };
        model.fit_with(&train, &options, &mut steps).unwrap();
        assert_eq!(steps.losses.len(), 22, "one tick per step");
        (steps.losses, model.weights().unwrap(), model)
    };
    let (want_losses, want_weights, _) = fit(&Backend::Cpu);
    let cases =
        [(ProfileOverride::CpuAdapter, true), (ProfileOverride::Gpu, true), (ProfileOverride::CpuAdapter, false)];
    for (profile, subgroups) in cases {
        let gpu = device(profile, subgroups);
        let what = format!("{profile:?}, subgroups requested: {subgroups}");
        let (losses, weights, mut model) = fit(&Backend::Gpu(gpu.clone()));
        assert_close(&format!("{what}: per-step loss, gpu vs cpu"), &losses, &want_losses, 1e-4, 1e-3);
        for (i, ((wg, bg), (wc, bc))) in weights.iter().zip(&want_weights).enumerate() {
            assert_close(&format!("{what}: layer {i} W"), wg, wc, 1e-4, 1e-3);
            assert_close(&format!("{what}: layer {i} b"), bg, bc, 1e-4, 1e-3);
        }
        // In place exactly where the CPU-adapter policy meets the subgroup kernel.
        let in_place = gpu.profile().first_layer_in_place;
        let has_kernel = gpu.profile().matmul.subgroup_kernel;
        assert_eq!(in_place, profile == ProfileOverride::CpuAdapter && has_kernel, "{what}");
        if profile == ProfileOverride::CpuAdapter && subgroups && !in_place {
            eprintln!("the in-place first layer: not run on {}: it needs the subgroup kernel", gpu.describe());
        }
        let kernels = step_kernels(&mut model, &train, 13);
        let gathers = kernels.iter().filter(|l| l.starts_with("gather")).count();
        let in_place_products = kernels.iter().filter(|l| l.starts_with("matmul_gathered")).count();
        match in_place {
            true => assert_eq!((gathers, in_place_products), (0, 2), "{what}: {kernels:?}"),
            false => assert_eq!((gathers, in_place_products), (1, 0), "{what}: {kernels:?}"),
        }
    }
}

#[test]
fn the_gpu_policy_trains_like_the_cpu_reference_on_any_adapter() {
    // A GPU's choices forced on whatever adapter this is: the batch gathered (not read in place);
    // tiles for the 784→128 layer's products, the forward one's K split toward 256 workgroups; 4×8
    // register blocks in 16×4 workgroups for the other products; the output layer fused with its
    // loss at 256 rows (a CPU adapter fuses up to 32). 600 rows in batches of 256 and a tail of 88,
    // two epochs, step for step as the reference.
    let gpu = device(ProfileOverride::Gpu, true);
    let (train, _) = mnist_slice(600, 2000);
    let fit = |backend: &Backend| {
        let mut model = Sequential::new(784, 6)
            .dense(128, Activation::Relu)
            .dense(32, Activation::Relu)
            .dense(10, Activation::Identity)
            .build(backend)
            .unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
        let mut steps = StepLosses::default();
        let options = FitOptions { epochs: 2, batch_size: 256, progress_every: 1, ..Default::default() };
        model.fit_with(&train, &options, &mut steps).unwrap();
        assert_eq!(steps.losses.len(), 6, "one tick per step");
        (steps.losses, model.weights().unwrap(), model)
    };
    let (want_losses, want_weights, _) = fit(&Backend::Cpu);
    let (losses, weights, mut model) = fit(&Backend::Gpu(gpu));
    assert_close("gpu policy: per-step loss, gpu vs cpu", &losses, &want_losses, 1e-4, 1e-3);
    for (i, ((wg, bg), (wc, bc))) in weights.iter().zip(&want_weights).enumerate() {
        assert_close(&format!("gpu policy: layer {i} W"), wg, wc, 1e-4, 1e-3);
        assert_close(&format!("gpu policy: layer {i} b"), bg, bc, 1e-4, 1e-3);
    }
    let kernels = step_kernels(&mut model, &train, 256);
    let count = |prefix: &str| kernels.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("gather"), 1, "{kernels:?}");
    assert_eq!(count("matmul_gathered") + count("matmul_subgroup"), 0, "{kernels:?}");
    // Forward and weight gradient of the first layer; the forward one split, then summed.
    assert_eq!(count("matmul::matmul_tiled"), 2, "{kernels:?}");
    assert_eq!(count("matmul::matmul_reduce"), 1, "{kernels:?}");
    // The second layer's forward and weight gradient, the first layer's dZ, and the output
    // layer's weight gradient (scalar loads: 10 columns).
    assert_eq!(count("matmul::matmul_register"), 4, "{kernels:?}");
    assert_eq!(count("dense_softmax_xent"), 1, "{kernels:?}");
}

#[test]
fn mnist_slice_gpu_fit_matches_cpu_fit_and_learns() {
    let gpu = gpu();
    let (train, test) = mnist_slice(2000, 0);
    let mut histories = Vec::new();
    let mut accuracies = Vec::new();
    // 2,000 rows, batch 32: 62 full batches and a partial one of 16, for 3 epochs (189 steps).
    for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
        let mut model = Sequential::new(784, 3)
            .dense(64, Activation::Relu)
            .dense(64, Activation::Relu)
            .dense(10, Activation::Identity)
            .build(&backend)
            .unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
        let options = FitOptions {
            epochs: 3,
            batch_size: 32,
            shuffle: true,
            validation: Validation::Data(&test),
            progress_every: 0,
            checkpoint: None,
            early_stopping: None,
            skip_nonfinite_batches: false,
            clip_norm: None,
            cancel: None,
            verbose: false,
        };
        let history = model.fit(&train, &options).unwrap();
        histories.push(history);
        accuracies.push(model.evaluate(&test).unwrap().1);
    }
    let loss = |h: &wgnn::History| h.epochs.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    let val = |h: &wgnn::History| h.epochs.iter().map(|r| r.val_loss.unwrap()).collect::<Vec<_>>();
    // 189 Adam steps: rounding differences (the GPU matmul sums K in another order, split-K) grow
    // step by step, so this compares histories to 2%; the 11-step test above holds 1e-4.
    assert_close("train loss history, gpu vs cpu", &loss(&histories[0]), &loss(&histories[1]), 1e-3, 2e-2);
    assert_close("validation loss history, gpu vs cpu", &val(&histories[0]), &val(&histories[1]), 1e-3, 2e-2);
    // 2,000 training rows, 3 epochs: a working MLP gets ~90% on held-out digits; chance is 10%.
    assert!(accuracies[0] >= 0.85, "gpu held-out accuracy {} below 0.85", accuracies[0]);
    assert!((accuracies[0] - accuracies[1]).abs() <= 0.005, "accuracy gpu {} vs cpu {}", accuracies[0], accuracies[1]);
}

#[test]
fn evaluate_and_predict_agree() {
    let gpu = gpu();
    let (train, test) = mnist_slice(1000, 5000);
    let mut model = Sequential::new(784, 5)
        .dense(32, Activation::Tanh)
        .dense(10, Activation::Identity)
        .build(&Backend::Gpu(gpu))
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3)).unwrap();
    model.fit(&train, &FitOptions { epochs: 2, batch_size: 50, ..Default::default() }).unwrap();
    // 2,100 rows: more than one evaluation batch, and a partial one.
    let big = test.subset(&(0..1000).chain(0..1000).chain(0..100).collect::<Vec<_>>()).unwrap();
    let (loss, accuracy) = model.evaluate(&big).unwrap();
    let probs = model.predict_dataset(&big).unwrap();
    assert_eq!(probs.len(), big.rows * 10);
    let mut nll = 0.0f64;
    let mut correct = 0usize;
    for (r, row) in probs.chunks(10).enumerate() {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row {r} probabilities sum to {sum}");
        let label = big.labels[r] as usize;
        nll -= (row[label] as f64).ln();
        let argmax = row.iter().enumerate().fold(0, |b, (i, &p)| if p > row[b] { i } else { b });
        correct += (argmax == label) as usize;
    }
    let predicted_loss = (nll / big.rows as f64) as f32;
    let predicted_accuracy = correct as f32 / big.rows as f32;
    assert!((predicted_loss - loss).abs() < 1e-4 * loss.max(1.0), "evaluate loss {loss} vs predict {predicted_loss}");
    assert!(
        (predicted_accuracy - accuracy).abs() < 1e-6,
        "evaluate accuracy {accuracy} vs predict {predicted_accuracy}"
    );

    // Predicting a single row gives the same probabilities as that row in a batch.
    let one = model.predict(&big.row_f32(7).unwrap(), 1).unwrap();
    assert_close("predict one row vs in a batch", &one, &probs[70..80], 1e-6, 1e-5);
}

#[test]
fn validation_fraction_holds_rows_out() {
    let gpu = gpu();
    let data = synthetic(200, 8, 3, 2);
    let mut model = mlp(&Backend::Gpu(gpu), 8, 8, 3, 1);
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    let history = model
        .fit(
            &data,
            &FitOptions { epochs: 2, batch_size: 16, validation: Validation::Fraction(0.25), ..Default::default() },
        )
        .unwrap();
    assert_eq!(history.epochs.len(), 2);
    let r = &history.epochs[1];
    assert!(r.val_loss.is_some_and(f32::is_finite) && r.val_accuracy.is_some());
    // 150 training rows per epoch, 50 held out.
    assert!((r.samples_per_second * r.seconds - 150.0).abs() < 1e-6 * 150.0, "{r:?}");
    // Validation is timed apart from the training steps (no claim on which takes longer).
    assert!(r.val_seconds > 0.0 && r.val_seconds.is_finite(), "{r:?}");
    assert!(history.epochs.iter().all(|r| r.val_seconds > 0.0), "every epoch validated: {history:?}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let gpu = gpu();
    let backend = Backend::Gpu(gpu);
    let data = synthetic(20, 6, 3, 3);

    let mut model = mlp(&backend, 6, 4, 3, 1);
    let err = model.fit(&data, &FitOptions::default()).expect_err("fit before compile");
    assert!(err.to_string().contains("compile"), "{err}");

    for lr in [0.0, -1.0, f32::NAN] {
        let err = model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(lr)).expect_err("bad lr");
        assert!(err.to_string().contains("learning rate"), "lr {lr}: {err}");
    }
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let err = model.fit(&data, &FitOptions { batch_size: 0, ..Default::default() }).expect_err("batch 0");
    assert!(err.to_string().contains("batch size"), "{err}");

    let narrow = synthetic(20, 5, 3, 4);
    let err = model.fit(&narrow, &FitOptions::default()).expect_err("wrong width");
    assert!(
        matches!(err, WgnnError::Shape { .. })
            && err.to_string().contains("5 features")
            && err.to_string().contains("takes [6]"),
        "{err}"
    );

    let many_classes = synthetic(20, 6, 7, 5);
    let err = model.evaluate(&many_classes).expect_err("label out of range");
    assert!(err.to_string().contains("out of range for a model with 3 outputs"), "{err}");

    let err = model.predict(&[0.0; 7], 1).expect_err("wrong predict width");
    assert!(err.to_string().contains("predict"), "{err}");
    let err = model.predict(&[f32::NAN; 6], 1).expect_err("NaN input");
    assert!(matches!(err, WgnnError::NonFinite { .. }), "{err}");

    let err = Sequential::new(6, 1).dense(0, Activation::Relu).build(&backend).err().expect("zero units");
    assert!(err.to_string().contains("at least 1"), "{err}");
    let mut softmax_hidden = Sequential::new(6, 1).dense(3, Activation::Relu).build(&backend).unwrap();
    let err = softmax_hidden
        .compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3))
        .expect_err("non-linear last layer");
    assert!(err.to_string().contains("last layer must be linear"), "{err}");
}
