//! No size aborts the process: a huge layer from the API, a flag or a model file, and counts
//! whose products overflow, are clear errors naming the layer, its shape and the bytes, raised
//! before anything of that size is allocated (issue 21, item 1).

mod common;
use std::path::PathBuf;
use std::process::Command;

use common::safetensors_file::SafetensorsFile;
use common::*;
use wgnn::model::{Backend, Loss, Optimizer, Sequential};
use wgnn::{Activation, Dataset, WgnnError};

fn backends() -> [Backend; 2] {
    [Backend::Gpu(gpu()), Backend::Cpu]
}

/// A fresh, empty folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgnn-huge-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A layer of 10^13 weights (40 TB, more than any host has) is refused on either backend, naming it and its shape: by the
/// device's binding limit on the GPU, by the host's memory on the CPU. Before the fix the weights
/// were drawn on the host first, and the allocation aborted the process.
#[test]
fn a_layer_larger_than_memory_is_an_error_naming_it() {
    for backend in backends() {
        let built = Sequential::new([100_000], 1).dense(100_000_000, Activation::Relu).build(&backend);
        let e = built.err().expect("a 40 TB layer was built");
        let message = e.to_string();
        assert!(message.contains("layer 0 (dense(100000000, relu))"), "{message}");
        assert!(message.contains("[100000, 100000000]") && message.contains("bytes"), "{message}");
        assert!(matches!(e, WgnnError::DeviceLimit { .. } | WgnnError::HostMemory { .. }), "{e:?}");
    }
}

/// Shapes whose products do not fit a usize are errors saying so, not the number they wrap to.
#[test]
fn overflowing_shapes_are_errors_not_wrapped_numbers() {
    let backend = Backend::Cpu;
    // 2^32 inputs × 2^32 units wraps to 0 weights.
    let e = Sequential::new([1usize << 32], 1).dense(1 << 32, Activation::Relu).build(&backend).err().unwrap();
    let message = e.to_string();
    assert!(message.contains("layer 0 (dense(4294967296, relu))") && message.contains("weight"), "{message}");
    assert!(message.contains("[4294967296, 4294967296]") && !message.contains("no features"), "{message}");
    // An input whose product wraps to 0 is not "no features".
    let e = Sequential::new([1usize << 32, 1 << 32, 1], 1).flatten().dense(4, Activation::Relu).build(&backend);
    let message = e.err().unwrap().to_string();
    assert!(message.contains("more values") && !message.contains("no features"), "{message}");
    // A reshape target whose product wraps: not "needs 0".
    let e = Sequential::new(16, 1).reshape(&[1 << 32, 1 << 32, 1]).flatten().dense(2, Activation::Relu).build(&backend);
    let message = e.err().unwrap().to_string();
    assert!(message.contains("more than a usize counts") && !message.contains("needs 0"), "{message}");
    // A convolution's output of 2^20 × 2^20 × 2^30 values per sample.
    let e = Sequential::new([1usize << 20, 1 << 20, 1], 1).conv2d(1 << 30, (1, 1), Activation::Relu).build(&backend);
    let message = e.err().unwrap().to_string();
    assert!(message.contains("layer 0 (conv2d(1073741824") && message.contains("more values"), "{message}");
}

/// A small saved model whose metadata declares a huge layer (a 52 KB file, as in the issue):
/// `load`, `load_weights` and `resume` return an error naming the file and the layer. Both layers
/// are of 10^13 weights or more (40 TB), which no host holds: a smaller one could be built on a
/// large enough machine.
#[test]
fn a_model_file_declaring_a_huge_layer_is_refused_before_allocation() {
    let dir = scratch("huge-file");
    let path = dir.join("checkpoint.safetensors");
    let mut m =
        Sequential::new(12, 1).dense(8, Activation::Relu).dense(3, Activation::Identity).build(&Backend::Cpu).unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    m.fit(&synthetic(40, 12, 3, 1), &Default::default()).unwrap();
    m.save_checkpoint(&path, 1, &Default::default()).unwrap();
    for (input, units) in [("12", "10000000000000"), ("1000000", "10000000")] {
        let mut file = SafetensorsFile::read(&path);
        let model = file.metadata.get_mut("wgnn.model").unwrap();
        *model = model.replace("\"input_shape\":[12]", &format!("\"input_shape\":[{input}]"));
        *model = model.replacen("\"units\":8", &format!("\"units\":{units}"), 1);
        assert!(model.contains(units), "{model}");
        let huge = dir.join(format!("huge-{units}.safetensors"));
        file.write(&huge);
        for backend in backends() {
            let refused = |what: &str, e: WgnnError| {
                let message = e.to_string();
                assert!(message.contains(huge.to_str().unwrap()), "{what}: {message}");
                assert!(message.contains(&format!("dense({units}, relu)")), "{what}: {message}");
            };
            refused("load", Sequential::load(&huge, &backend).err().expect("load of a huge layer"));
            refused("resume", Sequential::resume(&huge, &backend).err().expect("resume of a huge layer"));
            let mut small = Sequential::new(12, 1)
                .dense(8, Activation::Relu)
                .dense(3, Activation::Identity)
                .build(&backend)
                .unwrap();
            refused("load_weights", small.load_weights(&huge).expect_err("load_weights of a huge layer"));
        }
    }
}

/// The public API's counts are checked, not multiplied blindly.
#[test]
fn api_counts_that_overflow_are_errors() {
    let m = Sequential::new(16, 1).dense(4, Activation::Identity).build(&Backend::Cpu).unwrap();
    let x = vec![0.5f32; 16];
    // (2^60 + 1) × 16 wraps to 16: x's length.
    let e = m.predict(&x, (1 << 60) + 1).expect_err("predict of 2^60 + 1 rows from 16 values");
    assert!(matches!(e, WgnnError::Shape { .. }), "{e}");
    let m = Sequential::new(16, 1).dense(4, Activation::Identity).build(&Backend::Gpu(gpu())).unwrap();
    assert!(m.predict(&x, (1 << 60) + 1).is_err());
    // 16 labels × 2^60 features wraps to 0 values.
    let e = Dataset::from_f32(vec![], vec![0; 16], 1 << 60, 2, "t").expect_err("from_f32 with 2^64 values");
    assert!(e.to_string().contains("more than a usize counts"), "{e}");
    let data = Dataset::from_f32(vec![0.0; 16], vec![0; 16], 1, 2, "t").unwrap();
    let e = data.with_targets(vec![], 1 << 60).expect_err("16 rows × 2^60 targets from no values");
    assert!(e.to_string().contains("more than a usize counts"), "{e}");
}

/// A label read as a class index does not size a table: a u64 label of 3·10^9 would have made
/// 3·10^9 classes, and one-hot targets of 16 rows × 3·10^9 (192 GB) were allocated unchecked.
/// Class counts past `MAX_CLASSES`, inferred or given, are errors naming the label and its row;
/// one-hot rows of any width are checked against the host's memory before they are allocated.
#[test]
fn absurd_class_counts_are_errors_not_tables() {
    let labels: Vec<u64> = (0..16).map(|r| if r == 5 { 3_000_000_000 } else { r % 3 }).collect();
    let e = Dataset::new(vec![0.5f32; 16], 1, &labels).expect_err("a label of 3e9 made a data set");
    let message = e.to_string();
    assert!(message.contains("label 3000000000 at row 5") && message.contains("3000000001 classes"), "{message}");
    let rows: Vec<[f32; 1]> = vec![[0.5]; 16];
    let e = Dataset::from_rows(&rows, &labels).expect_err("from_rows with a label of 3e9");
    assert!(e.to_string().contains("label 3000000000 at row 5"), "{e}");
    // Just inside the limit is a data set.
    let edge = Dataset::new(vec![0.5f32; 2], 1, [0u32, wgnn::data::MAX_CLASSES as u32 - 1]).unwrap();
    assert_eq!(edge.classes, wgnn::data::MAX_CLASSES);

    let data = Dataset::new(vec![0.5f32; 16], 1, [0u8; 16]).unwrap();
    let e = data.clone().with_classes(1 << 40).expect_err("with_classes(2^40)");
    assert!(e.to_string().contains("1099511627776 classes"), "{e}");
    let e = Dataset::from_f32(vec![0.5; 16], vec![0; 16], 1, 1 << 40, "t").expect_err("from_f32 of 2^40 classes");
    assert!(e.to_string().contains("1099511627776 classes"), "{e}");
    // 16 rows × 2^40 columns of f32: 7·10^13 bytes.
    let e = data.one_hot(1 << 40).expect_err("one-hot rows of 2^40 columns");
    assert!(matches!(e, WgnnError::HostMemory { .. }), "{e:?}");
    assert!(e.to_string().contains("one-hot targets [16, 1099511627776]"), "{e}");
    let e = data.one_hot(usize::MAX).expect_err("one-hot rows of usize::MAX columns");
    assert!(e.to_string().contains("more than a usize counts"), "{e}");
    assert_eq!(data.clone().with_one_hot_targets().unwrap().targets.unwrap().values, vec![1.0; 16]);
    // `classes` is a public field: counting by it checks it first.
    let mut absurd = data.clone();
    absurd.classes = usize::MAX;
    let e = absurd.class_counts().expect_err("class_counts of usize::MAX classes");
    assert!(e.to_string().contains("class_counts"), "{e}");
    assert_eq!(data.class_counts().unwrap(), [16]);
}

/// The same from a NumPy file: labels are read as u64, so a label of 3·10^9 is a valid integer,
/// but not a class index.
#[test]
fn a_label_file_with_an_absurd_label_is_an_error_naming_it() {
    fn npy(path: &std::path::Path, descr: &str, shape: &str, data: &[u8]) {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        bytes.extend(data);
        std::fs::write(path, bytes).unwrap();
    }
    let dir = scratch("label-file");
    let (x, y) = (dir.join("x.npy"), dir.join("y.npy"));
    npy(&x, "|u1", "(3, 2)", &[0; 6]);
    let labels: Vec<u8> = [0u64, 3_000_000_000, 1].iter().flat_map(|l| l.to_le_bytes()).collect();
    npy(&y, "<u8", "(3,)", &labels);
    let e = Dataset::from_npy(&x, &y).expect_err("a label file with a label of 3e9");
    let message = e.to_string();
    assert!(message.contains(y.to_str().unwrap()) && message.contains("label 3000000000 at row 1"), "{message}");
}

/// `predict` checks the predictions it will hold against the host's memory before reserving
/// them: 10^7 rows into an output of 10^6 units are 4·10^13 bytes (twice, as they are made).
#[test]
fn predictions_larger_than_memory_are_refused_before_they_are_reserved() {
    let rows = 10_000_000;
    let x = vec![0.5f32; rows];
    for backend in backends() {
        let m = Sequential::new(1, 1).dense(1_000_000, Activation::Identity).build(&backend).unwrap();
        let e = m.predict(&x, rows).expect_err("predictions of 4e13 bytes");
        let message = e.to_string();
        assert!(matches!(e, WgnnError::HostMemory { .. }), "{e:?}");
        assert!(message.contains("predictions [10000000, 1000000] f32 of layer 0 (dense(1000000"), "{message}");
    }
}

/// A model of few parameters can still have huge activations: a 2000 × 2000 image through a
/// 1×1 convolution of 2^20 filters is 1.7·10^13 bytes per sample. `predict`, `evaluate` and `fit`
/// refuse it on either backend (the CPU against the host's memory, naming the layer and its
/// output's shape; the GPU against its buffer limits) instead of aborting on the allocation.
#[test]
fn huge_activations_are_refused_by_predict_evaluate_and_fit() {
    let image = [2000, 2000, 1];
    let values = 2 * 2000 * 2000;
    let data = Dataset::new(vec![0.25f32; values], 2000 * 2000, [0u8, 1]).unwrap().with_sample_shape(&image).unwrap();
    for backend in backends() {
        let mut m = Sequential::new(image, 1)
            .conv2d(1 << 20, (1, 1), Activation::Relu)
            .conv2d(1, (1, 1), Activation::Relu)
            .max_pool2d((100, 100))
            .flatten()
            .dense(2, Activation::Softmax)
            .build(&backend)
            .unwrap();
        m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
        let cpu = matches!(backend, Backend::Cpu);
        let check = |what: &str, e: WgnnError| {
            let message = e.to_string();
            match cpu {
                true => assert!(matches!(e, WgnnError::HostMemory { .. }), "{what}: {e:?}"),
                false => assert!(matches!(e, WgnnError::DeviceLimit { .. }), "{what}: {e:?}"),
            }
            // fit on the GPU names the batch size (its flag), the rest the layer.
            let named =
                message.contains("layer 0 (conv2d(1048576") || (what == "fit" && message.contains("batch size"));
            assert!(named && message.contains("bytes"), "{what}: {message}");
        };
        check("predict", m.predict(&data.to_f32()[..values / 2], 1).expect_err("predict"));
        let e = m.predict(&data.to_f32()[..values / 2], 1).unwrap_err().to_string();
        assert!(e.contains("[1, 2000, 2000, 1048576]"), "{e}");
        check("evaluate", m.evaluate(&data).expect_err("evaluate"));
        let opts = wgnn::model::FitOptions { epochs: 1, batch_size: 2, ..Default::default() };
        check("fit", m.fit(&data, &opts).expect_err("fit"));
    }
}

/// The examples' flags reach the same checks (issue 21 names these two command lines): exit 1
/// with a message naming the layer and the bytes, never an abort (exit 134, "memory allocation of
/// … bytes failed"). The error comes at build, before the data matters: 64 training rows.
#[test]
fn cnn_mnist_with_a_huge_layer_exits_1_naming_it() {
    let dir = scratch("cnn-flags");
    for (flag, value, layer) in
        [("--filters", "100000,100000", "conv2d(100000, 3×3"), ("--hidden", "100000000", "dense(100000000, relu)")]
    {
        let out = Command::new(example("cnn_mnist"))
            .args([flag, value, "--train-rows", "64", "--epochs", "1"])
            .arg("--out")
            .arg(dir.join("out"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {:?}\n{stderr}", out.status);
        assert!(stderr.contains(layer) && stderr.contains("bytes"), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("memory allocation") && !stderr.contains("panicked"), "{flag} {value}: {stderr}");
    }
}

/// A tensor's shape is multiplied with checked arithmetic: [2^33, 2^33] (2^66 elements) and
/// [2^62, 4] (wrapping to 0 elements) are errors, never a small buffer or a view past its end.
#[test]
fn tensor_shapes_that_overflow_are_errors() {
    let gpu = gpu();
    let wide = [1usize << 33, 1 << 33];
    let e = wgnn::tensor::Tensor::zeros(&gpu, &wide).expect_err("zeros of 2^66 elements");
    assert!(e.to_string().contains("more bytes than a u64 counts"), "{e}");
    let wraps = [1usize << 62, 4];
    let e = wgnn::tensor::Tensor::from_slice(&gpu, &wraps, &[]).expect_err("upload of 2^64 elements from none");
    assert!(e.to_string().contains("more than a usize counts"), "{e}");
    let t = wgnn::tensor::Tensor::zeros(&gpu, &[8]).unwrap();
    assert!(t.view(0, &wraps).is_err(), "a view whose element count wraps to 0");
    assert!(t.view(usize::MAX, &[1]).is_err(), "a view whose end wraps");
    assert!(t.reshape(&wraps).is_err(), "a reshape whose element count wraps to 0");
}
