//! Data-parallel `fit` on several adapters of one process — a machine with several GPUs and no
//! MPI: a thread per adapter, each training its own replica on its shard of every global batch,
//! the gradients summed through host memory ([`ThreadRank`]).

use super::{Backend, FitOptions, Observer, Sequential, Silent};
use crate::collective::{Collective, ThreadRank};
use crate::data::Dataset;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::history::History;

const OP: &str = "fit_on_adapters";

/// [`Sequential::fit_data_parallel`] with a rank per device of `gpus`, each a thread of this
/// process: `build` makes each rank's replica on the backend it is given (the same model every
/// time: the ranks check it, and start from rank 0's weights), and every rank trains on its
/// shard of each global batch of `gpus.len() × opts.batch_size` rows (PyTorch's DDP with one
/// process per GPU; Keras' `MirroredStrategy`). Rank 0 runs on the calling thread and alone
/// prints (`verbose`), writes checkpoints and reports to an observer
/// ([`fit_on_adapters_with`]). Returns rank 0's trained model and its history; the replicas
/// hold the same weights bit for bit.
///
/// Open the devices with [`Gpu::open_adapters`] (`"all"`, or a list of names or indices). What
/// data-parallel `fit` does not support yet is refused as [`Sequential::fit_data_parallel`]
/// says. A rank that fails stops the others (no rank waits for it forever): the error is
/// [`WgnnError::RankFailed`], naming the first rank that failed and its adapter, with that
/// rank's own error as its `source`. A rank's thread that panics stops the others the same way,
/// and the panic resumes here once every thread has ended.
///
/// ```no_run
/// use wgnn::model::{fit_on_adapters, Backend, FitOptions, Loss, Optimizer, Sequential};
/// use wgnn::{Activation, Dataset, Gpu, GpuOptions};
/// let gpus = Gpu::open_adapters("all", &GpuOptions::default())?;
/// let data = Dataset::new(vec![0.5f32; 64 * 4], 4, [0u32, 1].repeat(32))?;
/// let build = |backend: &Backend| -> wgnn::Result<Sequential> {
///     let mut model = Sequential::new(4, 7).dense(8, Activation::Relu).dense(2, Activation::Identity).build(backend)?;
///     model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3))?;
///     Ok(model)
/// };
/// let opts = FitOptions { epochs: 2, batch_size: 16, ..Default::default() };
/// let (model, history) = fit_on_adapters(&gpus, build, &data, &opts)?;
/// # Ok::<(), wgnn::WgnnError>(())
/// ```
pub fn fit_on_adapters(
    gpus: &[Gpu],
    build: impl Fn(&Backend) -> Result<Sequential> + Sync,
    data: &Dataset,
    opts: &FitOptions,
) -> Result<(Sequential, History)> {
    fit_on_adapters_with(gpus, build, data, opts, &mut Silent)
}

/// [`fit_on_adapters`] reporting rank 0's progress to `observer` (on the calling thread).
pub fn fit_on_adapters_with(
    gpus: &[Gpu],
    build: impl Fn(&Backend) -> Result<Sequential> + Sync,
    data: &Dataset,
    opts: &FitOptions,
    observer: &mut dyn Observer,
) -> Result<(Sequential, History)> {
    if gpus.is_empty() {
        return Err(WgnnError::invalid(OP, "no devices: give at least one (Gpu::open_adapters(\"all\", …))"));
    }
    let mut ranks = ThreadRank::group(gpus.len())?.into_iter();
    let rank0 = ranks.next().ok_or_else(|| WgnnError::invalid(OP, "a group without rank 0"))?;
    let build = &build;
    let (first, others) = std::thread::scope(|scope| {
        let threads: Vec<_> = ranks
            .zip(&gpus[1..])
            .map(|(rank, gpu)| {
                // A thread that cannot start drops its rank, which stops the others.
                std::thread::Builder::new()
                    .name(format!("wgnn rank {}", rank.rank()))
                    .spawn_scoped(scope, move || train_rank(&rank, gpu, build, data, opts, &mut Silent))
            })
            .collect();
        let first = train_rank(&rank0, &gpus[0], build, data, opts, observer);
        let others: Vec<_> = threads.into_iter().map(|t| t.map(|t| t.join())).collect();
        (first, others)
    });
    let mut results = vec![first];
    for (i, other) in others.into_iter().enumerate() {
        match other {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(e) => {
                results.push(Err(WgnnError::invalid(OP, format!("could not start rank {}'s thread: {e}", i + 1))))
            }
        }
    }
    if results.iter().all(Result::is_ok) {
        return results.swap_remove(0);
    }
    // The first rank to fail is the cause (the others stopped because of it); where it did
    // not return an error itself (it left the group), the first error in rank order.
    let cause = rank0.failure().map(|(rank, _)| rank).filter(|&r| results.get(r).is_some_and(Result::is_err));
    let rank = cause.or_else(|| results.iter().position(Result::is_err)).unwrap_or(0);
    let size = gpus.len();
    match results.swap_remove(rank) {
        Err(source) => Err(WgnnError::RankFailed {
            rank,
            size,
            adapter: gpus[rank].adapter_info().name.clone(),
            source: Box::new(source),
        }),
        Ok(trained) => Ok(trained),
    }
}

/// One rank's replica built and trained; its error, if any, also stops the group.
fn train_rank(
    rank: &ThreadRank,
    gpu: &Gpu,
    build: &(impl Fn(&Backend) -> Result<Sequential> + Sync),
    data: &Dataset,
    opts: &FitOptions,
    observer: &mut dyn Observer,
) -> Result<(Sequential, History)> {
    let trained = (|| {
        let mut model = build(&Backend::Gpu(gpu.clone()))?;
        if !model.gpu_state().is_ok_and(|state| state.gpu.same_device(gpu)) {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "rank {}'s model is not on the device it was given ({}): build it on the backend passed to build",
                    rank.rank(),
                    gpu.adapter_info().name
                ),
            ));
        }
        let history = model.fit_data_parallel_with(data, opts, rank, observer)?;
        Ok((model, history))
    })();
    if let Err(e) = &trained {
        rank.fail(&e.to_string());
    }
    trained
}
