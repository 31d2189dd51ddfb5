//! A device lost mid-run: every later call is `DeviceLost` (no panic, no hang), and `fit` names the
//! last checkpoint to resume from. Each test loses a device of its own, never the shared one.

mod common;

use common::*;
use wgnn::internals::kernels::matmul::{matmul, MatmulOptions};
use wgnn::model::{Backend, Checkpointing, FitOptions, Loss, Observer, Optimizer, Sequential};
use wgnn::{Activation, EpochRecord, Gpu, Tensor, WgnnError};

/// A device of this test's own, to lose.
fn own_gpu() -> Gpu {
    Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

fn assert_lost<T>(what: &str, result: wgnn::Result<T>) {
    match result {
        Err(WgnnError::DeviceLost { .. }) => {}
        Err(e) => panic!("{what}: expected DeviceLost, got {e:?}"),
        Ok(_) => panic!("{what}: expected DeviceLost, got Ok"),
    }
}

fn model(backend: &Backend) -> Sequential {
    let mut m =
        Sequential::new(6, 7).dense(16, Activation::Relu).dense(3, Activation::Identity).build(backend).unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    m
}

#[test]
fn every_call_after_a_device_loss_is_device_lost() {
    let gpu = own_gpu();
    let a = Tensor::from_slice(&gpu, &[2, 3], &[1.0; 6]).unwrap();
    let b = Tensor::from_slice(&gpu, &[3, 2], &[2.0; 6]).unwrap();
    let c = Tensor::zeros(&gpu, &[2, 2]).unwrap();
    let plan = matmul(&gpu, &a, &b, &c, &MatmulOptions::default()).unwrap();
    gpu.run(&[&plan]).unwrap();
    assert_eq!(c.to_vec().unwrap(), vec![6.0; 4]);

    gpu.simulate_device_loss();
    let err = gpu.check_health().expect_err("the device is gone");
    assert!(err.to_string().contains("device was lost"), "{err}");
    assert_lost("check_health", gpu.check_health());
    assert_lost("wait", gpu.wait());
    assert_lost("download", c.to_vec());
    assert_lost("download_u32", Tensor::zeros_u32(&gpu, &[1]).and_then(|t| t.to_vec_u32()));
    assert_lost("write", c.write(&[0.0; 4]));
    assert_lost("zeros", Tensor::zeros(&gpu, &[4]));
    assert_lost("upload", Tensor::from_slice(&gpu, &[1], &[1.0]));
    assert_lost("copy", c.copy_from(&c.clone()));
    assert_lost("run an existing plan", gpu.run(&[&plan]));
    assert_lost("build a plan", matmul(&gpu, &a, &b, &c, &MatmulOptions::default()));
    // A clone shares the device, and so its fate.
    assert_lost("a clone", gpu.clone().wait());
    // Other devices carry on.
    let other = gpu_shared_roundtrip();
    assert_eq!(other, vec![1.0, 2.0]);
}

fn gpu_shared_roundtrip() -> Vec<f32> {
    Tensor::from_slice(&gpu(), &[2], &[1.0, 2.0]).unwrap().to_vec().unwrap()
}

/// Loses the device at the end of epoch `at`, as a driver reset would.
struct LoseDevice {
    gpu: Gpu,
    at: usize,
}

impl Observer for LoseDevice {
    fn on_epoch_end(&mut self, record: &EpochRecord) {
        if record.epoch == self.at {
            self.gpu.simulate_device_loss();
        }
    }
}

#[test]
fn fit_on_a_lost_device_names_the_last_checkpoint_to_resume_from() {
    let data = synthetic(96, 6, 3, 4);
    let dir = scratch("fit");
    let checkpoint = Checkpointing::every_epoch(&dir);
    let options = |epochs| FitOptions { epochs, batch_size: 16, ..Default::default() };

    let lost = own_gpu();
    let mut m = model(&Backend::Gpu(lost.clone()));
    // Lost after epoch 3's record, before its checkpoint is read back: epoch 2's is the last.
    let mut observer = LoseDevice { gpu: lost, at: 3 };
    let err = m
        .fit_with(&data, &FitOptions { checkpoint: Some(checkpoint), ..options(5) }, &mut observer)
        .expect_err("the device is lost in epoch 3");
    let message = err.to_string();
    println!("{message}");
    let last = checkpoint.last_path();
    match &err {
        WgnnError::DeviceLost { checkpoint: Some((path, 2)), .. } if *path == last => {}
        _ => panic!("expected DeviceLost naming {} (epoch 2): {err:?}", last.display()),
    }
    for part in ["device was lost", &last.display().to_string(), "(epoch 2)", "Sequential::resume", "--resume"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }

    // Resuming from the named file on a working device gives the run that was never interrupted.
    let backend = Backend::Gpu(gpu());
    let mut straight = model(&backend);
    let want = straight.fit(&data, &options(5)).unwrap();
    let mut resumed = Sequential::resume(&last, &backend).unwrap();
    let got = resumed.fit(&data, &options(5)).unwrap();
    let losses = |h: &wgnn::History| h.epochs.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    assert_close("resumed history", &losses(&got), &losses(&want), 1e-6, 1e-5);

    // Without checkpoints the error says only that the device was lost.
    let lost = own_gpu();
    let mut m = model(&Backend::Gpu(lost.clone()));
    let err = m.fit_with(&data, &options(3), &mut LoseDevice { gpu: lost, at: 1 }).expect_err("lost in epoch 1");
    assert!(matches!(err, WgnnError::DeviceLost { checkpoint: None, .. }), "{err:?}");
    // A model on a lost device fails the same way in every later call.
    assert_lost("fit again", m.fit(&data, &options(3)));
    assert_lost("evaluate", m.evaluate(&data));
    assert_lost("predict", m.predict(&data.to_f32(), data.rows));
    assert_lost("save", m.save(dir.join("after.safetensors")));
}
