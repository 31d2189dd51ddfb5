//! What one `fit_tokens` step costs, without training: its kernels in order, the device memory
//! it binds, and each dispatch's device time — the token model's counterparts of
//! `step_kernels`, `step_memory_bytes` and `profile_step` (gpu.rs), for benchmarks and tests.
//! The step is the one `fit_tokens` builds for the same options (windows drawn on the GPU,
//! forward, per-position loss, backward, clipping, update).

use super::*;
use crate::data::TokenDataset;
use crate::kernels::token_batch::GpuTokens;

/// One planned token step and what its plan binds (kept alive while it is used).
struct TokenStep {
    plan: Plan,
    tokens: GpuTokens,
    _buffers: BatchBuffers,
}

impl Sequential {
    /// The step `fit_tokens` runs on `data` with `opts` (its batch, seed, clipping and guard).
    fn one_token_step(&self, op: &str, data: &TokenDataset, opts: &TokenFitOptions) -> Result<TokenStep> {
        let (_, optimizer) = self.compiled.ok_or_else(|| WgnnError::invalid(op, "call compile() first"))?;
        if opts.batch_size == 0 {
            return Err(WgnnError::invalid(op, "the batch size must be at least 1"));
        }
        if let Some(max_norm) = opts.clip_norm {
            crate::config::hyper(op, "clip_norm", max_norm, "> 0", max_norm > 0.0)?;
        }
        let shape = self.check_tokens(op, data, opts.batch_size)?;
        let gpu = self.gpu_state()?.gpu.clone();
        let tokens = GpuTokens::upload(&gpu, data)?;
        let mut buffers = self.token_buffers(&gpu, shape.batch, true)?;
        let seed = opts.seed.unwrap_or(self.seed);
        let (guarded, clip) = (opts.skip_nonfinite_batches, opts.clip_norm);
        let plan = self.token_step_plan(&tokens, &mut buffers, seed, &optimizer, guarded, clip)?;
        Ok(TokenStep { plan, tokens, _buffers: buffers })
    }

    /// The kernels one `fit_tokens` step with `opts` dispatches, in order (labelled as in
    /// [`Sequential::profile_token_step`]). Nothing runs.
    pub fn token_step_kernels(&self, data: &TokenDataset, opts: &TokenFitOptions) -> Result<Vec<String>> {
        let step = self.one_token_step("token_step_kernels", data, opts)?;
        Ok(step.plan.dispatches.iter().map(|d| d.label.clone()).collect())
    }

    /// Bytes of device memory one `fit_tokens` step with `opts` binds: parameters, gradients,
    /// optimizer state, the batch's ids, activations and gradients, kernels' scratch; not the
    /// uploaded token array. Nothing runs.
    pub fn token_step_memory_bytes(&self, data: &TokenDataset, opts: &TokenFitOptions) -> Result<u64> {
        let step = self.one_token_step("token_step_memory_bytes", data, opts)?;
        let data_buffer = std::sync::Arc::as_ptr(step.tokens.tokens.shared_buffer()) as usize;
        let mut bound = std::collections::HashMap::new();
        for d in &step.plan.dispatches {
            bound.extend(d.bound().filter(|&(id, _)| id != data_buffer));
        }
        Ok(bound.values().sum())
    }

    /// Device seconds of each dispatch of one `fit_tokens` step with `opts` (median of `reps`
    /// timings each), labelled by kernel. Needs timestamp queries. The timed dispatches really
    /// run, `reps` times each: the weights, the optimizer state and t change (profile a model you
    /// will not train further).
    pub fn profile_token_step(
        &mut self,
        data: &TokenDataset,
        opts: &TokenFitOptions,
        reps: usize,
    ) -> Result<Vec<(String, f64)>> {
        let step = self.one_token_step("profile_token_step", data, opts)?;
        let gpu = self.gpu_state()?.gpu.clone();
        let mut timings = Vec::with_capacity(step.plan.dispatches.len());
        for d in &step.plan.dispatches {
            let mut times = gpu.time_plan(&Plan::from(d.clone()), reps.max(1))?;
            times.sort_by(f64::total_cmp);
            timings.push((d.label.clone(), times[times.len() / 2]));
        }
        self.reset_epoch()?;
        Ok(timings)
    }

    /// [`Sequential::time_step`] for the step `fit_tokens` runs with `opts`: device seconds of
    /// each of `reps` whole steps, and wall seconds a step with `reps` in one submission.
    pub fn time_token_step(
        &mut self,
        data: &TokenDataset,
        opts: &TokenFitOptions,
        reps: usize,
    ) -> Result<(Vec<f64>, f64)> {
        let step = self.one_token_step("time_token_step", data, opts)?;
        let gpu = self.gpu_state()?.gpu.clone();
        let device = gpu.time_plan(&step.plan, reps.max(1))?;
        let wall = gpu.wall_per_run(&step.plan, reps)?;
        self.reset_epoch()?;
        Ok((device, wall))
    }

    /// Device seconds of each dispatch of one `fit_tokens` step with `opts` where it runs in
    /// the step ([`Gpu::time_dispatches_in_order`], median of `reps` steps), labelled as
    /// [`Sequential::profile_token_step`]'s. The steps really run, as there.
    pub fn profile_token_step_in_order(
        &mut self,
        data: &TokenDataset,
        opts: &TokenFitOptions,
        reps: usize,
    ) -> Result<Vec<(String, f64)>> {
        let step = self.one_token_step("profile_token_step_in_order", data, opts)?;
        let gpu = self.gpu_state()?.gpu.clone();
        let times = gpu.time_dispatches_in_order(&step.plan, reps)?;
        self.reset_epoch()?;
        Ok(step.plan.dispatches.iter().map(|d| d.label.clone()).zip(times).collect())
    }
}
