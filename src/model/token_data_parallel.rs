//! Data-parallel `fit_tokens` over the ranks of a [`Collective`]: every rank draws its shard of
//! each step's windows (rows `[r·b, (r+1)·b)` of the batch one process would draw at R·b), and the
//! gradients are summed across ranks once per step before the same update everywhere — the
//! start-up checks, the broadcast, the exchange and the abort are data-parallel `fit`'s
//! (`data_parallel.rs`).

use std::sync::atomic::AtomicBool;

use super::data_parallel::{batch_stats, fnv1a, GradientExchange};
use super::fit_tokens::TokenShape;
use super::gpu_tokens::TokenEval;
use super::*;
use crate::data::TokenDataset;
use crate::kernels::token_batch::GpuTokens;

const OP: &str = "fit_tokens_data_parallel";

impl Sequential {
    /// [`Sequential::fit_tokens`] on every rank of `collective` together (each process calls it
    /// with the same model, data and options), PyTorch's DDP over nanoGPT's loop.
    /// `opts.batch_size` is the windows of one rank: step t trains on the global batch of
    /// `size × batch_size` windows that [`TokenDataset::windows`] draws at (seed, t), rank r on
    /// its rows `[r·b, (r+1)·b)` ([`TokenDataset::windows_from`]) — so R ranks at batch b train
    /// on exactly the windows one process draws at R·b. Each rank's gradient is its shard's mean;
    /// they are read back, averaged across ranks (the global batch's mean), uploaded, and every
    /// rank runs the same update (clipping then sees the global gradient's norm). t advances on
    /// every rank alike. The history's training loss is over all ranks' windows; the validation
    /// is sharded the same way (rank r evaluates rows `[r·b, (r+1)·b)` of each fixed validation
    /// batch) and its figures averaged across ranks: one process's at R·b, at 1/R of the cost
    /// each. Only rank 0 prints (`verbose`) and writes checkpoints.
    ///
    /// Dropout draws masks of each rank's own: rank 0's are plain `fit_tokens`' at batch b, the
    /// others' seeds are salted by the rank (as DDP's per-rank RNG), so 2 ranks with dropout do
    /// not draw one process's masks at 2b.
    ///
    /// As [`Sequential::fit_data_parallel`]: the ranks compare a hash of the architecture, the
    /// data (its length, vocabulary and tokens) and the options at start and refuse a mismatch
    /// naming it; rank 0's weights, optimizer state and t are broadcast; `cancel` set on any
    /// rank stops every rank after the same step; an error on one rank ends the job through
    /// [`Collective::abort_job`]; checkpoints record the world size, and a resumed run on
    /// another number of ranks is refused naming both. Not supported (refused): the CPU
    /// backend, `skip_nonfinite_batches`.
    pub fn fit_tokens_data_parallel(
        &mut self,
        train: &TokenDataset,
        validation: Option<&TokenDataset>,
        opts: &TokenFitOptions,
        collective: &dyn Collective,
    ) -> Result<History> {
        self.fit_tokens_data_parallel_with(train, validation, opts, collective, &mut Silent)
    }

    /// [`Sequential::fit_tokens_data_parallel`] reporting to `observer` on every rank (the
    /// console, with `verbose`, on rank 0 only).
    pub fn fit_tokens_data_parallel_with(
        &mut self,
        train: &TokenDataset,
        validation: Option<&TokenDataset>,
        opts: &TokenFitOptions,
        collective: &dyn Collective,
        observer: &mut dyn Observer,
    ) -> Result<History> {
        let describe = |d: &TokenDataset| {
            let bytes: Vec<u8> = d.tokens().iter().flat_map(|t| t.to_le_bytes()).collect();
            format!("{} tokens, vocabulary {}, hash {:016x}", d.len(), d.vocab_size(), fnv1a(&bytes))
        };
        let data = format!("{}; validation {}", describe(train), validation.map_or("none".into(), describe));
        let seed = opts.seed.unwrap_or(self.seed);
        let options = format!(
            "{} {} {} {} {seed} {:?} {}",
            opts.batch_size,
            opts.steps,
            opts.eval_every,
            opts.eval_batches,
            opts.clip_norm,
            opts.skip_nonfinite_batches
        );
        let same = [
            ("the training and validation tokens (length, vocabulary, contents)", data),
            (
                "the fit options (batch size, steps, eval_every, eval_batches, seeds, clipping, backend, resume)",
                options,
            ),
        ];
        self.check_same_on_every_rank(OP, same, collective)?;
        self.refuse_unsupported_parallel(OP, opts.skip_nonfinite_batches, collective)?;
        let rank0 = collective.rank() == 0;
        let opts = TokenFitOptions {
            verbose: opts.verbose && rank0,
            checkpoint: if rank0 { opts.checkpoint } else { None },
            ..*opts
        };
        self.train_as_rank(collective, |model| {
            model.fit_tokens_on(train, validation, &opts, observer, Some(collective))
        })
    }
}

/// The data-parallel token steps of one rank: the tokens uploaded once, one gradient plan
/// (this rank's windows at (seed, t), t + 1, forward, loss, backward) and the exchange.
pub(super) struct TokenDataParallelSteps<'c> {
    exchange: GradientExchange<'c>,
    gpu: Gpu,
    gradient: Plan,
    /// Batch norm's statistics the gradient plan leaves, averaged across ranks.
    stats: Vec<Tensor>,
    /// 1 / ranks: each rank's gradient is the mean over its shard, of equal size.
    share: f32,
    /// This rank's shard of the fixed validation windows.
    validation: Option<TokenEval>,
    _tokens: GpuTokens,
    _buffers: BatchBuffers,
}

impl<'c> TokenDataParallelSteps<'c> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        model: &Sequential,
        train: &TokenDataset,
        validation: Option<(&TokenDataset, usize)>,
        shape: TokenShape,
        seed: u64,
        opts: &FitOptions<'c>,
        optimizer: &Optimizer,
        collective: &'c dyn Collective,
        stop: &'c AtomicBool,
    ) -> Result<TokenDataParallelSteps<'c>> {
        let (rank, size) = (collective.rank(), collective.size());
        let first = rank.checked_mul(shape.batch).ok_or_else(|| {
            WgnnError::invalid(OP, format!("rank {rank} × {} windows: past the rows a batch can number", shape.batch))
        })?;
        let gpu = model.gpu_state()?.gpu.clone();
        let tokens = GpuTokens::upload(&gpu, train)?;
        let mut buf = model.token_buffers(&gpu, shape.batch, true)?;
        let gradient = model.token_gradient_plan(&tokens, &mut buf, seed, first, false)?;
        let stats = batch_stats(&buf);
        let update = model.update_plan(&buf, buf.y.len(), optimizer, false, opts.clip_norm)?;
        let validation = validation.map(|(v, batches)| model.token_eval(v, batches, shape, first)).transpose()?;
        let exchange = GradientExchange::new(model, collective, opts.cancel, stop, update, stats.clone())?;
        Ok(TokenDataParallelSteps {
            exchange,
            gpu,
            gradient,
            stats,
            share: 1.0 / size as f32,
            validation,
            _tokens: tokens,
            _buffers: buf,
        })
    }
}

impl Steps for TokenDataParallelSteps<'_> {
    fn start_epoch(&mut self, model: &mut Sequential, _epoch: usize) -> Result<()> {
        model.reset_epoch()
    }

    fn run(&mut self, model: &mut Sequential, _first: usize, count: usize) -> Result<RunningSums> {
        for _ in 0..count {
            if self.exchange.stopped() {
                break;
            }
            self.gpu.run(&[&self.gradient])?;
            if !self.exchange.reduce_and_update(model, Some((&self.stats, self.share)))? {
                break;
            }
        }
        self.exchange.totals(model)
    }

    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>> {
        let Some(eval) = &self.validation else { return Ok(None) };
        // The shards' means, of equal sizes, averaged: the mean over every rank's windows.
        let (loss, accuracy) = model.run_token_eval(eval)?;
        let mut figures = [loss * self.share, accuracy * self.share];
        self.exchange.collective.all_reduce_sum_f32(&mut figures)?;
        Ok(Some((figures[0], figures[1])))
    }
}
