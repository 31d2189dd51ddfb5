//! The output head that shares the token embedding's table (nanoGPT ties `lm_head.weight` to
//! `wte.weight`): logits = h·tableᵀ, no bias, over the last axis of a `[T, C]` sample. It has no
//! parameters of its own (the table is saved once, with the embedding). Its backward writes the
//! table's gradient dtable = dYᵀ·h whole, first (the backward walks the layers in reverse); the
//! embedding's backward then adds its own to it (`Embedding::grad_accumulates`), so the gradient
//! sums both uses, in a fixed order.

use super::step::{CpuCore, GpuCore, Placement, StepCore};
use super::Layer;
use crate::activation::Activation;
use crate::cpu;
use crate::error::{Result, WgnnError};
use crate::kernels::matmul::{matmul, Epilogue, MatmulOptions};
use crate::plan::Plan;
use crate::tensor::Tensor;

/// A dense layer without bias whose weight is the transposed table of layer `embedding` (an
/// [`super::Embedding`] of `vocab` ids).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TiedDense {
    /// The embedding's index in the model.
    pub embedding: usize,
    pub vocab: usize,
}

impl TiedDense {
    pub fn describe(&self) -> String {
        format!("dense_tied({}, to layer {})", self.vocab, self.embedding)
    }

    /// Layer `embedding` of `below` (the layers before this one) must be an embedding of this
    /// vocabulary, whose width is the last axis of `input`, and no other head tied to it: the
    /// embedding adds its gradient to the one head's, which writes it whole.
    pub(crate) fn check_tie(&self, op: &str, below: &[Layer], input: &[usize]) -> Result<()> {
        if let Some(j) = below.iter().position(|l| matches!(l, Layer::TiedDense(t) if t.embedding == self.embedding)) {
            return Err(WgnnError::invalid(
                op,
                format!("layer {j} is tied to layer {} already: one head may share its table", self.embedding),
            ));
        }
        match below.get(self.embedding) {
            Some(Layer::Embedding(e)) if e.vocab == self.vocab && input.last() == Some(&e.width) => Ok(()),
            Some(Layer::Embedding(e)) => Err(WgnnError::shape_of(
                op,
                &[("input", input), ("table", &[e.vocab, e.width])],
                format!(
                    "a head tied to {} needs [.., {}] inputs and {} outputs, got {input:?} and {}",
                    e.describe(),
                    e.width,
                    e.vocab,
                    self.vocab
                ),
            )),
            _ => Err(WgnnError::invalid(op, format!("layer {} is not an embedding to tie to", self.embedding))),
        }
    }

    /// `[.., C]` → `[.., vocab]`.
    pub(super) fn output_shape(&self, op: &str, input: &[usize]) -> Result<Vec<usize>> {
        match input.split_last() {
            Some((_, rest)) => Ok([rest, &[self.vocab]].concat()),
            None => Err(WgnnError::shape_of(op, &[("input", input)], "the input has no axes")),
        }
    }

    fn table(&self, flat: &Tensor, at: &Placement) -> Result<Tensor> {
        flat.view(at.weight.unwrap_or(0), &[self.vocab, width(at)])
    }
}

fn width(at: &Placement) -> usize {
    at.input.last().copied().unwrap_or(1)
}

/// `t` `[rows, positions·n]` as `[rows·positions, n]` (positions·n = its row's values).
fn per_position(t: &Tensor, n: usize) -> Result<Tensor> {
    let rows = t.shape().first().copied().unwrap_or(1);
    t.reshape(&[rows * (t.len() / rows.max(1) / n), n])
}

impl StepCore for TiedDense {
    fn weights(&self, flat: &Tensor, at: &Placement) -> Result<Option<(Tensor, Option<Tensor>)>> {
        Ok(Some((self.table(flat, at)?, None)))
    }

    fn forward_gpu(&self, c: &GpuCore, params: &Tensor, out: &Tensor, _act: Activation) -> Result<Plan> {
        let (x, y) = (per_position(c.input, width(c.at))?, per_position(out, self.vocab)?);
        matmul(c.gpu, &x, &self.table(params, c.at)?, &y, &MatmulOptions { trans_b: true, ..Default::default() })
    }

    /// dtable = dYᵀ·h `[vocab, C]`, over the padded rows (zero past the batch).
    fn backward_params_gpu(&self, c: &GpuCore, grads: &Tensor, dy: &Tensor) -> Result<Plan> {
        let x = per_position(&c.padded(c.input)?, width(c.at))?;
        let dy = per_position(&c.padded(dy)?, self.vocab)?;
        matmul(c.gpu, &dy, &x, &self.table(grads, c.at)?, &MatmulOptions { trans_a: true, ..Default::default() })
    }

    fn backward_input_gpu(
        &self,
        c: &GpuCore,
        params: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan> {
        let n = width(c.at);
        let (dy, dx) = (per_position(dy, self.vocab)?, per_position(dx, n)?);
        let below = below.map(|(y, act)| per_position(y, n).map(|y| (y, act))).transpose()?;
        let epilogue = match &below {
            Some((y, act)) => Epilogue::ActGrad { y, act: *act },
            None => Epilogue::None,
        };
        matmul(c.gpu, &dy, &self.table(params, c.at)?, &dx, &MatmulOptions { epilogue, ..Default::default() })
    }

    fn forward_cpu(&self, c: &CpuCore, _act: Activation) -> Result<(Vec<f32>, Vec<u32>)> {
        let n = width(c.at);
        let o = c.at.weight.unwrap_or(0);
        let table = &c.params[o..o + self.vocab * n];
        let positions = c.input.len() / n;
        Ok((cpu::matmul(c.input, table, positions, n, self.vocab, false, true), Vec::new()))
    }

    fn backward_cpu(
        &self,
        c: &CpuCore,
        grads: &mut [f32],
        dy: &[f32],
        _argmax: &[u32],
        input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let n = width(c.at);
        let o = c.at.weight.unwrap_or(0);
        let positions = c.input.len() / n;
        let dtable = cpu::matmul(dy, c.input, self.vocab, positions, n, true, false);
        grads[o..o + dtable.len()].copy_from_slice(&dtable);
        let table = &c.params[o..o + self.vocab * n];
        Ok(input_grad.then(|| cpu::matmul(dy, table, positions, self.vocab, n, false, false)))
    }
}
