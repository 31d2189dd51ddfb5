//! Messages that name the real cause, the flag given and the number asked for (issue 21, item 7
//! of the issue): pooling and convolution settings, a batch larger than the data, the boolean
//! environment variables read one way, a negative `--validation-split` read as a value.

mod common;
use std::process::Command;

use common::*;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Gpu, GpuOptions, Layer, WgnnError};

#[test]
fn a_zero_pool_window_is_named_as_the_window() {
    let e =
        Sequential::new([8, 8, 1], 1).max_pool2d((0, 0)).flatten().dense(2, Activation::Identity).build(&Backend::Cpu);
    let message = e.err().unwrap().to_string();
    assert!(message.contains("max_pool2d(0×0)") && message.contains("window must be at least 1×1"), "{message}");
    assert!(!message.contains("strides"), "{message}");
}

#[test]
fn a_softmax_convolution_names_the_layer_not_the_kernels() {
    let layer = Layer::conv2d(4, (3, 3), Activation::Softmax);
    let e = Sequential::new([8, 8, 1], 1).add(layer).flatten().dense(2, Activation::Identity).build(&Backend::Cpu);
    let message = e.err().unwrap().to_string();
    assert!(message.contains("layer 0 (conv2d(4, 3×3, softmax))") && message.contains("Flatten"), "{message}");
    assert!(!message.contains("kernels::"), "{message}");
}

/// A batch of 4096 asked on 3,000 rows was reported as "batch size 3000".
#[test]
fn a_batch_larger_than_the_data_is_named_as_asked() {
    gpu(); // fails with the install hint where there is no adapter at all
    let limits = |l| wgpu::Limits { max_storage_buffer_binding_size: 1 << 20, ..l };
    let device = Gpu::with_options(&GpuOptions { limits, ..Default::default() }).unwrap();
    let data = synthetic(3000, 784, 10, 1);
    let mut m = Sequential::new(784, 1).dense(10, Activation::Identity).build(&Backend::Gpu(device)).unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let e = m.fit(&data, &FitOptions { batch_size: 4096, ..Default::default() }).err().unwrap();
    let message = e.to_string();
    assert!(matches!(e, WgnnError::DeviceLimit { .. }), "{e:?}");
    assert!(message.contains("batch size 4096, one batch of all 3000 training rows"), "{message}");
}

/// Runs `mnist_gpu` with `env` set; it stops at `--resume` of a missing file, after the device
/// is made. Its exit code, stdout and stderr.
fn mnist_gpu_with(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let out_dir = std::env::temp_dir().join(format!("wgnn-clear-messages-{}", std::process::id()));
    let mut cmd = Command::new(example("mnist_gpu"));
    // The small archive (1,000 + 200 rows, tests/fixtures/make_mnist_small.py): the run stops
    // before training, and reading all of MNIST would be most of its time.
    cmd.args(["--data", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mnist_small.npz"), "--out"]).arg(&out_dir);
    cmd.args(args).env_remove("WGNN_REQUIRE_GPU").env_remove("WGNN_AUTOTUNE");
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `WGNN_REQUIRE_GPU=false` (or no, off) turned the requirement on, while `WGNN_AUTOTUNE=false`
/// meant off; now both read the same words, and anything else is an error naming the variable.
#[test]
fn boolean_environment_variables_read_one_way() {
    let missing = ["--resume", "/nonexistent/wgnn-checkpoint.safetensors"];
    for off in ["false", "no", "off", "0", "FALSE"] {
        let (code, stdout, stderr) = mnist_gpu_with(&[("WGNN_REQUIRE_GPU", off), ("WGNN_AUTOTUNE", off)], &missing);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stdout.contains("adapter: "), "WGNN_REQUIRE_GPU={off}: {stdout}\n{stderr}");
        assert!(stderr.contains("wgnn-checkpoint.safetensors") && !stderr.contains("was required"), "{stderr}");
    }
    for (name, bad) in [("WGNN_REQUIRE_GPU", "maybe"), ("WGNN_AUTOTUNE", "2")] {
        let (code, _, stderr) = mnist_gpu_with(&[(name, bad)], &missing);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains(&format!("{name}=\"{bad}\"")) && stderr.contains("yes or on"), "{stderr}");
    }
    // On a software adapter a true value refuses it, as --require-gpu does.
    if gpu().is_cpu_adapter() {
        for on in ["1", "true", "yes", "on"] {
            let (code, _, stderr) = mnist_gpu_with(&[("WGNN_REQUIRE_GPU", on)], &missing);
            assert_eq!(code, Some(1), "{stderr}");
            assert!(stderr.contains("a GPU was required"), "WGNN_REQUIRE_GPU={on}: {stderr}");
        }
    }
}

/// `--validation-split -0.5` gave "unexpected argument '-0'": now the value is read and refused.
#[test]
fn a_negative_validation_split_is_read_as_its_value() {
    let (code, _, stderr) = mnist_gpu_with(&[], &["--validation-split", "-0.5"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--validation-split") && stderr.contains("\"-0.5\""), "{stderr}");
    assert!(stderr.contains("[0, 1)") && !stderr.contains("unexpected argument"), "{stderr}");
}
