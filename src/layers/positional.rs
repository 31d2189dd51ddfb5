//! The learned positional embedding (GPT-2's `wpe`): row t of a `[block, C]` table added to the
//! token at position t of each `[T, C]` sample, T ≤ block. Its kernels are
//! `kernels/positional.rs`'s: the table's gradient is dy summed over the batch in a fixed order;
//! the input's gradient is dy itself (a copy, through the activation below where it asks).

use super::step::{CpuCore, GpuCore, Placement, StepCore};
use super::{SlotInit, SlotSpec};
use crate::activation::Activation;
use crate::cpu;
use crate::error::{Result, WgnnError};
use crate::init::Initializer;
use crate::kernels::positional::{positional_add_backward, positional_add_forward};
use crate::layers::activation as act_layer;
use crate::plan::Plan;
use crate::tensor::Tensor;

/// Positions 0..`block` of a `[T, C]` sample, each with a learned row of C values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PositionalEmbedding {
    pub block: usize,
    pub init: Initializer,
}

impl PositionalEmbedding {
    /// A table of `block` positions drawn normal(0, 0.02) as nanoGPT's.
    pub fn new(block: usize) -> PositionalEmbedding {
        PositionalEmbedding { block, init: super::embedding::GPT_INIT }
    }

    pub fn describe(&self) -> String {
        format!("positional_embedding({})", self.block)
    }

    pub(super) fn validate(&self, op: &str) -> Result<()> {
        match self.block {
            0 => Err(WgnnError::invalid(op, "block must be at least 1")),
            _ => Ok(()),
        }
    }

    /// `[T, C]` → `[T, C]`, T ≤ block.
    pub(super) fn output_shape(&self, op: &str, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [t, c] if t > 0 && c > 0 && t <= self.block => Ok(input.to_vec()),
            [t, _] if t > self.block => Err(WgnnError::shape_of(
                op,
                &[("input", input)],
                format!("a sample of {t} positions is longer than the table's block of {}", self.block),
            )),
            _ => Err(WgnnError::shape_of(
                op,
                &[("input", input)],
                format!("a positional embedding takes [T, C] samples, got {input:?}"),
            )),
        }
    }

    /// The table `[block, C]`.
    pub(super) fn slots(&self, input: &[usize]) -> Vec<SlotSpec> {
        let width = input.last().copied().unwrap_or(1);
        vec![SlotSpec {
            name: "table",
            shape: vec![self.block, width],
            init: SlotInit::Draw { init: self.init, fan_in: self.block, fan_out: width },
            trainable: true,
        }]
    }

    fn table(&self, flat: &Tensor, at: &Placement) -> Result<Tensor> {
        flat.view(at.weight.unwrap_or(0), &[self.block, width(at)])
    }
}

/// (T, C) of the layer's `[T, C]` input.
fn dims(at: &Placement) -> (usize, usize) {
    (at.input.first().copied().unwrap_or(1), width(at))
}

fn width(at: &Placement) -> usize {
    at.input.last().copied().unwrap_or(1)
}

impl StepCore for PositionalEmbedding {
    fn weights(&self, flat: &Tensor, at: &Placement) -> Result<Option<(Tensor, Option<Tensor>)>> {
        Ok(Some((self.table(flat, at)?, None)))
    }

    fn forward_gpu(&self, c: &GpuCore, params: &Tensor, out: &Tensor, _act: Activation) -> Result<Plan> {
        let (t, w) = dims(c.at);
        let shape = [c.rows, t, w];
        positional_add_forward(c.gpu, &c.input.reshape(&shape)?, &self.table(params, c.at)?, &out.reshape(&shape)?)
    }

    fn backward_params_gpu(&self, c: &GpuCore, grads: &Tensor, dy: &Tensor) -> Result<Plan> {
        let (t, w) = dims(c.at);
        positional_add_backward(c.gpu, &dy.reshape(&[c.rows, t, w])?, &self.table(grads, c.at)?, false)
    }

    fn backward_input_gpu(
        &self,
        c: &GpuCore,
        _params: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan> {
        // dx = dy, through the activation below where it asks (a copy through the identity).
        let (y, act) = below.unwrap_or((dy, Activation::Identity));
        act_layer::backward_gpu(c.gpu, dy, y, dx, act)
    }

    fn forward_cpu(&self, c: &CpuCore, _act: Activation) -> Result<(Vec<f32>, Vec<u32>)> {
        let (t, w) = dims(c.at);
        let o = c.at.weight.unwrap_or(0);
        let table = &c.params[o..o + self.block * w];
        Ok((cpu::positional_add_forward(c.input, table, c.rows, t, w), Vec::new()))
    }

    fn backward_cpu(
        &self,
        c: &CpuCore,
        grads: &mut [f32],
        dy: &[f32],
        _argmax: &[u32],
        input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let (t, w) = dims(c.at);
        let dtable = cpu::positional_add_backward(dy, c.rows, t, self.block, w);
        let o = c.at.weight.unwrap_or(0);
        grads[o..o + dtable.len()].copy_from_slice(&dtable);
        Ok(input_grad.then(|| dy.to_vec()))
    }
}
