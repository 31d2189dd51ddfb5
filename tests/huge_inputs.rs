//! No size aborts the process: a huge layer from the API, a flag or a model file, and counts
//! whose products overflow, are clear errors naming the layer, its shape and the bytes, raised
//! before anything of that size is allocated (issue 21, item 1).

mod common;
use std::path::PathBuf;

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

/// A layer of 10^11 weights (400 GB) is refused on either backend, naming it and its shape: by the
/// device's binding limit on the GPU, by the host's memory on the CPU. Before the fix the weights
/// were drawn on the host first, and the allocation aborted the process.
#[test]
fn a_layer_larger_than_memory_is_an_error_naming_it() {
    for backend in backends() {
        let built = Sequential::new([100_000], 1).dense(1_000_000, Activation::Relu).build(&backend);
        let e = built.err().expect("a 400 GB layer was built");
        let message = e.to_string();
        assert!(message.contains("layer 0 (dense(1000000, relu))"), "{message}");
        assert!(message.contains("[100000, 1000000]") && message.contains("bytes"), "{message}");
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
/// `load`, `load_weights` and `resume` return an error naming the file and the layer.
#[test]
fn a_model_file_declaring_a_huge_layer_is_refused_before_allocation() {
    let dir = scratch("huge-file");
    let path = dir.join("checkpoint.safetensors");
    let mut m =
        Sequential::new(12, 1).dense(8, Activation::Relu).dense(3, Activation::Identity).build(&Backend::Cpu).unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    m.fit(&synthetic(40, 12, 3, 1), &Default::default()).unwrap();
    m.save_checkpoint(&path, 1, &Default::default()).unwrap();
    for (input, units) in [("12", "10000000000"), ("100000", "100000")] {
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
