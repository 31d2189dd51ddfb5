//! The epoch loop of `fit`, shared by both backends: progress ticks with the non-finite check,
//! validation, the history, checkpoints and early stopping.

use super::*;

/// What the epoch loop asks of a backend.
pub(super) trait Steps {
    /// Starts `epoch`: its row order, and zeroed running sums.
    fn start_epoch(&mut self, model: &mut Sequential, epoch: usize) -> Result<()>;
    /// Runs steps `first..first + count` of the epoch; returns the running sums since the epoch
    /// began.
    fn run(&mut self, model: &mut Sequential, first: usize, count: usize) -> Result<RunningSums>;
    /// (loss, accuracy) on the validation data, if there is any.
    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>>;
}

/// An epoch's running sums over the batches trained on (skipped ones are only counted).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RunningSums {
    pub(super) loss: f64,
    pub(super) correct: f64,
    pub(super) skipped_batches: usize,
    pub(super) skipped_rows: usize,
    /// The run stopped on cancel before its last step (data-parallel fit, which learns of a
    /// rank's cancel inside a step and drops that step): the tick is not reported.
    pub(super) stopped: bool,
}

/// A copy of the flat parameters (and running statistics): device-side on the GPU backend.
pub(super) enum Snapshot {
    Gpu(Tensor),
    Cpu(Vec<f32>),
}

impl Sequential {
    pub(super) fn snapshot(&self) -> Result<Snapshot> {
        Ok(match &self.state {
            State::Gpu(g) => {
                let copy = Tensor::zeros(&g.gpu, &[self.layout.total])?;
                copy.copy_from(&g.params)?;
                Snapshot::Gpu(copy)
            }
            State::Cpu(c) => Snapshot::Cpu(c.params.clone()),
        })
    }

    pub(super) fn save_snapshot(&self, snapshot: &mut Snapshot) -> Result<()> {
        match (&self.state, snapshot) {
            (State::Gpu(g), Snapshot::Gpu(copy)) => copy.copy_from(&g.params),
            (State::Cpu(c), Snapshot::Cpu(copy)) => {
                copy.copy_from_slice(&c.params);
                Ok(())
            }
            _ => Err(WgnnError::invalid("fit", "a weight snapshot from the other backend (an internal error)")),
        }
    }

    pub(super) fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        match (&mut self.state, snapshot) {
            (State::Gpu(g), Snapshot::Gpu(copy)) => g.params.copy_from(copy),
            (State::Cpu(c), Snapshot::Cpu(copy)) => {
                c.params.copy_from_slice(copy);
                Ok(())
            }
            _ => Err(WgnnError::invalid("fit", "a weight snapshot from the other backend (an internal error)")),
        }
    }

    /// Epochs `run.first_epoch..=opts.epochs` over `rows` training rows: progress ticks with the
    /// non-finite check, validation, the history, checkpoints and early stopping.
    pub(super) fn fit_loop(
        &mut self,
        rows: usize,
        run: Run,
        opts: &FitOptions,
        observer: &mut dyn Observer,
        backend: &mut dyn Steps,
    ) -> Result<History> {
        let Run { first_epoch, mut history, .. } = run;
        let batch = opts.batch_size.min(rows);
        let steps = rows.div_ceil(batch);
        let every = if opts.progress_every > 0 { opts.progress_every } else { steps.div_ceil(DEFAULT_TICKS).max(1) };
        let mut best = best_monitored(&history);
        let mut early = opts.early_stopping.map(EarlyStopState::new);
        // The weights at the last tick whose running loss was finite (`latest`) and at the one
        // before (`checked`: the steps since used them and their loss was finite).
        let (mut latest, mut checked) = (self.snapshot()?, self.snapshot()?);
        // The best epoch's weights, when early stopping restores them.
        let mut best_weights = match opts.early_stopping {
            Some(es) if es.restore_best_weights => Some(self.snapshot()?),
            _ => None,
        };
        let mut have_best = false;

        let cancelled = || opts.cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed));
        'epochs: for epoch in first_epoch..=opts.epochs {
            if cancelled() {
                history.cancelled_in = Some(epoch);
                break;
            }
            let started = Instant::now();
            backend.start_epoch(self, epoch)?;
            self.save_snapshot(&mut latest)?;
            self.save_snapshot(&mut checked)?;
            let (mut good, mut kept, mut done) = (0, 0, 0);
            let mut sums = RunningSums::default();
            // Means over the rows trained on (skipped batches' rows left out; all of them skipped
            // is a NaN mean).
            let mean = |sum: f64, samples: usize, skipped: usize| (sum / (samples - skipped) as f64) as f32;
            while done < steps {
                if cancelled() {
                    // The steps run so far stay in the weights; the epoch is not recorded.
                    history.cancelled_in = Some(epoch);
                    break 'epochs;
                }
                let count = every.min(steps - done);
                sums = backend.run(self, done, count)?;
                if sums.stopped {
                    history.cancelled_in = Some(epoch);
                    break 'epochs;
                }
                done += count;
                if !sums.loss.is_finite() {
                    self.restore_snapshot(&checked)?;
                    let what =
                        format!("the training loss became {} in epoch {epoch}, steps {}..={done}", sums.loss, good + 1);
                    let err = nonfinite_loss(&what, kept);
                    return Err(self.keep_after_divergence(err, opts, epoch, &history));
                }
                std::mem::swap(&mut latest, &mut checked);
                self.save_snapshot(&mut latest)?;
                (kept, good) = (good, done);
                let samples = (done * batch).min(rows);
                observer.on_progress(&Progress {
                    epoch,
                    epochs: opts.epochs,
                    step: done,
                    steps,
                    samples,
                    loss: mean(sums.loss, samples, sums.skipped_rows),
                    accuracy: mean(sums.correct, samples, sums.skipped_rows),
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            // With skipping, a diverged run's every batch is skipped and the tick check never
            // fires; nothing was learned, and that is no success either.
            if sums.skipped_batches == steps {
                let err = WgnnError::Training {
                    detail: format!(
                        "every batch of epoch {epoch} ({steps} of {steps}) had a non-finite loss and was skipped, so \
                         nothing was learned (try a lower learning rate); the weights are those at the start of \
                         that epoch"
                    ),
                };
                return Err(self.keep_after_divergence(err, opts, epoch, &history));
            }
            let seconds = started.elapsed().as_secs_f64();
            // Validation can take long (cnn_mnist's: ~17 s): a stop asked for during the last
            // steps is not kept waiting for it. The epoch's steps stay in the weights, unrecorded.
            if cancelled() {
                history.cancelled_in = Some(epoch);
                break;
            }
            let validating = Instant::now();
            let (val_loss, val_accuracy) = backend.validate(self)?.unzip();
            let val_seconds = if val_loss.is_some() { validating.elapsed().as_secs_f64() } else { 0.0 };
            if let Some(v) = val_loss.filter(|v| !v.is_finite()) {
                self.restore_snapshot(&checked)?;
                let err = nonfinite_loss(&format!("the validation loss became {v} after epoch {epoch}"), kept);
                return Err(self.keep_after_divergence(err, opts, epoch, &history));
            }
            let record = EpochRecord {
                epoch,
                train_loss: mean(sums.loss, rows, sums.skipped_rows),
                train_accuracy: mean(sums.correct, rows, sums.skipped_rows),
                val_loss,
                val_accuracy,
                seconds,
                val_seconds,
                samples_per_second: rows as f64 / seconds,
                skipped_batches: sums.skipped_batches,
            };
            observer.on_epoch_end(&record);
            history.push(record);
            self.checkpoint_after_epoch(opts, epoch, &history, &mut best)?;
            if let Some(es) = &mut early {
                let decision = history.last().map(|r| es.observe(r));
                if let (Some(d), Some(copy)) = (&decision, &mut best_weights) {
                    if d.improved {
                        self.save_snapshot(copy)?;
                        have_best = true;
                    }
                }
                if decision.is_some_and(|d| d.stop) {
                    history.stopped_early_at = Some(epoch);
                    break;
                }
            }
        }
        // A cancelled run keeps every step it ran (as `FitOptions::cancel` promises): the best
        // epoch's weights are put back only at the end of a run that was not stopped.
        if let (Some(copy), true, None) = (&best_weights, have_best, history.cancelled_in) {
            self.restore_snapshot(copy)?;
        }
        Ok(history)
    }
}

/// What `fit` hands the GPU or CPU loop.
pub(super) struct Run<'d> {
    pub(super) first_epoch: usize,
    /// The epochs before `first_epoch` (a resumed run's), to be continued.
    pub(super) history: History,
    pub(super) validation: Option<&'d Dataset>,
    pub(super) optimizer: Optimizer,
}

/// The loss checkpointing on the best epoch watches: validation if there is one, else training.
pub(super) fn monitored(r: &EpochRecord) -> f32 {
    r.val_loss.unwrap_or(r.train_loss)
}

pub(super) fn best_monitored(history: &History) -> f32 {
    history.epochs.iter().map(monitored).fold(f32::INFINITY, f32::min)
}

/// The error of a non-finite loss (`what`: which loss became what, and when), the weights put
/// back to those after step `kept` of the epoch.
pub(super) fn nonfinite_loss(what: &str, kept: usize) -> WgnnError {
    let kept =
        if kept == 0 { "at the start of that epoch".to_string() } else { format!("after step {kept} of that epoch") };
    WgnnError::Training {
        detail: format!("{what}; the weights are put back to those {kept}, the last ones seen to give a finite loss"),
    }
}

/// The order of an epoch's rows: shuffled from (seed, epoch) or in order.
pub(super) fn epoch_order(rows: usize, shuffle: bool, seed: u64, epoch: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..rows as u32).collect();
    if shuffle {
        Rng::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch as u64 + 1)).shuffle(&mut order);
    }
    order
}

/// Ticks per epoch when `progress_every` is 0.
pub(super) const DEFAULT_TICKS: usize = 20;

/// Early stopping's running state within one `fit`.
pub(super) struct EarlyStopState {
    pub(super) cfg: EarlyStopping,
    pub(super) best: Option<f32>,
    pub(super) wait: usize,
}

/// What an epoch's record means to [`EarlyStopState`].
pub(super) struct EarlyStopDecision {
    pub(super) improved: bool,
    pub(super) stop: bool,
}

impl EarlyStopState {
    fn new(cfg: EarlyStopping) -> EarlyStopState {
        EarlyStopState { cfg, best: None, wait: 0 }
    }

    fn observe(&mut self, r: &EpochRecord) -> EarlyStopDecision {
        let current = match self.cfg.monitor {
            Monitor::ValLoss => r.val_loss,
            Monitor::ValAccuracy => r.val_accuracy,
        };
        let improved = match (current, self.best) {
            (Some(c), _) if !c.is_finite() => false,
            (Some(_), None) => true,
            (Some(c), Some(b)) => match self.cfg.monitor {
                Monitor::ValLoss => c < b - self.cfg.min_delta,
                Monitor::ValAccuracy => c > b + self.cfg.min_delta,
            },
            (None, _) => false,
        };
        if improved {
            self.best = current;
            self.wait = 0;
        } else {
            self.wait += 1;
        }
        EarlyStopDecision { improved, stop: !improved && self.wait >= self.cfg.patience.max(1) }
    }
}

impl Sequential {
    /// After a divergence stop in `epoch`, with the weights put back: writes the checkpoint `opts`
    /// asks for (`last.safetensors`, as after the epochs completed) from those weights, so the
    /// run leaves what was asked, and says so in the error. The optimizer state goes with them
    /// where it is finite; where the divergence made it NaN it starts afresh (a checkpoint with
    /// non-finite state would not resume).
    pub(super) fn keep_after_divergence(
        &mut self,
        err: WgnnError,
        opts: &FitOptions,
        epoch: usize,
        history: &History,
    ) -> WgnnError {
        let (Some(c), WgnnError::Training { detail }) = (&opts.checkpoint, &err) else { return err };
        let path = c.last_path();
        let written = self
            .reset_nonfinite_optimizer_state()
            .and_then(|reset| self.save_checkpoint(&path, epoch - 1, history).map(|_| reset));
        let note = match written {
            Ok(reset) => format!(
                "; they are saved in {} as after epoch {}{}",
                path.display(),
                epoch - 1,
                if reset { ", with the optimizer state reset (it had become non-finite)" } else { "" }
            ),
            Err(e) => format!("; saving them to {} failed: {e}", path.display()),
        };
        WgnnError::Training { detail: format!("{detail}{note}") }
    }

    /// Zeroes the optimizer state (as `compile` leaves it) if any of it is not finite; whether
    /// it did.
    fn reset_nonfinite_optimizer_state(&mut self) -> Result<bool> {
        match &mut self.state {
            State::Gpu(g) => {
                let mut finite = true;
                for slot in &g.opt_state {
                    finite &= slot.to_vec()?.iter().all(|v| v.is_finite());
                }
                if !finite {
                    for slot in &g.opt_state {
                        slot.write(&vec![0.0; slot.len()])?;
                    }
                }
                Ok(!finite)
            }
            State::Cpu(c) => {
                let finite = c.opt_state.iter().flatten().all(|v| v.is_finite());
                if !finite {
                    c.opt_state.iter_mut().for_each(|slot| slot.fill(0.0));
                }
                Ok(!finite)
            }
        }
    }

    /// Writes the checkpoints `opts` asks for after `epoch` (the last entry of `history`).
    pub(super) fn checkpoint_after_epoch(
        &self,
        opts: &FitOptions,
        epoch: usize,
        history: &History,
        best: &mut f32,
    ) -> Result<()> {
        let Some(c) = &opts.checkpoint else { return Ok(()) };
        if c.every_epochs > 0 && epoch.is_multiple_of(c.every_epochs) {
            self.save_checkpoint(c.last_path(), epoch, history)?;
        }
        if c.on_best {
            if let Some(m) = history.last().map(monitored) {
                if m < *best {
                    *best = m;
                    self.save_checkpoint(c.best_path(), epoch, history)?;
                }
            }
        }
        Ok(())
    }
}
