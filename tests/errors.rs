//! Shape errors carry the op and each operand's shape as fields: a caller reads them by matching,
//! without parsing the message.

mod common;
use common::{gpu, synthetic};
use wgnn::internals::cpu::conv2d::Conv2dConfig;
use wgnn::internals::kernels::bias_act::bias_act_forward;
use wgnn::internals::kernels::conv2d::conv2d_forward;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Tensor, WgnnError};

/// The op and the named shapes of a shape error; any other error fails the test.
fn op_and_shapes(err: WgnnError) -> (String, Vec<(String, Vec<usize>)>) {
    match err {
        WgnnError::Shape { op, shapes, .. } => (op, shapes),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

fn named(shapes: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    shapes.iter().map(|(name, shape)| (name.to_string(), shape.to_vec())).collect()
}

#[test]
fn kernel_shape_errors_carry_the_operands_shapes() {
    let gpu = gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();

    let (x, y) = (t(&[4, 3]), t(&[3, 4]));
    let err = bias_act_forward(&gpu, &x, None, &y, Activation::Relu).err().expect("y of another shape");
    assert_eq!(op_and_shapes(err), ("bias_act_forward".into(), named(&[("x", &[4, 3]), ("y", &[3, 4])])));

    let bias = t(&[4]);
    let err = bias_act_forward(&gpu, &x, Some(&bias), &t(&[4, 3]), Activation::Relu).err().expect("bias of 4");
    assert_eq!(err.operand_shape("bias"), Some(&[4][..]), "{err:?}");
    assert_eq!(err.operand_shape("x"), Some(&[4, 3][..]), "{err:?}");

    // y of the wrong size: y first, then the operands its shape follows from.
    let (x, k) = (t(&[2, 5, 5, 3]), t(&[3, 3, 3, 4]));
    let valid = Conv2dConfig::default();
    let err = conv2d_forward(&gpu, &x, &k, None, &t(&[2, 5, 5, 4]), Activation::Relu, &valid).err().expect("y");
    let want = named(&[("y", &[2, 5, 5, 4]), ("x", &[2, 5, 5, 3]), ("kernel", &[3, 3, 3, 4])]);
    assert_eq!(op_and_shapes(err), ("conv2d_forward".into(), want));

    // Channels that differ are found by the shared dims check, which names both operands.
    let err =
        conv2d_forward(&gpu, &x, &t(&[3, 3, 2, 4]), None, &t(&[2, 3, 3, 4]), Activation::Relu, &valid).err().unwrap();
    let want = named(&[("x", &[2, 5, 5, 3]), ("kernel", &[3, 3, 2, 4])]);
    assert_eq!(op_and_shapes(err), ("conv2d_forward".into(), want));

    // A window past the image: the window's geometry, then the operands.
    let err =
        conv2d_forward(&gpu, &t(&[1, 2, 2, 3]), &k, None, &t(&[1, 1, 1, 4]), Activation::Relu, &valid).err().unwrap();
    let want = named(&[("image", &[2, 2]), ("window", &[3, 3]), ("x", &[1, 2, 2, 3]), ("kernel", &[3, 3, 3, 4])]);
    assert_eq!(op_and_shapes(err), ("conv2d_forward".into(), want));
}

#[test]
fn layer_shape_errors_carry_the_sample_shape() {
    let err = Sequential::new([28, 28, 1], 0).dense(10, Activation::Identity).build(&Backend::Cpu).err().unwrap();
    assert_eq!(op_and_shapes(err), ("layer 0 (dense(10, identity))".into(), named(&[("input", &[28, 28, 1])])));

    let err = Sequential::new(25, 0).conv2d(4, (3, 3), Activation::Relu).build(&Backend::Cpu).err().unwrap();
    let (op, shapes) = op_and_shapes(err);
    assert!(op.starts_with("layer 0 (conv2d("), "{op}");
    assert_eq!(shapes, named(&[("input", &[25])]));

    // A conv layer whose window passes the image: the sample's shape leads, then the batch's.
    let err = Sequential::new([2, 2, 1], 0)
        .conv2d(4, (3, 3), Activation::Relu)
        .flatten()
        .dense(2, Activation::Identity)
        .build(&Backend::Cpu)
        .err()
        .unwrap();
    let (_, shapes) = op_and_shapes(err);
    assert_eq!(shapes.first(), Some(&("input".to_string(), vec![2, 2, 1])), "{shapes:?}");
    assert!(shapes.contains(&("window".to_string(), vec![3, 3])), "{shapes:?}");

    let err = Sequential::new([4, 5], 0).reshape(&[3, 7]).build(&Backend::Cpu).err().unwrap();
    assert_eq!(op_and_shapes(err).1, named(&[("input", &[4, 5]), ("target", &[3, 7])]));
}

#[test]
fn data_of_the_wrong_width_names_both_shapes() {
    let mut model = Sequential::new(6, 0).dense(3, Activation::Identity).build(&Backend::Cpu).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let err = model.fit(&synthetic(20, 5, 3, 4), &FitOptions::default()).expect_err("5 features for 6");
    assert_eq!(op_and_shapes(err), ("fit".into(), named(&[("data", &[20, 5]), ("input", &[6])])));

    let err = model.evaluate(&synthetic(10, 7, 3, 4)).expect_err("7 features for 6");
    let (_, shapes) = op_and_shapes(err);
    assert_eq!(shapes, named(&[("data", &[10, 7]), ("input", &[6])]));

    // A count, not a tensor: no shapes, and the detail says what was counted.
    let err = model.set_weights(&[]).expect_err("no layers of weights");
    assert!(
        matches!(&err, WgnnError::Shape { shapes, detail, .. } if shapes.is_empty() && detail.contains("0 layers"))
    );
}

#[test]
fn a_grid_past_the_device_limit_counts_workgroups() {
    // On a device whose grid dimensions hold 16 workgroups, a one-output-per-invocation matmul of
    // 512 rows needs 32: a DeviceLimit error whose amount and limit are workgroups.
    use wgnn::internals::kernels::matmul::{matmul, MatmulOptions, MatmulVariant};
    let options = wgnn::GpuOptions {
        limits: |l| wgpu::Limits { max_compute_workgroups_per_dimension: 16, ..l },
        ..Default::default()
    };
    gpu();
    let small = wgnn::Gpu::with_options(&options).unwrap();
    let [a, b, c] = [[512, 8], [8, 8], [512, 8]].map(|s| Tensor::zeros(&small, &s).unwrap());
    let opts = MatmulOptions { variant: Some(MatmulVariant::Naive), ..Default::default() };
    match matmul(&small, &a, &b, &c, &opts).err().expect("a grid of 32 rows of workgroups") {
        WgnnError::DeviceLimit { amount, unit, limit, limit_name, .. } => {
            assert_eq!(
                (amount, unit, limit, limit_name),
                (32, "workgroups", 16, "max_compute_workgroups_per_dimension")
            )
        }
        other => panic!("expected a DeviceLimit error, got {other:?}"),
    }
}
