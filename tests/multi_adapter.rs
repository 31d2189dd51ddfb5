//! Data-parallel `fit` on several devices of one process ([`ThreadRank`], `fit_on_adapters`),
//! here two devices on one adapter: 2 ranks at batch b train as one process at batch 2b (the
//! same per-step losses and weights within the CPU reference's tolerance over 102 steps, as the
//! MPI test checks under `mpirun`), the replicas hold the same weights bit for bit, and a rank
//! that fails — before training or in the middle of it — ends every rank with an error naming
//! it, not a hang.

mod common;
use common::*;
use std::sync::mpsc;
use std::time::Duration;
use wgnn::collective::{Collective, ThreadRank};
use wgnn::model::{
    fit_on_adapters, fit_on_adapters_with, Backend, FitOptions, Loss, Observer, Optimizer, Progress, Sequential,
};
use wgnn::{Activation, Gpu, GpuOptions, ProfileOverride, WgnnError};

#[derive(Default)]
struct Ticks(Vec<f32>);

impl Observer for Ticks {
    fn on_progress(&mut self, p: &Progress) {
        self.0.push(p.loss);
    }
}

/// A device of its own (not the suite's shared one), with the profile `$WGNN_PROFILE` names and
/// the autotuner off: every rank and the reference run the static policy's kernels.
fn device() -> Gpu {
    let profile = match std::env::var("WGNN_PROFILE") {
        Ok(name) => ProfileOverride::parse(&name).expect("WGNN_PROFILE is cpu, gpu or adapter"),
        Err(_) => ProfileOverride::Adapter,
    };
    Gpu::with_options(&GpuOptions { autotune: false, profile, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

fn mlp(backend: &Backend) -> wgnn::Result<Sequential> {
    let mut model = Sequential::new(37, 7).dense(23, Activation::Relu).dense(5, Activation::Identity).build(backend)?;
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3))?;
    Ok(model)
}

/// `f` on another thread, its result within `limit`: a hang fails the test instead of hanging it.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || sender.send(f()).ok());
    receiver.recv_timeout(limit).unwrap_or_else(|_| panic!("no result within {limit:?}: a rank hangs"))
}

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn two_devices_train_as_one_with_twice_the_batch_and_hold_the_same_weights() {
    // 805 rows: 50 global batches of 16 and a partial one of 5 (3 rows on rank 0, 2 on rank 1).
    let data = synthetic(805, 37, 5, 3);
    let per_rank = FitOptions { epochs: 2, batch_size: 8, progress_every: 1, ..Default::default() };
    let gpus = [device(), device()];
    assert!(!gpus[0].same_device(&gpus[1]), "two devices");

    // The ranks as threads the test runs itself: every replica comes back.
    let replicas: Vec<(Sequential, Vec<f32>)> = std::thread::scope(|s| {
        let threads: Vec<_> = ThreadRank::group(2)
            .unwrap()
            .into_iter()
            .zip(&gpus)
            .map(|(rank, gpu)| {
                let data = &data;
                s.spawn(move || {
                    let mut model = mlp(&Backend::Gpu(gpu.clone())).unwrap();
                    let mut ticks = Ticks::default();
                    model.fit_data_parallel_with(data, &per_rank, &rank, &mut ticks).unwrap();
                    (model, ticks.0)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut single = mlp(&Backend::Gpu(gpus[0].clone())).unwrap();
    let mut single_ticks = Ticks::default();
    single.fit_with(&data, &FitOptions { batch_size: 16, ..per_rank }, &mut single_ticks).unwrap();

    let (rank0, ticks) = &replicas[0];
    assert_eq!(ticks.len(), 102, "a tick per global step");
    assert_close("per-step running loss, 2 devices vs 1", ticks, &single_ticks.0, 1e-4, 1e-4);
    let (w2, w1) = (rank0.weights().unwrap(), single.weights().unwrap());
    for (i, ((w, b), (w_ref, b_ref))) in w2.iter().zip(&w1).enumerate() {
        assert_close(&format!("layer {i} W after 102 steps, 2 devices vs 1"), w, w_ref, 1e-4, 1e-3);
        assert_close(&format!("layer {i} b after 102 steps, 2 devices vs 1"), b, b_ref, 1e-4, 1e-3);
    }
    assert_eq!(replicas[1].0.weights().unwrap(), w2, "rank 1's weights equal rank 0's, bit for bit");
    assert_eq!(&replicas[1].1, ticks, "both ranks saw the same running losses");
    assert!(ticks[101] < ticks[0] * 0.9, "the loss fell: {} → {}", ticks[0], ticks[101]);

    // fit_on_adapters runs the same ranks: the same model and history, bit for bit.
    let mut observed = Ticks::default();
    let (model, history) = fit_on_adapters_with(&gpus, mlp, &data, &per_rank, &mut observed).unwrap();
    assert_eq!(model.weights().unwrap(), w2, "fit_on_adapters' rank 0 equals the threads' rank 0");
    assert_eq!(&observed.0, ticks, "rank 0's progress reaches the observer");
    assert_eq!(history.epochs.len(), 2);
}

#[test]
fn a_rank_whose_device_is_lost_stops_every_rank_with_an_error_naming_it() {
    let result = within(LIMIT, || {
        let data = synthetic(96, 37, 5, 4);
        let opts = FitOptions { epochs: 1, batch_size: 8, ..Default::default() };
        let gpus = [device(), device()];
        gpus[1].simulate_device_loss();
        fit_on_adapters(&gpus, mlp, &data, &opts).map(|_| ())
    });
    match result {
        Err(WgnnError::RankFailed { rank: 1, size: 2, source, .. }) => {
            assert!(matches!(*source, WgnnError::DeviceLost { .. }), "rank 1's own error: {source:#?}")
        }
        other => panic!("expected rank 1's device loss, got {other:?}"),
    }
}

#[test]
fn a_rank_failing_in_the_middle_of_training_stops_the_other() {
    /// Loses this device, if any, at the third progress tick.
    struct LoseDevice(Option<Gpu>, usize);
    impl Observer for LoseDevice {
        fn on_progress(&mut self, _: &Progress) {
            self.1 += 1;
            if let (Some(gpu), 3) = (&self.0, self.1) {
                gpu.simulate_device_loss();
            }
        }
    }
    let errors = within(LIMIT, || {
        let data = synthetic(200, 37, 5, 5);
        let opts = FitOptions { epochs: 2, batch_size: 8, progress_every: 1, ..Default::default() };
        std::thread::scope(|s| {
            let threads: Vec<_> = ThreadRank::group(2)
                .unwrap()
                .into_iter()
                .map(|rank| {
                    let data = &data;
                    s.spawn(move || {
                        let gpu = device();
                        let mut model = mlp(&Backend::Gpu(gpu.clone())).unwrap();
                        let mut observer = LoseDevice((rank.rank() == 1).then_some(gpu), 0);
                        let result = model.fit_data_parallel_with(data, &opts, &rank, &mut observer);
                        if let Err(e) = &result {
                            rank.fail(&e.to_string());
                        }
                        result.map(|_| ()).unwrap_err()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect::<Vec<_>>()
        })
    });
    assert!(matches!(errors[1], WgnnError::DeviceLost { .. }), "rank 1 lost its device: {:#?}", errors[1]);
    let detail = errors[0].to_string();
    assert!(matches!(errors[0], WgnnError::Training { .. }), "{detail}");
    assert!(detail.contains("rank 1 of 2 failed") && detail.contains("device was lost"), "{detail}");
}

#[test]
fn a_rank_whose_build_fails_or_panics_does_not_leave_the_others_waiting() {
    let gpus = [device(), device()];
    let data = synthetic(64, 37, 5, 6);
    let opts = FitOptions { epochs: 1, batch_size: 8, ..Default::default() };
    let on_rank1 = |gpus: &[Gpu; 2], backend: &Backend| match backend {
        Backend::Gpu(g) => g.same_device(&gpus[1]),
        Backend::Cpu => false,
    };
    let failing = {
        let gpus = gpus.clone();
        move |backend: &Backend| match on_rank1(&gpus, backend) {
            true => Err(WgnnError::invalid("build", "no model for rank 1 (the test's)")),
            false => mlp(backend),
        }
    };
    let (g, d) = (gpus.clone(), data.clone());
    match within(LIMIT, move || fit_on_adapters(&g, failing, &d, &opts).map(|_| ())) {
        Err(WgnnError::RankFailed { rank: 1, source, .. }) => {
            assert!(source.to_string().contains("no model for rank 1"), "{source}")
        }
        other => panic!("expected rank 1's build error, got {other:?}"),
    }
    // A model on another device than the one given is refused, not trained there.
    let elsewhere = device();
    let wrong = move |_: &Backend| mlp(&Backend::Gpu(elsewhere.clone()));
    let (g, d) = (gpus.clone(), data.clone());
    match within(LIMIT, move || fit_on_adapters(&g, wrong, &d, &opts).map(|_| ())) {
        Err(WgnnError::RankFailed { source, .. }) => {
            assert!(source.to_string().contains("not on the device it was given"), "{source}")
        }
        other => panic!("expected a refusal of the model on another device, got {other:?}"),
    }
    // A panic on rank 1 ends rank 0 too, and then resumes on the caller.
    let panicking = {
        let gpus = gpus.clone();
        move |backend: &Backend| {
            if on_rank1(&gpus, backend) {
                panic!("a bug in rank 1's build (this panic is the test's)");
            }
            mlp(backend)
        }
    };
    let outcome = within(LIMIT, move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fit_on_adapters(&gpus, panicking, &data, &opts).is_ok()
        }))
    });
    assert!(outcome.is_err(), "the panic reached the caller");
}

#[test]
fn adapters_open_by_all_by_index_and_by_name() {
    let options = GpuOptions { autotune: false, ..Default::default() };
    let all = Gpu::open_adapters("all", &options).unwrap();
    assert!(!all.is_empty());
    let names = Gpu::adapter_names();
    assert!(names.len() >= all.len(), "{names:?}");
    let twice = Gpu::open_adapters("0,0", &options).unwrap();
    assert_eq!(twice.len(), 2);
    assert!(!twice[0].same_device(&twice[1]), "two devices on adapter 0");
    assert_eq!(twice[0].adapter_info().name, twice[1].adapter_info().name);
    // A part of the name, without the commas that separate entries ("llvmpipe (LLVM 15.0.6, 256 bits)").
    let first_name = twice[0].adapter_info().name.clone();
    let part = first_name.split([',', ' ']).next().unwrap();
    let by_name = Gpu::open_adapters(&part.to_uppercase(), &options).unwrap();
    assert!(by_name[0].adapter_info().name.contains(part), "{part:?} opened {:?}", by_name[0].adapter_info().name);
    match Gpu::open_adapters("no such adapter", &options) {
        Err(WgnnError::AdapterNotFound { wanted, present }) => {
            assert_eq!(wanted, "no such adapter");
            assert_eq!(present, names);
        }
        other => panic!("expected AdapterNotFound, got {other:?}"),
    }
    let out_of_range = Gpu::open_adapters(&names.len().to_string(), &options).unwrap_err().to_string();
    assert!(out_of_range.contains(&format!("adapter index {}", names.len())), "{out_of_range}");
    assert!(fit_on_adapters(&[], mlp, &synthetic(8, 37, 5, 7), &FitOptions::default()).is_err(), "no devices");
}
