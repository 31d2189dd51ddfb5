//! [`Collective`] on MPI (rsmpi over the system's Open MPI), behind the cargo feature `mpi`.

use super::Collective;
use crate::error::{Result, WgnnError};
use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};
use std::cell::RefCell;

/// MPI counts are C ints: longer slices go in pieces of this many elements.
const PIECE: usize = 1 << 28;

/// The ranks of `MPI_COMM_WORLD`: every process `mpirun -np N` (or `srun`) started. MPI is
/// initialized by [`MpiCollective::init`] and finalized when this is dropped; a process does
/// it once. Dropped while a panic unwinds, it aborts every rank (`MPI_Abort`, naming this
/// one) rather than finalizing, which would leave the others waiting in a collective forever.
pub struct MpiCollective {
    world: SimpleCommunicator,
    /// rsmpi 0.8 has no in-place all-reduce (MPI_IN_PLACE is a C macro): the sums land here and
    /// are copied back, one buffer reused across steps.
    scratch: RefCell<Vec<f32>>,
    // Dropped last: finalizes MPI.
    _universe: mpi::environment::Universe,
}

impl MpiCollective {
    /// Initializes MPI; an error if this process has done so already.
    pub fn init() -> Result<MpiCollective> {
        let universe = mpi::initialize().ok_or_else(|| {
            WgnnError::invalid("MpiCollective::init", "MPI is already initialized in this process (initialize it once)")
        })?;
        Ok(MpiCollective { world: universe.world(), scratch: RefCell::new(Vec::new()), _universe: universe })
    }
}

impl MpiCollective {
    /// Ends every rank's process with `code`, after saying why on stderr.
    pub fn abort(&self, code: i32, why: &str) -> ! {
        eprintln!("wgnn: rank {} of {} aborts all ranks: {why}", self.rank(), self.size());
        self.world.abort(code)
    }
}

impl Drop for MpiCollective {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.abort(101, "it panicked");
        }
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()> {
        let mut scratch = self.scratch.borrow_mut();
        scratch.resize(values.len().min(PIECE), 0.0);
        for piece in values.chunks_mut(PIECE) {
            let sums = &mut scratch[..piece.len()];
            self.world.all_reduce_into(&*piece, sums, SystemOperation::sum());
            piece.copy_from_slice(sums);
        }
        Ok(())
    }
    fn broadcast_f32(&self, values: &mut [f32], root: usize) -> Result<()> {
        if root >= self.size() {
            return Err(WgnnError::invalid(
                "broadcast_f32",
                format!("root rank {root} of a world of {} ranks", self.size()),
            ));
        }
        let root = self.world.process_at_rank(root as i32);
        for piece in values.chunks_mut(PIECE) {
            root.broadcast_into(piece);
        }
        Ok(())
    }
    fn all_reduce_min_max_u64(&self, value: u64) -> Result<(u64, u64)> {
        let (mut min, mut max) = (0u64, 0u64);
        self.world.all_reduce_into(&value, &mut min, SystemOperation::min());
        self.world.all_reduce_into(&value, &mut max, SystemOperation::max());
        Ok((min, max))
    }
    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
    fn abort_job(&self, error: WgnnError) -> WgnnError {
        // Alone, nobody waits: the caller gets the error as on one process.
        if self.size() == 1 {
            return error;
        }
        self.abort(1, &format!("{error}"))
    }
}
