//! Evaluation and prediction on the GPU: forward (and loss) plans over a whole data set in large
//! batches, built once and rerun as the weights change, in device memory that does not grow with
//! the data: one set of batch buffers serves every full batch (its plans read their position from
//! a step counter on the device, as training steps do), one smaller set the partial last batch.

use super::*;

/// Rows per evaluation batch at most: large, to keep the dispatch count low (fewer where the
/// device's buffers cannot hold that many rows of the widest layer, or a batch's activations
/// would pass the budget's share, `EVAL_BUDGET_SHARE`; see `eval_batch`).
pub(super) const EVAL_BATCH: usize = 2048;

/// The part of the memory budget ([`Gpu::memory_budget`]) one evaluation batch's activations may
/// take, estimated (`eval_batch`): 1/16, 64 MiB of lavapipe's default 1 GiB (the fixed cap it
/// replaces; a few hundred of cnn_mnist's wide rows). A full batch and the partial last one are
/// held at once, beside the model, the optimizer's state, the training batch and the data sets.
const EVAL_BUDGET_SHARE: u64 = 16;

/// Plans that walk a data set batch by batch: `full[s % 2]` is full batch `s` (it reads its
/// position from `counter[s % 2]` and writes the next to the other cell), `tail` the partial last
/// batch. Every full batch runs in the same buffers, so what they hold is O(batch), not O(rows).
pub(super) struct BatchWalk {
    full: Vec<Plan>,
    full_batches: usize,
    tail: Option<Plan>,
    /// u32 [2]: the full batches' step counter, zeroed before a walk.
    counter: Tensor,
    /// The index list 0..rows the gathers bind.
    order: Tensor,
    _buffers: Vec<BatchBuffers>,
}

impl BatchWalk {
    /// Each plan once: the full batches' (one per parity) and the tail's.
    fn distinct(&self) -> Vec<&Plan> {
        self.full.iter().chain(self.tail.as_ref()).collect()
    }

    /// The plans in walking order: every full batch, then the tail.
    fn sequence(&self) -> Vec<&Plan> {
        let full = (0..self.full_batches).map(|s| &self.full[s % 2]);
        full.chain(self.tail.as_ref()).collect()
    }
}

impl Sequential {
    /// Rows per evaluation batch: `EVAL_BATCH`, or fewer so that a batch of the widest row (input,
    /// layer outputs, targets) fits one storage binding and one buffer, and the batch's
    /// activations (estimated as three f32 tensors per block output: the core's, batch norm's,
    /// the activation's) fit the memory budget's share (`EVAL_BUDGET_SHARE`).
    pub(super) fn eval_batch(&self, gpu: &Gpu, data: &GpuData) -> usize {
        let limits = gpu.limits();
        let bytes = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let widest =
            self.blocks.iter().map(|b| b.outputs).chain([self.input_dim(), data.targets.as_ref().map_or(1, |t| t.dim)]);
        let row_bytes = 4 * widest.max().unwrap_or(1) as u64;
        let activations: u64 = self.blocks.iter().map(|b| b.outputs as u64).sum();
        let activation_bytes = 4 * (3 * activations + self.input_dim() as u64);
        let share = gpu.memory_budget() / EVAL_BUDGET_SHARE;
        (bytes / row_bytes).min(share / activation_bytes.max(1)).clamp(1, EVAL_BATCH as u64) as usize
    }

    /// The plans over every row of `data`: for each batch the forward pass and then what `head`
    /// adds (on the batch's buffers, with the batch's row count).
    fn batch_walk(
        &self,
        data: &GpuData,
        mut head: impl FnMut(&BatchBuffers, usize) -> Result<Plan>,
    ) -> Result<BatchWalk> {
        let gpu = &self.gpu_state()?.gpu;
        let n = data.rows.total_rows;
        let order: Vec<u32> = (0..n as u32).collect();
        let order = Tensor::from_u32(gpu, &[n], &order)?;
        let counter = Tensor::zeros_u32(gpu, &[2])?;
        let batch = self.eval_batch(gpu, data).min(n).max(1);
        let (full_batches, tail_rows) = (n / batch, n % batch);
        let mut buffers = Vec::new();
        let mut full = Vec::new();
        if full_batches > 0 {
            let mut buf = self.batch_buffers(gpu, data, batch, false)?;
            let at = |parity| BatchStart::Counter { epoch_step: &counter, stride: batch, parity, t: None };
            let mut even = self.forward_plan(data, &order, at(0), &mut buf, true)?;
            even.extend(head(&buf, batch)?);
            // The odd batches: the same dispatches (and kernel scratch) after their own gathers.
            if full_batches > 1 {
                let mut odd = self.gather_plan(data, &order, at(1), &buf, false)?;
                let rest = even.dispatches.get(odd.len()..).unwrap_or_default();
                odd.dispatches.extend(rest.iter().cloned());
                full.push(even);
                full.push(odd);
            } else {
                full.push(even);
            }
            buffers.push(buf);
        }
        let tail = match tail_rows {
            0 => None,
            rows => {
                let mut buf = self.batch_buffers(gpu, data, rows, false)?;
                let mut plan = self.forward_plan(data, &order, BatchStart::At(n - rows), &mut buf, true)?;
                plan.extend(head(&buf, rows)?);
                buffers.push(buf);
                Some(plan)
            }
        };
        Ok(BatchWalk { full, full_batches, tail, counter, order, _buffers: buffers })
    }

    /// The forward and loss plans over every row of `data`, adding into their own totals: built
    /// once, run as often as the weights change.
    pub(super) fn eval_plans(&self, data: &GpuData) -> Result<EvalPlans> {
        let gpu = &self.gpu_state()?.gpu;
        let totals = Tensor::zeros(gpu, &[2])?;
        let walk = self.batch_walk(data, |buf, _| self.loss_plan(buf, None, &totals, 1.0))?;
        Ok(EvalPlans { walk, totals, rows: data.rows.total_rows })
    }

    /// (mean loss, accuracy) of the current weights by `plans`: the whole walk in one submission,
    /// one readback.
    pub(super) fn run_eval(&self, plans: &EvalPlans) -> Result<(f32, f32)> {
        let gpu = &self.gpu_state()?.gpu;
        plans.totals.write(&[0.0, 0.0])?;
        plans.walk.counter.write_u32(&[0, 0])?;
        gpu.run(&plans.walk.sequence())?;
        let t = plans.totals.to_vec()?;
        let n = plans.rows as f64;
        Ok(((t[0] as f64 / n) as f32, (t[1] as f64 / n) as f32))
    }

    /// Forward passes over every row of `data`, then (mean loss, accuracy).
    pub(super) fn evaluate_gpu(&self, data: &GpuData) -> Result<(f32, f32)> {
        self.run_eval(&self.eval_plans(data)?)
    }

    /// The model's outputs (through its output function) for every row of `data`, copied out
    /// batch by batch from one output tensor per batch size.
    pub(super) fn predict_gpu(&self, data: &GpuData) -> Result<Vec<f32>> {
        let gpu = &self.gpu_state()?.gpu;
        let classes = self.output_dim();
        let last = self.blocks.len() - 1;
        let internal = || WgnnError::invalid("predict", "no output tensor (an internal error)");
        // [batch, classes] for the full batches, then the tail's [rows, classes].
        let mut outputs: Vec<Tensor> = Vec::new();
        let walk = self.batch_walk(data, |buf, rows| {
            if outputs.last().is_none_or(|o| o.shape()[0] != rows) {
                outputs.push(Tensor::zeros(gpu, &[rows, classes])?);
            }
            let out = outputs.last().ok_or_else(internal)?;
            Ok(match self.output_function() {
                Activation::Softmax => softmax(gpu, &buf.blocks[last].h, out)?,
                // σ(z), or the last layer's outputs as they are (a copy through the identity).
                act => bias_act_forward(gpu, &buf.blocks[last].h, None, out, act)?,
            })
        })?;
        walk.counter.write_u32(&[0, 0])?;
        let mut predictions = Vec::with_capacity(data.rows.total_rows * classes);
        for s in 0..walk.full_batches {
            gpu.run(&[&walk.full[s % 2]])?;
            predictions.extend(outputs.first().ok_or_else(internal)?.to_vec()?);
        }
        if let Some(tail) = &walk.tail {
            gpu.run(&[tail])?;
            predictions.extend(outputs.last().ok_or_else(internal)?.to_vec()?);
        }
        Ok(predictions)
    }
}

/// Evaluation over a whole data set, built once (`fit` validates with the same plans every epoch).
pub(super) struct EvalPlans {
    walk: BatchWalk,
    /// f32 [2]: Σ loss, Σ correct.
    totals: Tensor,
    rows: usize,
}

impl EvalPlans {
    /// Each plan once (for the memory it binds).
    pub(super) fn distinct_plans(&self) -> Vec<&Plan> {
        self.walk.distinct()
    }

    /// The index list the gathers bind: data-sized, part of the data set.
    pub(super) fn order(&self) -> &Tensor {
        &self.walk.order
    }
}
