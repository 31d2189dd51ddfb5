//! [`Collective`] over the threads of one process: ranks that each drive their own adapter and
//! exchange through host memory (a shared slot per rank, a mutex and a condition variable), for
//! a machine with several GPUs and no MPI.

use super::Collective;
use crate::error::{Result, WgnnError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// One rank of a group of threads training one model together: made by [`ThreadRank::group`],
/// one handle per thread (each moved into its thread). Every rank calls the same operations in
/// the same order; the last to arrive at an operation computes its result for all — sums in
/// rank order, so the result does not depend on which thread came first, and every rank gets
/// the same bits.
///
/// A rank that fails calls [`ThreadRank::fail`] (a handle dropped while its thread panics does
/// it itself; one dropped otherwise leaves the group): the others' pending and later operations
/// then return [`WgnnError::Training`] naming that rank, rather than waiting for it forever.
///
/// ```
/// use wgnn::collective::{Collective, ThreadRank};
/// let sums = std::thread::scope(|s| {
///     let threads: Vec<_> = ThreadRank::group(3)?
///         .into_iter()
///         .map(|rank| {
///             s.spawn(move || {
///                 let mut values = [rank.rank() as f32, 1.0];
///                 rank.all_reduce_sum_f32(&mut values).map(|()| values)
///             })
///         })
///         .collect();
///     threads.into_iter().map(|t| t.join().unwrap()).collect::<wgnn::Result<Vec<_>>>()
/// })?;
/// assert!(sums.iter().all(|s| *s == [3.0, 3.0]));
/// # Ok::<(), wgnn::WgnnError>(())
/// ```
pub struct ThreadRank {
    rank: usize,
    group: Arc<Group>,
}

struct Group {
    size: usize,
    state: Mutex<State>,
    /// Signalled when an operation completes or the group fails.
    changed: Condvar,
}

struct State {
    /// Operations completed so far: a waiting rank is done when it moves on.
    completed: u64,
    /// What each rank brought to the operation in progress.
    arrived: Vec<Option<Arrival>>,
    /// The last completed operation's result, shared by every rank.
    result: Arc<Outcome>,
    /// The first failure: the rank it names, and why.
    failed: Option<(usize, String)>,
}

/// One rank's call: which operation, and its operand.
enum Arrival {
    Sum(Vec<f32>),
    /// The root's values; the others bring only their length, to check it.
    Broadcast {
        root: usize,
        len: usize,
        values: Option<Vec<f32>>,
    },
    MinMax(u64),
    Barrier,
}

enum Outcome {
    Values(Vec<f32>),
    MinMax(u64, u64),
    Done,
}

impl Arrival {
    fn describe(&self) -> String {
        match self {
            Arrival::Sum(v) => format!("all_reduce_sum_f32 of {} values", v.len()),
            Arrival::Broadcast { root, len, .. } => format!("broadcast_f32 of {len} values from rank {root}"),
            Arrival::MinMax(_) => "all_reduce_min_max_u64".to_string(),
            Arrival::Barrier => "barrier".to_string(),
        }
    }

    /// Whether two ranks' calls are the same operation on operands of the same length.
    fn matches(&self, other: &Arrival) -> bool {
        match (self, other) {
            (Arrival::Sum(a), Arrival::Sum(b)) => a.len() == b.len(),
            (Arrival::Broadcast { root: r, len: n, .. }, Arrival::Broadcast { root: s, len: m, .. }) => {
                r == s && n == m
            }
            (Arrival::MinMax(_), Arrival::MinMax(_)) | (Arrival::Barrier, Arrival::Barrier) => true,
            _ => false,
        }
    }
}

impl ThreadRank {
    /// The `size` ranks of a new group, rank 0 first.
    pub fn group(size: usize) -> Result<Vec<ThreadRank>> {
        if size == 0 {
            return Err(WgnnError::invalid("ThreadRank::group", "a group of 0 ranks"));
        }
        let state = State {
            completed: 0,
            arrived: (0..size).map(|_| None).collect(),
            result: Arc::new(Outcome::Done),
            failed: None,
        };
        let group = Arc::new(Group { size, state: Mutex::new(state), changed: Condvar::new() });
        Ok((0..size).map(|rank| ThreadRank { rank, group: group.clone() }).collect())
    }

    /// Marks this rank failed (`why`: its error): every rank's pending and later operations
    /// return an error naming it. Only the first failure in a group is kept.
    pub fn fail(&self, why: &str) {
        self.group.fail(self.rank, why);
    }

    /// The group's first failure: the rank it names and why; `None` while every rank is well
    /// and holds its handle (a rank whose handle was dropped, even after the last operation,
    /// counts as one that left).
    pub fn failure(&self) -> Option<(usize, String)> {
        self.group.lock().ok().and_then(|s| s.failed.clone())
    }

    /// Brings this rank's `arrival` to the operation in progress and waits until every rank has,
    /// or one has failed.
    fn exchange(&self, arrival: Arrival) -> Result<Arc<Outcome>> {
        let op = arrival.describe();
        let mut state = self.group.lock()?;
        self.check_failed(&state, &op)?;
        if state.arrived[self.rank].is_some() {
            // Only a handle shared across threads gets here (the type is not Sync: a bug).
            return Err(WgnnError::invalid(&op, format!("rank {} joined one operation twice", self.rank)));
        }
        state.arrived[self.rank] = Some(arrival);
        if state.arrived.iter().all(Option::is_some) {
            let arrived: Vec<Arrival> = state.arrived.iter_mut().filter_map(Option::take).collect();
            match combine(arrived) {
                Ok(outcome) => {
                    state.result = Arc::new(outcome);
                    state.completed += 1;
                }
                Err(why) => state.failed = Some((self.rank, why)),
            }
            self.group.changed.notify_all();
        } else {
            let mine = state.completed;
            while state.completed == mine && state.failed.is_none() {
                state = self.group.changed.wait(state).map_err(|_| poisoned(&op))?;
            }
            // Completed before a failure came: the result stands.
            if state.completed != mine {
                return Ok(state.result.clone());
            }
        }
        self.check_failed(&state, &op)?;
        Ok(state.result.clone())
    }

    fn check_failed(&self, state: &State, op: &str) -> Result<()> {
        match &state.failed {
            Some((rank, why)) => Err(WgnnError::Training {
                detail: format!(
                    "rank {rank} of {} failed ({why}), so rank {} stopped in {op}",
                    self.group.size, self.rank
                ),
            }),
            None => Ok(()),
        }
    }
}

impl Group {
    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| poisoned("a collective operation"))
    }

    fn fail(&self, rank: usize, why: &str) {
        // A poisoned lock: a thread panicked inside an operation, and every later one fails.
        if let Ok(mut state) = self.state.lock() {
            state.failed.get_or_insert_with(|| (rank, why.to_string()));
        }
        self.changed.notify_all();
    }
}

fn poisoned(op: &str) -> WgnnError {
    WgnnError::Training { detail: format!("a rank's thread panicked during {op}") }
}

/// The result of one operation from every rank's arrival (rank order); an error saying how the
/// calls differ where they are not the same operation.
fn combine(mut arrived: Vec<Arrival>) -> std::result::Result<Outcome, String> {
    let Some(first) = arrived.first() else { return Ok(Outcome::Done) };
    if let Some(other) = arrived.iter().position(|a| !a.matches(first)) {
        return Err(format!(
            "the ranks called different operations: rank 0 {}, rank {other} {}",
            first.describe(),
            arrived[other].describe()
        ));
    }
    Ok(match first {
        Arrival::Sum(_) => {
            let mut ranks = arrived.into_iter().filter_map(|a| match a {
                Arrival::Sum(values) => Some(values),
                _ => None,
            });
            let mut sum = ranks.next().unwrap_or_default();
            // Rank order: (r0 + r1) + r2 …, whatever order the threads came in.
            for values in ranks {
                sum.iter_mut().zip(&values).for_each(|(s, v)| *s += v);
            }
            Outcome::Values(sum)
        }
        Arrival::Broadcast { root, .. } => {
            let root = *root;
            match (root < arrived.len()).then(|| arrived.swap_remove(root)) {
                Some(Arrival::Broadcast { values: Some(values), .. }) => Outcome::Values(values),
                _ => return Err(format!("broadcast_f32 from rank {root}, which did not bring its values")),
            }
        }
        Arrival::MinMax(_) => {
            let values = arrived.iter().filter_map(|a| match a {
                Arrival::MinMax(v) => Some(*v),
                _ => None,
            });
            let (min, max) = values.fold((u64::MAX, u64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
            Outcome::MinMax(min, max)
        }
        Arrival::Barrier => Outcome::Done,
    })
}

/// An operation's outcome of another kind than its call: cannot happen (the calls were checked
/// alike), but an error rather than a panic if it did.
fn wrong_outcome(op: &str) -> WgnnError {
    WgnnError::Training { detail: format!("{op}: the group's result was of another operation (an internal error)") }
}

impl Drop for ThreadRank {
    fn drop(&mut self) {
        let why = match std::thread::panicking() {
            true => "its thread panicked",
            false => "it left the group",
        };
        // After the group's last operation nobody waits: marking it failed then is harmless.
        self.group.fail(self.rank, why);
    }
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.group.size
    }
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()> {
        match &*self.exchange(Arrival::Sum(values.to_vec()))? {
            Outcome::Values(sum) => values.copy_from_slice(sum),
            _ => return Err(wrong_outcome("all_reduce_sum_f32")),
        }
        Ok(())
    }
    fn broadcast_f32(&self, values: &mut [f32], root: usize) -> Result<()> {
        if root >= self.group.size {
            let detail = format!("root rank {root} of a group of {} ranks", self.group.size);
            let err = WgnnError::invalid("broadcast_f32", detail);
            // The others would wait for this rank's call: fail the group with it.
            self.fail(&err.to_string());
            return Err(err);
        }
        let own = (root == self.rank).then(|| values.to_vec());
        match &*self.exchange(Arrival::Broadcast { root, len: values.len(), values: own })? {
            Outcome::Values(root_values) => values.copy_from_slice(root_values),
            _ => return Err(wrong_outcome("broadcast_f32")),
        }
        Ok(())
    }
    fn all_reduce_min_max_u64(&self, value: u64) -> Result<(u64, u64)> {
        match &*self.exchange(Arrival::MinMax(value))? {
            Outcome::MinMax(min, max) => Ok((*min, *max)),
            _ => Err(wrong_outcome("all_reduce_min_max_u64")),
        }
    }
    fn barrier(&self) -> Result<()> {
        self.exchange(Arrival::Barrier).map(|_| ())
    }

    /// Marks the group failed by this rank, so the threads waiting for it stop with an error
    /// naming it, and returns the error.
    fn abort_job(&self, error: WgnnError) -> WgnnError {
        self.fail(&error.to_string());
        error
    }
}

#[cfg(test)]
mod tests;
