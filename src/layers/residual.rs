//! The end of a residual block (ResNet's basic block, a pre-norm transformer block): the branch's
//! output plus the block's input, `y = f(x) + x`, or `y = f(x) + P·x` with a projection `P` (a
//! dense layer or a 1×1 convolution) where the branch changes the shape. In the layer list it is
//! the layer after the branch, naming the branch's first layer; `SequentialBuilder::residual`
//! writes it. Its forward is one elementwise sum (with the activation after it as an epilogue),
//! its backward hands the sum's gradient to both operands.

use super::{Layer, SlotSpec};
use crate::activation::Activation;
use crate::cpu;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::kernels::bias_act::bias_act_forward;
use crate::plan::Plan;
use crate::tensor::Tensor;

/// Keras' `Add()([branch, shortcut])` of a residual block.
#[derive(Clone, Debug, PartialEq)]
pub struct Residual {
    /// The branch's first layer: the shortcut is that layer's input (0: the model's input).
    pub from: usize,
    /// A linear layer on the shortcut (`Layer::Dense` or `Layer::Conv2D`, activation identity),
    /// for a branch whose output shape differs from its input's.
    pub projection: Option<Box<Layer>>,
}

impl Residual {
    pub fn describe(&self) -> String {
        match &self.projection {
            Some(p) => format!("add(input of layer {} through {})", self.from, p.describe()),
            None => format!("add(input of layer {})", self.from),
        }
    }

    /// A branch of at least one layer before `index`, and a projection that is linear and valid.
    pub(super) fn validate(&self, op: &str, index: usize) -> Result<()> {
        if self.from >= index {
            return Err(WgnnError::invalid(
                op,
                format!("a residual branch needs a layer: it starts at layer {}, its sum is layer {index}", self.from),
            ));
        }
        match self.projection.as_deref() {
            None => Ok(()),
            Some(p @ Layer::Dense(d)) if d.activation == Activation::Identity => p.validate(index),
            Some(p @ Layer::Conv2D(c)) if c.activation == Activation::Identity => p.validate(index),
            Some(p) => Err(WgnnError::invalid(
                op,
                format!(
                    "a residual's projection is a dense layer or a convolution without activation, got {}",
                    p.describe()
                ),
            )),
        }
    }

    /// The branch's output (`branch`) and the shortcut (`shortcut`: the branch's input, through
    /// the projection if any) must have one shape: an error naming both, and asking for a
    /// projection where there is none.
    pub(crate) fn check_shapes(&self, op: &str, index: usize, shortcut: &[usize], branch: &[usize]) -> Result<()> {
        let projected = match self.projection.as_deref() {
            Some(p) => p.output_shape(index, shortcut)?,
            None => shortcut.to_vec(),
        };
        if projected == branch {
            return Ok(());
        }
        let shapes: [(&str, &[usize]); 2] = [("branch", branch), ("shortcut", &projected)];
        Err(WgnnError::shape_of(
            op,
            &shapes,
            match &self.projection {
                Some(p) => format!(
                    "the branch gives {branch:?} but the projection {} gives {projected:?} from layer {}'s input {shortcut:?}",
                    p.describe(),
                    self.from
                ),
                None => format!(
                    "the branch gives {branch:?} from layer {}'s input {shortcut:?}: add a projection on the shortcut \
                     (a dense layer or a 1×1 convolution)",
                    self.from
                ),
            },
        ))
    }

    /// The projection's weights, for a shortcut of `shortcut` shape.
    pub(super) fn slots(&self, shortcut: &[usize]) -> Vec<SlotSpec> {
        self.projection.as_deref().map_or_else(Vec::new, |p| p.slots(shortcut))
    }
}

/// out = act(a + b), every tensor `[rows, features]`: the sum as the bias kernel over one row of
/// all the values (its bias then as long as the row), so it needs no kernel of its own. Also
/// sums a fork's gradients (`act` the identity).
pub(crate) fn forward_gpu(gpu: &Gpu, a: &Tensor, b: &Tensor, out: &Tensor, act: Activation) -> Result<Plan> {
    let n = a.len();
    bias_act_forward(gpu, &a.reshape(&[1, n])?, Some(&b.reshape(&[n])?), &out.reshape(&[1, n])?, act)
}

/// act(a + b) on the CPU, as [`forward_gpu`].
pub(crate) fn forward_cpu(a: &[f32], b: &[f32], act: Activation) -> Vec<f32> {
    cpu::bias_act_forward(a, Some(b), 1, a.len(), act)
}
