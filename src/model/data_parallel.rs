//! Data-parallel `fit` over the ranks of a [`Collective`] (PyTorch's DDP): every rank holds a
//! replica on its adapter, starts from rank 0's weights, trains on its shard of each global
//! batch, and sums the gradients across ranks once per step before the same update everywhere.

use super::*;
use crate::collective::Collective;
use std::sync::atomic::{AtomicBool, Ordering};

const OP: &str = "fit_data_parallel";

impl Sequential {
    /// [`Sequential::fit`] on every rank of `collective` together (each process calls it with
    /// the same model, data and options). `opts.batch_size` is the batch of one rank: a step
    /// trains on a global batch of `size × batch_size` rows of the epoch's order (every rank
    /// draws the same order from the model's seed), rank r on rows `[r·b, (r+1)·b)` of it (a
    /// partial last batch is split as evenly as it goes). The gradients are read back, summed
    /// across ranks weighted by each shard's rows — the global batch's mean, as one process
    /// training on `size × batch_size` rows would get — uploaded, and every rank runs the same
    /// update. The history's loss and accuracy are over all ranks' rows; every rank validates
    /// on its own copy of the validation data and takes rank 0's figures; only rank 0 prints
    /// (`verbose`) and writes checkpoints.
    ///
    /// At start the ranks compare a hash of the architecture, of the data's shape and of the
    /// options, and refuse with an error naming which differs; then rank 0's weights and
    /// optimizer state are broadcast. After them, an error on one rank (its device lost, a
    /// checkpoint rank 0 cannot write) goes to [`Collective::abort_job`], which on MPI ends every
    /// rank naming this one, rather than leave the others waiting in an all-reduce; a diverging
    /// loss ([`WgnnError::Training`]), decided on the all-reduced figures, is returned on every
    /// rank.
    ///
    /// `cancel` may be set on any rank: every step's all-reduce carries each rank's flag, and
    /// once one is set every rank drops that step's update and returns as plain `fit` does on
    /// cancel, with the weights of the previous step (the same on every rank).
    ///
    /// Batch norm works as in PyTorch's DDP without `SyncBatchNorm`: each rank normalises with
    /// its own shard's batch statistics (and so needs at least 2 rows of every batch). The
    /// running mean and variance stay the same on every rank: each step's all-reduce also
    /// carries the ranks' batch statistics, averaged weighted by their rows, which every rank
    /// folds into its running ones — the average of the ranks' own updates. (DDP instead
    /// broadcasts rank 0's buffers before each forward, so that its running statistics are
    /// rank 0's shard's alone.)
    ///
    /// Dropout draws masks of each rank's own (DDP's per-rank RNG): rank 0's are plain `fit`'s,
    /// the others' seeds are salted by the rank (masks index a rank's local rows, which would
    /// otherwise give every rank the same masks).
    ///
    /// A model made by [`Sequential::resume`] continues as with plain `fit` when the checkpoint
    /// was written by a run on as many ranks (checkpoints record the world size; older ones, and
    /// plain `fit`'s, count as 1), and is refused naming both sizes otherwise: another size
    /// would change every step's global batch.
    ///
    /// Not supported yet (refused): the CPU backend, `skip_nonfinite_batches`, a training set
    /// that must stream, and fewer training rows than ranks.
    pub fn fit_data_parallel(
        &mut self,
        data: &Dataset,
        opts: &FitOptions,
        collective: &dyn Collective,
    ) -> Result<History> {
        self.fit_data_parallel_with(data, opts, collective, &mut Silent)
    }

    /// [`Sequential::fit_data_parallel`] reporting to `observer` on every rank (the console,
    /// with `verbose`, on rank 0 only).
    pub fn fit_data_parallel_with(
        &mut self,
        data: &Dataset,
        opts: &FitOptions,
        collective: &dyn Collective,
        observer: &mut dyn Observer,
    ) -> Result<History> {
        // The start-up checks: every rank decides alike, so a refusal is returned everywhere.
        let validation = match opts.validation {
            Validation::None => "none".to_string(),
            Validation::Data(v) => format!("data {} × {}", v.rows, v.feature_dim),
            Validation::Fraction(f) => format!("fraction {f}"),
        };
        let data_shape = format!("{} × {} {:?}", data.rows, data.feature_dim, data.sample_shape);
        let options = format!(
            "{} {} {} {validation} {:?} {}",
            opts.epochs, opts.batch_size, opts.shuffle, opts.clip_norm, opts.skip_nonfinite_batches
        );
        let same = [
            ("the training data's shape (rows × features, sample shape)", data_shape),
            ("the fit options (epochs, batch size, shuffle, seed, validation, backend, resume)", options),
        ];
        self.check_same_on_every_rank(OP, same, collective)?;
        self.refuse_unsupported_parallel(OP, opts.skip_nonfinite_batches, collective)?;
        if data.rows < collective.size() {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "{} training rows for {} ranks: every rank needs at least one row",
                    data.rows,
                    collective.size()
                ),
            ));
        }
        let rank0 = collective.rank() == 0;
        let opts = FitOptions {
            verbose: opts.verbose && rank0,
            checkpoint: if rank0 { opts.checkpoint } else { None },
            ..*opts
        };
        self.train_as_rank(collective, |model| model.fit_dispatch(data, &opts, observer, Some(collective)))
    }

    /// Rank 0's state broadcast, then `train` with this rank's dropout masks (its own unless
    /// rank 0's, see `GpuState::mask_salt`); an error other than a diverging loss (which every
    /// rank sees in the all-reduced figures) goes to [`Collective::abort_job`].
    pub(super) fn train_as_rank(
        &mut self,
        c: &dyn Collective,
        train: impl FnOnce(&mut Sequential) -> Result<History>,
    ) -> Result<History> {
        let trained = self.broadcast_state(c).and_then(|()| {
            self.set_mask_salt(rank_mask_salt(c.rank()))?;
            let trained = train(self);
            self.set_mask_salt(0)?;
            trained
        });
        match trained {
            // A diverging loss is seen in the all-reduced figures: every rank stops with it.
            Err(e @ WgnnError::Training { .. }) => Err(e),
            // Any other error may be this rank's alone (its device, its file, its data), with the
            // others waiting for its next all-reduce: the collective ends the job, naming it.
            Err(e) => Err(c.abort_job(e)),
            Ok(history) => Ok(history),
        }
    }

    fn set_mask_salt(&mut self, salt: u32) -> Result<()> {
        match &mut self.state {
            State::Gpu(g) => {
                g.mask_salt = salt;
                Ok(())
            }
            State::Cpu(_) => Err(WgnnError::invalid(OP, "a CPU model in data-parallel training (an internal error)")),
        }
    }

    /// Refuses, on every rank alike (what it reads was compared by hash), what data-parallel
    /// training (`op`) does not do yet.
    pub(super) fn refuse_unsupported_parallel(&self, op: &str, skip_nonfinite: bool, c: &dyn Collective) -> Result<()> {
        let refuse = |what: &str| Err(WgnnError::invalid(op, format!("{what} is not supported in {op} yet")));
        if matches!(self.state, State::Cpu(_)) {
            return refuse("the CPU backend (build the model on a GPU backend)");
        }
        if skip_nonfinite {
            return refuse("skip_nonfinite_batches (each rank would decide on its own shard)");
        }
        self.check_resumed_world_size(op, c.size())
    }

    /// A model resumed from a checkpoint of a run on another number of ranks than `ranks` is an
    /// error naming both (its global batch, `ranks` × the batch size, would differ).
    pub(super) fn check_resumed_world_size(&self, op: &str, ranks: usize) -> Result<()> {
        let Some(epoch) = self.resumed_epoch() else { return Ok(()) };
        let saved = self.resumed_fit().map_or(1, |f| f.world_size);
        if saved == ranks {
            return Ok(());
        }
        let how = |n: usize| match n {
            1 => "1 process (plain training)".to_string(),
            n => format!("{n} ranks (data-parallel)"),
        };
        Err(WgnnError::invalid(
            op,
            format!(
                "this model resumed after epoch {epoch} of a run on {}, and is now fitted on {}: every step's global \
                 batch (ranks × batch size) would change, so the run would not continue as it was; resume it on {saved} \
                 {}",
                how(saved),
                how(ranks),
                if saved == 1 { "process" } else { "ranks" }
            ),
        ))
    }

    /// The ranks' architectures, and `same` (what the data and the options of `op` look like,
    /// each with what it is, for the error), compared by a hash, min and max across ranks; the
    /// model's seed, backend and resume point go with the options. An error names the first
    /// that differs.
    pub(super) fn check_same_on_every_rank(
        &self,
        op: &str,
        same: [(&str, String); 2],
        c: &dyn Collective,
    ) -> Result<()> {
        let backend = if matches!(self.state, State::Cpu(_)) { "cpu" } else { "gpu" };
        let [data, (options_what, options)] = same;
        let architecture = (
            "the model's architecture (layers, shapes, loss, optimizer)",
            format!("{}\n{:?}", self.summary(), self.compiled),
        );
        let options = (options_what, format!("{options} {} {backend} {:?}", self.seed, self.resumed_epoch()));
        for (what, text) in [architecture, data, options] {
            let (min, max) = c.all_reduce_min_max_u64(fnv1a(text.as_bytes()))?;
            if min != max {
                return Err(WgnnError::invalid(
                    op,
                    format!(
                        "{what} differs between the {} ranks (rank {}'s: {text:?}): every rank must fit the same model on \
                         the same data",
                        c.size(),
                        c.rank()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Rank 0's parameters, optimizer state and step count t, on every rank.
    pub(super) fn broadcast_state(&mut self, c: &dyn Collective) -> Result<()> {
        let g = self.gpu_state()?;
        for t in [&g.params].into_iter().chain(&g.opt_state) {
            let mut values = t.to_vec()?;
            c.broadcast_f32(&mut values, 0)?;
            t.write(&values)?;
        }
        // t as f32: exact below 2²⁴ steps.
        let step = g.global_step.to_vec_u32()?;
        let mut t = [step[0] as f32];
        c.broadcast_f32(&mut t, 0)?;
        g.global_step.write_u32(&[t[0] as u32, step[1]])
    }
}

/// The salt of rank `rank`'s dropout masks: none on rank 0 (so one rank draws plain `fit`'s
/// masks), a hash of the rank on the others.
fn rank_mask_salt(rank: usize) -> u32 {
    match rank {
        0 => 0,
        r => crate::cpu::dropout::pcg_hash(0x5A17_0000 ^ r as u32),
    }
}

/// FNV-1a: a hash every rank computes alike (std's hashers promise no stability).
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Rank `rank`'s share of `rows` rows split over `size` ranks as evenly as it goes: (first, count).
fn shard(rows: usize, rank: usize, size: usize) -> (usize, usize) {
    let (each, extra) = (rows / size, rows % size);
    (rank * each + rank.min(extra), each + (rank < extra) as usize)
}

/// A rank's part of one global batch: its gradient step (none where its shard is empty), its
/// rows and the global batch's, and the batch statistics its batch norms leave (each layer's
/// mean, then its unbiased variance).
struct ShardStep {
    plan: Option<Plan>,
    rows: usize,
    global_rows: usize,
    stats: Vec<Tensor>,
}

/// The batch-norm statistics a step's forward leaves in `buf`, in layer order: each layer's
/// mean, then its unbiased variance (what the update folds into the running ones).
pub(super) fn batch_stats(buf: &BatchBuffers) -> Vec<Tensor> {
    buf.blocks.iter().filter_map(|b| b.norm.as_ref()).flat_map(|n| [n.mean.clone(), n.pending_var.clone()]).collect()
}

/// The data-parallel steps of one rank: the data uploaded once; the rank's rows of each
/// global batch gathered through a rank-local order, so that the one-process gradient plans
/// run unchanged on them.
pub(super) struct DataParallelSteps<'c> {
    exchange: GradientExchange<'c>,
    gpu: Gpu,
    rows: usize,
    shuffle: bool,
    /// The global batch (all ranks) of a full step.
    global_batch: usize,
    full_steps: usize,
    /// This rank's row order: its shard of every global batch, in step order.
    order: Tensor,
    /// A full batch's gradient step for even, then odd steps.
    full: [ShardStep; 2],
    tail: Option<ShardStep>,
    validation: Option<(GpuData, EvalPlans)>,
    _buffers: Vec<BatchBuffers>,
}

/// What every data-parallel step does after this rank's gradient plan ran (fit's and
/// fit_tokens'): one readback, one all-reduce, one upload, then the update.
pub(super) struct GradientExchange<'c> {
    pub(super) collective: &'c dyn Collective,
    /// This rank's cancel flag (`FitOptions::cancel`), sent with every step's all-reduce.
    cancel: Option<&'c AtomicBool>,
    /// Set on every rank by the step whose all-reduce carried a rank's cancel: the epoch loop's
    /// `cancel`.
    stop: &'c AtomicBool,
    gpu: Gpu,
    /// The update (unguarded: the same for every batch size), with batch norm's fold of the
    /// batch statistics it reads from `update_stats` into the running ones.
    update: Plan,
    update_stats: Vec<Tensor>,
}

impl<'c> GradientExchange<'c> {
    pub(super) fn new(
        model: &Sequential,
        collective: &'c dyn Collective,
        cancel: Option<&'c AtomicBool>,
        stop: &'c AtomicBool,
        update: Plan,
        update_stats: Vec<Tensor>,
    ) -> Result<GradientExchange<'c>> {
        let gpu = model.gpu_state()?.gpu.clone();
        Ok(GradientExchange { collective, cancel, stop, gpu, update, update_stats })
    }

    /// Whether a rank's cancel stopped the run (at the all-reduce of a step it then dropped).
    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The step after this rank's gradient plan ran, on a `shard`: (its batch statistics, its
    /// share of the global batch's rows), or on no rows (no plan ran). The gradients, summed
    /// across ranks weighted by each shard's share — the global batch's mean — go back to the
    /// device, every rank folds the same averaged batch statistics into its running ones (the
    /// replicas stay identical), and runs the update. Returns false, having dropped the update
    /// and given back t, where a rank's cancel rode in the all-reduce.
    pub(super) fn reduce_and_update(&self, model: &Sequential, shard: Option<(&[Tensor], f32)>) -> Result<bool> {
        let g = model.gpu_state()?;
        let grads = g.grads.view(0, &[model.layout.trainable])?;
        // One readback, one all-reduce, one upload; batch norm's statistics ride along.
        let mut values = match shard {
            Some((stats, share)) => {
                let mut values = grads.to_vec()?;
                for stat in stats {
                    values.extend(stat.to_vec()?);
                }
                if share != 1.0 {
                    values.iter_mut().for_each(|v| *v *= share);
                }
                values
            }
            None => {
                // No rows here this step: a zero gradient, and t advanced as the others'
                // gathers advance theirs.
                let step = g.global_step.to_vec_u32()?;
                g.global_step.write_u32(&[step[0] + 1, step[1]])?;
                let stats: usize = self.update_stats.iter().map(Tensor::len).sum();
                vec![0.0; grads.len() + stats]
            }
        };
        // The stop flag rides in the same all-reduce: summed, it says whether any rank's
        // cancel is set.
        let cancelled = self.cancel.is_some_and(|c| c.load(Ordering::Relaxed));
        values.push(cancelled as u8 as f32);
        self.collective.all_reduce_sum_f32(&mut values)?;
        if values.pop().is_some_and(|ranks| ranks > 0.0) {
            // Every rank drops this step's update and gives back its t, and so stops with
            // the weights and t after the previous step, as plain fit stops between steps.
            let t = g.global_step.to_vec_u32()?;
            g.global_step.write_u32(&[t[0].saturating_sub(1), t[1]])?;
            self.stop.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        let (summed, mut stats) = values.split_at(grads.len());
        grads.write(summed)?;
        for stat in &self.update_stats {
            let (these, rest) = stats.split_at(stat.len());
            stat.write(these)?;
            stats = rest;
        }
        self.gpu.run(&[&self.update])?;
        Ok(true)
    }

    /// The epoch's running sums over every rank's rows.
    pub(super) fn totals(&self, model: &Sequential) -> Result<RunningSums> {
        let local = model.read_totals()?;
        let mut sums =
            [local.loss as f32, local.correct as f32, local.skipped_batches as f32, local.skipped_rows as f32];
        self.collective.all_reduce_sum_f32(&mut sums)?;
        Ok(RunningSums {
            loss: sums[0] as f64,
            correct: sums[1] as f64,
            skipped_batches: sums[2] as usize,
            skipped_rows: sums[3] as usize,
            stopped: self.stopped(),
        })
    }

    /// Rank 0's validation figures on every rank (each evaluates its own copy), so that early
    /// stopping and the non-finite check decide alike everywhere.
    pub(super) fn rank0_figures(&self, (loss, accuracy): (f32, f32)) -> Result<(f32, f32)> {
        let mut figures = [loss, accuracy];
        self.collective.broadcast_f32(&mut figures, 0)?;
        Ok((figures[0], figures[1]))
    }
}

impl<'c> DataParallelSteps<'c> {
    pub(super) fn new(
        model: &Sequential,
        train: &Dataset,
        validation: Option<&Dataset>,
        opts: &FitOptions<'c>,
        optimizer: &Optimizer,
        collective: &'c dyn Collective,
        stop: &'c AtomicBool,
    ) -> Result<DataParallelSteps<'c>> {
        let (rank, size) = (collective.rank(), collective.size());
        let gpu = model.gpu_state()?.gpu.clone();
        let n = train.rows;
        let global_batch = opts.batch_size.saturating_mul(size).min(n);
        let (full_steps, tail_rows) = (n / global_batch, n % global_batch);
        let (_, local) = shard(global_batch, rank, size);
        let (_, local_tail) = shard(tail_rows, rank, size);
        if local == 0 {
            return Err(WgnnError::invalid(OP, format!("{n} training rows for {size} ranks: rank {rank} has none")));
        }
        model.check_batch_fits(&gpu, train, local)?;
        let data = model.upload_data(&gpu, train)?;
        let order = Tensor::zeros_u32(&gpu, &[full_steps * local + local_tail])?;
        let normed = model.blocks.iter().any(|b| b.norm.is_some());
        if normed && (local < 2 || local_tail == 1) {
            let tail = if local_tail == 1 { format!(" and {local_tail} in the last") } else { String::new() };
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "batch norm needs at least 2 rows per rank in every batch, but rank {rank} has {local} rows in a \
                     full batch{tail} ({n} rows in global batches of {global_batch} over {size} ranks): choose \
                     another batch size"
                ),
            ));
        }
        let mut buf = model.batch_buffers(&gpu, &data, local, true)?;
        let mut full_plan =
            |parity| model.gradient_step_plan(&data, &order, &mut buf, local, local, parity, false).map(Some);
        let (even, odd) = (full_plan(0)?, full_plan(1)?);
        let update_stats = batch_stats(&buf);
        let full = [
            ShardStep { plan: even, rows: local, global_rows: global_batch, stats: update_stats.clone() },
            ShardStep { plan: odd, rows: local, global_rows: global_batch, stats: update_stats.clone() },
        ];
        let update = model.update_plan(&buf, local, optimizer, false, opts.clip_norm)?;
        let mut buffers = vec![buf];
        let tail = match (tail_rows, local_tail) {
            (0, _) => None,
            (_, 0) => Some(ShardStep { plan: None, rows: 0, global_rows: tail_rows, stats: Vec::new() }),
            _ => {
                let mut buf = model.batch_buffers(&gpu, &data, local_tail, true)?;
                let plan =
                    model.gradient_step_plan(&data, &order, &mut buf, local_tail, local, full_steps % 2, false)?;
                let stats = batch_stats(&buf);
                buffers.push(buf);
                Some(ShardStep { plan: Some(plan), rows: local_tail, global_rows: tail_rows, stats })
            }
        };
        let validation = match validation {
            Some(v) => {
                let data = model.upload_data(&gpu, v)?;
                let plans = model.eval_plans(&data)?;
                Some((data, plans))
            }
            None => None,
        };
        let exchange = GradientExchange::new(model, collective, opts.cancel, stop, update, update_stats)?;
        Ok(DataParallelSteps {
            exchange,
            gpu,
            rows: n,
            shuffle: opts.shuffle,
            global_batch,
            full_steps,
            order,
            full,
            tail,
            validation,
            _buffers: buffers,
        })
    }

    /// This rank's rows of every global batch of the epoch's order, in step order.
    fn local_order(&self, global: &[u32]) -> Vec<u32> {
        let (rank, size) = (self.exchange.collective.rank(), self.exchange.collective.size());
        let mut local = Vec::with_capacity(self.order.len());
        for batch in global.chunks(self.global_batch) {
            let (first, count) = shard(batch.len(), rank, size);
            local.extend_from_slice(&batch[first..first + count]);
        }
        local
    }
}

impl Steps for DataParallelSteps<'_> {
    fn start_epoch(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        let global = epoch_order(self.rows, self.shuffle, model.seed, epoch);
        self.order.write_u32(&self.local_order(&global))?;
        model.reset_epoch()
    }

    fn run(&mut self, model: &mut Sequential, first: usize, count: usize) -> Result<RunningSums> {
        for step in first..first + count {
            if self.exchange.stopped() {
                break;
            }
            let shard = match step < self.full_steps {
                true => &self.full[step % 2],
                false => self
                    .tail
                    .as_ref()
                    .ok_or_else(|| WgnnError::invalid(OP, "a step past the epoch (an internal error)"))?,
            };
            let ran = match &shard.plan {
                Some(plan) => {
                    self.gpu.run(&[plan])?;
                    Some((shard.stats.as_slice(), shard.rows as f32 / shard.global_rows as f32))
                }
                None => None,
            };
            if !self.exchange.reduce_and_update(model, ran)? {
                break;
            }
        }
        self.exchange.totals(model)
    }

    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>> {
        let Some((_, plans)) = &self.validation else { return Ok(None) };
        self.exchange.rank0_figures(model.run_eval(plans)?).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::shard;

    #[test]
    fn shards_cover_the_batch_in_order() {
        for (rows, size) in [(8, 2), (7, 2), (5, 4), (3, 4), (64, 3)] {
            let mut next = 0;
            for rank in 0..size {
                let (first, count) = shard(rows, rank, size);
                assert_eq!(first, next, "rows {rows} size {size} rank {rank}");
                assert!(count == rows / size || count == rows / size + 1);
                next += count;
            }
            assert_eq!(next, rows);
        }
    }
}
