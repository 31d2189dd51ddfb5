//! The GPU backend's training steps for `fit`: the data uploaded once, a step plan per batch
//! parity and one for the partial last batch, checked against the device before anything is
//! allocated.

use super::*;

impl Sequential {
    /// A training batch of `batch` rows must fit the device: each of its `[rows, width]` tensors
    /// one binding. Checked before anything is allocated, so that the error names the batch size
    /// and the largest that fits rather than the first tensor that failed.
    pub(super) fn check_batch_fits(&self, gpu: &Gpu, train: &Dataset, asked: usize) -> Result<()> {
        let batch = asked.min(train.rows);
        let targets = self.loss().target_dim(train, self.output_dim())?.unwrap_or(1);
        let widths = self.blocks.iter().map(|b| (b.outputs, "a layer's outputs"));
        let (width, which) = [(self.input_dim(), "the input"), (targets, "the targets")]
            .into_iter()
            .chain(widths)
            .max_by_key(|&(w, _)| w)
            .unwrap_or((1, "the input"));
        let padded = batch.next_multiple_of(4);
        let limit = super::binding_bytes(gpu);
        let bytes = (padded as u64).saturating_mul(width as u64).saturating_mul(4);
        if bytes <= limit {
            return Ok(());
        }
        let fits = (limit / (4 * width as u64)) as usize / 4 * 4;
        // The batch size asked for, and what it came to where the data has fewer rows.
        let mut whole = match asked > batch {
            true => format!(", one batch of all {batch} training rows"),
            false => String::new(),
        };
        if padded != batch {
            whole += &format!(", padded to {padded} rows");
        }
        Err(WgnnError::DeviceLimit {
            op: "fit".into(),
            what: format!(
                "batch size {asked}{whole} (the largest that fits is {fits}): {which} of one batch, [{padded}, \
                 {width}] f32,"
            ),
            amount: bytes,
            unit: "bytes",
            limit,
            limit_name: "max_storage_buffer_binding_size",
        })
    }
}

/// The GPU backend's steps: the data uploaded once, one plan for a full batch and one for the
/// partial last batch, built once per `fit`.
pub(super) struct GpuSteps {
    pub(super) gpu: Gpu,
    pub(super) rows: usize,
    pub(super) shuffle: bool,
    /// The epoch's row order, [rows] u32, written at each epoch's start.
    pub(super) order: Tensor,
    pub(super) full_steps: usize,
    /// A full batch's step for even, then odd steps: each reads its position from its own cell
    /// of the step counter and writes the next position to the other.
    pub(super) full_plans: Vec<Plan>,
    /// The partial last batch's step, at parity `full_steps % 2`.
    pub(super) tail_plan: Option<Plan>,
    /// The validation data and its evaluation plans.
    pub(super) validation: Option<(GpuData, EvalPlans)>,
    /// The plans' buffers (the plans' bind groups keep them alive too; held for clarity).
    pub(super) _buffers: Vec<BatchBuffers>,
}

impl GpuSteps {
    pub(super) fn new(
        model: &Sequential,
        train: &Dataset,
        validation: Option<&Dataset>,
        opts: &FitOptions,
        optimizer: &Optimizer,
    ) -> Result<GpuSteps> {
        let gpu = model.gpu_state()?.gpu.clone();
        model.check_batch_fits(&gpu, train, opts.batch_size)?;
        let data = model.upload_data(&gpu, train)?;
        let n = train.rows;
        let batch = opts.batch_size.min(n);
        let tail = n % batch;
        let order = Tensor::zeros_u32(&gpu, &[n])?;
        let (guarded, clip) = (opts.skip_nonfinite_batches, opts.clip_norm);
        let (full_plans, full_buf) =
            model.train_step_plans(&data, &order, batch, batch, &[0, 1], optimizer, guarded, clip)?;
        let mut buffers = vec![full_buf];
        let tail_plan = match tail {
            0 => None,
            _ => {
                let parity = [(n / batch) % 2];
                let (mut plans, buf) =
                    model.train_step_plans(&data, &order, tail, batch, &parity, optimizer, guarded, clip)?;
                buffers.push(buf);
                plans.pop()
            }
        };
        // After the training step's: the autotuner's budget goes to the products that run most.
        let validation = match validation {
            Some(v) => {
                let data = model.upload_data(&gpu, v)?;
                let plans = model.eval_plans(&data)?;
                Some((data, plans))
            }
            None => None,
        };
        Ok(GpuSteps {
            gpu,
            rows: n,
            shuffle: opts.shuffle,
            order,
            full_steps: n / batch,
            full_plans,
            tail_plan,
            validation,
            _buffers: buffers,
        })
    }
}

impl Steps for GpuSteps {
    fn start_epoch(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        self.order.write_u32(&epoch_order(self.rows, self.shuffle, model.seed, epoch))?;
        model.reset_epoch()
    }

    fn run(&mut self, model: &mut Sequential, first: usize, count: usize) -> Result<RunningSums> {
        // Many steps in one submit; the partial batch, if any, is the epoch's last step.
        let full = count.min(self.full_steps.saturating_sub(first));
        if full > 0 {
            let steps: Vec<&Plan> = (first..first + full).map(|s| &self.full_plans[s % 2]).collect();
            self.gpu.run(&steps)?;
        }
        if let Some(tail) = self.tail_plan.as_ref().filter(|_| first + count > self.full_steps) {
            self.gpu.run(&[tail])?;
        }
        model.read_totals()
    }

    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>> {
        self.validation.as_ref().map(|(_, plans)| model.run_eval(plans)).transpose()
    }
}
