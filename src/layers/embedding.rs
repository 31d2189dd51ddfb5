//! The token embedding (Keras' `Embedding(vocab, width)`, GPT-2's `wte`): a sample of `T` token
//! ids becomes `[T, width]`, row `id` of a learned `[vocab, width]` table per token. It is a
//! model's first layer: the batch then holds u32 ids (see `model/batch_buffers.rs`), and the
//! CPU reference reads them as f32 values (exact below 2²⁴, the largest vocabulary a data set
//! takes). Its kernels are `kernels/embedding.rs`'s; the backward sums repeated ids in token
//! order, deterministically. Where the output head shares the table
//! ([`super::TiedDense`]), the head's backward writes the table's gradient first and this one
//! adds to it.

use super::step::{CpuCore, GpuCore, Placement, StepCore};
use super::{SlotInit, SlotSpec};
use crate::activation::Activation;
use crate::cpu;
use crate::error::{Result, WgnnError};
use crate::init::Initializer;
use crate::kernels::embedding::{embedding_backward, embedding_forward, TokenIds};
use crate::plan::Plan;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// nanoGPT's initialiser of its embedding tables and weights: normal(0, 0.02).
pub const GPT_INIT: Initializer = Initializer::Normal { mean: 0.0, std: 0.02 };

/// `vocab` ids to rows of `width` values; the table drawn by `init`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Embedding {
    pub vocab: usize,
    pub width: usize,
    pub init: Initializer,
    /// Set by the step's graph where a tied head writes the table's gradient first: the
    /// backward adds to it instead of overwriting it.
    pub(crate) grad_accumulates: bool,
}

impl Embedding {
    /// An embedding of `vocab` ids to `width` values, its table drawn normal(0, 0.02) as
    /// nanoGPT's.
    pub fn new(vocab: usize, width: usize) -> Embedding {
        Embedding { vocab, width, init: GPT_INIT, grad_accumulates: false }
    }

    /// The same embedding with its table drawn by `init`.
    pub fn with_init(self, init: Initializer) -> Embedding {
        Embedding { init, ..self }
    }

    pub fn describe(&self) -> String {
        format!("embedding({}, {})", self.vocab, self.width)
    }

    pub(super) fn validate(&self, op: &str, index: usize) -> Result<()> {
        if self.vocab == 0 || self.width == 0 {
            return Err(WgnnError::invalid(op, "vocab and width must be at least 1"));
        }
        let most = crate::data::MAX_CLASSES;
        if self.vocab > most {
            let detail = format!("a vocabulary of {} ids is past {most} (the CPU reads ids as exact f32)", self.vocab);
            return Err(WgnnError::invalid(op, detail));
        }
        if index != 0 {
            return Err(WgnnError::invalid(op, "an embedding reads token ids: it must be the model's first layer"));
        }
        Ok(())
    }

    /// `[T]` ids → `[T, width]`.
    pub(super) fn output_shape(&self, op: &str, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            &[t] if t > 0 => Ok(vec![t, self.width]),
            _ => Err(WgnnError::shape_of(
                op,
                &[("input", input)],
                format!("an embedding takes a sample of [T] token ids, got {input:?} (InputShape::tokens(T))"),
            )),
        }
    }

    /// The table `[vocab, width]`.
    pub(super) fn slots(&self) -> Vec<SlotSpec> {
        vec![SlotSpec {
            name: "table",
            shape: vec![self.vocab, self.width],
            init: SlotInit::Draw { init: self.init, fan_in: self.vocab, fan_out: self.width },
            trainable: true,
        }]
    }

    /// An error naming the layer (`op`) for the first id of `ids` at or past the vocabulary.
    pub(crate) fn check_ids(&self, op: &str, ids: impl IntoIterator<Item = u32>) -> Result<()> {
        match ids.into_iter().enumerate().find(|&(_, id)| id as usize >= self.vocab) {
            Some((at, id)) => Err(WgnnError::invalid(
                op,
                format!("token id {id} at position {at} is past the embedding's vocabulary of {} ids", self.vocab),
            )),
            None => Ok(()),
        }
    }

    fn table(&self, flat: &Tensor, at: &Placement) -> Result<Tensor> {
        flat.view(at.weight.unwrap_or(0), &[self.vocab, self.width])
    }
}

/// An embedding in a saved file (`{"type": "embedding", "vocab": 65, "width": 128}`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Saved {
    vocab: usize,
    width: usize,
}

impl Embedding {
    pub(crate) fn saved(&self) -> Saved {
        Saved { vocab: self.vocab, width: self.width }
    }
}

impl Saved {
    pub(crate) fn layer(&self) -> Embedding {
        Embedding::new(self.vocab, self.width)
    }
}

impl StepCore for Embedding {
    fn weights(&self, flat: &Tensor, at: &Placement) -> Result<Option<(Tensor, Option<Tensor>)>> {
        Ok(Some((self.table(flat, at)?, None)))
    }

    fn forward_gpu(&self, c: &GpuCore, params: &Tensor, out: &Tensor, _act: Activation) -> Result<Plan> {
        let tokens = c.rows * c.at.inputs;
        let ids = c.input.reshape(&[tokens])?;
        embedding_forward(c.gpu, TokenIds::U32(&ids), &self.table(params, c.at)?, &out.reshape(&[tokens, self.width])?)
    }

    fn backward_params_gpu(&self, c: &GpuCore, grads: &Tensor, dy: &Tensor) -> Result<Plan> {
        let tokens = c.rows * c.at.inputs;
        let ids = c.input.reshape(&[tokens])?;
        let (dy, dtable) = (dy.reshape(&[tokens, self.width])?, self.table(grads, c.at)?);
        embedding_backward(c.gpu, TokenIds::U32(&ids), &dy, &dtable, self.grad_accumulates)
    }

    /// Ids have no gradient: nothing to write (the embedding is the first layer).
    fn backward_input_gpu(
        &self,
        _c: &GpuCore,
        _params: &Tensor,
        _dy: &Tensor,
        _dx: &Tensor,
        _below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan> {
        Ok(Plan::new())
    }

    fn forward_cpu(&self, c: &CpuCore, _act: Activation) -> Result<(Vec<f32>, Vec<u32>)> {
        let ids = cpu_ids(c.input);
        self.check_ids(&self.describe(), ids.iter().copied())?;
        let o = c.at.weight.unwrap_or(0);
        let table = &c.params[o..o + self.vocab * self.width];
        Ok((cpu::embedding_forward(&ids, table, self.vocab, self.width), Vec::new()))
    }

    fn backward_cpu(
        &self,
        c: &CpuCore,
        grads: &mut [f32],
        dy: &[f32],
        _argmax: &[u32],
        _input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let dtable = cpu::embedding_backward(&cpu_ids(c.input), dy, self.vocab, self.width);
        let o = c.at.weight.unwrap_or(0);
        let target = &mut grads[o..o + dtable.len()];
        match self.grad_accumulates {
            true => target.iter_mut().zip(&dtable).for_each(|(g, d)| *g += d),
            false => target.copy_from_slice(&dtable),
        }
        Ok(None)
    }
}

/// The CPU pass's ids: f32 values of whole numbers (exact below 2²⁴). A value that is not a
/// valid id (negative, fractional, NaN) maps past any vocabulary, so the id check refuses it.
fn cpu_ids(input: &[f32]) -> Vec<u32> {
    input
        .iter()
        .map(|&v| if v >= 0.0 && v.fract() == 0.0 && v < u32::MAX as f32 { v as u32 } else { u32::MAX })
        .collect()
}
