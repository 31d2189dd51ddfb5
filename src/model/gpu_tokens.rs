//! The GPU backend's token steps for `fit_tokens`: the tokens uploaded once, one step plan built
//! once — windows drawn from t, t advanced, forward, per-position loss, backward, update — run
//! `count` times per submission with nothing uploaded between steps; and the fixed validation:
//! one plan over one batch's buffers, run `eval_batches` times from a counter of its own, so the
//! evaluation holds O(batch) memory whatever the number of batches.

use super::fit_tokens::{TokenShape, VALIDATION_WINDOW_SEED};
use super::*;
use crate::data::TokenDataset;
use crate::kernels::token_batch::{advance_step, token_windows, GpuTokens};

impl Sequential {
    /// The buffers of a token batch of `batch` windows: ids `[batch, T]` u32, a label per
    /// position.
    pub(super) fn token_buffers(&self, gpu: &Gpu, batch: usize, training: bool) -> Result<BatchBuffers> {
        let acts: Vec<Activation> = (0..self.blocks.len()).map(|i| self.applied_activation(i)).collect();
        self.check_batch_buffers(gpu, batch, training)?;
        let block = self.input_dim();
        BatchBuffers::new(gpu, &self.blocks, &acts, block, batch, training, None, false, Some(self.loss_positions()))
    }

    /// The forward of blocks `0..n` over `buf` (ids in `buf.x`); dropout masks key on t − `lag`.
    pub(super) fn token_forward(&self, buf: &BatchBuffers, lag: u32) -> Result<Plan> {
        let mut plan = Plan::new();
        for i in 0..self.blocks.len() {
            plan.extend(self.block_forward(i, buf, None, lag)?);
        }
        Ok(plan)
    }

    /// One training step on the windows of `tokens` drawn at (`seed`, t): windows, t + 1 (unless
    /// `guarded`: step_guard advances it for a kept batch), forward, loss, backward, update.
    pub(super) fn token_step_plan(
        &self,
        tokens: &GpuTokens,
        buf: &mut BatchBuffers,
        seed: u64,
        optimizer: &Optimizer,
        guarded: bool,
        clip_norm: Option<f32>,
    ) -> Result<Plan> {
        let mut plan = self.token_gradient_plan(tokens, buf, seed, 0, guarded)?;
        plan.extend(self.update_plan(buf, buf.y.len(), optimizer, guarded, clip_norm)?);
        Ok(plan)
    }

    /// [`Self::token_step_plan`] up to the gradients (windows, t + 1, forward, loss, backward),
    /// without the update: data-parallel training sums the gradients across ranks in between.
    /// The windows are rows `first..` of the step's batch (a rank's shard); the loss is the mean
    /// over this batch's positions.
    pub(super) fn token_gradient_plan(
        &self,
        tokens: &GpuTokens,
        buf: &mut BatchBuffers,
        seed: u64,
        first: usize,
        guarded: bool,
    ) -> Result<Plan> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        buf.y.set_max_u32(Some(tokens.vocab_size.saturating_sub(1) as u32));
        let buf = &*buf;
        let mut plan = token_windows(gpu, &tokens.tokens, &g.global_step, seed, first, &buf.x, &buf.y)?;
        if !guarded {
            plan.extend(advance_step(gpu, &g.global_step)?);
        }
        plan.extend(self.token_forward(buf, u32::from(!guarded))?);
        let totals = if guarded { g.batch_totals.clone() } else { g.totals.view(0, &[2])? };
        let last = self.blocks.len() - 1;
        plan.extend(self.loss_plan(buf, Some(buf.blocks[last].dz()?), &totals, 1.0 / buf.y.len() as f32)?);
        for i in (0..self.blocks.len()).rev() {
            plan.extend(self.block_backward(i, buf, None, true, u32::from(!guarded))?);
        }
        Ok(plan)
    }

    /// The fixed validation over `batches` batches of `data`'s windows (steps 0..batches at
    /// [`VALIDATION_WINDOW_SEED`]), rows `first..first + shape.batch` of each (a data-parallel
    /// rank's shard of them): one plan, rerun from its own counter.
    pub(super) fn token_eval(
        &self,
        data: &TokenDataset,
        batches: usize,
        shape: TokenShape,
        first: usize,
    ) -> Result<TokenEval> {
        let gpu = self.gpu_state()?.gpu.clone();
        let tokens = GpuTokens::upload(&gpu, data)?;
        let mut buf = self.token_buffers(&gpu, shape.batch, false)?;
        buf.y.set_max_u32(Some(tokens.vocab_size.saturating_sub(1) as u32));
        let counter = Tensor::zeros_u32(&gpu, &[1])?;
        let totals = Tensor::zeros(&gpu, &[2])?;
        let mut plan = token_windows(&gpu, &tokens.tokens, &counter, VALIDATION_WINDOW_SEED, first, &buf.x, &buf.y)?;
        plan.extend(advance_step(&gpu, &counter)?);
        plan.extend(self.token_forward(&buf, 0)?);
        plan.extend(self.loss_plan(&buf, None, &totals, 1.0)?);
        let positions = batches * buf.y.len();
        Ok(TokenEval { plan, batches, counter, totals, positions, _tokens: tokens, _buffers: buf })
    }

    /// (mean loss, accuracy) per position of the current weights over `eval`'s windows: one
    /// submission, one readback.
    pub(super) fn run_token_eval(&self, eval: &TokenEval) -> Result<(f32, f32)> {
        let gpu = &self.gpu_state()?.gpu;
        eval.totals.write(&[0.0, 0.0])?;
        eval.counter.write_u32(&[0])?;
        run_times(gpu, &eval.plan, eval.batches)?;
        let t = eval.totals.to_vec()?;
        let n = eval.positions as f64;
        Ok(((t[0] as f64 / n) as f32, (t[1] as f64 / n) as f32))
    }
}

/// The fixed validation of a token model, built once.
pub(super) struct TokenEval {
    plan: Plan,
    batches: usize,
    /// u32 [1]: the batch the plan draws next, zeroed before each evaluation.
    counter: Tensor,
    /// f32 [2]: Σ loss, Σ correct.
    totals: Tensor,
    /// Labels in all the batches.
    positions: usize,
    _tokens: GpuTokens,
    _buffers: BatchBuffers,
}

/// The GPU backend's token steps (see the module's doc).
pub(super) struct GpuTokenSteps {
    gpu: Gpu,
    step: Plan,
    validation: Option<TokenEval>,
    _tokens: GpuTokens,
    _buffers: BatchBuffers,
}

impl GpuTokenSteps {
    pub(super) fn new(
        model: &Sequential,
        train: &TokenDataset,
        validation: Option<(&TokenDataset, usize)>,
        shape: TokenShape,
        seed: u64,
        opts: &FitOptions,
        optimizer: &Optimizer,
    ) -> Result<GpuTokenSteps> {
        let gpu = model.gpu_state()?.gpu.clone();
        let tokens = GpuTokens::upload(&gpu, train)?;
        let mut buf = model.token_buffers(&gpu, shape.batch, true)?;
        let (guarded, clip) = (opts.skip_nonfinite_batches, opts.clip_norm);
        let step = model.token_step_plan(&tokens, &mut buf, seed, optimizer, guarded, clip)?;
        let validation = validation.map(|(v, batches)| model.token_eval(v, batches, shape, 0)).transpose()?;
        Ok(GpuTokenSteps { gpu, step, validation, _tokens: tokens, _buffers: buf })
    }
}

impl Steps for GpuTokenSteps {
    fn start_epoch(&mut self, model: &mut Sequential, _epoch: usize) -> Result<()> {
        model.reset_epoch()
    }

    fn run(&mut self, model: &mut Sequential, _first: usize, count: usize) -> Result<RunningSums> {
        run_times(&self.gpu, &self.step, count)?;
        model.read_totals()
    }

    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>> {
        self.validation.as_ref().map(|v| model.run_token_eval(v)).transpose()
    }
}

/// `plan` recorded `times` times, in submissions of at most [`PLANS_PER_SUBMISSION`]: a count the
/// caller gives (validation batches, steps between progress ticks) never sizes one command buffer.
fn run_times(gpu: &Gpu, plan: &Plan, times: usize) -> Result<()> {
    let mut left = times;
    while left > 0 {
        let now = left.min(PLANS_PER_SUBMISSION);
        gpu.run_repeated(&[plan], now)?;
        left -= now;
    }
    Ok(())
}

const PLANS_PER_SUBMISSION: usize = 256;
