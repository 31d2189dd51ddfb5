//! `--data-parallel` (mnist_gpu, cnn_mnist, char_gpt): every process that `mpirun -np N` (or
//! Slurm's `srun`) started trains the one model as a rank of MPI's world (`fit_data_parallel`,
//! `fit_tokens_data_parallel`), which needs wgnn's cargo feature `mpi`. Rank 0 alone prints (the
//! others' stdout goes to /dev/null; their stderr stays, for their errors) and writes the outputs
//! and checkpoints.

use std::sync::atomic::{AtomicBool, Ordering};

use wgnn::collective::Collective;

/// Set on ranks other than 0: they write no outputs.
static NOT_RANK0: AtomicBool = AtomicBool::new(false);

/// Whether this process prints and writes the outputs: rank 0, or a run without `--data-parallel`.
pub fn is_rank0() -> bool {
    !NOT_RANK0.load(Ordering::Relaxed)
}

/// How to get a binary that takes `--data-parallel`, for `example`.
pub fn how_to_build(example: &str) -> String {
    format!(
        "--data-parallel needs MPI, and this binary was built without wgnn's cargo feature `mpi`: install Open MPI \
         and libclang (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev), build with `cargo build \
         --release --features mpi --example {example}`, and start it with `mpirun -np 2 \
         target/release/examples/{example} --data-parallel`"
    )
}

/// The ranks `--data-parallel` trains on (MPI's world, initialized here), or `None` without
/// it (plain `fit`); without the feature `mpi`, the flag is an error saying how to build.
pub fn ranks(data_parallel: bool, example: &str) -> anyhow::Result<Option<Box<dyn Collective>>> {
    if !data_parallel {
        return Ok(None);
    }
    #[cfg(feature = "mpi")]
    {
        let _ = example;
        let mpi = wgnn::collective::MpiCollective::init()?;
        if mpi.rank() != 0 {
            NOT_RANK0.store(true, Ordering::Relaxed);
            silence_stdout()?;
        }
        Ok(Some(Box::new(mpi)))
    }
    #[cfg(not(feature = "mpi"))]
    {
        anyhow::bail!("{}", how_to_build(example))
    }
}

/// Sends this process's stdout to /dev/null: every `say!` line of a rank other than 0.
#[cfg(feature = "mpi")]
fn silence_stdout() -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    // SAFETY: dup2 on two open descriptors; stdout's old file is closed by it.
    if unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}
