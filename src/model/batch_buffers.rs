//! The GPU buffers of one batch size: activations, gradients and per-row outputs, and the
//! intermediates of dropout, batch norm and softmax layers.

use super::*;

/// Activations and per-row outputs for one batch size.
pub(super) struct BatchBuffers {
    pub(super) x: Tensor,
    pub(super) y: Tensor,
    /// Output of each layer, [rows, units].
    pub(super) h: Vec<Tensor>,
    /// Gradient w.r.t. each layer's pre-activation, [rows, units].
    pub(super) dz: Vec<Tensor>,
    pub(super) loss_rows: Tensor,
    pub(super) correct_rows: Tensor,
    /// Per layer with dropout, when training: (dropped output, mask, the gradient before the
    /// mask), each [rows, units].
    pub(super) dropout: Vec<Option<(Tensor, Tensor, Tensor)>>,
    /// The batch's float targets [rows, dim] and the gather's scratch labels [rows], for losses
    /// that read targets.
    pub(super) targets: Option<(Tensor, Tensor)>,
    /// Per batch-normalised layer, its intermediates.
    pub(super) norm: Vec<Option<NormBuffers>>,
    /// Per softmax layer: (the softmax's input [rows, units] — without batch norm, whose output
    /// is that input — and when training the gradient w.r.t. its output [rows, units]).
    pub(super) softmax: Vec<Option<(Tensor, Tensor)>>,
    pub(super) training: bool,
    /// Rows allocated for the [rows, units] tensors a weight gradient reads: rows rounded up to a
    /// multiple of 4 when training, the extra rows zero for good (kernels see [rows, units]
    /// views). dW = inputᵀ·dZ then runs over `padded_rows`, which the vec4 and subgroup kernels
    /// need; the zero rows add nothing to it or to db.
    pub(super) padded_rows: usize,
    /// Mean squared error's gradient w.r.t. the last layer's output [rows, outputs], when training
    /// through a non-linear last activation (the loss writes it, a backward dispatch turns it
    /// into dz).
    pub(super) dpred: Option<Tensor>,
}

/// A batch-normalised layer's intermediates for one batch.
pub(super) struct NormBuffers {
    /// x·W, [rows, units].
    pub(super) linear: Tensor,
    /// BN(x·W), the activation's input, [rows, units].
    pub(super) normed: Tensor,
    /// The gradient w.r.t. `linear`, [rows, units] (training only, else unused).
    pub(super) dlinear: Tensor,
    /// The batch's mean and 1/√(σ² + eps), [units], saved by the forward for the backward.
    pub(super) mean: Tensor,
    pub(super) inv_std: Tensor,
    /// The batch's unbiased variance [units], folded into the running one after the step's
    /// guard (training only).
    pub(super) pending_var: Tensor,
}

impl BatchBuffers {
    /// `t` ([rows, units], allocated by [`BatchBuffers::new`]) over `padded_rows`.
    pub(super) fn padded(&self, t: &Tensor) -> Result<Tensor> {
        match t.shape() {
            &[rows, units] if rows != self.padded_rows => t.extended(&[self.padded_rows, units]),
            _ => Ok(t.clone()),
        }
    }

    /// What layer `i + 1` reads: layer i's output after dropout, if any.
    pub(super) fn layer_input<'b>(&'b self, x_or_h: &'b Tensor, i: usize) -> &'b Tensor {
        self.dropout.get(i).and_then(Option::as_ref).map_or(x_or_h, |(dropped, _, _)| dropped)
    }

    /// `target_dim`: the width of the loss's float targets, if it reads any; `dpred`: allocate
    /// [`BatchBuffers::dpred`].
    /// `acts`: each layer's applied activation.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        gpu: &Gpu,
        layers: &[Dense],
        acts: &[Activation],
        input_dim: usize,
        rows: usize,
        training: bool,
        target_dim: Option<usize>,
        dpred: bool,
    ) -> Result<BatchBuffers> {
        let outputs = layers.last().map_or(input_dim, |l| l.units);
        let padded_rows = if training { rows.next_multiple_of(4) } else { rows };
        // [rows, units] views of [padded_rows, units] allocations: what a weight gradient reads.
        let rows_of = |units: usize| Tensor::zeros(gpu, &[padded_rows, units])?.view(0, &[rows, units]);
        Ok(BatchBuffers {
            softmax: layers
                .iter()
                .zip(acts)
                .map(|(l, &act)| match act {
                    Activation::Softmax => {
                        // The input buffer only without batch norm (BN's output is the input then).
                        let full = |needed: bool| match needed {
                            true => Tensor::zeros(gpu, &[rows, l.units]),
                            false => Tensor::zeros(gpu, &[1]),
                        };
                        Ok(Some((full(l.batch_norm.is_none())?, full(training)?)))
                    }
                    _ => Ok(None),
                })
                .collect::<Result<_>>()?,
            targets: match target_dim {
                Some(d) => Some((Tensor::zeros(gpu, &[rows, d])?, Tensor::zeros_u32(gpu, &[rows])?)),
                None => None,
            },
            dpred: if training && dpred { Some(Tensor::zeros(gpu, &[rows, outputs])?) } else { None },
            norm: layers
                .iter()
                .map(|l| match l.batch_norm {
                    Some(_) => {
                        let t = || Tensor::zeros(gpu, &[rows, l.units]);
                        let dlinear = if training { rows_of(l.units)? } else { Tensor::zeros(gpu, &[1])? };
                        let (mean, inv_std) = (Tensor::zeros(gpu, &[l.units])?, Tensor::zeros(gpu, &[l.units])?);
                        let pending_var = Tensor::zeros(gpu, &[l.units])?;
                        Ok(Some(NormBuffers { linear: t()?, normed: t()?, dlinear, mean, inv_std, pending_var }))
                    }
                    None => Ok(None),
                })
                .collect::<Result<_>>()?,
            training,
            padded_rows,
            x: rows_of(input_dim)?,
            y: Tensor::zeros_u32(gpu, &[rows])?,
            h: layers.iter().map(|l| rows_of(l.units)).collect::<Result<_>>()?,
            dz: if training { layers.iter().map(|l| rows_of(l.units)).collect::<Result<_>>()? } else { Vec::new() },
            loss_rows: Tensor::zeros(gpu, &[rows])?,
            correct_rows: Tensor::zeros(gpu, &[rows])?,
            dropout: layers
                .iter()
                .map(|l| {
                    if training && l.dropout > 0.0 {
                        let t = || Tensor::zeros(gpu, &[rows, l.units]);
                        Ok(Some((rows_of(l.units)?, t()?, t()?)))
                    } else {
                        Ok(None)
                    }
                })
                .collect::<Result<_>>()?,
        })
    }
}
