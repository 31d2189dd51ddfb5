//! Evaluation and prediction on the GPU: forward and loss plans over a whole data set in large
//! batches, built once and rerun as the weights change.

use super::*;

/// Rows per evaluation batch at most: large, to keep the dispatch count low (fewer where the
/// device's buffers cannot hold that many rows of the widest layer; see `eval_batch`).
pub(super) const EVAL_BATCH: usize = 2048;

impl Sequential {
    /// Rows per evaluation batch: `EVAL_BATCH`, or fewer so that a batch of the widest row (input,
    /// layer outputs, targets) fits one storage binding and one buffer.
    pub(super) fn eval_batch(&self, gpu: &Gpu, data: &GpuData) -> usize {
        let limits = gpu.limits();
        let bytes = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let widest =
            self.blocks.iter().map(|b| b.outputs).chain([self.input_dim(), data.targets.as_ref().map_or(1, |t| t.dim)]);
        let row_bytes = 4 * widest.max().unwrap_or(1) as u64;
        (bytes / row_bytes).clamp(1, EVAL_BATCH as u64) as usize
    }

    /// The forward and loss plans over every row of `data`, in batches of up to `EVAL_BATCH`,
    /// adding into their own totals: built once, run as often as the weights change.
    pub(super) fn eval_plans(&self, data: &GpuData) -> Result<EvalPlans> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let n = data.rows.total_rows;
        let order: Vec<u32> = (0..n as u32).collect();
        let order = Tensor::from_u32(gpu, &[n], &order)?;
        let totals = Tensor::zeros(gpu, &[2])?;
        let mut plans = Vec::new();
        let mut buffers = Vec::new();
        let mut start = 0;
        while start < n {
            let batch = self.eval_batch(gpu, data).min(n - start);
            let mut buf = self.batch_buffers(gpu, data, batch, false)?;
            let mut plan = self.forward_plan(data, &order, BatchStart::At(start), &mut buf, true)?;
            plan.extend(self.loss_plan(&buf, None, &totals, 1.0)?);
            plans.push(plan);
            buffers.push(buf);
            start += batch;
        }
        Ok(EvalPlans { plans, totals, rows: n, _order: order, _buffers: buffers })
    }

    /// (mean loss, accuracy) of the current weights by `plans`.
    pub(super) fn run_eval(&self, plans: &EvalPlans) -> Result<(f32, f32)> {
        let gpu = &self.gpu_state()?.gpu;
        plans.totals.write(&[0.0, 0.0])?;
        gpu.run(&plans.plans.iter().collect::<Vec<_>>())?;
        let t = plans.totals.to_vec()?;
        let n = plans.rows as f64;
        Ok(((t[0] as f64 / n) as f32, (t[1] as f64 / n) as f32))
    }

    /// Forward passes over every row of `data`, then (mean loss, accuracy).
    pub(super) fn evaluate_gpu(&self, data: &GpuData) -> Result<(f32, f32)> {
        self.run_eval(&self.eval_plans(data)?)
    }

    pub(super) fn predict_gpu(&self, data: &GpuData) -> Result<Vec<f32>> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let n = data.rows.total_rows;
        let order: Vec<u32> = (0..n as u32).collect();
        let order = Tensor::from_u32(gpu, &[n], &order)?;
        let classes = self.output_dim();
        let last = self.blocks.len() - 1;
        let mut start = 0;
        let (mut plans, mut outputs) = (Vec::new(), Vec::new());
        while start < n {
            let batch = self.eval_batch(gpu, data).min(n - start);
            let mut buf = self.batch_buffers(gpu, data, batch, false)?;
            let mut plan = self.forward_plan(data, &order, BatchStart::At(start), &mut buf, true)?;
            // Each batch its own output tensor: a view at `start` rows into one big output would
            // start at an offset the device's storage alignment may not allow, and the whole
            // output may not fit one binding.
            let out = Tensor::zeros(gpu, &[batch, classes])?;
            plan.extend(match self.output_function() {
                Activation::Softmax => softmax(gpu, &buf.blocks[last].h, &out)?,
                // σ(z), or the last layer's outputs as they are (a copy through the identity).
                act => bias_act_forward(gpu, &buf.blocks[last].h, None, &out, act)?,
            });
            plans.push(plan);
            outputs.push(out);
            start += batch;
        }
        gpu.run(&plans.iter().collect::<Vec<_>>())?;
        let mut predictions = Vec::with_capacity(n * classes);
        for out in &outputs {
            predictions.extend(out.to_vec()?);
        }
        Ok(predictions)
    }
}

/// Evaluation over a whole data set, built once (`fit` validates with the same plans every epoch).
pub(super) struct EvalPlans {
    pub(super) plans: Vec<Plan>,
    /// f32 [2]: Σ loss, Σ correct.
    pub(super) totals: Tensor,
    pub(super) rows: usize,
    /// The index list 0..rows the gathers bind.
    pub(super) _order: Tensor,
    pub(super) _buffers: Vec<BatchBuffers>,
}
