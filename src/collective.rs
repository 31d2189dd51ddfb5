//! The collective operations data-parallel training needs — all-reduce, broadcast, barrier —
//! over the processes ("ranks") that train one model together: [`SingleProcess`] (always
//! built: one rank, every operation the identity), [`ThreadRank`] (ranks that are threads of
//! one process, each on its own adapter: [`crate::model::fit_on_adapters`]) and, with the cargo
//! feature `mpi`, `MpiCollective` on the system's MPI (Open MPI), launched by `mpirun` or
//! Slurm's `srun`.

use crate::error::{Result, WgnnError};

#[cfg(feature = "mpi")]
mod mpi;
mod threads;
#[cfg(feature = "mpi")]
pub use self::mpi::MpiCollective;
pub use self::threads::ThreadRank;

/// The ranks training one model: every rank calls the same operations in the same order (an
/// operation one rank skips leaves the others waiting for it).
pub trait Collective {
    /// This process's index, `0..size()`; rank 0 prints and writes outputs.
    fn rank(&self) -> usize;
    /// How many ranks train together.
    fn size(&self) -> usize;
    /// Replaces `values` on every rank by their element-wise sum over the ranks.
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()>;
    /// Replaces `values` on every rank by rank `root`'s.
    fn broadcast_f32(&self, values: &mut [f32], root: usize) -> Result<()>;
    /// (min, max) of `value` over the ranks: equal where every rank holds the same value.
    fn all_reduce_min_max_u64(&self, value: u64) -> Result<(u64, u64)>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// What a rank does with an error that stops it mid-training, while the other ranks may be
    /// waiting for it in a collective operation it will never call: `MpiCollective` prints
    /// the error on stderr, naming this rank, and ends every rank's process (`MPI_Abort`; the
    /// launcher then exits non-zero), so that no rank hangs. The default, for one process,
    /// returns the error.
    fn abort_job(&self, error: WgnnError) -> WgnnError {
        error
    }
}

/// One process alone: rank 0 of 1. Data-parallel `fit` on it trains as plain `fit` does.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _values: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f32(&self, _values: &mut [f32], _root: usize) -> Result<()> {
        Ok(())
    }
    fn all_reduce_min_max_u64(&self, value: u64) -> Result<(u64, u64)> {
        Ok((value, value))
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
