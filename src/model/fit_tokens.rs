//! Training a token model on a [`TokenDataset`], nanoGPT's loop: iterations rather than epochs,
//! each step a batch of random windows drawn from the step counter t (on the GPU by
//! `token_windows`, on the CPU from the same hash), train and validation loss every `eval_every`
//! steps, the validation over a fixed set of windows (the same every time). It runs through
//! `fit`'s loop (`fit.rs`'s `fit_loop`) with an "epoch" of `eval_every` steps: the progress
//! ticks, the non-finite checks, the history, checkpoints, resume, early stopping and
//! cancellation are fit's. Its steps are `gpu_tokens.rs`'s or the CPU's below.

use super::*;
use crate::data::TokenDataset;

/// Options of [`Sequential::fit_tokens`]; start from `..Default::default()`.
///
/// A [`History`] row is written every `eval_every` steps: its `epoch` is the count of such
/// periods (row k comes after step k·`eval_every`), `train_loss` the mean over the period's
/// training tokens, `val_loss` the mean over the fixed validation windows, `samples_per_second`
/// tokens per second. A checkpoint's "epoch" is the same count; a resumed run continues from its
/// step t, whose windows it draws next.
#[derive(Clone, Copy, Debug)]
pub struct TokenFitOptions<'a> {
    /// Windows per step (nanoGPT's `batch_size`).
    pub batch_size: usize,
    /// Training steps in all (nanoGPT's `max_iters`); a multiple of `eval_every`.
    pub steps: usize,
    /// Steps between evaluations (nanoGPT's `eval_interval`); 0: once, at the end.
    pub eval_every: usize,
    /// Validation windows' batches per evaluation (nanoGPT's `eval_iters`), drawn once from a
    /// fixed seed: every evaluation sees the same windows.
    pub eval_batches: usize,
    /// The seed of the training windows (None: the model's seed); the windows of step t are
    /// [`TokenDataset::windows`]`(t, seed, …)`.
    pub seed: Option<u64>,
    /// As [`FitOptions`]'s fields of the same names.
    pub progress_every: usize,
    pub checkpoint: Option<Checkpointing<'a>>,
    pub early_stopping: Option<EarlyStopping>,
    pub skip_nonfinite_batches: bool,
    pub clip_norm: Option<f32>,
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
    pub verbose: bool,
}

impl Default for TokenFitOptions<'_> {
    fn default() -> Self {
        TokenFitOptions {
            batch_size: 12,
            steps: 100,
            eval_every: 0,
            eval_batches: 20,
            seed: None,
            progress_every: 0,
            checkpoint: None,
            early_stopping: None,
            skip_nonfinite_batches: false,
            clip_norm: None,
            cancel: None,
            verbose: false,
        }
    }
}

/// The seed the validation windows are drawn from: fixed, so every evaluation (and every run)
/// sees the same ones: batch k is [`TokenDataset::windows`]`(k, VALIDATION_WINDOW_SEED, …)`.
pub const VALIDATION_WINDOW_SEED: u64 = 0x7A1_D0C5;

/// What a token step and evaluation need of the model and the data: the block, the batch.
#[derive(Clone, Copy)]
pub(super) struct TokenShape {
    pub(super) batch: usize,
    pub(super) block: usize,
}

impl Sequential {
    /// Checks `data` against the token model: it reads ids (an embedding first), its vocabulary
    /// holds the data's ids and its output has a logit for each, and windows of the model's block
    /// can be drawn `batch` at a time. Errors name the layer or the data set.
    pub(super) fn check_tokens(&self, op: &str, data: &TokenDataset, batch: usize) -> Result<TokenShape> {
        let Some(e) = self.token_embedding() else {
            return Err(WgnnError::invalid(
                op,
                format!(
                    "the model's first layer is {}, not an embedding: it does not read token ids",
                    self.layers.first().map_or(String::new(), Layer::describe)
                ),
            ));
        };
        if data.vocab_size() > e.vocab {
            return Err(WgnnError::invalid(
                op,
                format!(
                    "{} has a vocabulary of {} ids, past layer 0 ({})'s {}",
                    data.source(),
                    data.vocab_size(),
                    e.describe(),
                    e.vocab
                ),
            ));
        }
        let classes = self.output_classes();
        if self.loss_positions() != self.input_dim() || classes < data.vocab_size() {
            return Err(WgnnError::invalid(
                op,
                format!(
                    "next-token training needs sparse cross-entropy on a [{}, ≥ {}] output, got {:?} under {}",
                    self.input_dim(),
                    data.vocab_size(),
                    self.shapes.last().map(Vec::as_slice).unwrap_or_default(),
                    self.loss().name()
                ),
            ));
        }
        let block = self.input_dim();
        data.check_windows(op, batch, block)?;
        Ok(TokenShape { batch, block })
    }

    /// Trains a token model (an embedding first, compiled with sparse cross-entropy on its
    /// `[T, V]` output) on `train` for `opts.steps` steps, evaluating on `validation`'s fixed
    /// windows every `opts.eval_every` steps (see [`TokenFitOptions`]). The optimizer's schedule
    /// (warmup, cosine) runs over the steps as compiled; clipping and decay masks as `fit`'s.
    ///
    /// ```
    /// use wgnn::model::{Backend, InputShape, Loss, Optimizer, Sequential, TokenFitOptions};
    /// use wgnn::{Activation, TokenDataset};
    /// let text = TokenDataset::from_text(b"abcabcabcabcabcabcabcabcabcabc", "abc")?;
    /// let (train, val) = text.split(0.8)?;
    /// let mut model = Sequential::new(InputShape::tokens(4), 1)
    ///     .embedding(text.vocab_size(), 8)
    ///     .positional_embedding(4)
    ///     .dense(8, Activation::Relu)
    ///     .dense_tied_to_embedding()
    ///     .build(&Backend::Cpu)?;
    /// model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-2))?;
    /// let opts = TokenFitOptions { batch_size: 4, steps: 20, eval_every: 10, eval_batches: 2, ..Default::default() };
    /// let history = model.fit_tokens(&train, Some(&val), &opts)?;
    /// assert_eq!(history.epochs.len(), 2);
    /// # Ok::<(), wgnn::WgnnError>(())
    /// ```
    pub fn fit_tokens(
        &mut self,
        train: &TokenDataset,
        validation: Option<&TokenDataset>,
        opts: &TokenFitOptions,
    ) -> Result<History> {
        self.fit_tokens_with(train, validation, opts, &mut Silent)
    }

    /// [`Sequential::fit_tokens`] reporting to `observer` (and the console with `verbose`).
    pub fn fit_tokens_with(
        &mut self,
        train: &TokenDataset,
        validation: Option<&TokenDataset>,
        opts: &TokenFitOptions,
        observer: &mut dyn Observer,
    ) -> Result<History> {
        self.fit_tokens_on(train, validation, opts, observer, None)
    }

    /// [`Sequential::fit_tokens_with`] on one process or (`parallel`) data-parallel over a
    /// collective's ranks, each drawing its shard of every step's windows.
    pub(super) fn fit_tokens_on(
        &mut self,
        train: &TokenDataset,
        validation: Option<&TokenDataset>,
        opts: &TokenFitOptions,
        observer: &mut dyn Observer,
        parallel: Option<&dyn Collective>,
    ) -> Result<History> {
        const OP: &str = "fit_tokens";
        let (_, optimizer) =
            self.compiled.ok_or_else(|| WgnnError::invalid(OP, "call compile() before fit_tokens()"))?;
        if opts.steps == 0 || opts.batch_size == 0 {
            return Err(WgnnError::invalid(OP, "steps and batch size must be at least 1"));
        }
        let every = if opts.eval_every == 0 { opts.steps } else { opts.eval_every };
        if !opts.steps.is_multiple_of(every) {
            return Err(WgnnError::invalid(
                OP,
                format!("steps ({}) must be a multiple of eval_every ({every})", opts.steps),
            ));
        }
        if validation.is_some() {
            check_validation_batches(OP, "eval_batches", opts.eval_batches)?;
        }
        let shape = self.check_tokens(OP, train, opts.batch_size)?;
        if let Some(v) = validation {
            self.check_tokens("fit_tokens (validation data)", v, opts.batch_size)?;
        }
        if self.blocks.iter().any(|b| b.norm.is_some()) && shape.batch < 2 {
            return Err(WgnnError::invalid(OP, "batch norm needs at least 2 windows per training batch"));
        }
        // fit's loop over "epochs" of `every` steps, its batches counted in tokens (of every rank).
        let ranks = parallel.map_or(1, |c| c.size());
        let tokens_per_step = (shape.batch * shape.block).checked_mul(ranks).ok_or_else(|| {
            WgnnError::invalid(
                OP,
                format!("{ranks} ranks × {} windows of {} tokens: too many", shape.batch, shape.block),
            )
        })?;
        let fit = FitOptions {
            epochs: opts.steps / every,
            batch_size: tokens_per_step,
            shuffle: false,
            validation: Validation::None,
            progress_every: opts.progress_every,
            checkpoint: opts.checkpoint,
            early_stopping: opts.early_stopping,
            skip_nonfinite_batches: opts.skip_nonfinite_batches,
            clip_norm: opts.clip_norm,
            cancel: opts.cancel,
            verbose: opts.verbose,
        };
        if let Some(max_norm) = fit.clip_norm {
            crate::config::hyper(OP, "clip_norm", max_norm, "> 0", max_norm > 0.0)?;
        }
        if fit.early_stopping.is_some() && validation.is_none() {
            return Err(WgnnError::invalid(OP, "early stopping needs validation data"));
        }
        // Data-parallel fit checks the world size at start-up, on every rank alike.
        if parallel.is_none() {
            self.check_resumed_world_size(OP, 1)?;
        }
        let first_epoch = self.resume_point.as_ref().map_or(1, |r| r.epoch + 1);
        if fit.epochs < first_epoch {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "the model resumed after step {}: steps ({}) must be larger to train further",
                    (first_epoch - 1) * every,
                    opts.steps
                ),
            ));
        }
        if let Some(c) = &fit.checkpoint {
            if c.every_epochs == 0 && !c.on_best {
                return Err(WgnnError::invalid(OP, "checkpointing needs every_epochs ≥ 1 or on_best"));
            }
        }
        let _lock = fit.checkpoint.map(|c| CheckpointDirLock::acquire(c.dir)).transpose()?;
        let history = self.resume_point.take().map(|r| r.history).unwrap_or_default();
        self.fit_record = Some(FitRecord {
            batch_size: shape.batch,
            rows: train.len(),
            validation_fraction: None,
            world_size: ranks,
        });
        let run = Run { first_epoch, history, validation: None, optimizer };
        let seed = opts.seed.unwrap_or(self.seed);
        let val = validation.map(|v| (v, opts.eval_batches));
        let rows = every * tokens_per_step;
        let mut console;
        let mut both;
        let observer: &mut dyn Observer = match fit.verbose {
            true => {
                console = ConsoleProgress::for_loss(self.loss());
                both = Both { first: observer, second: &mut console };
                &mut both
            }
            false => observer,
        };
        match (&self.state, parallel) {
            (State::Gpu(_), Some(c)) => {
                // Set alike on every rank once any rank's `cancel` is: what the loop watches.
                let stop = std::sync::atomic::AtomicBool::new(false);
                let mut steps = token_data_parallel::TokenDataParallelSteps::new(
                    self, train, val, shape, seed, &fit, &optimizer, c, &stop,
                )?;
                let global = FitOptions { cancel: Some(&stop), ..fit };
                self.fit_loop(rows, run, &global, observer, &mut steps)
            }
            (State::Gpu(_), None) => {
                let mut steps = gpu_tokens::GpuTokenSteps::new(self, train, val, shape, seed, &fit, &optimizer)?;
                self.fit_loop(rows, run, &fit, observer, &mut steps)
            }
            (State::Cpu(_), Some(_)) => {
                Err(WgnnError::invalid(OP, "data-parallel training on the CPU backend (an internal error)"))
            }
            (State::Cpu(_), None) => {
                self.check_cpu_pass(OP, shape.batch, true)?;
                let mut steps = CpuTokenSteps { train, val, shape, seed, optimizer, fit, sums: RunningSums::default() };
                self.fit_loop(rows, run, &fit, observer, &mut steps)
            }
        }
        .map_err(|e| io::with_checkpoint_hint(e, fit.checkpoint.as_ref()))
    }

    /// (mean loss, accuracy) per token over `batches` batches of `batch` windows of `data`, the
    /// fixed ones [`Sequential::fit_tokens`] validates on.
    pub fn evaluate_tokens(&self, data: &TokenDataset, batch: usize, batches: usize) -> Result<(f32, f32)> {
        const OP: &str = "evaluate_tokens";
        self.compiled.ok_or_else(|| WgnnError::invalid(OP, "call compile() first"))?;
        check_validation_batches(OP, "batches", batches)?;
        let shape = self.check_tokens(OP, data, batch)?;
        match &self.state {
            State::Gpu(_) => self.run_token_eval(&self.token_eval(data, batches, shape, 0)?),
            State::Cpu(_) => self.evaluate_tokens_cpu(data, batches, shape),
        }
    }

    /// The CPU reference of the fixed validation: the windows of steps 0..batches at
    /// [`VALIDATION_WINDOW_SEED`].
    fn evaluate_tokens_cpu(&self, data: &TokenDataset, batches: usize, shape: TokenShape) -> Result<(f32, f32)> {
        self.check_cpu_pass("evaluate_tokens", shape.batch, false)?;
        let (mut loss, mut correct) = (0.0f64, 0.0f64);
        for k in 0..batches {
            let (x, y) = data.windows(k as u32, VALIDATION_WINDOW_SEED, shape.batch, shape.block)?;
            let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let outputs = self.forward_cpu("evaluate_tokens", &x, shape.batch)?;
            // The loss only: what act′ reads (the second argument) enters the discarded gradient.
            let (loss_rows, _, correct_rows) = self.loss_cpu(&outputs, &outputs, &y, None, 1.0)?;
            loss += loss_rows.iter().map(|&v| v as f64).sum::<f64>();
            correct += correct_rows.iter().map(|&v| v as f64).sum::<f64>();
        }
        let n = (batches * shape.batch * shape.block) as f64;
        Ok(((loss / n) as f32, (correct / n) as f32))
    }
}

/// The CPU reference's token steps: the windows of step t (the model's step counter), one
/// `train_step_cpu` each.
struct CpuTokenSteps<'d> {
    train: &'d TokenDataset,
    val: Option<(&'d TokenDataset, usize)>,
    shape: TokenShape,
    seed: u64,
    optimizer: Optimizer,
    fit: FitOptions<'d>,
    sums: RunningSums,
}

impl Steps for CpuTokenSteps<'_> {
    fn start_epoch(&mut self, _model: &mut Sequential, _epoch: usize) -> Result<()> {
        self.sums = RunningSums::default();
        Ok(())
    }

    fn run(&mut self, model: &mut Sequential, _first: usize, count: usize) -> Result<RunningSums> {
        let TokenShape { batch, block } = self.shape;
        for _ in 0..count {
            let t = match &model.state {
                State::Cpu(c) => c.step,
                State::Gpu(_) => return Err(WgnnError::invalid("fit_tokens", "not a CPU model (an internal error)")),
            };
            let (x, y) = self.train.windows(t, self.seed, batch, block)?;
            let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let (skip, clip) = (self.fit.skip_nonfinite_batches, self.fit.clip_norm);
            match model.train_step_cpu(&x, &y, None, &self.optimizer, skip, clip)? {
                Some((loss, correct)) => {
                    self.sums.loss += loss;
                    self.sums.correct += correct;
                }
                None => {
                    self.sums.skipped_batches += 1;
                    self.sums.skipped_rows += batch * block;
                }
            }
        }
        Ok(self.sums)
    }

    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>> {
        self.val.map(|(v, batches)| model.evaluate_tokens_cpu(v, batches, self.shape)).transpose()
    }
}

/// A count of validation batches: at least 1, and at most the u32 counter that numbers their
/// windows (past it the windows would repeat).
fn check_validation_batches(op: &str, name: &str, batches: usize) -> Result<()> {
    if batches == 0 || batches > u32::MAX as usize {
        return Err(WgnnError::invalid(op, format!("{name} must be from 1 to {}, got {batches}", u32::MAX)));
    }
    Ok(())
}
