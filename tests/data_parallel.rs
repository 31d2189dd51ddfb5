//! Data-parallel `fit` on MPI, two ranks (feature `mpi`; `.ci/run` runs it). Run by `cargo test`,
//! each test starts itself under `mpirun -np 2` and checks what the job did; each rank then runs
//! the test's body. Two ranks at batch b train as one process at batch 2b (the same per-step
//! losses and weights, within the CPU reference's tolerance, over 102 steps), and a model whose
//! architecture differs between the ranks is refused by name; a cancel on one rank stops both
//! after the same step; a rank whose device is lost
//! mid-training ends the job, naming itself, instead of leaving the other waiting; with batch
//! norm the ranks stay identical, their running statistics the host's average of the shards';
//! a checkpoint resumes on as many ranks as the uninterrupted run, and is refused on another
//! number. Token training too: 2 ranks at batch b train char_gpt's GPT, tiny, as one process at
//! 2b (`fit_tokens_data_parallel`).

mod common;
#[path = "../examples/common/gpt.rs"]
#[allow(dead_code)]
mod gpt;
use common::tiny_text::tiny_text as text;
use common::*;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wgnn::collective::SingleProcess;
use wgnn::collective::{Collective, MpiCollective};
use wgnn::model::{
    Backend, Checkpointing, FitOptions, Loss, Observer, Optimizer, Progress, Sequential, TokenFitOptions,
};
use wgnn::{Activation, Dataset, EpochRecord, Gpu, GpuOptions, WgnnError};

/// Whether this process is a rank that `mpirun` started (else it is `cargo test`'s, which
/// starts the ranks).
fn is_rank() -> bool {
    std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
}

/// A hang guard, not a timing: a job still running after this long is a failure (a 2-rank job
/// here takes seconds).
const HANG: Duration = Duration::from_secs(300);

/// Runs test `name` of this binary on 2 ranks under `mpirun`: its exit status, its output (both
/// ranks', interleaved) and each rank's standard output apart ([`rank_outputs`]). A job that has
/// not ended within [`HANG`] is stopped and fails the test. The ranks find a folder of the test's
/// own in `$WGNN_TEST_SCRATCH`.
fn under_mpirun(name: &str) -> (ExitStatus, String, Vec<String>) {
    let exe = std::env::current_exe().unwrap();
    let dir = scratch(name);
    let mut child = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", "--output-filename"])
        .arg(dir.join(RANK_OUTPUT))
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("WGNN_TEST_SCRATCH", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs mpirun (Debian: apt-get install openmpi-bin libopenmpi-dev): {e}"));
    // Read both pipes meanwhile, so that a full one cannot stall the job.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG {
            // SIGTERM: mpirun passes it on to the ranks; then make sure.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            let log = format!("{}{}", out.join().unwrap(), err.join().unwrap());
            panic!("mpirun -np 2 {name} still ran after {} s: a hang\n{log}", HANG.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, format!("{}{}", out.join().unwrap(), err.join().unwrap()), rank_outputs(&dir.join(RANK_OUTPUT)))
}

/// Where in the test's scratch folder mpirun writes each rank's output (`--output-filename`:
/// `<job>/rank.<r>/stdout` below it).
const RANK_OUTPUT: &str = "rank-output";

/// Each rank's standard output, by rank, from the folder mpirun wrote them to. In mpirun's own
/// output the ranks' lines interleave, even within a line (libtest writes its summary in pieces),
/// so a check of what each rank printed reads these.
fn rank_outputs(dir: &std::path::Path) -> Vec<String> {
    let mut ranks = Vec::new();
    for job in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for rank in std::fs::read_dir(job.path()).into_iter().flatten().flatten() {
            let label = rank.file_name().to_string_lossy().into_owned();
            if let Some(r) = label.strip_prefix("rank.").and_then(|r| r.parse::<usize>().ok()) {
                ranks.push((r, std::fs::read_to_string(rank.path().join("stdout")).unwrap_or_default()));
            }
        }
    }
    ranks.sort();
    ranks.into_iter().map(|(_, out)| out).collect()
}

/// The test's body passed on both ranks of the job `under_mpirun` ran.
fn assert_both_ranks_passed(name: &str) {
    let (status, log, ranks) = under_mpirun(name);
    assert!(status.success(), "mpirun -np 2 failed ({status}):\n{log}");
    // Both ranks ran the test and passed it (the filter matched; nothing skipped).
    assert_eq!(ranks.len(), 2, "an output for each rank:\n{log}");
    for (r, out) in ranks.iter().enumerate() {
        assert!(
            out.contains("test result: ok. 1 passed; 0 failed"),
            "rank {r} passed:\n{out}\n(the job's output:\n{log})"
        );
    }
}

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
    if !is_rank() {
        return assert_both_ranks_passed("two_ranks_train_as_one_process_with_twice_the_batch");
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
    assert_same_as_rank0(&mpi, &parallel, "after 102 steps");
    // It learned: the last ticks' loss is below the first's.
    assert!(ticks.0[101] < ticks.0[0] * 0.9, "the loss fell: {} → {}", ticks.0[0], ticks.0[101]);

    // A cancel on rank 1 alone, at epoch 2's tenth tick, stops both ranks after the same step.
    let flag = AtomicBool::new(false);
    let mut observer = CancelOnRank1 { rank1: mpi.rank() == 1, flag: &flag, ticks: 0 };
    let mut cancelled = mlp(&backend, 23);
    let cancellable = FitOptions { cancel: Some(&flag), ..per_rank };
    let history = cancelled.fit_data_parallel_with(&data, &cancellable, &mpi, &mut observer).unwrap();
    assert_eq!(history.cancelled_in, Some(2), "rank {}: cancelled in epoch 2", mpi.rank());
    assert_eq!(observer.ticks, 51 + 10, "rank {}: epoch 1's 51 ticks and 10 of epoch 2", mpi.rank());
    assert_same_as_rank0(&mpi, &cancelled, "after a cancel");
}

/// The ranks hold the same weights, bit for bit: rank 0's broadcast equals this rank's own.
fn assert_same_as_rank0(mpi: &MpiCollective, model: &Sequential, when: &str) {
    let mine: Vec<f32> = model.weights().unwrap().iter().flat_map(|(w, b)| w.iter().chain(b)).copied().collect();
    let mut rank0 = mine.clone();
    mpi.broadcast_f32(&mut rank0, 0).unwrap();
    assert_eq!(mine, rank0, "rank {}'s weights equal rank 0's {when}", mpi.rank());
}

/// Counts the ticks, and on rank 1 sets `flag` at epoch 2's tenth, as a Ctrl-C there would.
struct CancelOnRank1<'f> {
    rank1: bool,
    flag: &'f AtomicBool,
    ticks: usize,
}

impl Observer for CancelOnRank1<'_> {
    fn on_progress(&mut self, p: &Progress) {
        self.ticks += 1;
        if self.rank1 && (p.epoch, p.step) == (2, 10) {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Loses this rank's device at the end of epoch 1, as a driver reset would.
struct LoseDevice(Option<Gpu>);

impl Observer for LoseDevice {
    fn on_epoch_end(&mut self, record: &EpochRecord) {
        if let (Some(gpu), 1) = (&self.0, record.epoch) {
            gpu.simulate_device_loss();
        }
    }
}

#[test]
fn a_rank_whose_device_is_lost_ends_the_job_naming_itself() {
    if !is_rank() {
        let (status, log, _) = under_mpirun("a_rank_whose_device_is_lost_ends_the_job_naming_itself");
        assert!(!status.success(), "the job should fail:\n{log}");
        // Rank 1's own line: which rank, and its error (not a panic's abort).
        let line = log.lines().find(|l| l.contains("rank 1 of 2 aborts all ranks")).unwrap_or_else(|| {
            panic!("no line of rank 1 aborting the job:\n{log}");
        });
        assert!(line.contains("device was lost"), "the line names the error: {line}");
        // Neither rank came back from fit: rank 1 ended the job from inside it, and rank 0 was
        // waiting in epoch 2's first all-reduce.
        assert!(!log.contains("returned from fit"), "{log}");
        return;
    }
    let mpi = MpiCollective::init().unwrap();
    // A device of this rank's own, to lose on rank 1.
    let gpu = Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let mut model = mlp(&Backend::Gpu(gpu.clone()), 16);
    let data = synthetic(96, 37, 5, 4);
    let opts = FitOptions { epochs: 3, batch_size: 8, ..Default::default() };
    let mut observer = LoseDevice((mpi.rank() == 1).then_some(gpu));
    let result = model.fit_data_parallel_with(&data, &opts, &mpi, &mut observer);
    // Reached only if the job was not ended: a rank that got an error here and finalized MPI
    // would leave the other waiting, and the caller sees the hang.
    println!("rank {} returned from fit: {result:?}", mpi.rank());
}

/// `synthetic`'s rows with feature j shifted by j/8 and scaled by 1 + j/16: batch statistics
/// that differ from feature to feature.
fn shifted(rows: usize, seed: u64) -> Dataset {
    let plain = synthetic(rows, 37, 5, seed);
    let x =
        plain.to_f32().into_iter().enumerate().map(|(i, v)| v * (1.0 + (i % 37) as f32 / 16.0) + (i % 37) as f32 / 8.0);
    Dataset::from_f32(x.collect(), plain.labels.clone(), 37, 5, "shifted").unwrap()
}

/// The running mean and variance of a batch norm on the input, as `ranks` ranks at batch
/// `batch` each leave them after one unshuffled epoch: each step, every rank's shard's mean
/// and unbiased variance, averaged weighted by the shards' rows, folded in with `momentum`.
fn averaged_running_stats(data: &Dataset, batch: usize, ranks: usize, momentum: f64) -> (Vec<f64>, Vec<f64>) {
    let (x, d) = (data.to_f32(), data.feature_dim);
    let (mut mean, mut var) = (vec![0.0f64; d], vec![1.0f64; d]);
    for rows in (0..data.rows).collect::<Vec<_>>().chunks(batch * ranks) {
        let (mut batch_mean, mut batch_var) = (vec![0.0f64; d], vec![0.0f64; d]);
        let (each, extra) = (rows.len() / ranks, rows.len() % ranks);
        let mut first = 0;
        for rank in 0..ranks {
            let shard = &rows[first..first + each + (rank < extra) as usize];
            first += shard.len();
            let weight = shard.len() as f64 / rows.len() as f64;
            for j in 0..d {
                let values: Vec<f64> = shard.iter().map(|&r| x[r * d + j] as f64).collect();
                let m = values.iter().sum::<f64>() / values.len() as f64;
                let v = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len() - 1) as f64;
                batch_mean[j] += weight * m;
                batch_var[j] += weight * v;
            }
        }
        for j in 0..d {
            mean[j] = (1.0 - momentum) * mean[j] + momentum * batch_mean[j];
            var[j] = (1.0 - momentum) * var[j] + momentum * batch_var[j];
        }
    }
    (mean, var)
}

#[test]
fn batch_norm_ranks_stay_identical_with_the_running_statistics_averaged() {
    if !is_rank() {
        return assert_both_ranks_passed("batch_norm_ranks_stay_identical_with_the_running_statistics_averaged");
    }
    let mpi = MpiCollective::init().unwrap();
    let gpu = Gpu::with_options(&GpuOptions { autotune: false, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    // A batch norm on the input (whose statistics the host computes from the data) and one on
    // a hidden layer; momentum 0.1.
    let mut model = Sequential::new(37, 7)
        .batch_norm()
        .dense(16, Activation::Relu)
        .batch_norm()
        .dense(5, Activation::Identity)
        .build(&Backend::Gpu(gpu))
        .unwrap();
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(3e-3)).unwrap();
    // 805 rows unshuffled: 50 global batches of 16 (8 rows a rank) and a partial one of 5 (3
    // and 2).
    let data = shifted(805, 8);
    let opts = FitOptions { epochs: 1, batch_size: 8, shuffle: false, ..Default::default() };
    model.fit_data_parallel(&data, &opts, &mpi).unwrap();
    // Every parameter, the running statistics included, as rank 0's, bit for bit.
    let parameters = model.parameters().unwrap();
    let mine: Vec<f32> = parameters.iter().flat_map(|p| p.values.iter().copied()).collect();
    let mut rank0 = mine.clone();
    mpi.broadcast_f32(&mut rank0, 0).unwrap();
    assert_eq!(mine, rank0, "rank {}'s parameters and running statistics equal rank 0's", mpi.rank());
    let (mean, var) = averaged_running_stats(&data, 8, 2, 0.1);
    let slot = |name: &str| parameters.iter().find(|p| p.name == name).unwrap().values.clone();
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<_>>();
    assert_close("the input's running mean vs the host's", &slot("layers.0.running_mean"), &to_f32(mean), 1e-5, 1e-4);
    assert_close("the input's running variance vs the host's", &slot("layers.0.running_var"), &to_f32(var), 1e-5, 1e-4);
}

fn refused_naming_both_sizes(what: &str, result: wgnn::Result<wgnn::History>) {
    match result {
        Err(WgnnError::InvalidArgument { detail, .. }) => {
            assert!(detail.contains("2 ranks") && detail.contains("1 process"), "{what}: {detail}")
        }
        other => panic!("{what}: a resume on another world size should be refused, got {other:?}"),
    }
}

#[test]
fn a_resumed_run_on_as_many_ranks_continues_the_uninterrupted_one() {
    if !is_rank() {
        return assert_both_ranks_passed("a_resumed_run_on_as_many_ranks_continues_the_uninterrupted_one");
    }
    let mpi = MpiCollective::init().unwrap();
    let gpu = Gpu::with_options(&GpuOptions { autotune: false, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let backend = Backend::Gpu(gpu);
    let data = synthetic(197, 37, 5, 9);
    let opts = |epochs| FitOptions { epochs, batch_size: 8, ..Default::default() };
    let straight = mlp(&backend, 16).fit_data_parallel(&data, &opts(4), &mpi).unwrap();
    // Stopped after epoch 2: rank 0 writes the checkpoint, both resume from it.
    let dir = std::path::PathBuf::from(std::env::var_os("WGNN_TEST_SCRATCH").expect("set by under_mpirun"));
    let checkpoint = Checkpointing::every_epoch(&dir);
    let stopped = FitOptions { checkpoint: Some(checkpoint), ..opts(2) };
    mlp(&backend, 16).fit_data_parallel(&data, &stopped, &mpi).unwrap();
    mpi.barrier().unwrap();
    let mut resumed = Sequential::resume(checkpoint.last_path(), &backend).unwrap();
    assert_eq!(resumed.resumed_fit().map(|f| f.world_size), Some(2), "the checkpoint records 2 ranks");
    // One process is another world size: refused, by fit_data_parallel and plain fit alike.
    refused_naming_both_sizes("one rank", resumed.fit_data_parallel(&data, &opts(4), &SingleProcess));
    refused_naming_both_sizes("plain fit", resumed.fit(&data, &opts(4)));
    let continued = resumed.fit_data_parallel(&data, &opts(4), &mpi).unwrap();
    let losses = |h: &wgnn::History| h.epochs.iter().map(|r| r.train_loss).collect::<Vec<_>>();
    assert_eq!(continued.epochs.len(), 4, "the checkpoint's 2 epochs and 2 more");
    assert_close("resumed history vs uninterrupted", &losses(&continued), &losses(&straight), 1e-6, 1e-5);
    assert_same_as_rank0(&mpi, &resumed, "after the resumed run");
}

#[test]
fn two_ranks_train_tokens_as_one_process_with_twice_the_batch() {
    if !is_rank() {
        return assert_both_ranks_passed("two_ranks_train_tokens_as_one_process_with_twice_the_batch");
    }
    let mpi = MpiCollective::init().unwrap();
    let gpu = Gpu::with_options(&GpuOptions { autotune: false, ..Default::default() })
        .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let backend = Backend::Gpu(gpu);
    let tiny = gpt::GptConfig { vocab: 11, block: 8, n_layer: 2, n_head: 2, n_embd: 16 };
    let model = || {
        let mut model = gpt::gpt(tiny, 7).build(&backend).unwrap();
        model.compile(Loss::SparseCategoricalCrossentropy, gpt::nanogpt_adamw(3e-3, 3e-4, 2, 24, 0.1)).unwrap();
        model
    };
    let (train, val) = text(800, 3).split(0.8).unwrap();
    let per_rank = TokenFitOptions {
        batch_size: 3,
        steps: 24,
        eval_every: 8,
        eval_batches: 2,
        clip_norm: Some(1.0),
        progress_every: 1,
        ..Default::default()
    };
    let (mut parallel, mut ticks) = (model(), Ticks::default());
    let history = parallel.fit_tokens_data_parallel_with(&train, Some(&val), &per_rank, &mpi, &mut ticks).unwrap();
    let (mut single, mut single_ticks) = (model(), Ticks::default());
    let single_history = single
        .fit_tokens_with(&train, Some(&val), &TokenFitOptions { batch_size: 6, ..per_rank }, &mut single_ticks)
        .unwrap();
    assert_eq!(ticks.0.len(), 24, "a tick per step");
    assert_close("running loss per step, 2 ranks at 3 vs 1 at 6", &ticks.0, &single_ticks.0, 1e-4, 1e-3);
    let val_losses = |h: &wgnn::History| h.epochs.iter().map(|r| r.val_loss.unwrap()).collect::<Vec<_>>();
    assert_close("validation loss, 2 ranks vs 1", &val_losses(&history), &val_losses(&single_history), 1e-4, 1e-3);
    for (p, want) in parallel.parameters().unwrap().iter().zip(single.parameters().unwrap()) {
        assert_close(&format!("{} after 24 steps, 2 ranks vs 1", p.name), &p.values, &want.values, 1e-4, 1e-3);
    }
    let mine: Vec<f32> = parallel.parameters().unwrap().iter().flat_map(|p| p.values.clone()).collect();
    let mut rank0 = mine.clone();
    mpi.broadcast_f32(&mut rank0, 0).unwrap();
    assert_eq!(mine, rank0, "rank {}'s parameters equal rank 0's", mpi.rank());
}
