//! The GPU buffers of one batch size: the batch, each block's activations and gradients, the
//! loss's per-row outputs.

use super::fusion::{act_grad_by_reader, is_fork, readers, Block, Core};
use super::*;
use crate::layers::batch_norm::NormBuffers;
use crate::layers::dropout::DropoutBuffers;
use crate::layers::step::CoreBuffers;

/// One block's tensors for one batch, each `[rows, features]` unless said otherwise.
pub(super) struct BlockBuffers {
    /// The block's input: the batch, or the block below's output after its dropout.
    pub(super) input: Tensor,
    /// The core's output where the core does not write `h` itself: batch norm's input, or a
    /// softmax's. (An identity core's output is its input.)
    pub(super) lin: Option<Tensor>,
    pub(super) norm: Option<NormBuffers>,
    /// The output before dropout (a view of the activation's input where the activation is the
    /// identity and the core does not write it).
    pub(super) h: Tensor,
    /// Training: the gradient w.r.t. the activation's input.
    pub(super) dz: Option<Tensor>,
    /// Training, where the activation's backward runs on its own (softmax, or a fork's): the
    /// gradient w.r.t. `h`.
    pub(super) dh: Option<Tensor>,
    /// Training, where the block's input is a fork (read by other blocks too): the gradient
    /// w.r.t. its input, summed with the other readers' before the fork's backward.
    pub(super) dinput: Option<Tensor>,
    /// Training, a fork read by more than two blocks: the partial sums of their gradients.
    pub(super) sums: Vec<Tensor>,
    pub(super) dropout: Option<DropoutBuffers>,
    /// What the core needs beyond its output (max pooling's argmax, a convolution's patches).
    pub(super) core: CoreBuffers,
    /// A residual sum whose input block's epilogue computes it ([`Block::sum_in_epilogue`], the
    /// buffers allowing): its forward runs nothing.
    pub(super) sum_in_epilogue: bool,
    /// The block whose epilogue computes the sum above it: (the sum's output, the shortcut, the
    /// sum's block).
    pub(super) residual_out: Option<(Tensor, Tensor, usize)>,
}

impl BlockBuffers {
    /// What the block above reads: the output after dropout, if any.
    pub(super) fn output(&self) -> &Tensor {
        self.dropout.as_ref().map_or(&self.h, |d| &d.dropped)
    }

    /// The core's output: `lin`, or the input of an identity core, or `h`.
    pub(super) fn core_out(&self, block: &Block) -> &Tensor {
        match (&self.lin, &block.core) {
            (Some(lin), _) => lin,
            (None, Core::Identity) => &self.input,
            (None, _) => &self.h,
        }
    }

    /// The activation's input: batch norm's output, or the core's.
    pub(super) fn act_input(&self, block: &Block) -> &Tensor {
        self.norm.as_ref().map_or_else(|| self.core_out(block), |n| &n.normed)
    }

    /// What the backward of `act` (the block's applied activation) reads for act′: the
    /// activation's input z for the GELUs ([`Activation::saves_input`]), else its output `h`.
    pub(super) fn act_saved(&self, block: &Block, act: Activation) -> Result<Tensor> {
        match act.saves_input() {
            true => self.act_input(block).reshape(self.h.shape()),
            false => Ok(self.h.clone()),
        }
    }

    /// The training gradient w.r.t. the activation's input (an internal error outside training).
    pub(super) fn dz(&self) -> Result<&Tensor> {
        self.dz
            .as_ref()
            .ok_or_else(|| WgnnError::invalid("step", "no gradient buffers outside training (an internal error)"))
    }
}

/// The buffers of one batch size.
pub(super) struct BatchBuffers {
    /// The batch: `[rows, input]` f32, or a token model's ids, `[rows, T]` u32.
    pub(super) x: Tensor,
    /// The labels, one per row, or (a per-position loss) one per position: `[rows · T]` u32.
    pub(super) y: Tensor,
    rows: usize,
    pub(super) blocks: Vec<BlockBuffers>,
    pub(super) loss_rows: Tensor,
    pub(super) correct_rows: Tensor,
    /// The batch's float targets [rows, dim] and the gather's scratch labels [rows], for losses
    /// that read targets.
    pub(super) targets: Option<(Tensor, Tensor)>,
    pub(super) training: bool,
    /// Rows allocated for the [rows, features] tensors a weight gradient reads: rows rounded up to
    /// a multiple of 4 when training, the extra rows zero for good (kernels see [rows, features]
    /// views). dW = inputᵀ·dZ then runs over `padded_rows`, which the vec4 and subgroup kernels
    /// need; the zero rows add nothing to it or to db.
    pub(super) padded_rows: usize,
    /// Mean squared error's gradient w.r.t. the last block's output [rows, outputs], when
    /// training through a non-linear last activation (the loss writes it, a backward dispatch
    /// turns it into dz).
    pub(super) dpred: Option<Tensor>,
}

impl BatchBuffers {
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// `acts`: each block's applied activation; `target_dim`: the width of the loss's float
    /// targets, if it reads any; `dpred`: allocate [`BatchBuffers::dpred`]; `tokens`: the batch
    /// holds ids (u32) and the loss reads `positions` labels per row (see
    /// [`Sequential::loss_positions`]), else 1.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        gpu: &Gpu,
        blocks: &[Block],
        acts: &[Activation],
        input_dim: usize,
        rows: usize,
        training: bool,
        target_dim: Option<usize>,
        dpred: bool,
        tokens: Option<usize>,
    ) -> Result<BatchBuffers> {
        let outputs = blocks.last().map_or(input_dim, |b| b.outputs);
        let padded_rows = if training { rows.next_multiple_of(4) } else { rows };
        // [rows, features] views of [padded_rows, features] allocations: anything a weight
        // gradient may read.
        let rows_of = |features: usize| Tensor::zeros(gpu, &[padded_rows, features])?.view(0, &[rows, features]);
        let x = match tokens {
            Some(_) => Tensor::zeros_u32(gpu, &[rows, input_dim])?,
            None => rows_of(input_dim)?,
        };
        let labels = rows * tokens.unwrap_or(1);
        let mut built: Vec<BlockBuffers> = Vec::with_capacity(blocks.len());
        for (i, (block, &act)) in blocks.iter().zip(acts).enumerate() {
            let input = block.input.map_or(&x, |j| built[j].output()).clone();
            let n = block.outputs;
            // The core's output: its own buffer unless the core writes `h` (its epilogue applies
            // the activation) or has none (an identity).
            let lin = match block.core {
                Core::Op { .. } | Core::Add { .. } if !block.act_in_core(act, training) => Some(rows_of(n)?),
                _ => None,
            };
            let core = match block.core.step() {
                Some((step, at)) => step.buffers(gpu, at, rows, training)?,
                None => CoreBuffers::default(),
            };
            let norm = match block.norm {
                Some(bn) => {
                    let per_channel = [rows * n / bn.channels, bn.channels];
                    let dx = if training { rows_of(n)?.reshape(&per_channel)? } else { Tensor::zeros(gpu, &[1])? };
                    Some(NormBuffers::new(gpu, rows_of(n)?.reshape(&per_channel)?, dx, bn.channels)?)
                }
                None => None,
            };
            let mut bb = BlockBuffers {
                input,
                lin,
                norm,
                h: x.clone(),
                dz: None,
                dh: None,
                dinput: None,
                sums: Vec::new(),
                dropout: None,
                core,
                sum_in_epilogue: false,
                residual_out: None,
            };
            // The output: its own buffer where a dispatch of the activation (or the core's
            // epilogue) writes it, else the activation's input (batch norm's output through the
            // activation, or an identity's input).
            let own =
                block.act_in_core(act, training) || (act != Activation::Identity && !block.act_in_norm(act, training));
            bb.h = if own { rows_of(n)? } else { bb.act_input(block).reshape(&[rows, n])? };
            if training {
                bb.dz = Some(rows_of(n)?);
                // Where the activation's backward runs on its own: softmax (the blocks above fold
                // an element-wise activation's into their input gradient), a fork's (its readers'
                // gradients are summed first), or below a core that does not fold it.
                let fork = is_fork(blocks, i);
                let own_act_grad = i + 1 < blocks.len() && !act_grad_by_reader(blocks, i);
                if act == Activation::Softmax || (own_act_grad && act != Activation::Identity) {
                    bb.dh = Some(Tensor::zeros(gpu, &[rows, n])?);
                }
                if fork {
                    for _ in 2..readers(blocks, i).count() {
                        bb.sums.push(Tensor::zeros(gpu, &[rows, n])?);
                    }
                }
                let input_is_fork = block.input.is_some_and(|j| is_fork(blocks, j));
                if input_is_fork && !matches!(block.core, Core::Add { .. }) {
                    bb.dinput = Some(rows_of(block.inputs)?);
                }
                if block.dropout.is_some() {
                    let t = || Tensor::zeros(gpu, &[rows, n]);
                    bb.dropout = Some(DropoutBuffers { dropped: rows_of(n)?, mask: t()?, before_mask: t()? });
                }
            }
            if let (true, Core::Add { shortcut }, Some(j)) = (block.sum_in_epilogue, &block.core, block.input) {
                // The shortcut is bound writable: not where the core reads its input.
                let residual = shortcut.map_or(&x, |s| built[s].output()).clone();
                if !residual.same_buffer(&built[j].input) {
                    bb.sum_in_epilogue = true;
                    built[j].residual_out = Some((bb.h.clone(), residual, i));
                }
            }
            if let (true, Some(j), Some(dz)) = (block.shares_input_grad, block.input, &bb.dz) {
                built[j].dz = Some(dz.clone());
            }
            built.push(bb);
        }
        Ok(BatchBuffers {
            targets: match target_dim {
                Some(d) => Some((Tensor::zeros(gpu, &[rows, d])?, Tensor::zeros_u32(gpu, &[rows])?)),
                None => None,
            },
            dpred: if training && dpred { Some(Tensor::zeros(gpu, &[rows, outputs])?) } else { None },
            training,
            padded_rows,
            x,
            y: Tensor::zeros_u32(gpu, &[labels])?,
            rows,
            blocks: built,
            loss_rows: Tensor::zeros(gpu, &[labels])?,
            correct_rows: Tensor::zeros(gpu, &[labels])?,
        })
    }
}

impl Sequential {
    /// Each block's `[rows, outputs]` tensors for a batch of `rows` must fit one binding: checked
    /// before any is allocated, so that the error names the layer and its output's shape rather
    /// than the first tensor that failed (a model of few parameters can have outputs of
    /// gigabytes per sample).
    pub(super) fn check_batch_buffers(&self, gpu: &Gpu, rows: usize, training: bool) -> Result<()> {
        let padded = if training { rows.next_multiple_of(4) } else { rows };
        let limit = binding_bytes(gpu);
        for block in &self.blocks {
            let bytes = padded.checked_mul(block.outputs).and_then(|v| crate::host_memory::checked_bytes(v, 4));
            if bytes.is_some_and(|b| b <= limit) {
                continue;
            }
            let last = block.layers.end - 1;
            let shape = [&[padded][..], &self.shapes[last + 1]].concat();
            let mut rows_text = if rows == 1 { "1 row".to_string() } else { format!("{rows} rows") };
            if padded != rows {
                rows_text += &format!(" (padded to {padded} in training)");
            }
            return Err(WgnnError::DeviceLimit {
                op: self.layers[last].op(last),
                what: format!("its output for a batch of {rows_text}, {shape:?} f32,"),
                amount: bytes.unwrap_or(u64::MAX),
                unit: "bytes",
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        Ok(())
    }
}
