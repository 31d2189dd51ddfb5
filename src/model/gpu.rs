//! The GPU backend of [`Sequential`]: what a model keeps resident, the data set uploaded once,
//! and the training step — gather, forward, loss, backward, update — as a [`Plan`] built once per
//! batch size and recorded many times. The buffers of one batch are in `batch_buffers.rs`,
//! evaluation and prediction in `gpu_eval.rs`, the steps `fit` runs in `gpu_steps.rs`.

use super::fusion::{batch_is_shared, is_fork, Core};
use super::*;
use crate::layers::step::Placement;
use crate::layers::Dense;
use crate::layers::{activation as act_layer, batch_norm};

/// Everything a GPU model keeps resident.
pub(super) struct GpuState {
    pub(super) gpu: Gpu,
    pub(super) params: Tensor,
    pub(super) grads: Tensor,
    /// Optimizer state: the slots the rule keeps (Adam's m and v, SGD's velocity, …).
    pub(super) opt_state: Vec<Tensor>,
    /// u32 [2]: the step within the epoch (the gather's batch position), in two cells: a step
    /// reads one and writes the next position to the other (see `BatchStart::Counter`).
    pub(super) epoch_step: Tensor,
    /// u32 [2]: the global step t (Adam's bias correction), carried across epochs, and the skip
    /// flag of the current step (set by step_guard when the batch's loss is not finite).
    pub(super) global_step: Tensor,
    /// f32 [4]: Σ loss, Σ correct, skipped batches, skipped rows since the last reset.
    pub(super) totals: Tensor,
    /// f32 [2]: the current batch's Σ loss and Σ correct, when non-finite batches are skipped
    /// (step_guard adds them to `totals` if finite).
    pub(super) batch_totals: Tensor,
    /// XORed into every dropout mask's seed by the plans built while it is set: 0 but on
    /// data-parallel ranks other than 0, so that each rank draws masks of its own (DDP's
    /// per-rank RNG) rather than the same masks for its other rows.
    pub(super) mask_salt: u32,
}

impl GpuState {
    /// t alone, u32 [1].
    pub(super) fn step_t(&self) -> Result<Tensor> {
        self.global_step.view(0, &[1])
    }

    /// A dropout mask's seed as this model's plans draw it (see `mask_salt`).
    pub(super) fn mask_seed(&self, seed: u32) -> u32 {
        seed ^ self.mask_salt
    }
}

/// Uploads a data set once: u8 features stay u8 (packed 4 per word), f32 as bits; split into
/// chunks of whole rows where one binding cannot hold it.
pub(super) fn upload_rows(gpu: &Gpu, data: &Dataset) -> Result<GpuRows> {
    let mean_std = match &data.standardize {
        Some((m, s)) => Some(Tensor::from_slice(gpu, &[2, data.feature_dim], &[m.as_slice(), s.as_slice()].concat())?),
        None => None,
    };
    Ok(GpuRows {
        scale: data.scale,
        shift: data.shift,
        mean_std,
        ..GpuRows::upload(gpu, &data.features, &data.labels, data.feature_dim)?
    })
}

/// A data set on the GPU for a loss: its rows, and the float targets the loss reads, if any
/// (gathered by the same index list as the rows).
pub(super) struct GpuData {
    pub(super) rows: GpuRows,
    pub(super) targets: Option<GpuRows>,
}

impl Sequential {
    pub(super) fn upload_data(&self, gpu: &Gpu, data: &Dataset) -> Result<GpuData> {
        let targets = match self.loss().float_targets(data, self.output_dim())? {
            Some(t) => {
                let rows = t.values.len() / t.dim;
                let as_rows =
                    Dataset::from_f32(t.values, vec![0; rows], t.dim, 1, &format!("{} targets", data.source))?;
                Some(upload_rows(gpu, &as_rows)?)
            }
            None => None,
        };
        Ok(GpuData { rows: upload_rows(gpu, data)?, targets })
    }
}

impl Sequential {
    pub(super) fn gpu_state(&self) -> Result<&GpuState> {
        match &self.state {
            State::Gpu(g) => Ok(g),
            State::Cpu(_) => Err(WgnnError::invalid("gpu", "this model runs on the CPU backend")),
        }
    }

    /// The buffers of one batch of `rows` rows of `data`.
    pub(super) fn batch_buffers(&self, gpu: &Gpu, data: &GpuData, rows: usize, training: bool) -> Result<BatchBuffers> {
        let acts: Vec<Activation> = (0..self.blocks.len()).map(|i| self.applied_activation(i)).collect();
        let last = acts.last().copied().unwrap_or(Activation::Identity);
        let dpred = self.loss() == Loss::MeanSquaredError && last != Activation::Identity;
        let target_dim = data.targets.as_ref().map(|t| t.dim);
        self.check_batch_buffers(gpu, rows, training)?;
        BatchBuffers::new(gpu, &self.blocks, &acts, self.input_dim(), rows, training, target_dim, dpred, None)
    }

    /// Whether a training step on `buf` runs its output block fused with the loss
    /// (`dense_softmax_xent`): sparse cross-entropy on the logits of a plain dense block (no batch
    /// norm or dropout) over a block whose output it reads directly (no dropout) through an
    /// elementwise activation (not a GELU, whose gradient reads its input), at shapes the kernel takes and the profile says it pays at.
    fn fused_output(&self, buf: &BatchBuffers) -> bool {
        let last = self.blocks.len() - 1;
        let output = &self.blocks[last];
        let Core::Op { layer: Layer::Dense(Dense { units, .. }), at: Placement { bias: Some(_), .. } } = output.core
        else {
            return false;
        };
        // Per position ([T, C] samples) the step runs the output layer and its loss apart (see
        // `Sequential::loss_positions`).
        self.fused
            && last > 0
            && output.inputs == output.core.step().map_or(0, |(_, at)| at.input.last().copied().unwrap_or(0))
            && self.loss_positions() == 1
            && output.input == Some(last - 1)
            && !is_fork(&self.blocks, last - 1)
            && buf.training
            && self.loss() == Loss::SparseCategoricalCrossentropy
            && self.applied_activation(last) == Activation::Identity
            && output.norm.is_none()
            && output.dropout.is_none()
            && self.blocks[last - 1].dropout.is_none()
            && self.applied_activation(last - 1).is_elementwise()
            // The kernel's act′ reads h, the matmul's A: not a GELU's input.
            && !self.applied_activation(last - 1).saves_input()
            && self.gpu_state().is_ok_and(|g| dense_softmax_xent_preferred(&g.gpu, buf.rows(), output.inputs, units))
    }

    /// The first block's input of a training step read straight from the data set (forward and
    /// weight gradient, [`matmul_gathered`]) instead of gathered into `buf.x` first: one dispatch
    /// and a copy of the batch fewer, where the data set's layout, the first block (a dense core,
    /// no batch norm) and the device's profile allow it. `labels`: the forward's A, which also
    /// writes the labels and advances the counters; else the weight gradient's, over the padded
    /// rows.
    fn gathered_input<'a>(
        &self,
        data: &'a GpuData,
        order: &'a Tensor,
        start: BatchStart<'a>,
        buf: &'a BatchBuffers,
        labels: bool,
    ) -> Option<GatheredA<'a>> {
        let gpu = &self.gpu_state().ok()?.gpu;
        let first = self.blocks.first()?;
        let Core::Op { layer: Layer::Dense(Dense { units, .. }), .. } = first.core else { return None };
        let rows = buf.rows();
        let forward = GatheredA { src: &data.rows, idx: order, start, rows, stored_rows: rows, labels: Some(&buf.y) };
        let weight_grad = GatheredA { stored_rows: buf.padded_rows, labels: None, ..forward };
        // Where the profile's policy reads batches in place (CPU adapters, where it was measured,
        // and the engine picks the subgroup kernel, the one the in-place A exists for, for both
        // products: `matmul_gathered_supported` checks the shapes it needs).
        let usable = self.fused
            && first.inputs == first.core.step().map_or(0, |(_, at)| at.input.last().copied().unwrap_or(0))
            && buf.training
            && matches!(start, BatchStart::Counter { .. })
            && first.norm.is_none()
            && first.input.is_none()
            && !batch_is_shared(&self.blocks)
            && gpu.profile().first_layer_in_place
            && matmul_gathered_supported(gpu, &forward, units, false, false)
            && matmul_gathered_supported(gpu, &weight_grad, units, true, false);
        usable.then_some(if labels { forward } else { weight_grad })
    }

    /// gather → forward: the first half of every plan, through the output block or (a training
    /// step whose output block runs fused with its loss) up to it; where the profile says so the
    /// first block reads the batch itself (`gathered_input`). The gathered labels' range is
    /// marked so the loss kernel can check it without a readback.
    pub(super) fn forward_plan(
        &self,
        data: &GpuData,
        order: &Tensor,
        start: BatchStart,
        buf: &mut BatchBuffers,
        through_output: bool,
    ) -> Result<Plan> {
        buf.y.set_max_u32(data.rows.labels.max_u32());
        let buf = &*buf;
        // Where the step advances t (its gather, or the first layer reading the data set), dropout
        // masks key on t − 1: the updates before this step, as when t advances after the forward
        // pass (guarded steps).
        let lag = matches!(start, BatchStart::Counter { t: Some(_), .. }) as u32;
        let gathered = self.gathered_input(data, order, start, buf, true);
        let mut plan = self.gather_plan(data, order, start, buf, gathered.is_some())?;
        let blocks = if through_output { self.blocks.len() } else { self.blocks.len() - 1 };
        for i in 0..blocks {
            let in_place = if i == 0 { gathered.as_ref() } else { None };
            plan.extend(self.block_forward(i, buf, in_place, lag)?);
        }
        Ok(plan)
    }

    /// The batch's gathers at `start`: its rows and labels into `buf.x` and `buf.y` (unless the
    /// first layer reads them `in_place`), and its float targets, if the loss reads any.
    pub(super) fn gather_plan(
        &self,
        data: &GpuData,
        order: &Tensor,
        start: BatchStart,
        buf: &BatchBuffers,
        in_place: bool,
    ) -> Result<Plan> {
        let gpu = &self.gpu_state()?.gpu;
        let mut plan = match in_place {
            true => Plan::new(),
            false => gather_rows(gpu, &data.rows, order, start, &buf.x, &buf.y)?,
        };
        if let (Some(rows), Some((targets, scratch))) = (&data.targets, &buf.targets) {
            // The same rows; t is advanced by the rows' gather or the first layer.
            let start = match start {
                BatchStart::Counter { epoch_step, stride, parity, .. } => {
                    BatchStart::Counter { epoch_step, stride, parity, t: None }
                }
                at => at,
            };
            plan.extend(gather_rows(gpu, rows, order, start, targets, scratch)?);
        }
        Ok(plan)
    }

    /// The compiled loss on the last block's outputs in `buf` (labels `buf.y` or targets
    /// `buf.targets`), adding its sums to `totals`; `dlogits` — the gradient w.r.t. the last
    /// block's pre-activation, scaled by `grad_scale` — when training.
    pub(super) fn loss_plan(
        &self,
        buf: &BatchBuffers,
        dlogits: Option<&Tensor>,
        totals: &Tensor,
        grad_scale: f32,
    ) -> Result<Plan> {
        let gpu = &self.gpu_state()?.gpu;
        let last = self.blocks.len() - 1;
        // A per-position loss reads [rows · T, V] logits against [rows · T] labels.
        let per_label = [buf.y.len(), self.output_classes()];
        let logits = &buf.blocks[last].h.reshape(&per_label)?;
        let dlogits_per_label = dlogits.map(|d| d.reshape(&per_label)).transpose()?;
        let dlogits = dlogits_per_label.as_ref();
        let targets = || {
            buf.targets.as_ref().map(|(t, _)| t).ok_or_else(|| {
                WgnnError::invalid(self.loss().name(), "the batch has no float targets (an internal plan error)")
            })
        };
        let xent_out = SoftmaxXentOut {
            loss_rows: &buf.loss_rows,
            dlogits,
            correct_rows: &buf.correct_rows,
            totals: Some(totals),
        };
        let single_out =
            SigmoidBceOut { loss_rows: &buf.loss_rows, dlogits, correct_rows: &buf.correct_rows, totals: Some(totals) };
        match self.loss() {
            Loss::SparseCategoricalCrossentropy => softmax_xent(gpu, logits, &buf.y, grad_scale, &xent_out),
            Loss::CategoricalCrossentropy => softmax_xent_dense(gpu, logits, targets()?, grad_scale, &xent_out),
            Loss::BinaryCrossentropy => sigmoid_bce(gpu, logits, &buf.y, grad_scale, &single_out),
            Loss::Hinge => hinge(gpu, logits, targets()?, grad_scale, &single_out),
            Loss::MeanSquaredError => {
                // Through a non-linear last activation the loss's gradient w.r.t. the output goes
                // to `dpred` first, then dz = dpred ⊙ act′(output).
                let via_dpred = dlogits.and(buf.dpred.as_ref());
                let out = MseOut {
                    loss_rows: &buf.loss_rows,
                    dpred: via_dpred.or(dlogits),
                    abs_rows: &buf.correct_rows,
                    totals: Some(totals),
                };
                let mut plan = mse(gpu, logits, targets()?, grad_scale, &out)?;
                if let (Some(dpred), Some(dz)) = (via_dpred, dlogits) {
                    let act = self.applied_activation(last);
                    let saved = buf.blocks[last].act_saved(&self.blocks[last], act)?;
                    plan.extend(act_layer::backward_gpu(gpu, dpred, &saved, dz, act)?);
                }
                Ok(plan)
            }
        }
    }

    /// The training step of [`Self::train_step_plan`] for each of `parities`, sharing one set of
    /// batch buffers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn train_step_plans(
        &self,
        data: &GpuData,
        order: &Tensor,
        batch: usize,
        stride: usize,
        parities: &[usize],
        optimizer: &Optimizer,
        guarded: bool,
        clip_norm: Option<f32>,
    ) -> Result<(Vec<Plan>, BatchBuffers)> {
        let mut buf = self.batch_buffers(&self.gpu_state()?.gpu, data, batch, true)?;
        let plans = parities
            .iter()
            .map(|&parity| {
                self.train_step_plan(data, order, &mut buf, batch, stride, parity, optimizer, guarded, clip_norm)
            })
            .collect::<Result<_>>()?;
        Ok((plans, buf))
    }

    /// One training step for `batch` rows taken at `epoch_step[parity] * stride` of `order`; it
    /// writes the next step's position to `epoch_step[1 − parity]`, so consecutive steps alternate
    /// parity. Its gather (or the first layer reading the data set in place) also advances t,
    /// except when `guarded`: then a batch whose loss is not finite leaves the weights, optimizer
    /// state and t unchanged and is counted in `totals` (step_guard) instead of stopping the run
    /// at the next tick. With `clip_norm`, the update reads the gradients scaled by clipping's
    /// factor, computed on the device from their global norm.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn train_step_plan(
        &self,
        data: &GpuData,
        order: &Tensor,
        buf: &mut BatchBuffers,
        batch: usize,
        stride: usize,
        parity: usize,
        optimizer: &Optimizer,
        guarded: bool,
        clip_norm: Option<f32>,
    ) -> Result<Plan> {
        let mut plan = self.gradient_step_plan(data, order, buf, batch, stride, parity, guarded)?;
        plan.extend(self.update_plan(buf, batch, optimizer, guarded, clip_norm)?);
        Ok(plan)
    }

    /// [`Self::train_step_plan`] up to the gradients (gather, forward, loss, backward), without
    /// the update: data-parallel training reduces the gradients across ranks in between.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gradient_step_plan(
        &self,
        data: &GpuData,
        order: &Tensor,
        buf: &mut BatchBuffers,
        batch: usize,
        stride: usize,
        parity: usize,
        guarded: bool,
    ) -> Result<Plan> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        // Guarded, step_guard advances t, and only for a batch it keeps.
        let t = g.step_t()?;
        let t_in_gather = (!guarded).then_some(&t);
        let start = BatchStart::Counter { epoch_step: &g.epoch_step, stride, parity, t: t_in_gather };
        let fused_output = self.fused_output(buf);
        let mut plan = self.forward_plan(data, order, start, buf, !fused_output)?;
        let buf = &*buf;
        // The forward pass read the first layer's input from the data set: so does dW.
        let gathered_input = self.gathered_input(data, order, start, buf, false);
        let last = self.blocks.len() - 1;
        // Guarded, the loss sums go to the batch's own totals, which step_guard checks.
        let totals = if guarded { g.batch_totals.clone() } else { g.totals.view(0, &[2])? };
        if fused_output {
            // The output block's forward, the loss, and dZ of the block below, in one dispatch.
            let (b, below) = (&buf.blocks[last], &buf.blocks[last - 1]);
            let block = &self.blocks[last];
            let (Some((step, at)), Core::Op { layer: Layer::Dense(_), .. }) = (block.core.step(), &block.core) else {
                return Err(WgnnError::invalid("step", "the fused output block is not dense (an internal error)"));
            };
            let Some((w, Some(bias))) = step.weights(&g.params, at)? else {
                return Err(WgnnError::invalid("step", "the fused output block has no bias (an internal error)"));
            };
            let out = DenseSoftmaxXentOut { dz: b.dz()?, dh: below.dz()?, totals: &totals };
            let act = self.applied_activation(last - 1);
            plan.extend(dense_softmax_xent(gpu, &below.h, &w, &bias, &buf.y, act, 1.0 / batch as f32, &out)?);
        } else {
            plan.extend(self.loss_plan(buf, Some(buf.blocks[last].dz()?), &totals, 1.0 / batch as f32)?);
        }
        for i in (0..self.blocks.len()).rev() {
            let in_place = if i == 0 { gathered_input.as_ref() } else { None };
            plan.extend(self.block_backward(i, buf, in_place, !(fused_output && i == last), u32::from(!guarded))?);
        }
        Ok(plan)
    }

    /// The end of a training step over a batch of `batch` rows in `buf`, after its backward:
    /// (guarded) step_guard's check, batch norm's running statistics, clipping, the update.
    pub(super) fn update_plan(
        &self,
        buf: &BatchBuffers,
        batch: usize,
        optimizer: &Optimizer,
        guarded: bool,
        clip_norm: Option<f32>,
    ) -> Result<Plan> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let mut plan = Plan::new();
        let t = g.step_t()?;
        // The step tensor t drives bias corrections and learning-rate schedules on the GPU; guarded,
        // it is [t, skip] and the update does nothing for a skipped batch. The update covers the
        // trained parameters only, not the running statistics after them.
        let t = if guarded {
            plan.extend(guard_step(gpu, &g.global_step, &g.batch_totals, &g.totals, batch)?);
            g.global_step.clone()
        } else {
            t
        };
        let t = &t;
        // A kept step's batch statistics go into the running ones (guarded: not a skipped one's).
        for (block, bb) in self.blocks.iter().zip(&buf.blocks) {
            if let (Some(n), Some(nb)) = (&block.norm, &bb.norm) {
                let counters = guarded.then_some(&g.global_step);
                plan.extend(batch_norm::commit_gpu(gpu, &Self::norm_params(&g.params, n)?, nb, counters, &n.cfg)?);
            }
        }
        let trained = |flat: &Tensor| flat.view(0, &[self.layout.trainable]);
        let (p, gr) = (&trained(&g.params)?, &trained(&g.grads)?);
        let s = &g.opt_state.iter().map(trained).collect::<Result<Vec<_>>>()?;
        // Decay on matrices only: a bit per trained value, uploaded with the plan.
        let decay_mask = match self.decay_mask(optimizer) {
            Some(bits) => Some(Tensor::from_u32(gpu, &[bits.len()], &bits)?),
            None => None,
        };
        // Clipping: the factor from the gradients' global norm, which the update multiplies by.
        let clip = match clip_norm {
            Some(max_norm) => {
                let factor = Tensor::zeros(gpu, &[2])?;
                plan.extend(clip_factor(gpu, gr, &factor, max_norm)?);
                Some(factor)
            }
            None => None,
        };
        let extras = UpdateExtras { decay_mask: decay_mask.as_ref(), grad_scale: clip.as_ref() };
        plan.extend(update_with(gpu, &optimizer.rule(), p, gr, s, t, &extras)?);
        Ok(plan)
    }

    /// One training step at `batch_size` on `data`, planned (not run), for the step's
    /// introspection below: (the step's plan, its buffers, the data set on the device, the row
    /// order the gather reads).
    fn one_step(&self, op: &str, data: &Dataset, batch_size: usize) -> Result<(Plan, BatchBuffers, GpuData, Tensor)> {
        let (_, optimizer) = self.compiled.ok_or_else(|| WgnnError::invalid(op, "call compile() first"))?;
        self.check_data(op, data)?;
        let gpu = self.gpu_state()?.gpu.clone();
        let gpu_data = self.upload_data(&gpu, data)?;
        let batch = batch_size.clamp(1, data.rows);
        let order = Tensor::from_u32(&gpu, &[data.rows], &epoch_order(data.rows, false, 0, 0))?;
        let (mut plans, buffers) =
            self.train_step_plans(&gpu_data, &order, batch, batch, &[0], &optimizer, false, None)?;
        let plan = plans.pop().ok_or_else(|| WgnnError::invalid(op, "no step planned (an internal error)"))?;
        Ok((plan, buffers, gpu_data, order))
    }

    /// Bytes of device memory one training step at `batch_size` binds, from the buffers its
    /// plan allocates and reads: parameters, gradients, optimizer state, the batch's activations
    /// and gradients, kernels' scratch (patch matrices); not the uploaded data set. Nothing runs.
    /// Evaluation's: [`Sequential::eval_memory_bytes`]; whether `fit` keeps the data set resident
    /// or streams it, and in what chunk buffers: [`Sequential::training_chunks`].
    pub fn step_memory_bytes(&self, data: &Dataset, batch_size: usize) -> Result<u64> {
        let (plan, _buffers, gpu_data, order) = self.one_step("step_memory_bytes", data, batch_size)?;
        Ok(bytes_bound_beside(&[&plan], &gpu_data, &order))
    }

    /// Bytes of device memory evaluating `data` (as [`Sequential::evaluate`] and the validation
    /// in `fit` do) binds beside the uploaded data set and its index list: the batch buffers, the
    /// kernels' scratch, the loss's totals. It does not grow with the rows: every full batch
    /// reuses one set of buffers, the partial last batch has its own. Nothing runs.
    pub fn eval_memory_bytes(&self, data: &Dataset) -> Result<u64> {
        const OP: &str = "eval_memory_bytes";
        self.compiled.ok_or_else(|| WgnnError::invalid(OP, "call compile() first"))?;
        self.check_data(OP, data)?;
        let gpu = self.gpu_state()?.gpu.clone();
        let gpu_data = self.upload_data(&gpu, data)?;
        let plans = self.eval_plans(&gpu_data)?;
        Ok(bytes_bound_beside(&plans.distinct_plans(), &gpu_data, plans.order()))
    }
    /// The kernels one training step at `batch_size` dispatches, in order (labelled as in
    /// [`Sequential::profile_step`]): which variants the engine picks on this device, without
    /// running anything and without timestamp queries.
    pub fn step_kernels(&self, data: &Dataset, batch_size: usize) -> Result<Vec<String>> {
        let (plan, ..) = self.one_step("step_kernels", data, batch_size)?;
        Ok(plan.dispatches.iter().map(|d| d.label.clone()).collect())
    }

    /// Device seconds of each dispatch of one training step at `batch_size` (median of `reps`
    /// timings each), labelled by kernel: where a step's time goes. Needs timestamp queries. The
    /// timed dispatches really run, `reps` times each: the weights, optimizer state, t and
    /// batch-norm running statistics change (profile a model you will not train further).
    pub fn profile_step(&mut self, data: &Dataset, batch_size: usize, reps: usize) -> Result<Vec<(String, f64)>> {
        let (plan, _buffers, _data, _order) = self.one_step("profile_step", data, batch_size)?;
        let gpu = self.gpu_state()?.gpu.clone();
        let mut timings = Vec::new();
        for d in &plan.dispatches {
            let mut times = gpu.time_plan(&Plan::from(d.clone()), reps.max(1))?;
            times.sort_by(f64::total_cmp);
            timings.push((d.label.clone(), times[times.len() / 2]));
        }
        // Back to the epoch's start (t stays advanced, as documented).
        self.reset_epoch()?;
        Ok(timings)
    }

    /// One training step at `batch_size` as `fit` runs it, timed whole: device seconds of each of
    /// `reps` steps (timestamps around one compute pass holding the step's dispatches in order),
    /// and the wall seconds a step takes with `reps` steps in one submission ([`Gpu::wall_per_run`]).
    /// Beside [`Sequential::profile_step`] (each dispatch alone, repeated), it tells how much of
    /// a step's time the dispatches take in sequence and how much the host adds. The steps really
    /// run, as with `profile_step`.
    pub fn time_step(&mut self, data: &Dataset, batch_size: usize, reps: usize) -> Result<(Vec<f64>, f64)> {
        let (plan, _buffers, _data, _order) = self.one_step("time_step", data, batch_size)?;
        let gpu = self.gpu_state()?.gpu.clone();
        let device = gpu.time_plan(&plan, reps.max(1))?;
        let wall = gpu.wall_per_run(&plan, reps)?;
        self.reset_epoch()?;
        Ok((device, wall))
    }

    pub(super) fn read_totals(&self) -> Result<RunningSums> {
        let t = self.gpu_state()?.totals.to_vec()?;
        Ok(RunningSums {
            loss: t[0] as f64,
            correct: t[1] as f64,
            skipped_batches: t[2] as usize,
            skipped_rows: t[3] as usize,
            ..RunningSums::default()
        })
    }

    pub(super) fn reset_epoch(&self) -> Result<()> {
        let g = self.gpu_state()?;
        g.totals.write(&[0.0; 4])?;
        g.batch_totals.write(&[0.0; 2])?;
        // Only the in-epoch step: the global step t carries across epochs.
        g.epoch_step.write_u32(&[0, 0])
    }
}

/// Bytes of the buffers `plans` bind, each counted once, other than the data set's and the index
/// list `order`.
fn bytes_bound_beside(plans: &[&Plan], data: &GpuData, order: &Tensor) -> u64 {
    let targets = data.targets.iter().flat_map(|t| t.chunks.iter().chain([&t.labels]));
    let data_set: std::collections::HashSet<usize> = data
        .rows
        .chunks
        .iter()
        .chain([&data.rows.labels, order])
        .chain(targets)
        .map(|t| std::sync::Arc::as_ptr(t.shared_buffer()) as usize)
        .collect();
    let mut bound = std::collections::HashMap::new();
    for d in plans.iter().flat_map(|p| &p.dispatches) {
        bound.extend(d.bound().filter(|(id, _)| !data_set.contains(id)));
    }
    bound.values().sum()
}
