//! Multi-head self-attention on a `[T, C]` sample (nanoGPT's `CausalSelfAttention`, llm.c's
//! attention layer): qkv = x·W_qkv + b_qkv per token (W_qkv `[C, 3C]`: each token's query, key
//! and value side by side, as llm.c lays them out), scaled dot-product attention head by head with
//! the causal mask (the clear or the flash kernels, `kernels::attention_choice`), then
//! y = att·W_proj + b_proj (W_proj `[C, C]`). The projections are dense.rs's matmul wrappers over
//! the batch's `rows·T` tokens; the CPU reference is the CPU matmul and `cpu::attention`.
//!
//! Without the causal mask (`causal: false`, Keras' default) every token attends to every token.
//! Attention dropout ([`MultiHeadAttention::with_dropout`], nanoGPT's `attn_dropout`) drops
//! probabilities while training only, with a mask drawn from the step as the dropout layer's.

use super::dense::{self, DenseInput};
use super::step::{CoreBuffers, CpuCore, EpilogueExtra, GpuCore, Placement, StepCore};
use super::{SlotInit, SlotSpec};
use crate::activation::Activation;
use crate::cpu;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::host_memory::{self, checked_bytes, checked_product};
use crate::init::Initializer;
use crate::kernels::attention_choice::{choose_attention_kernel, AttentionBuffers, AttentionKernel};
use crate::kernels::attention_dims::{AttentionDims, AttentionDropout};
use crate::plan::Plan;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// nanoGPT's initial weights: normal(0, 0.02).
const NANOGPT_STD: f32 = 0.02;

/// Multi-head self-attention over the T tokens of a `[T, C]` sample, `heads` dividing C.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MultiHeadAttention {
    pub heads: usize,
    /// Each token attends to itself and the tokens before it (GPT's mask); false: to every token.
    pub causal: bool,
    /// Biases on both projections (nanoGPT's `bias=True`); without, W_qkv and W_proj alone.
    pub use_bias: bool,
    /// W_qkv's initialiser (nanoGPT's normal(0, 0.02)).
    pub init: Initializer,
    /// W_proj's initialiser: normal(0, 0.02) too, or nanoGPT's GPT-2 scaling
    /// ([`MultiHeadAttention::scaled_projection`]).
    pub proj_init: Initializer,
    /// The attention kernels to run; None: [`choose_attention_kernel`]'s pick for the batch.
    pub kernel: Option<AttentionKernel>,
    /// Attention dropout's rate while training (0: none), as PyTorch's
    /// `scaled_dot_product_attention(dropout_p)`: each probability dropped, or kept and scaled by
    /// 1/(1 − rate), before it weighs its value. Not in `evaluate`, `predict` or `generate`.
    pub dropout: f32,
}

impl MultiHeadAttention {
    /// `heads` heads, biases, nanoGPT's normal(0, 0.02) for both projections, the kernels chosen
    /// per batch.
    pub fn new(heads: usize, causal: bool) -> MultiHeadAttention {
        let normal = Initializer::Normal { mean: 0.0, std: NANOGPT_STD };
        MultiHeadAttention {
            heads,
            causal,
            use_bias: true,
            init: normal,
            proj_init: normal,
            kernel: None,
            dropout: 0.0,
        }
    }

    /// Attention dropout of `rate` (in [0, 1)) on the probabilities while training (nanoGPT's
    /// `attn_dropout`); `build` refuses a rate outside [0, 1).
    pub fn with_dropout(self, rate: f32) -> MultiHeadAttention {
        MultiHeadAttention { dropout: rate, ..self }
    }

    /// nanoGPT's GPT-2 init of the output projection in a model of `n_layer` blocks: its
    /// standard deviation 0.02 / √(2·n_layer), so that the residual stream's variance does not
    /// grow with depth.
    pub fn scaled_projection(self, n_layer: usize) -> MultiHeadAttention {
        let std = NANOGPT_STD / (2.0 * n_layer.max(1) as f32).sqrt();
        MultiHeadAttention { proj_init: Initializer::Normal { mean: 0.0, std }, ..self }
    }

    pub fn describe(&self) -> String {
        let heads = if self.heads == 1 { "1 head".to_string() } else { format!("{} heads", self.heads) };
        let mut s = format!("multi_head_attention({heads}");
        if self.causal {
            s.push_str(", causal");
        }
        if !self.use_bias {
            s.push_str(", no bias");
        }
        if self.dropout != 0.0 {
            s.push_str(&format!(", dropout {}", self.dropout));
        }
        if let Some(k) = self.kernel {
            s.push_str(&format!(", {} kernels", k.name()));
        }
        s + ")"
    }

    pub(super) fn validate(&self, op: &str) -> Result<()> {
        if self.heads == 0 {
            return Err(WgnnError::invalid(op, "heads must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(WgnnError::invalid(op, format!("dropout rate must be in [0, 1), got {}", self.dropout)));
        }
        Ok(())
    }

    /// `[T, C]` → `[T, C]`, C a multiple of the heads.
    pub(super) fn output_shape(&self, op: &str, input: &[usize]) -> Result<Vec<usize>> {
        match *input {
            [t, c] if t > 0 && c > 0 && c.is_multiple_of(self.heads.max(1)) => Ok(input.to_vec()),
            [t, c] if t > 0 && c > 0 => Err(WgnnError::shape_of(
                op,
                &[("input", input)],
                format!("{c} channels do not split into {} heads: C must be a multiple of the heads", self.heads),
            )),
            _ => Err(WgnnError::shape_of(
                op,
                &[("input", input)],
                format!("takes a sequence [T, C] of T tokens of C channels, got a {input:?} input"),
            )),
        }
    }

    /// W_qkv `[C, 3C]`, b_qkv `[3C]`, W_proj `[C, C]`, b_proj `[C]` (the biases zero, and absent
    /// without `use_bias`).
    pub(super) fn slots(&self, input: &[usize]) -> Vec<SlotSpec> {
        let c = input.last().copied().unwrap_or(1);
        let draw = |init, fan_out| SlotInit::Draw { init, fan_in: c, fan_out };
        let slot = |name, shape, init| SlotSpec { name, shape, init, trainable: true };
        let mut slots = vec![slot("w_qkv", vec![c, 3 * c], draw(self.init, 3 * c))];
        if self.use_bias {
            slots.push(slot("b_qkv", vec![3 * c], SlotInit::Zeros));
        }
        slots.push(slot("w_proj", vec![c, c], draw(self.proj_init, c)));
        if self.use_bias {
            slots.push(slot("b_proj", vec![c], SlotInit::Zeros));
        }
        slots
    }

    /// (T, C) of the layer's samples.
    fn sizes(at: &Placement) -> (usize, usize) {
        match at.input[..] {
            [t, c] => (t, c),
            _ => (1, at.inputs),
        }
    }

    /// The attention's dims over a batch of `rows` samples.
    fn dims(&self, rows: usize, at: &Placement) -> Result<AttentionDims> {
        let (t, c) = Self::sizes(at);
        let dims = AttentionDims::new(&self.describe(), rows, t, c, self.heads)?;
        Ok(AttentionDims { causal: self.causal, ..dims })
    }
}

/// A multi-head attention in a saved file (`{"type": "multi_head_attention", …}`): its settings
/// as plain fields (the initialisers are not saved: the weights are).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Saved {
    heads: usize,
    causal: bool,
    use_bias: bool,
    /// `clear` or `flash` where the kernels were forced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kernel: Option<String>,
    /// Attention dropout's rate; absent (files written before it existed, or none): 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    dropout: f32,
}

fn is_zero(rate: &f32) -> bool {
    *rate == 0.0
}

impl MultiHeadAttention {
    pub(crate) fn saved(&self) -> Saved {
        let kernel = self.kernel.map(|k| k.name().to_string());
        Saved { heads: self.heads, causal: self.causal, use_bias: self.use_bias, kernel, dropout: self.dropout }
    }
}

impl Saved {
    pub(crate) fn layer(&self) -> Result<MultiHeadAttention> {
        let kernel = match self.kernel.as_deref() {
            None => None,
            Some("clear") => Some(AttentionKernel::Clear),
            Some("flash") => Some(AttentionKernel::Flash),
            Some(other) => {
                return Err(WgnnError::invalid(
                    "load",
                    format!("unknown attention kernels {other:?} (known: clear, flash)"),
                ))
            }
        };
        let layer = MultiHeadAttention::new(self.heads, self.causal);
        Ok(MultiHeadAttention { use_bias: self.use_bias, kernel, dropout: self.dropout, ..layer })
    }
}

/// The layer's weights as views of a flat buffer (the parameters, or the gradients).
struct Weights {
    w_qkv: Tensor,
    b_qkv: Option<Tensor>,
    w_proj: Tensor,
    b_proj: Option<Tensor>,
}

/// The layer's own per-batch tensors, from [`CoreBuffers::own`] in this order: qkv `[rows, T,
/// 3C]`, att `[rows, T, C]` (the attention's output, the projection's input), the kernels'
/// saved rows and scratch, and when training d(att), dqkv and (the clear kernels with dropout)
/// the dropped probabilities.
struct Kept {
    qkv: Tensor,
    att: Tensor,
    attention: AttentionBuffers,
    datt: Option<Tensor>,
    dqkv: Option<Tensor>,
}

impl Kept {
    fn grads(&self) -> Result<(&Tensor, &Tensor)> {
        match (&self.datt, &self.dqkv) {
            (Some(datt), Some(dqkv)) => Ok((datt, dqkv)),
            _ => Err(internal("no gradient buffers outside training")),
        }
    }
}

fn internal(what: &str) -> WgnnError {
    WgnnError::invalid("multi_head_attention", format!("{what} (an internal error)"))
}

impl MultiHeadAttention {
    fn weights_of(&self, flat: &Tensor, at: &Placement) -> Result<Weights> {
        let (_, c) = Self::sizes(at);
        let view = |name: &str, shape: &[usize]| match at.slot(name) {
            Some(o) => flat.view(o, shape).map(Some),
            None => Ok(None),
        };
        let need = |t: Option<Tensor>| t.ok_or_else(|| internal("a weight slot is not placed"));
        Ok(Weights {
            w_qkv: need(view("w_qkv", &[c, 3 * c])?)?,
            b_qkv: view("b_qkv", &[3 * c])?,
            w_proj: need(view("w_proj", &[c, c])?)?,
            b_proj: view("b_proj", &[c])?,
        })
    }

    fn kept(&self, c: &GpuCore) -> Result<Kept> {
        let own = &c.buffers.own;
        let get = |i: usize| own.get(i).cloned().ok_or_else(|| internal("a per-batch buffer is missing"));
        let saved = get(2)?;
        // The saved tensor's rank tells the kernels apart: probabilities [B, NH, T, T] or rows.
        let kernel = if saved.shape().len() == 4 { AttentionKernel::Clear } else { AttentionKernel::Flash };
        let dims = self.dims(c.rows, c.at)?;
        Ok(Kept {
            qkv: get(0)?,
            att: get(1)?,
            attention: AttentionBuffers { kernel, dims, saved, scratch: get(3)?, dropped: own.get(6).cloned() },
            datt: own.get(4).cloned(),
            dqkv: own.get(5).cloned(),
        })
    }

    /// qkv = x·W_qkv + b_qkv, the attention, then out = act(att·W_proj + b_proj), the projection's
    /// epilogue also doing `extra` (its tensors `[rows, T, C]` as out).
    fn forward(
        &self,
        c: &GpuCore,
        params: &Tensor,
        out: &Tensor,
        act: Activation,
        extra: Option<EpilogueExtra>,
    ) -> Result<Plan> {
        let (w, k) = (self.weights_of(params, c.at)?, self.kept(c)?);
        let (t, ch) = Self::sizes(c.at);
        let m = c.rows * t;
        let (x, qkv, att) = (c.input.reshape(&[m, ch])?, k.qkv.reshape(&[m, 3 * ch])?, k.att.reshape(&[m, ch])?);
        let id = Activation::Identity;
        let mut plan = dense::forward_gpu(c.gpu, DenseInput::Stored(&x), &w.w_qkv, w.b_qkv.as_ref(), &qkv, id)?;
        plan.extend(k.attention.forward_with(c.gpu, &k.qkv, &k.att, self.gpu_dropout(c, &k).as_ref())?);
        let y = out.reshape(&[m, ch])?;
        let extra_2d = extra.map(|e| e.tensor().reshape(&[m, ch])).transpose()?;
        let extra = extra.zip(extra_2d.as_ref()).map(|(e, t)| e.on(t));
        let (input, b) = (DenseInput::Stored(&att), w.b_proj.as_ref());
        plan.extend(dense::forward_gpu_with(c.gpu, input, &w.w_proj, b, &y, act, extra)?);
        Ok(plan)
    }
}

/// The largest tensor one binding takes.
fn binding_limit(gpu: &Gpu) -> u64 {
    let limits = gpu.limits();
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)
}

impl StepCore for MultiHeadAttention {
    /// The attention's per-batch tensors; qkv (the largest, 3C per token) past one binding is
    /// an error naming the layer and the batch, as are the clear kernels' scores.
    fn buffers(&self, gpu: &Gpu, at: &Placement, rows: usize, training: bool) -> Result<CoreBuffers> {
        let op = self.describe();
        let dims = self.dims(rows, at)?;
        let (t, c) = (dims.seq, dims.channels);
        let qkv_shape = dims.qkv_shape();
        let bytes = qkv_shape.iter().try_fold(4u64, |n, &d| n.checked_mul(d as u64));
        let limit = binding_limit(gpu);
        if bytes.is_none_or(|b| b > limit) {
            return Err(WgnnError::DeviceLimit {
                op,
                what: format!("its qkv {qkv_shape:?} f32 for a batch of {rows} rows"),
                amount: bytes.unwrap_or(u64::MAX),
                unit: "bytes",
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        let kernel = self.kernel.unwrap_or_else(|| choose_attention_kernel(gpu, &dims));
        let dropout = training && self.dropout > 0.0;
        let attention = AttentionBuffers::with_dropout(gpu, dims, kernel, dropout).map_err(|e| match e {
            WgnnError::DeviceLimit { what, amount, unit, limit, limit_name, .. } => {
                let what = format!("{what} for a batch of {rows} rows");
                WgnnError::DeviceLimit { op: op.clone(), what, amount, unit, limit, limit_name }
            }
            other => other,
        })?;
        let mut own = vec![
            Tensor::zeros(gpu, &qkv_shape)?,
            Tensor::zeros(gpu, &[rows, t, c])?,
            attention.saved,
            attention.scratch,
        ];
        if training {
            own.push(Tensor::zeros(gpu, &[rows, t, c])?);
            own.push(Tensor::zeros(gpu, &qkv_shape)?);
        }
        own.extend(attention.dropped);
        Ok(CoreBuffers { own, ..Default::default() })
    }

    fn forward_gpu(&self, c: &GpuCore, params: &Tensor, out: &Tensor, _act: Activation) -> Result<Plan> {
        self.forward(c, params, out, Activation::Identity, None)
    }

    /// The output projection's epilogue does the extra: the residual sum after the layer (a
    /// pre-norm block's `x + attn(ln(x))`) costs no pass of its own.
    fn has_extra_epilogues(&self) -> bool {
        true
    }

    fn forward_gpu_with(
        &self,
        c: &GpuCore,
        params: &Tensor,
        out: &Tensor,
        act: Activation,
        extra: EpilogueExtra,
    ) -> Result<Plan> {
        self.forward(c, params, out, act, Some(extra))
    }

    /// The projection's gradients, then back through it and the attention to dqkv (kept for
    /// [`StepCore::backward_input_gpu`], which runs after this in the step) and W_qkv's.
    fn backward_params_gpu(&self, c: &GpuCore, grads: &Tensor, dy: &Tensor) -> Result<Plan> {
        let (dw, w, k) = (self.weights_of(grads, c.at)?, self.weights_of(c.params, c.at)?, self.kept(c)?);
        let (datt, dqkv) = k.grads()?;
        let (t, ch) = Self::sizes(c.at);
        let m = c.rows * t;
        let (dy, att, datt2) = (dy.reshape(&[m, ch])?, k.att.reshape(&[m, ch])?, datt.reshape(&[m, ch])?);
        let gpu = c.gpu;
        let mut plan = dense::backward_params_gpu(gpu, DenseInput::Stored(&att), &dy, &dw.w_proj, dw.b_proj.as_ref())?;
        plan.extend(dense::backward_input_gpu(gpu, &dy, &w.w_proj, &datt2, None)?);
        plan.extend(k.attention.backward_with(gpu, [datt, &k.qkv, &k.att, dqkv], self.gpu_dropout(c, &k).as_ref())?);
        let (x, dqkv2) = (c.input.reshape(&[m, ch])?, dqkv.reshape(&[m, 3 * ch])?);
        plan.extend(dense::backward_params_gpu(gpu, DenseInput::Stored(&x), &dqkv2, &dw.w_qkv, dw.b_qkv.as_ref())?);
        Ok(plan)
    }

    /// dx = dqkv·W_qkvᵀ (times act′ of the layer below, in the matmul's epilogue), from the dqkv
    /// [`StepCore::backward_params_gpu`] wrote.
    fn backward_input_gpu(
        &self,
        c: &GpuCore,
        params: &Tensor,
        _dy: &Tensor,
        dx: &Tensor,
        below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan> {
        let (w, k) = (self.weights_of(params, c.at)?, self.kept(c)?);
        let (_, dqkv) = k.grads()?;
        let (t, ch) = Self::sizes(c.at);
        let m = c.rows * t;
        let below = below.map(|(y, act)| y.reshape(&[m, ch]).map(|y| (y, act))).transpose()?;
        let below = below.as_ref().map(|(y, act)| (y, *act));
        dense::backward_input_gpu(c.gpu, &dqkv.reshape(&[m, 3 * ch])?, &w.w_qkv, &dx.reshape(&[m, ch])?, below)
    }

    fn forward_cpu(&self, c: &CpuCore, _act: Activation) -> Result<(Vec<f32>, Vec<u32>)> {
        let pass = self.forward_cpu_pass(c)?;
        let (t, ch) = Self::sizes(c.at);
        let w = CpuWeights::of(c, ch)?;
        Ok((dense::forward_cpu(&pass.att, w.w_proj, w.b_proj, c.rows * t, ch, Activation::Identity), Vec::new()))
    }

    fn backward_cpu(
        &self,
        c: &CpuCore,
        grads: &mut [f32],
        dy: &[f32],
        _argmax: &[u32],
        input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let pass = self.forward_cpu_pass(c)?;
        let (t, ch) = Self::sizes(c.at);
        let m = c.rows * t;
        let w = CpuWeights::of(c, ch)?;
        let (dw_proj, db_proj) = dense::backward_params_cpu(&pass.att, dy, m, ch, w.b_proj.is_some());
        let datt = dense::backward_input_cpu(dy, w.w_proj, m, ch);
        let (probs, causal) = (&pass.probs, self.causal);
        let dqkv = match self.cpu_dropout(c) {
            Some(d) => cpu::attention_backward_dropout(&datt, &pass.qkv, probs, c.rows, t, ch, self.heads, causal, &d),
            None => cpu::attention_backward_masked(&datt, &pass.qkv, probs, c.rows, t, ch, self.heads, causal),
        };
        let (dw_qkv, db_qkv) = dense::backward_params_cpu(c.input, &dqkv, m, 3 * ch, w.b_qkv.is_some());
        for (name, values) in
            [("w_qkv", Some(dw_qkv)), ("b_qkv", db_qkv), ("w_proj", Some(dw_proj)), ("b_proj", db_proj)]
        {
            if let (Some(o), Some(v)) = (c.at.slot(name), values) {
                grads[o..o + v.len()].copy_from_slice(&v);
            }
        }
        Ok(input_grad.then(|| dense::backward_input_cpu(&dqkv, w.w_qkv, m, 3 * ch)))
    }
}

/// The CPU forward's intermediates: qkv, the attention's output and its probabilities.
struct CpuPass {
    qkv: Vec<f32>,
    att: Vec<f32>,
    probs: Vec<f32>,
}

/// The layer's weights as slices of the flat parameters.
struct CpuWeights<'a> {
    w_qkv: &'a [f32],
    b_qkv: Option<&'a [f32]>,
    w_proj: &'a [f32],
    b_proj: Option<&'a [f32]>,
}

impl<'a> CpuWeights<'a> {
    fn of(c: &CpuCore<'a>, ch: usize) -> Result<CpuWeights<'a>> {
        let slice = |name: &str, len: usize| c.at.slot(name).map(|o| &c.params[o..o + len]);
        let need = |s: Option<&'a [f32]>| s.ok_or_else(|| internal("a weight slot is not placed"));
        Ok(CpuWeights {
            w_qkv: need(slice("w_qkv", 3 * ch * ch))?,
            b_qkv: slice("b_qkv", 3 * ch),
            w_proj: need(slice("w_proj", ch * ch))?,
            b_proj: slice("b_proj", ch),
        })
    }
}

impl MultiHeadAttention {
    /// qkv and the attention on the CPU (the backward recomputes them: the reference keeps
    /// nothing between its passes but the layer's output).
    fn forward_cpu_pass(&self, c: &CpuCore) -> Result<CpuPass> {
        let dims = self.dims(c.rows, c.at)?;
        let (t, ch) = (dims.seq, dims.channels);
        // Beyond the model's pass (which counts the layer's output): qkv, its gradient and the
        // probabilities, refused before they are allocated.
        let values = checked_product(&dims.qkv_shape())
            .and_then(|qkv| qkv.checked_mul(2)?.checked_add(checked_product(&dims.scores_shape())?));
        let what =
            || format!("{}'s qkv {:?} and probabilities {:?}", self.describe(), dims.qkv_shape(), dims.scores_shape());
        host_memory::check_counted("multi_head_attention", what, values.and_then(|v| checked_bytes(v, 4)))?;
        let w = CpuWeights::of(c, ch)?;
        let qkv = dense::forward_cpu(c.input, w.w_qkv, w.b_qkv, c.rows * t, 3 * ch, Activation::Identity);
        let (att, probs, _) = match self.cpu_dropout(c) {
            Some(d) => cpu::attention_forward_dropout(&qkv, c.rows, t, ch, self.heads, self.causal, &d),
            None => cpu::attention_forward_masked(&qkv, c.rows, t, ch, self.heads, self.causal),
        };
        Ok(CpuPass { qkv, att, probs })
    }

    /// The dropout of a training pass with a rate (the GPU's: its buffers say it trains).
    fn gpu_dropout<'a>(&self, c: &'a GpuCore, k: &Kept) -> Option<AttentionDropout<'a>> {
        let m = &c.masks;
        (self.dropout > 0.0 && k.datt.is_some()).then_some(AttentionDropout {
            rate: self.dropout,
            seed: m.seed,
            step: &m.step,
            lag: m.lag,
        })
    }

    /// The dropout of a training pass with a rate, on the CPU.
    fn cpu_dropout(&self, c: &CpuCore) -> Option<cpu::AttentionDropout> {
        let step = c.step.filter(|_| self.dropout > 0.0)?;
        Some(cpu::AttentionDropout { rate: self.dropout, seed: c.mask_seed, t: step })
    }
}
