//! Convolutional networks: Conv2D and pooling layers trained on the GPU step for step as the CPU
//! reference, fused and unfused; their bad inputs as errors naming the layer and the shapes.

mod common;

use common::fusion::check_fusion;
use common::{gpu, synthetic};
use wgnn::internals::kernels::batch_norm::BatchNormConfig;
use wgnn::layers::{Conv2D, Padding, Pool2dConfig, Pooling};
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Gpu, GpuOptions, Layer, WgnnError};

fn images(rows: usize, shape: [usize; 3], classes: usize, seed: u64) -> wgnn::Dataset {
    synthetic(rows, shape.iter().product(), classes, seed).with_sample_shape(&shape).unwrap()
}

#[test]
fn a_small_cnn_trains_like_the_cpu_reference_fused_and_unfused() {
    // Odd 7×9 images of 2 channels: a same-padded 3×3 convolution with an even count of filters,
    // max pooling (its backward routed to the argmax, the leftover column unused), a strided 1×1
    // convolution, Flatten, Dropout and the output layer. 26 rows in batches of 8: a tail of 2.
    let data = images(26, [7, 9, 2], 3, 5);
    let build = || {
        Sequential::new([7, 9, 2], 3)
            .add(Layer::Conv2D(Conv2D { padding: Padding::Same, ..Conv2D::new(4, (3, 3), Activation::Relu) }))
            .max_pool2d((2, 2))
            .add(Layer::Conv2D(Conv2D { strides: (2, 1), ..Conv2D::new(3, (1, 1), Activation::Tanh) }))
            .flatten()
            .dropout(0.25)
            .dense(3, Activation::Softmax)
    };
    let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
    check_fusion("cnn", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
}

#[test]
fn pooling_variants_and_batch_norm_over_channels_train_like_the_reference() {
    // 5×5 kernels with stride 2, overlapping average pooling (3×3 every 2, same padding), batch
    // norm over a convolution's channels (its bias left out), global average pooling to the output.
    let data = images(20, [11, 10, 3], 4, 6);
    let build = || {
        Sequential::new([11, 10, 3], 8)
            .add(Layer::Conv2D(Conv2D {
                strides: (2, 2),
                use_bias: false,
                ..Conv2D::new(6, (5, 5), Activation::Identity)
            }))
            .add(Layer::BatchNorm(BatchNormConfig::default()))
            .activation(Activation::LeakyRelu(0.1))
            .add(Layer::Pool(Pooling::Average(Pool2dConfig {
                pool_size: (3, 3),
                strides: Some((2, 2)),
                padding: Padding::Same,
            })))
            .conv2d(4, (1, 1), Activation::Identity)
            .add(Layer::global_average_pooling2d())
            .dense(4, Activation::Identity)
    };
    let opts = FitOptions { epochs: 2, batch_size: 6, ..Default::default() };
    check_fusion("pools", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
}

#[test]
fn batch_norm_pooled_on_the_way_trains_like_the_reference() {
    // Conv → batch norm → relu → max pool (2×2: the pool normalises on the way, the normalised
    // image never written, and the norm's backward computes the pool's), on odd 9×7 images (the pool's leftover row and column), then 6
    // channels (not whole vec4s) → batch norm → tanh → max pool, and a batch norm → GELU → max
    // pool and one → relu → overlapping max pool, which stay two passes. 22 rows in batches of 8.
    let data = images(22, [9, 7, 2], 3, 9);
    let build = || {
        let conv = |filters| Conv2D { use_bias: false, ..Conv2D::new(filters, (3, 3), Activation::Identity) };
        let overlapping = Pool2dConfig { pool_size: (3, 3), strides: Some((1, 1)), padding: Padding::Same };
        Sequential::new([9, 7, 2], 4)
            .add(Layer::Conv2D(Conv2D { padding: Padding::Same, ..conv(8) }))
            .batch_norm()
            .activation(Activation::Relu)
            .max_pool2d((2, 2))
            .add(Layer::Conv2D(Conv2D { padding: Padding::Same, ..conv(6) }))
            .batch_norm()
            .activation(Activation::Tanh)
            .max_pool2d((2, 2))
            .add(Layer::Conv2D(Conv2D { padding: Padding::Same, ..conv(4) }))
            .batch_norm()
            .activation(Activation::GeluErf)
            .max_pool2d((1, 1))
            .batch_norm()
            .activation(Activation::Relu)
            .add(Layer::Pool(Pooling::Max(overlapping)))
            .flatten()
            .dense(3, Activation::Softmax)
    };
    let gpu = gpu();
    let mut model = build().build(&Backend::Gpu(gpu)).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    let kernels = model.step_kernels(&data, 8).unwrap();
    let normalizing = kernels.iter().filter(|k| k.contains("max_pool2d_forward_normalized")).count();
    assert_eq!(normalizing, 2, "{kernels:?}");
    // The first's batch norm (8 channels: whole vec4s) also computes the pool's input gradient in
    // its backward; the second's (6) runs the pool's backward and its own.
    let through_pool = kernels.iter().filter(|k| k.contains("bn_backward_dx_pooled")).count();
    assert_eq!(through_pool, 1, "{kernels:?}");
    let opts = FitOptions { epochs: 2, batch_size: 8, ..Default::default() };
    check_fusion("norm pooled", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);
}

#[test]
fn cnn_models_save_load_and_predict_as_before() {
    let data = images(12, [6, 6, 1], 2, 2);
    let dir = std::env::temp_dir().join(format!("wgnn-cnn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cnn.safetensors");
    for backend in [Backend::Gpu(gpu()), Backend::Cpu] {
        let mut model = Sequential::new([6, 6, 1], 1)
            .conv2d(3, (3, 3), Activation::Relu)
            .add(Layer::average_pooling2d((2, 2)))
            .flatten()
            .dense(2, Activation::Identity)
            .build(&backend)
            .unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        model.fit(&data, &FitOptions { epochs: 2, batch_size: 4, ..Default::default() }).unwrap();
        model.save(&path).unwrap();
        let loaded = Sequential::load(&path, &backend).unwrap();
        assert_eq!(loaded.layers(), model.layers());
        let names: Vec<String> = loaded.parameters().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["layers.0.weight", "layers.0.bias", "layers.3.weight", "layers.3.bias"]);
        assert_eq!(loaded.parameters().unwrap()[0].shape, vec![3, 3, 1, 3], "kernels [kh, kw, C_in, filters]");
        assert_eq!(loaded.predict_dataset(&data).unwrap(), model.predict_dataset(&data).unwrap());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flat_rows_reshaped_to_images_train_like_the_reference() {
    // Rows of 36 values read as 6×6 images, and a convolution's output reshaped (not flattened)
    // to [4, 4 · 2] before a per-channel batch norm. Fused, both reshapes are free.
    let data = synthetic(18, 36, 3, 4);
    let build = || {
        Sequential::new(36, 6)
            .reshape(&[6, 6, 1])
            .conv2d(2, (3, 3), Activation::Tanh)
            .reshape(&[4, 8])
            .batch_norm()
            .flatten()
            .dense(3, Activation::Identity)
    };
    let opts = FitOptions { epochs: 2, batch_size: 6, ..Default::default() };
    check_fusion("reshape", &build, &data, Loss::SparseCategoricalCrossentropy, &opts);

    let dir = std::env::temp_dir().join(format!("wgnn-reshape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = build().build(&Backend::Cpu).unwrap();
    model.save(dir.join("m.safetensors")).unwrap();
    let loaded = Sequential::load(dir.join("m.safetensors"), &Backend::Cpu).unwrap();
    assert_eq!(loaded.layers(), model.layers());
    std::fs::remove_dir_all(&dir).unwrap();

    let err = Sequential::new(36, 0).reshape(&[5, 7, 1]).build(&Backend::Cpu).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, WgnnError::Shape { .. }) && msg.contains("layer 0 (reshape([5, 7, 1]))"), "{msg}");
    assert!(msg.contains("36 values per sample, [5, 7, 1] needs 35"), "{msg}");
    let err = Sequential::new(36, 0).reshape(&[36, 0]).build(&Backend::Cpu).err().unwrap();
    assert!(err.to_string().contains("axes of at least 1"), "{err}");
}

#[test]
fn bad_cnn_setups_are_errors_naming_the_layer_and_the_shapes() {
    let backend = Backend::Cpu;
    let build = |layer: Layer| {
        Sequential::new([5, 5, 1], 0).add(layer).flatten().dense(2, Activation::Identity).build(&backend)
    };
    let err = build(Layer::conv2d(2, (7, 3), Activation::Relu)).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("layer 0 (conv2d(2, 7×3, relu))") && msg.contains("larger than the 5×5 input"), "{msg}");
    let err = build(Layer::max_pool2d((6, 6))).err().unwrap().to_string();
    assert!(err.contains("layer 0 (max_pool2d(6×6))") && err.contains("larger than the 5×5 input"), "{err}");
    let err =
        build(Layer::Conv2D(Conv2D { strides: (0, 1), ..Conv2D::new(2, (3, 3), Activation::Relu) })).err().unwrap();
    assert!(err.to_string().contains("strides must be at least 1"), "{err}");
    let err = build(Layer::conv2d(0, (3, 3), Activation::Relu)).err().unwrap();
    assert!(err.to_string().contains("filters must be at least 1"), "{err}");
    let err = build(Layer::conv2d(2, (3, 3), Activation::Softmax)).err().unwrap();
    assert!(err.to_string().contains("softmax"), "{err}");
    // A convolution on rows without image axes, and a dense layer on images.
    let err = Sequential::new(25, 0).conv2d(2, (3, 3), Activation::Relu).build(&backend).err().unwrap();
    assert!(
        matches!(err, WgnnError::Shape { .. }) && err.to_string().contains("takes images [H, W, C], got a [25] input"),
        "{err}"
    );
    let err = Sequential::new([5, 5, 1], 0)
        .conv2d(2, (3, 3), Activation::Relu)
        .dense(2, Activation::Identity)
        .build(&backend);
    let msg = err.err().unwrap().to_string();
    assert!(
        msg.contains("layer 1 (dense(2, identity))") && msg.contains("[3, 3, 2]") && msg.contains("Flatten"),
        "{msg}"
    );
}

#[test]
fn a_cnn_batch_past_the_binding_limit_names_the_batch_size_that_fits() {
    // 1 MiB bindings: a 32×32×32 activation is 128 KiB a row, so 8 rows fit and 16 do not.
    gpu();
    let limits = |l| wgpu::Limits { max_storage_buffer_binding_size: 1 << 20, ..l };
    let device = Gpu::with_options(&GpuOptions { limits, ..Default::default() }).unwrap();
    let mut model = Sequential::new([32, 32, 1], 0)
        .add(Layer::Conv2D(Conv2D { padding: Padding::Same, ..Conv2D::new(32, (3, 3), Activation::Relu) }))
        .add(Layer::global_average_pooling2d())
        .dense(2, Activation::Identity)
        .build(&Backend::Gpu(device))
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let data = images(40, [32, 32, 1], 2, 1);
    let err = model.fit(&data, &FitOptions { epochs: 1, batch_size: 16, ..Default::default() }).expect_err("too large");
    let msg = err.to_string();
    assert!(
        matches!(err, WgnnError::DeviceLimit { .. })
            && msg.contains("batch size 16")
            && msg.contains("largest that fits is 8"),
        "{msg}"
    );
    model.fit(&data, &FitOptions { epochs: 1, batch_size: 8, ..Default::default() }).unwrap();
}

#[test]
fn every_layer_applies_the_gradient_of_the_activation_below_it() {
    // Conv → relu → max pooling; Conv → BatchNorm → relu → average pooling; Conv → relu → Conv:
    // fused, the pooling's backward or the convolution's col2im multiplies by relu's derivative
    // itself, so no dispatch of its own applies it (before, one did: the relu gradient below a
    // pooling or a convolution). The fusion checks above compare the results with the CPU
    // reference. And batch norm applies the relu after it in its normalising pass.
    let data = images(16, [6, 6, 1], 2, 9);
    let max = Layer::Pool(Pooling::Max(Pool2dConfig::new((2, 2))));
    let avg = Layer::Pool(Pooling::Average(Pool2dConfig::new((2, 2))));
    let conv = Layer::Conv2D(Conv2D::new(3, (2, 2), Activation::Tanh));
    for (above, norm) in [(max, false), (avg, true), (conv, false)] {
        let kernels = |fused: bool| {
            let mut builder = Sequential::new([6, 6, 1], 1);
            builder = match norm {
                false => builder.conv2d(4, (3, 3), Activation::Relu),
                true => builder
                    .add(Layer::Conv2D(Conv2D { use_bias: false, ..Conv2D::new(4, (3, 3), Activation::Identity) }))
                    .add(Layer::BatchNorm(BatchNormConfig::default()))
                    .activation(Activation::Relu),
            };
            let builder = builder.add(above.clone()).flatten().dense(2, Activation::Softmax);
            let mut model = builder.fused(fused).build(&Backend::Gpu(gpu())).unwrap();
            model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
            model.step_kernels(&data, 8).unwrap()
        };
        let act_backward =
            |labels: &[String]| labels.iter().filter(|l| l.as_str() == "bias_act::bias_act_backward").count();
        let fused = kernels(true);
        assert_eq!(act_backward(&fused), 0, "{above:?}: {fused:?}");
        // Forward, every activation runs in the pass before it: the convolution's matmul
        // epilogue, or batch norm's normalising pass.
        assert!(!fused.iter().any(|l| l == "bias_act::bias_act_forward"), "{above:?}: {fused:?}");
    }
}

#[test]
fn a_training_step_builds_each_convolutions_patch_matrix_once() {
    // The forward keeps each convolution's patch matrix for its kernel gradient: one im2col per
    // convolution a step (the batch's patch matrix fits one binding here), by im2col or by the
    // direct forward kernel, which writes it as it goes; or, where the engine reads the patches
    // in place (implicit GEMM: the second convolution's 4 channels may), none, and both its
    // products read x (whichever the engine picks).
    let data = images(16, [8, 8, 2], 2, 10);
    let mut model = Sequential::new([8, 8, 2], 2)
        .conv2d(4, (3, 3), Activation::Relu)
        .conv2d(4, (3, 3), Activation::Relu)
        .flatten()
        .dense(2, Activation::Softmax)
        .build(&Backend::Gpu(gpu()))
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let kernels = model.step_kernels(&data, 8).unwrap();
    let builds = |l: &&String| l.starts_with("conv2d::im2col") || l.as_str() == "conv2d_direct::conv2d_direct";
    let in_place = kernels.iter().filter(|l| l.starts_with("matmul_conv::")).count();
    assert_eq!(in_place % 2, 0, "forward and kernel gradient both read in place: {kernels:?}");
    assert_eq!(kernels.iter().filter(builds).count() + in_place / 2, 2, "{kernels:?}");
}

#[test]
fn a_training_step_timed_whole_gives_a_device_time_a_repetition() {
    let data = images(16, [8, 8, 2], 2, 11);
    let mut model = Sequential::new([8, 8, 2], 3)
        .conv2d(4, (3, 3), Activation::Relu)
        .flatten()
        .dense(2, Activation::Softmax)
        .build(&Backend::Gpu(gpu()))
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    match model.time_step(&data, 8, 4) {
        Ok((device, wall)) => {
            assert_eq!(device.len(), 4, "{device:?}");
            assert!(device.iter().all(|t| t.is_finite() && *t >= 0.0), "{device:?}");
            assert!(wall.is_finite() && wall > 0.0, "{wall}");
        }
        // A device without timestamp queries says so.
        Err(e) => {
            assert!(!gpu().profile().timestamps, "{e}");
            assert!(e.to_string().contains("TIMESTAMP_QUERY"), "{e}");
        }
    }
}
