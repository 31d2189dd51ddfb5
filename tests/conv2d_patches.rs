//! The convolution's patch matrix (src/kernels/conv2d_patches.rs) against the CPU reference:
//! kept from the forward for the kernel gradient (and only where it fits its shapes), a batch
//! past one grid dimension of rows, the matrix in chunks on a device with a small binding limit
//! or a grid dimension too short, and a matrix past the binding limit as a device-limit error.

mod common;
use std::sync::OnceLock;

use common::conv_cases::*;
use common::*;
use wgnn::device::GpuOptions;
use wgnn::internals::cpu;
use wgnn::internals::kernels::conv2d::{
    conv2d_backward_input, conv2d_backward_weights, conv2d_backward_weights_from_patches, conv2d_forward,
    conv2d_forward_keeping_patches, conv2d_forward_using, conv2d_implicit_applies, conv2d_step_patches, Conv2dConfig,
    ConvForwardKernel, ConvPatches, Padding,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Tensor, WgnnError};

#[test]
fn kept_patches_give_the_same_results_without_building_them_twice() {
    // The forward keeps its patch matrix, the kernel gradient reads it: the same y, dkernel and
    // dbias (bit for bit: the same products on the same matrix) and no im2col in the backward.
    // x as its own patch matrix (1×1, stride 1) keeps none.
    let gpu = gpu();
    let mut rng = Rng::new(7);
    for (i, c) in CASES.iter().enumerate() {
        let d = c.dims();
        let Some(patches) = ConvPatches::new(&gpu, &d).unwrap() else {
            assert!(c.kernel == (1, 1) && c.strides == (1, 1), "{c:?} keeps no patches");
            continue;
        };
        let act = ACTS[i % ACTS.len()];
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(c.c_out, -0.5, 0.5);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, kt, bt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &[c.c_out], &b));
        let dzt = up(&gpu, &d.y_shape(), &dz);
        let outputs = || {
            let y = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
            let dk = up(&gpu, &c.kernel_shape(), &vec![7.0; k.len()]);
            (y, dk, up(&gpu, &[c.c_out], &vec![7.0; c.c_out]))
        };
        let (y, dk, db) = outputs();
        let forward = conv2d_forward(&gpu, &xt, &kt, Some(&bt), &y, act, &c.cfg()).unwrap();
        let weights = conv2d_backward_weights(&gpu, &xt, &dzt, &dk, Some(&db), &c.cfg()).unwrap();
        gpu.run(&[&forward, &weights]).unwrap();
        let (kept_y, kept_dk, kept_db) = outputs();
        let forward =
            conv2d_forward_keeping_patches(&gpu, &xt, &kt, Some(&bt), &kept_y, act, &c.cfg(), &patches).unwrap();
        let weights =
            conv2d_backward_weights_from_patches(&gpu, &xt, &patches, &dzt, &kept_dk, Some(&kept_db), &c.cfg())
                .unwrap();
        let labels: Vec<&str> = weights.dispatches.iter().map(|d| d.label.as_str()).collect();
        assert!(!labels.iter().any(|l| l.contains("im2col")), "{c:?}: {labels:?}");
        gpu.run(&[&forward, &weights]).unwrap();
        let what = format!("{c:?} {act:?}");
        assert_eq!(kept_y.to_vec().unwrap(), y.to_vec().unwrap(), "{what} y");
        assert_eq!(kept_dk.to_vec().unwrap(), dk.to_vec().unwrap(), "{what} dkernel");
        assert_eq!(kept_db.to_vec().unwrap(), db.to_vec().unwrap(), "{what} dbias");
        let want = cpu::conv2d_forward(&x, &k, Some(&b), &d, act);
        assert_close(&format!("{what} y"), &kept_y.to_vec().unwrap(), &want, 1e-5, 1e-4);
        let (want_dk, want_db) = cpu::conv2d_backward_weights(&x, &dz, &d);
        assert_close(&format!("{what} dkernel"), &kept_dk.to_vec().unwrap(), &want_dk, 1e-4, 1e-4);
        assert_close(&format!("{what} dbias"), &kept_db.to_vec().unwrap(), &want_db, 1e-4, 1e-4);
    }
}

#[test]
fn a_batch_past_one_grid_dimension_of_rows_runs_in_one_piece() {
    // 128 images of 28×28: a patch matrix of 86,528 rows, more than one grid dimension's 65,535
    // workgroups, kept in one piece (or, where the engine reads the patches in place, none); the
    // products (whichever kernel the engine picks) match the CPU reference.
    let gpu = gpu();
    let c = case([128, 28, 28, 1], (3, 3), 8, (1, 1), Padding::Valid);
    let d = c.dims();
    let patches = conv2d_step_patches(&gpu, &d).unwrap();
    assert!(patches.is_some() || conv2d_implicit_applies(&gpu, &d), "kept in one piece");
    let mut rng = Rng::new(10);
    let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
    let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
    let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
    let (xt, kt, dzt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz));
    let yt = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
    let (dkt, dbt) = (Tensor::zeros(&gpu, &c.kernel_shape()).unwrap(), Tensor::zeros(&gpu, &[c.c_out]).unwrap());
    let (forward, weights) = match &patches {
        Some(kept) => (
            conv2d_forward_keeping_patches(&gpu, &xt, &kt, None, &yt, Activation::Relu, &c.cfg(), kept).unwrap(),
            conv2d_backward_weights_from_patches(&gpu, &xt, kept, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap(),
        ),
        None => (
            conv2d_forward(&gpu, &xt, &kt, None, &yt, Activation::Relu, &c.cfg()).unwrap(),
            conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap(),
        ),
    };
    gpu.run(&[&forward, &weights]).unwrap();
    let want = cpu::conv2d_forward(&x, &k, None, &d, Activation::Relu);
    assert_close("y", &yt.to_vec().unwrap(), &want, 1e-5, 1e-4);
    let (dk, db) = cpu::conv2d_backward_weights(&x, &dz, &d);
    assert_close("dkernel", &dkt.to_vec().unwrap(), &dk, 1e-3, 1e-4);
    assert_close("dbias", &dbt.to_vec().unwrap(), &db, 1e-3, 1e-4);
}

#[test]
fn patches_are_kept_only_in_one_piece_and_only_for_their_own_shapes() {
    let c = case([20, 8, 8, 3], (3, 3), 4, (1, 1), Padding::Same);
    assert!(ConvPatches::new(&small_gpu(), &c.dims()).unwrap().is_none(), "in chunks on the small device");
    let gpu = gpu();
    let patches = ConvPatches::new(&gpu, &c.dims()).unwrap().unwrap();
    assert_eq!(patches.tensor().shape(), [20 * 8 * 8, 28]);
    let other = case([20, 8, 8, 3], (3, 3), 4, (2, 2), Padding::Same);
    let (x, k) = (Tensor::zeros(&gpu, &c.x).unwrap(), Tensor::zeros(&gpu, &c.kernel_shape()).unwrap());
    let y = Tensor::zeros(&gpu, &other.dims().y_shape()).unwrap();
    let err = conv2d_forward_keeping_patches(&gpu, &x, &k, None, &y, Activation::Relu, &other.cfg(), &patches)
        .err()
        .expect("patches of another stride");
    assert!(matches!(err, WgnnError::Shape { .. }), "{err:?}");
    assert!(
        err.to_string().contains("conv2d_forward_keeping_patches") && err.to_string().contains("patches were made")
    );
    let dz = Tensor::zeros(&gpu, &other.dims().y_shape()).unwrap();
    let err = conv2d_backward_weights_from_patches(&gpu, &x, &patches, &dz, &k, None, &other.cfg()).err().unwrap();
    assert!(err.to_string().contains("conv2d_backward_weights_from_patches"), "{err}");
}

const SMALL_BINDING: u64 = 64 << 10;

/// A device whose storage bindings are at most 64 KiB.
fn small_gpu() -> Gpu {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let options = GpuOptions {
        limits: |l| wgpu::Limits { max_storage_buffer_binding_size: SMALL_BINDING, ..l },
        ..Default::default()
    };
    match GPU.get_or_init(|| Gpu::with_options(&options).map_err(|e| e.to_string())) {
        Ok(g) => g.clone(),
        Err(e) => panic!("GPU tests need an adapter: {e}"),
    }
}

#[test]
fn patch_matrix_in_chunks_matches_cpu() {
    // The whole batch's patch matrix passes 64 KiB: chunks of images, one scratch reused. 8×8×4
    // outputs are 1,024 bytes an image, so any chunk keeps y's views aligned (9 images of 6,912
    // bytes a chunk); 3×3×3 ones 108 bytes, so a chunk is a multiple of 8 images where views align
    // to 32 bytes (67 fit, 64 taken), of 64 where they align to 256.
    let gpu = small_gpu();
    let mut rng = Rng::new(6);
    for c in
        [case([20, 8, 8, 3], (3, 3), 4, (1, 1), Padding::Same), case([80, 3, 3, 3], (3, 3), 3, (1, 1), Padding::Same)]
    {
        let d = c.dims();
        let patch_bytes = (d.rows * d.window.ho * d.window.wo * d.patch_len() * 4) as u64;
        assert!(patch_bytes > SMALL_BINDING, "{c:?}: {patch_bytes} bytes would fit");
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let b = rng.vec_uniform(c.c_out, -0.5, 0.5);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, kt, bt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &[c.c_out], &b));
        let dzt = up(&gpu, &d.y_shape(), &dz);
        let yt = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
        let dxt = Tensor::zeros(&gpu, &c.x).unwrap();
        let (dkt, dbt) = (Tensor::zeros(&gpu, &c.kernel_shape()).unwrap(), Tensor::zeros(&gpu, &[c.c_out]).unwrap());
        // The patch matrix's chunks (the engine may pick the direct kernel, which needs none).
        let im2col = ConvForwardKernel::Im2colMatmul;
        let forward =
            conv2d_forward_using(&gpu, &xt, &kt, Some(&bt), &yt, Activation::Relu, &c.cfg(), None, im2col).unwrap();
        let input = conv2d_backward_input(&gpu, &dzt, &kt, &dxt, &c.cfg(), None).unwrap();
        let weights = conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap();
        assert!(forward.len() > 2, "{c:?}: one chunk ({} dispatches)", forward.len());
        gpu.run(&[&forward, &input, &weights]).unwrap();
        let want = cpu::conv2d_forward(&x, &k, Some(&b), &d, Activation::Relu);
        assert_close(&format!("{c:?} y"), &yt.to_vec().unwrap(), &want, 1e-5, 1e-4);
        assert_close(
            &format!("{c:?} dx"),
            &dxt.to_vec().unwrap(),
            &cpu::conv2d_backward_input(&dz, &k, &d, None),
            1e-5,
            1e-4,
        );
        let (dk, db) = cpu::conv2d_backward_weights(&x, &dz, &d);
        assert_close(&format!("{c:?} dkernel"), &dkt.to_vec().unwrap(), &dk, 1e-4, 1e-4);
        assert_close(&format!("{c:?} dbias"), &dbt.to_vec().unwrap(), &db, 1e-4, 1e-4);
    }
}

#[test]
fn patch_matrices_taller_than_a_grid_dimension_are_cut_into_chunks() {
    // A matmul's workgroup covers 4 to 16 rows of the patch matrix (by the device profile's
    // workgroup shapes): on a device whose grid dimensions hold 32 workgroups (128 to 512 rows),
    // 12 images of 7×7 outputs (588 rows) are cut into chunks, and so is a 1×1 convolution over 9
    // images of 8×8 (576 rows), which otherwise reads x as the matrix.
    let options =
        GpuOptions { limits: |l| wgpu::Limits { max_compute_workgroups_per_dimension: 32, ..l }, ..Default::default() };
    common::gpu();
    let gpu = Gpu::with_options(&options).unwrap();
    let mut rng = Rng::new(9);
    for c in
        [case([12, 9, 9, 2], (3, 3), 4, (1, 1), Padding::Valid), case([9, 8, 8, 3], (1, 1), 5, (1, 1), Padding::Valid)]
    {
        let d = c.dims();
        assert!(d.rows * d.window.ho * d.window.wo > 32 * 16, "{c:?}");
        let x = rng.vec_uniform(c.x.iter().product(), -1.0, 1.0);
        let k = rng.vec_uniform(c.kernel_shape().iter().product(), -1.0, 1.0);
        let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
        let (xt, kt, dzt) = (up(&gpu, &c.x, &x), up(&gpu, &c.kernel_shape(), &k), up(&gpu, &d.y_shape(), &dz));
        let yt = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
        let dxt = Tensor::zeros(&gpu, &c.x).unwrap();
        let (dkt, dbt) = (Tensor::zeros(&gpu, &c.kernel_shape()).unwrap(), Tensor::zeros(&gpu, &[c.c_out]).unwrap());
        let im2col = ConvForwardKernel::Im2colMatmul;
        let forward =
            conv2d_forward_using(&gpu, &xt, &kt, None, &yt, Activation::Tanh, &c.cfg(), None, im2col).unwrap();
        let products = forward.dispatches.iter().filter(|d| d.label.contains("matmul")).count();
        assert!(products > 1, "{c:?}: one product, not cut into chunks");
        let input = conv2d_backward_input(&gpu, &dzt, &kt, &dxt, &c.cfg(), None).unwrap();
        let weights = conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &c.cfg()).unwrap();
        gpu.run(&[&forward, &input, &weights]).unwrap();
        let want = cpu::conv2d_forward(&x, &k, None, &d, Activation::Tanh);
        assert_close(&format!("{c:?} y"), &yt.to_vec().unwrap(), &want, 1e-5, 1e-4);
        assert_close(
            &format!("{c:?} dx"),
            &dxt.to_vec().unwrap(),
            &cpu::conv2d_backward_input(&dz, &k, &d, None),
            1e-5,
            1e-4,
        );
        let (dk, db) = cpu::conv2d_backward_weights(&x, &dz, &d);
        assert_close(&format!("{c:?} dkernel"), &dkt.to_vec().unwrap(), &dk, 1e-4, 1e-4);
        assert_close(&format!("{c:?} dbias"), &dbt.to_vec().unwrap(), &db, 1e-4, 1e-4);
    }
}
#[test]
fn a_patch_matrix_past_the_binding_limit_is_a_device_limit_error() {
    // One image's patch matrix, 40·40 positions × 76 (5·5·3 padded to a multiple of 4), is
    // 486,400 bytes: past 64 KiB.
    let gpu = small_gpu();
    let t = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let same = Conv2dConfig { strides: (1, 1), padding: Padding::Same };
    let (x, k, y) = (t(&[2, 40, 40, 3]), t(&[5, 5, 3, 2]), t(&[2, 40, 40, 2]));
    for (op, result) in [
        ("conv2d_forward", conv2d_forward(&gpu, &x, &k, None, &y, Activation::Relu, &same)),
        ("conv2d_backward_input", conv2d_backward_input(&gpu, &y, &k, &x, &same, None)),
        ("conv2d_backward_weights", conv2d_backward_weights(&gpu, &x, &y, &k, None, &same)),
    ] {
        let err = expect_err(result, op);
        assert!(matches!(err, WgnnError::DeviceLimit { .. }), "{err:?}");
        assert_mentions(
            &err,
            &[op, "patch matrix", "[2, 40, 40, 3]", "[1600, 76]", "486400", &SMALL_BINDING.to_string()],
        );
    }
}
