//! `--adapters all|LIST` (mnist_gpu, cnn_mnist, char_gpt): one process trains the model on
//! several adapters — a replica and a thread each, the ranks of one `ThreadRank` group
//! (`fit_data_parallel`, `fit_tokens_data_parallel`) — for a machine with several GPUs and no MPI. Rank 0 runs on the main
//! thread: it alone prints and writes the outputs and checkpoints.

use wgnn::collective::{Collective, ThreadRank};
use wgnn::model::{Backend, FitOptions, Sequential};
use wgnn::{Dataset, Gpu, GpuOptions};

/// The devices `--adapters` names, announced one a line (`None` without the flag).
/// `require_gpu` refuses a software adapter among them.
pub fn open(spec: Option<&str>, require_gpu: bool) -> anyhow::Result<Option<Vec<Gpu>>> {
    let Some(spec) = spec else { return Ok(None) };
    let gpus =
        Gpu::open_adapters(spec, &GpuOptions::default()).map_err(|e| anyhow::anyhow!("--adapters {spec}: {e}"))?;
    for (rank, gpu) in gpus.iter().enumerate() {
        say!("adapter {rank}: {}", gpu.describe());
        if require_gpu && gpu.is_cpu_adapter() {
            anyhow::bail!(
                "--adapters {spec}: adapter {rank} ({}) is a software adapter, and --require-gpu refuses it",
                gpu.adapter_info().name
            );
        }
    }
    Ok(Some(gpus))
}

/// Runs `fit_rank0` with rank 0 of a group over `gpus` (the caller's model lives on `gpus[0]`),
/// while a thread for each other adapter builds its replica with `build` and trains it on the
/// same data and options with `fit_data_parallel`, silently. Returns rank 0's outcome: an error
/// on another rank reaches rank 0 as an error naming that rank.
pub fn fit_with_replicas<T>(
    gpus: &[Gpu],
    build: &(dyn Fn(&Backend) -> anyhow::Result<Sequential> + Sync),
    train: &Dataset,
    options: &FitOptions,
    fit_rank0: impl FnOnce(&dyn Collective) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let replica_options = FitOptions { verbose: false, checkpoint: None, cancel: None, ..*options };
    let fit = |model: &mut Sequential, rank: &dyn Collective| {
        model.fit_data_parallel(train, &replica_options, rank).map(drop)
    };
    train_with_replicas(gpus, build, (options.batch_size, "rows"), &fit, fit_rank0)
}

/// [`fit_with_replicas`] for any data-parallel training: `train_replica` trains a replica as
/// one rank (silently: no console, checkpoint or cancel of its own), `step` is each rank's
/// batch and what it counts ("rows", "windows"), for the line that announces the group.
pub fn train_with_replicas<T>(
    gpus: &[Gpu],
    build: &(dyn Fn(&Backend) -> anyhow::Result<Sequential> + Sync),
    (batch, unit): (usize, &str),
    train_replica: &(dyn Fn(&mut Sequential, &dyn Collective) -> wgnn::Result<()> + Sync),
    fit_rank0: impl FnOnce(&dyn Collective) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let n = gpus.len();
    say!("data-parallel: {n} adapters in this process, each step {} {unit} ({batch} on each)", n * batch);
    let mut ranks = ThreadRank::group(n)?.into_iter();
    let rank0 = ranks.next().expect("a group of at least one rank");
    std::thread::scope(|scope| {
        for (gpu, rank) in gpus[1..].iter().zip(ranks) {
            scope.spawn(move || {
                let trained =
                    build(&Backend::Gpu(gpu.clone())).and_then(|mut model| Ok(train_replica(&mut model, &rank)?));
                // Rank 0 reports the failure (its error names this rank), so only the group learns it here.
                if let Err(e) = trained {
                    rank.fail(&format!("{e:#}"));
                }
            });
        }
        let outcome = fit_rank0(&rank0);
        // Rank 0 done, whether or not it trained (a finished checkpoint trains nothing): the
        // replicas still waiting for it stop.
        drop(rank0);
        outcome
    })
}
