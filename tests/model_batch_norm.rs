//! Batch-normalised layers through the public API: the GPU fit against the CPU reference
//! (parameters, γ and running statistics), inference with the running statistics, save/load.

mod common;
use common::*;
use wgnn::internals::kernels::batch_norm::BatchNormConfig;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, History, Layer};

fn losses(h: &History) -> Vec<f32> {
    h.epochs.iter().map(|r| r.train_loss).collect()
}

/// The batch-norm layers of [`model`]: `batch_norm()` after a dense layer makes it
/// Dense(no bias) → BatchNorm → Activation.
const BN_LAYERS: [usize; 2] = [1, 5];

fn model(backend: &Backend) -> Sequential {
    Sequential::new(10, 7)
        .dense(12, Activation::Relu)
        .batch_norm()
        .dropout(0.2)
        .dense(8, Activation::Tanh)
        .batch_norm_with(BatchNormConfig { eps: 1e-3, momentum: 0.3 })
        .dense(3, Activation::Identity)
        .build(backend)
        .unwrap()
}

#[test]
fn batch_norm_fit_on_the_gpu_matches_the_cpu_reference() {
    let gpu = gpu();
    // 5 batches of 24 and a last one of 10 rows, for 3 epochs.
    let data = synthetic(130, 10, 3, 9);
    let mut runs = Vec::new();
    for backend in [Backend::Gpu(gpu.clone()), Backend::Cpu] {
        let mut m = model(&backend);
        m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
        let h = m.fit(&data, &FitOptions { epochs: 3, batch_size: 24, ..Default::default() }).unwrap();
        let norm: Vec<_> = BN_LAYERS.iter().map(|&i| m.batch_norm_state(i).unwrap()).collect();
        runs.push((h, m.weights().unwrap(), norm, m.evaluate(&data).unwrap(), m.predict_dataset(&data).unwrap()));
    }
    let (g, c) = (&runs[0], &runs[1]);
    assert_close("bn train loss, gpu vs cpu", &losses(&g.0), &losses(&c.0), 1e-4, 1e-3);
    for (i, ((wg, bg), (wc, bc))) in g.1.iter().zip(&c.1).enumerate() {
        assert_close(&format!("layer {i} W"), wg, wc, 1e-4, 1e-3);
        assert_close(&format!("layer {i} b (β)"), bg, bc, 1e-4, 1e-3);
    }
    for i in 0..2 {
        let (gs, cs) = (g.2[i].clone().unwrap(), c.2[i].clone().unwrap());
        let (gg, gm, gv) = (gs.gamma, gs.running_mean, gs.running_var);
        let (cg, cm, cv) = (cs.gamma, cs.running_mean, cs.running_var);
        assert_close(&format!("layer {i} γ"), &gg, &cg, 1e-4, 1e-3);
        assert_close(&format!("layer {i} running mean"), &gm, &cm, 1e-4, 1e-3);
        assert_close(&format!("layer {i} running var"), &gv, &cv, 1e-4, 1e-3);
        // They moved from their starting values (γ 1, mean 0, var 1).
        assert!(gg.iter().any(|&v| (v - 1.0).abs() > 1e-3) && gm.iter().any(|&v| v.abs() > 1e-3));
    }
    assert_close("bn evaluate, gpu vs cpu", &[g.3 .0, g.3 .1], &[c.3 .0, c.3 .1], 1e-4, 1e-3);
    assert_close("bn predict, gpu vs cpu", &g.4, &c.4, 1e-4, 1e-3);
    let l = losses(&g.0);
    assert!(l[2] < l[0], "loss did not fall: {l:?}");
}

#[test]
fn inference_uses_the_running_statistics_so_rows_are_independent() {
    let gpu = gpu();
    let data = synthetic(64, 10, 3, 2);
    let mut m = model(&Backend::Gpu(gpu));
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    m.fit(&data, &FitOptions { epochs: 2, batch_size: 16, ..Default::default() }).unwrap();
    let all = m.predict_dataset(&data).unwrap();
    // With batch statistics a row's output would depend on its neighbours; with the running
    // ones, one row alone gives what it gives among all.
    for row in [0, 17, 63] {
        let x = data.row_f32(row).unwrap();
        let alone = m.predict(&x, 1).unwrap();
        assert_close(&format!("row {row} alone vs in the batch"), &alone, &all[row * 3..row * 3 + 3], 1e-6, 1e-5);
    }
}

#[test]
fn batch_norm_state_survives_save_load_and_resume() {
    let dir = std::env::temp_dir().join(format!("wgnn-bn-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gpu = gpu();
    let backend = Backend::Gpu(gpu);
    let data = synthetic(80, 10, 3, 4);
    let mut m = model(&backend);
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    let opts = FitOptions { epochs: 2, batch_size: 16, ..Default::default() };
    let history = m.fit(&data, &opts).unwrap();
    let want = m.predict_dataset(&data).unwrap();

    let saved = dir.join("bn.safetensors");
    m.save(&saved).unwrap();
    for backend in [backend.clone(), Backend::Cpu] {
        let loaded = Sequential::load(&saved, &backend).unwrap();
        assert_eq!(loaded.layers(), m.layers());
        for i in 0..m.layers().len() {
            assert_eq!(loaded.batch_norm_state(i).unwrap(), m.batch_norm_state(i).unwrap(), "layer {i}");
        }
        assert_close("loaded predict", &loaded.predict_dataset(&data).unwrap(), &want, 1e-6, 1e-5);
    }

    // A run resumed after epoch 2 ends where the uninterrupted 3-epoch run ends: the running
    // statistics came back with the weights and the optimizer state.
    let checkpoint = dir.join("bn-checkpoint.safetensors");
    m.save_checkpoint(&checkpoint, 2, &history).unwrap();
    let mut resumed = Sequential::resume(&checkpoint, &backend).unwrap();
    let resumed_history = resumed.fit(&data, &FitOptions { epochs: 3, ..opts }).unwrap();
    let mut straight = model(&backend);
    straight.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2)).unwrap();
    let straight_history = straight.fit(&data, &FitOptions { epochs: 3, ..opts }).unwrap();
    assert_eq!(losses(&resumed_history), losses(&straight_history));
    assert_eq!(resumed.weights().unwrap(), straight.weights().unwrap());
    for i in BN_LAYERS {
        assert_eq!(resumed.batch_norm_state(i).unwrap(), straight.batch_norm_state(i).unwrap());
    }

    // The file's architecture includes the batch norm: a plain model cannot take its weights.
    let mut plain = Sequential::new(10, 7)
        .dense(12, Activation::Relu)
        .dense(8, Activation::Tanh)
        .dense(3, Activation::Identity)
        .build(&backend)
        .unwrap();
    let err = plain.load_weights(&saved).expect_err("bn weights into a plain model");
    assert!(err.to_string().contains("dense(12, identity, no bias) → batch_norm → activation(relu)"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn batch_norm_rejects_bad_setups() {
    let backend = Backend::Gpu(gpu());
    let err = Sequential::new(4, 1).dense(2, Activation::Identity).batch_norm().build(&backend).err().unwrap();
    assert!(err.to_string().contains("batch norm on the output layer"), "{err}");
    // A batch norm first normalises the input (a layer of its own, as in Keras).
    let m = Sequential::new(4, 1).batch_norm().dense(2, Activation::Identity).build(&backend).unwrap();
    assert!(matches!(m.layers()[0], Layer::BatchNorm(_)), "{:?}", m.layers());
    let bad = BatchNormConfig { eps: 0.0, momentum: 0.1 };
    let err = Sequential::new(4, 1)
        .dense(3, Activation::Relu)
        .batch_norm_with(bad)
        .dense(2, Activation::Identity)
        .build(&backend)
        .err()
        .unwrap();
    assert!(err.to_string().contains("eps"), "{err}");
    // 21 rows in batches of 4 leave a last batch of 1 row, whose variance is 0.
    let data = synthetic(21, 4, 2, 1);
    let mut m = Sequential::new(4, 1)
        .dense(3, Activation::Relu)
        .batch_norm()
        .dense(2, Activation::Identity)
        .build(&backend)
        .unwrap();
    m.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3)).unwrap();
    let err = m.fit(&data, &FitOptions { batch_size: 4, ..Default::default() }).expect_err("1-row batch");
    assert!(err.to_string().contains("at least 2 rows per training batch"), "{err}");
    m.fit(&data, &FitOptions { epochs: 1, batch_size: 6, ..Default::default() }).unwrap();
}
