//! What a layer that computes something from its input (a dense layer, a convolution, pooling)
//! is to the training step: a [`StepCore`], implemented in the layer's own file. The model's
//! files hold the graph (which block reads which), the fusions and the buffers every block has;
//! they reach a layer's kernels only through this trait, found by [`super::Layer::step_core`].
//!
//! A trait rather than a list of per-layer functions: the step calls five operations on whichever
//! core a block has, and a trait names them once, with their contracts, for every layer to fill.

use crate::activation::Activation;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::conv2d::ConvPatches;
use crate::kernels::matmul::GatheredA;
use crate::plan::Plan;
use crate::tensor::Tensor;

/// Where a core's parameters sit in the flat buffer, and what it reads.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Placement {
    /// Offsets (in floats) of the layer's `weight` and `bias` slots, where it has them.
    pub(crate) weight: Option<usize>,
    pub(crate) bias: Option<usize>,
    /// Every slot's offset by its name, in the order of the layer's `slots` (a layer with more
    /// than a weight and a bias, multi-head attention's four, reads its own here).
    pub(crate) slots: Vec<(&'static str, usize)>,
    /// One sample's input shape.
    pub(crate) input: Vec<usize>,
    /// Features per row in and out.
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
}

impl Placement {
    /// The offset of slot `name`, if the layer has it.
    pub(crate) fn slot(&self, name: &str) -> Option<usize> {
        self.slots.iter().find(|(n, _)| *n == name).map(|&(_, o)| o)
    }
}

/// A core's per-batch buffers beyond its input and output.
#[derive(Default)]
pub(crate) struct CoreBuffers {
    /// Max pooling's argmax per output (u32).
    pub(crate) argmax: Option<Tensor>,
    /// Training, a convolution: the forward's patch matrix, kept for the kernel's gradient.
    pub(crate) patches: Option<ConvPatches>,
    /// Any other tensors a layer keeps per batch (a constant it multiplies by, say).
    pub(crate) own: Vec<Tensor>,
}

/// What a core that draws dropout masks of its own (multi-head attention's) keys them on: its
/// seed, and the step t = `step[0]` − `lag` (`step`: the global counter, u32 `[1]`), as the
/// dropout layer's masks. Whether it drops at all is the core's: only in a training pass.
pub(crate) struct CoreMasks {
    pub(crate) seed: u32,
    pub(crate) step: Tensor,
    pub(crate) lag: u32,
}

/// One core's view of a GPU pass over a batch.
pub(crate) struct GpuCore<'a> {
    pub(crate) gpu: &'a Gpu,
    pub(crate) rows: usize,
    /// The rows of the batch's `[rows, features]` allocations (see [`GpuCore::padded`]).
    pub(crate) padded_rows: usize,
    pub(crate) at: &'a Placement,
    /// The flat parameters (a backward that goes through its own weights before its parameters'
    /// gradients reads them: multi-head attention's output projection).
    pub(crate) params: &'a Tensor,
    /// The core's input `[rows, inputs]`; where the step reads the batch in place (a first dense
    /// layer, see `model/gpu.rs`), `gathered` instead.
    pub(crate) input: &'a Tensor,
    pub(crate) gathered: Option<&'a GatheredA<'a>>,
    /// The core's output `[rows, outputs]` (the forward writes it; a backward may read it as
    /// the forward left it: max pooling's act′ at its maxima).
    pub(crate) output: &'a Tensor,
    pub(crate) buffers: &'a CoreBuffers,
    pub(crate) masks: CoreMasks,
}

impl GpuCore<'_> {
    /// `t` (a `[rows, features]` tensor of the batch) over the padded rows, whose extra rows
    /// are zero for good: what a weight gradient's fast kernels read.
    pub(crate) fn padded(&self, t: &Tensor) -> Result<Tensor> {
        match t.shape() {
            &[rows, features] if rows != self.padded_rows => t.extended(&[self.padded_rows, features]),
            _ => Ok(t.clone()),
        }
    }
}

/// One core's view of a CPU pass over `rows` rows.
pub(crate) struct CpuCore<'a> {
    pub(crate) rows: usize,
    pub(crate) at: &'a Placement,
    /// The flat parameters.
    pub(crate) params: &'a [f32],
    /// The core's input `[rows, inputs]`.
    pub(crate) input: &'a [f32],
    /// The seed of the core's own dropout masks ([`CoreMasks`]).
    pub(crate) mask_seed: u32,
    /// Training: the step the masks are drawn at; None in `evaluate` and `predict`.
    pub(crate) step: Option<u32>,
}

/// What a core's forward epilogue may do beyond its activation ([`StepCore::forward_gpu_with`]).
#[derive(Clone, Copy)]
pub(crate) enum EpilogueExtra<'a> {
    /// Also write the activation's input here: what a GELU's backward reads.
    KeepPre(&'a Tensor),
    /// Add this `[rows, outputs]` tensor before the activation: the residual sum after the core.
    Residual(&'a Tensor),
}

impl<'a> EpilogueExtra<'a> {
    /// The tensor the epilogue writes or reads.
    pub(crate) fn tensor(self) -> &'a Tensor {
        match self {
            Self::KeepPre(t) | Self::Residual(t) => t,
        }
    }

    /// The same extra on `t` (the tensor as another view).
    pub(crate) fn on(self, t: &Tensor) -> EpilogueExtra<'_> {
        match self {
            Self::KeepPre(_) => EpilogueExtra::KeepPre(t),
            Self::Residual(_) => EpilogueExtra::Residual(t),
        }
    }
}

/// A layer's computation in the step. Gradients follow llm.c's convention: a parameter's is
/// written whole (one step, one write), an input's overwrites its target.
pub(crate) trait StepCore {
    /// Whether the forward kernel applies an element-wise activation as its epilogue.
    fn has_epilogue(&self) -> bool {
        false
    }

    /// Whether [`StepCore::backward_input_gpu`] applies the gradient of the activation below
    /// (its `below`); where it does not, the block below applies it in a dispatch of its own.
    fn fuses_act_grad(&self) -> bool {
        true
    }

    /// The per-batch buffers the core needs beyond its output.
    fn buffers(&self, _gpu: &Gpu, _at: &Placement, _rows: usize, _training: bool) -> Result<CoreBuffers> {
        Ok(CoreBuffers::default())
    }

    /// The weight and bias as views of `flat` (the parameters, or the gradients), if any.
    fn weights(&self, _flat: &Tensor, _at: &Placement) -> Result<Option<(Tensor, Option<Tensor>)>> {
        Ok(None)
    }

    /// out = act(f(input)) (`act` the identity unless [`StepCore::has_epilogue`]).
    fn forward_gpu(&self, c: &GpuCore, params: &Tensor, out: &Tensor, act: Activation) -> Result<Plan>;

    /// Whether [`StepCore::forward_gpu_with`] runs: the forward's epilogue can keep the
    /// pre-activation or add a residual (a matmul's), saving the pass that would do it.
    fn has_extra_epilogues(&self) -> bool {
        false
    }

    /// [`StepCore::forward_gpu`] with `extra` done by the same dispatch (only where
    /// [`StepCore::has_extra_epilogues`]).
    fn forward_gpu_with(
        &self,
        _c: &GpuCore,
        _params: &Tensor,
        _out: &Tensor,
        _act: Activation,
        _extra: EpilogueExtra,
    ) -> Result<Plan> {
        Err(crate::error::WgnnError::invalid("step", "an epilogue this core has not (an internal error)"))
    }

    /// The parameters' gradients into `grads` from `dy`, the gradient at the core's output.
    fn backward_params_gpu(&self, _c: &GpuCore, _grads: &Tensor, _dy: &Tensor) -> Result<Plan> {
        Ok(Plan::new())
    }

    /// The input's gradient into `dx` from `dy`, times act′ of the layer below where `below`
    /// gives its output and activation (fused in the same dispatch). The step plans it after
    /// [`StepCore::backward_params_gpu`] (multi-head attention's reads the dqkv that one wrote).
    fn backward_input_gpu(
        &self,
        c: &GpuCore,
        params: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan>;

    /// Whether [`StepCore::backward_input_adding_gpu`] runs: the input gradient's dispatch can
    /// add another gradient of the same input (a layer norm's).
    fn adds_to_input_grad(&self) -> bool {
        false
    }

    /// [`StepCore::backward_input_gpu`] (with no activation's gradient below) writing
    /// `addend` + the input's gradient into `dx`, in the same dispatch: a fork's two gradients
    /// summed without a pass of their own (only where [`StepCore::adds_to_input_grad`]).
    fn backward_input_adding_gpu(
        &self,
        _c: &GpuCore,
        _params: &Tensor,
        _dy: &Tensor,
        _dx: &Tensor,
        _addend: &Tensor,
    ) -> Result<Plan> {
        Err(crate::error::WgnnError::invalid("step", "an input gradient this core cannot add to (an internal error)"))
    }

    /// The CPU forward: (act(f(input)), max pooling's argmax or nothing).
    fn forward_cpu(&self, c: &CpuCore, act: Activation) -> Result<(Vec<f32>, Vec<u32>)>;

    /// The CPU backward from `dy`: the parameters' gradients into `grads`, and (`input_grad`)
    /// the input's gradient. `argmax`: the forward's.
    fn backward_cpu(
        &self,
        c: &CpuCore,
        grads: &mut [f32],
        dy: &[f32],
        argmax: &[u32],
        input_grad: bool,
    ) -> Result<Option<Vec<f32>>>;
}
