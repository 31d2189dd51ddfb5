//! Training sets larger than the memory budget's share for data: kept on the host and uploaded in
//! chunks of whole batches, two chunk buffers on the device used in turn, so that chunk k + 1 is
//! gathered on the host and queued while chunk k's steps run.
//!
//! The rule: the training set stays resident (`gpu_steps.rs`) where its upload (features, labels,
//! float targets) takes at most half the budget ([`Gpu::memory_budget`]); the other half is the
//! model's, the optimizer's, the batches', evaluation's and the validation set's. Otherwise its
//! two chunk buffers together take at most that half. A chunk holds the rows of consecutive
//! batches in the epoch's order (the permutation from the seed, as resident), copied into the
//! chunk buffer in that order, so every step sees the same batch as the resident run, in the same
//! order: the history is the same, bit for bit.

use super::*;
use crate::data::Features;

/// The training set's upload may take 1/`DATA_BUDGET_SHARE` of the memory budget and stay
/// resident; larger, it streams in two chunk buffers that together take at most that.
pub const DATA_BUDGET_SHARE: u64 = 2;

/// How a streamed training set is cut: `batches` whole batches per chunk, `chunks` per epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    pub batches: usize,
    pub chunks: usize,
    /// Bytes the upload of the whole training set would take (features, labels, float targets).
    pub resident_bytes: u64,
    /// Bytes of the two chunk buffers together.
    pub buffer_bytes: u64,
}

/// Bytes of device memory one training row's upload takes: (features, labels and float targets).
fn row_upload_bytes(data: &Dataset, target_dim: Option<usize>) -> u64 {
    let features = match data.features {
        Features::U8(_) => data.feature_dim as u64,
        Features::F32(_) => 4 * data.feature_dim as u64,
    };
    // Float targets travel as rows of their own, with (unused) labels beside them.
    let targets = target_dim.map_or(0, |d| 4 * d as u64 + 4);
    features + 4 + targets
}

impl Sequential {
    /// How `fit` would upload `data` in batches of `batch_size` on this model's device: `None`
    /// where it stays resident (its upload takes at most 1/[`DATA_BUDGET_SHARE`] of the memory
    /// budget, [`Gpu::memory_budget`]), else the chunks it streams in. A budget whose share
    /// cannot hold two batches (the double buffer) is a [`WgnnError::DeviceLimit`] naming the
    /// budget and the batch's bytes.
    pub fn training_chunks(&self, data: &Dataset, batch_size: usize) -> Result<Option<ChunkPlan>> {
        const OP: &str = "training_chunks";
        self.compiled.ok_or_else(|| WgnnError::invalid(OP, "call compile() first"))?;
        if batch_size == 0 {
            return Err(WgnnError::invalid(OP, "batch size must be at least 1"));
        }
        self.check_data(OP, data)?;
        self.chunk_plan(&self.gpu_state()?.gpu, data, batch_size)
    }

    /// [`Sequential::training_chunks`] on `gpu`.
    pub(super) fn chunk_plan(&self, gpu: &Gpu, data: &Dataset, batch_size: usize) -> Result<Option<ChunkPlan>> {
        let target_dim = self.loss().target_dim(data, self.output_dim())?;
        let row_bytes = row_upload_bytes(data, target_dim);
        let rows = data.rows.max(1);
        // u8 features are packed 4 to a word: at most 3 bytes more than the rows take.
        let resident_bytes = (rows as u64).checked_mul(row_bytes).and_then(|b| b.checked_add(3)).unwrap_or(u64::MAX);
        let budget = gpu.memory_budget();
        let share = budget / DATA_BUDGET_SHARE;
        if resident_bytes <= share {
            return Ok(None);
        }
        let batch = batch_size.min(rows);
        let batch_bytes = (batch as u64).saturating_mul(row_bytes).saturating_add(3);
        // One chunk's features and its targets are one binding each.
        let features_per_row = row_bytes - 4 - target_dim.map_or(0, |d| 4 * d as u64 + 4);
        let widest_per_row = features_per_row.max(4 * target_dim.unwrap_or(0) as u64);
        let limits = gpu.limits();
        let binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size).min(u32::MAX as u64);
        let by_binding = binding / (batch as u64 * widest_per_row).saturating_add(3).max(1);
        let steps = rows.div_ceil(batch);
        let by_budget = share / 2 / batch_bytes;
        if by_budget == 0 {
            let what = format!(
                "two training batches of {batch} rows ({batch_bytes} bytes each: the chunk buffers streaming a \
                 training set of {resident_bytes} bytes, over half the memory budget of {budget} bytes; raise \
                 GpuOptions::memory_budget or $WGNN_MEMORY_BUDGET, or lower the batch size)"
            );
            return Err(WgnnError::DeviceLimit {
                op: "fit".into(),
                what,
                amount: batch_bytes.saturating_mul(2),
                unit: "bytes",
                limit: share,
                limit_name: "training-data share (half) of its memory budget",
            });
        }
        // A batch wider than a binding is refused with the batch size to use (`check_batch_fits`).
        let batches = by_budget.min(by_binding.max(1)).min(steps as u64) as usize;
        let chunk_rows = (batches * batch) as u64;
        Ok(Some(ChunkPlan {
            batches,
            chunks: steps.div_ceil(batches),
            resident_bytes,
            buffer_bytes: 2 * (chunk_rows * row_bytes + 3),
        }))
    }
}

/// One chunk buffer: a training chunk's rows on the device, and which chunk it holds.
struct ChunkSlot {
    data: GpuData,
    /// (epoch, chunk) of the rows it holds.
    held: Option<(usize, usize)>,
}

/// The GPU backend's steps over a streamed training set: two chunk buffers, the step plans for
/// each (a full batch at either parity, and the partial last batch in the last chunk's), and the
/// host rows they are filled from.
pub(super) struct StreamSteps<'d> {
    gpu: Gpu,
    train: &'d Dataset,
    /// The loss's float targets, on the host, if it reads any.
    targets: Option<Targets>,
    shuffle: bool,
    batch: usize,
    plan: ChunkPlan,
    full_steps: usize,
    steps: usize,
    /// The epoch's number and row order (host side: the chunks are gathered by it).
    epoch: usize,
    order: Vec<u32>,
    /// The next epoch's order, once its first chunk is loaded ahead.
    next_order: Option<(usize, Vec<u32>)>,
    seed: u64,
    slots: [ChunkSlot; 2],
    /// `full_plans[slot][parity]`.
    full_plans: [Vec<Plan>; 2],
    tail_plan: Option<Plan>,
    validation: Option<(GpuData, EvalPlans)>,
    /// One chunk's labels, on their way to the device.
    labels: Vec<u32>,
    /// The index list the gathers read, `[rows]`: position p's row within its chunk, p mod the
    /// chunk's rows (fixed: the chunk buffer holds its rows in the epoch's order).
    _index: Tensor,
    /// The steps' batch buffers (the plans' bind groups keep them alive too; held for the count).
    _buffers: Vec<BatchBuffers>,
}

impl<'d> StreamSteps<'d> {
    pub(super) fn new(
        model: &Sequential,
        train: &'d Dataset,
        validation: Option<&Dataset>,
        opts: &FitOptions,
        optimizer: &Optimizer,
        plan: ChunkPlan,
    ) -> Result<StreamSteps<'d>> {
        let gpu = model.gpu_state()?.gpu.clone();
        model.check_batch_fits(&gpu, train, opts.batch_size)?;
        let n = train.rows;
        let batch = opts.batch_size.min(n);
        let chunk_rows = plan.batches * batch;
        let targets = model.loss().float_targets(train, model.output_dim())?;
        let max_label = train.labels.iter().copied().max().unwrap_or(0);
        let slot = || -> Result<ChunkSlot> {
            Ok(ChunkSlot { data: chunk_buffer(&gpu, train, targets.as_ref(), chunk_rows, max_label)?, held: None })
        };
        let slots = [slot()?, slot()?];
        let index: Vec<u32> = (0..n).map(|p| (p % chunk_rows) as u32).collect();
        let index = Tensor::from_u32(&gpu, &[n], &index)?;
        let (guarded, clip) = (opts.skip_nonfinite_batches, opts.clip_norm);
        let mut buf = model.batch_buffers(&gpu, &slots[0].data, batch, true)?;
        let step = |buf: &mut BatchBuffers, slot: usize, rows: usize, parity: usize| {
            let data = &slots[slot].data;
            model.train_step_plan(data, &index, buf, rows, batch, parity, optimizer, guarded, clip)
        };
        let full_plans = [
            vec![step(&mut buf, 0, batch, 0)?, step(&mut buf, 0, batch, 1)?],
            vec![step(&mut buf, 1, batch, 0)?, step(&mut buf, 1, batch, 1)?],
        ];
        let (full_steps, tail) = (n / batch, n % batch);
        // The partial last batch has buffers of its own (as resident), in the last chunk's buffer.
        let mut buffers = vec![buf];
        let tail_plan = match tail {
            0 => None,
            rows => {
                let last_slot = (full_steps / plan.batches) % 2;
                let mut tail_buf = model.batch_buffers(&gpu, &slots[last_slot].data, rows, true)?;
                let plan = step(&mut tail_buf, last_slot, rows, full_steps % 2)?;
                buffers.push(tail_buf);
                Some(plan)
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
        Ok(StreamSteps {
            gpu,
            train,
            targets,
            shuffle: opts.shuffle,
            batch,
            plan,
            full_steps,
            steps: n.div_ceil(batch),
            epoch: 0,
            order: Vec::new(),
            next_order: None,
            seed: model.seed,
            slots,
            full_plans,
            tail_plan,
            validation,
            labels: Vec::new(),
            _index: index,
            _buffers: buffers,
        })
    }

    /// Puts chunk `chunk` of `epoch`'s order (`order`) in its buffer (`chunk` mod 2), unless it
    /// is there. The writes are queued behind every step submitted so far, which is what makes it
    /// safe to overwrite the buffer the chunk before last was read from.
    fn load(&mut self, epoch: usize, chunk: usize, order: &[u32]) -> Result<()> {
        let slot = chunk % 2;
        if self.slots[slot].held == Some((epoch, chunk)) {
            return Ok(());
        }
        let chunk_rows = self.plan.batches * self.batch;
        let first = chunk * chunk_rows;
        let rows = &order[first..(first + chunk_rows).min(self.train.rows)];
        let data = &self.slots[slot].data;
        let dim = self.train.feature_dim;
        // Row by row into the queue's staging memory: u8 rows as the resident upload packs them
        // (their bytes in order, 4 to a word), f32 rows as their bits.
        match &self.train.features {
            Features::U8(all) => write_rows(&data.rows.chunks[0], rows, dim, |r| &all[r * dim..(r + 1) * dim])?,
            Features::F32(all) => {
                write_rows(&data.rows.chunks[0], rows, 4 * dim, |r| bytemuck::cast_slice(&all[r * dim..(r + 1) * dim]))?
            }
        }
        self.labels.clear();
        self.labels.extend(rows.iter().map(|&r| self.train.labels[r as usize]));
        data.rows.labels.view(0, &[rows.len()])?.write_u32(&self.labels)?;
        if let (Some(t), Some(on_device)) = (&self.targets, &data.targets) {
            let d = t.dim;
            write_rows(&on_device.chunks[0], rows, 4 * d, |r| bytemuck::cast_slice(&t.values[r * d..(r + 1) * d]))?;
        }
        self.slots[slot].held = Some((epoch, chunk));
        Ok(())
    }
}

/// Copies `rows` (`row_bytes` each, `row(r)` for data-set row r) to the start of `tensor`,
/// gathered straight into the queue's staging memory, the last word zero-padded.
fn write_rows<'a>(tensor: &Tensor, rows: &[u32], row_bytes: usize, row: impl Fn(usize) -> &'a [u8]) -> Result<()> {
    let bytes = rows.len() * row_bytes;
    let Some(size) = std::num::NonZeroU64::new(bytes.next_multiple_of(4) as u64) else { return Ok(()) };
    let gpu = tensor.gpu();
    gpu.check_lost()?;
    let staged = gpu.queue().write_buffer_with(tensor.shared_buffer(), tensor.byte_offset(), size);
    let mut staged = staged.ok_or_else(|| WgnnError::Gpu {
        op: "fit (streaming)".into(),
        message: format!("no staging memory for a chunk of {bytes} bytes"),
    })?;
    for (i, &r) in rows.iter().enumerate() {
        staged.slice(i * row_bytes..(i + 1) * row_bytes).copy_from_slice(row(r as usize));
    }
    staged.slice(bytes..).fill(0);
    Ok(())
}

/// A chunk buffer for `chunk_rows` rows of `train` (and its float targets), uploaded as the
/// resident set would be: the same scale, shift and standardisation; labels marked with the
/// training set's largest, which the loss checks against the classes without a readback.
fn chunk_buffer(
    gpu: &Gpu,
    train: &Dataset,
    targets: Option<&Targets>,
    chunk_rows: usize,
    max_label: u32,
) -> Result<GpuData> {
    let (source_u8, words) = match train.features {
        Features::U8(_) => (true, (chunk_rows * train.feature_dim).div_ceil(4)),
        Features::F32(_) => (false, chunk_rows * train.feature_dim),
    };
    let mean_std = match &train.standardize {
        Some((m, s)) => Some(Tensor::from_slice(gpu, &[2, train.feature_dim], &[m.as_slice(), s.as_slice()].concat())?),
        None => None,
    };
    let mut labels = Tensor::zeros_u32(gpu, &[chunk_rows])?;
    labels.set_max_u32(Some(max_label));
    let rows = GpuRows {
        chunks: vec![Tensor::zeros_u32(gpu, &[words.max(1)])?],
        rows_per_chunk: chunk_rows,
        labels,
        total_rows: chunk_rows,
        dim: train.feature_dim,
        source_u8,
        scale: train.scale,
        shift: train.shift,
        mean_std,
    };
    let targets = match targets {
        Some(t) => Some(GpuRows {
            chunks: vec![Tensor::zeros_u32(gpu, &[(chunk_rows * t.dim).max(1)])?],
            rows_per_chunk: chunk_rows,
            labels: Tensor::zeros_u32(gpu, &[chunk_rows])?,
            total_rows: chunk_rows,
            dim: t.dim,
            source_u8: false,
            scale: 1.0,
            shift: 0.0,
            mean_std: None,
        }),
        None => None,
    };
    Ok(GpuData { rows, targets })
}

impl Steps for StreamSteps<'_> {
    fn start_epoch(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        self.order = match self.next_order.take() {
            Some((next, order)) if next == epoch => order,
            _ => epoch_order(self.train.rows, self.shuffle, self.seed, epoch),
        };
        model.reset_epoch()
    }

    fn run(&mut self, model: &mut Sequential, first: usize, count: usize) -> Result<RunningSums> {
        let end = (first + count).min(self.steps);
        let order = std::mem::take(&mut self.order);
        let mut step = first;
        while step < end {
            let chunk = step / self.plan.batches;
            let slot = chunk % 2;
            self.load(self.epoch, chunk, &order)?;
            let until = ((chunk + 1) * self.plan.batches).min(end);
            let full_until = until.min(self.full_steps);
            let mut plans: Vec<&Plan> = (step..full_until).map(|s| &self.full_plans[slot][s % 2]).collect();
            if until > self.full_steps {
                plans.extend(self.tail_plan.as_ref());
            }
            self.gpu.run(&plans)?;
            // The next chunk is gathered and queued while this one's steps run; after the epoch's
            // last step, the next epoch's first chunk (its order is known from the seed).
            if chunk + 1 < self.plan.chunks {
                self.load(self.epoch, chunk + 1, &order)?;
            } else if until == self.steps {
                let next = self.epoch + 1;
                let next_order = epoch_order(self.train.rows, self.shuffle, self.seed, next);
                self.load(next, 0, &next_order)?;
                self.next_order = Some((next, next_order));
            }
            step = until;
        }
        self.order = order;
        model.read_totals()
    }

    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>> {
        self.validation.as_ref().map(|(_, plans)| model.run_eval(plans)).transpose()
    }
}
