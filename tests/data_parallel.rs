//! Data-parallel `fit` on MPI, two ranks (feature `mpi`; `.ci/run` runs it). Run by `cargo test`,
//! the test starts itself under `mpirun -np 2` and passes when both ranks do; each rank then
//! checks that a model whose architecture differs between the ranks is refused by name, and
//! that 2 ranks at batch b train as one process at batch 2b: the same per-step losses and
//! weights, within the CPU reference's tolerance, over 102 steps.

mod common;
use common::*;
use std::process::Command;
use wgnn::collective::{Collective, MpiCollective};
use wgnn::model::{Backend, FitOptions, Loss, Observer, Optimizer, Progress, Sequential};
use wgnn::{Activation, Gpu, GpuOptions, WgnnError};

const TEST: &str = "two_ranks_train_as_one_process_with_twice_the_batch";

#[derive(Default)]
struct Ticks(Vec<f32>);

impl Observer for Ticks {
    fn on_progress(&mut self, p: &Progress) {
        self.0.push(p.loss);
    }
}

fn mlp(backend: &Backend, hidden: usize) -> Sequential {
    let mut model =
        Sequential::new(37, 7).dense(hidden, Activation::Relu).dense(5, Activation::Identity).build(backend).unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3)).unwrap();
    model
}

#[test]
fn two_ranks_train_as_one_process_with_twice_the_batch() {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_none() {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("mpirun")
            .args(["-np", "2", "--oversubscribe"])
            .arg(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs mpirun (Debian: apt-get install openmpi-bin libopenmpi-dev): {e}")
            });
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "mpirun -np 2 failed ({}):\n{log}", out.status);
        // Both ranks ran the test and passed it (the filter matched; nothing skipped). Their
        // output interleaves: count the summaries.
        assert_eq!(log.matches("test result: ok. 1 passed; 0 failed").count(), 2, "both ranks passed:\n{log}");
        return;
    }
    let mpi = MpiCollective::init().unwrap();
    assert_eq!(mpi.size(), 2, "run under mpirun -np 2");
    // The autotuner off: both the reference and the ranks use the static policy's kernels.
    let gpu = Gpu::with_options(&GpuOptions { autotune: false, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let backend = Backend::Gpu(gpu);
    // 805 rows: 50 global batches of 16 and a partial one of 5 (3 rows on rank 0, 2 on rank 1).
    let data = synthetic(805, 37, 5, 3);
    let per_rank = FitOptions { epochs: 2, batch_size: 8, progress_every: 1, ..Default::default() };

    // Models that differ between the ranks are refused, on every rank, naming what differs.
    let hidden = if mpi.rank() == 0 { 23 } else { 24 };
    match mlp(&backend, hidden).fit_data_parallel(&data, &per_rank, &mpi) {
        Err(WgnnError::InvalidArgument { detail, .. }) => {
            assert!(detail.contains("architecture") && detail.contains("differs"), "{detail}")
        }
        other => panic!("rank {}: a mismatched model should be refused, got {other:?}", mpi.rank()),
    }

    let mut parallel = mlp(&backend, 23);
    let mut ticks = Ticks::default();
    parallel.fit_data_parallel_with(&data, &per_rank, &mpi, &mut ticks).unwrap();
    let mut single = mlp(&backend, 23);
    let mut single_ticks = Ticks::default();
    single.fit_with(&data, &FitOptions { batch_size: 16, ..per_rank }, &mut single_ticks).unwrap();
    assert_eq!(ticks.0.len(), 102, "a tick per global step");
    assert_close("per-step running loss, 2 ranks vs 1", &ticks.0, &single_ticks.0, 1e-4, 1e-4);
    let (w2, w1) = (parallel.weights().unwrap(), single.weights().unwrap());
    for (i, ((w, b), (w_ref, b_ref))) in w2.iter().zip(&w1).enumerate() {
        assert_close(&format!("layer {i} W after 102 steps, 2 ranks vs 1"), w, w_ref, 1e-4, 1e-3);
        assert_close(&format!("layer {i} b after 102 steps, 2 ranks vs 1"), b, b_ref, 1e-4, 1e-3);
    }
    // The ranks hold the same weights, bit for bit: rank 0's broadcast equals this rank's own.
    let mine: Vec<f32> = w2.iter().flat_map(|(w, b)| w.iter().chain(b)).copied().collect();
    let mut rank0 = mine.clone();
    mpi.broadcast_f32(&mut rank0, 0).unwrap();
    assert_eq!(mine, rank0, "rank {}'s weights equal rank 0's", mpi.rank());
    // It learned: the last ticks' loss is below the first's.
    assert!(ticks.0[101] < ticks.0[0] * 0.9, "the loss fell: {} → {}", ticks.0[0], ticks.0[101]);
}
