//! The layers a [`crate::model::Sequential`] stacks, Keras style: `Dense(64)` → `BatchNorm` →
//! `Activation(relu)` → `Dropout(0.2)`, each a layer of its own.
//!
//! [`Layer`] is an enum, not a trait object, on purpose: the model runs a pass over the layer
//! list that fuses neighbours (a dense layer with the activation after it becomes one matmul with
//! an epilogue; see `model/fusion.rs`), and that pass needs to see which layer is which; the saved
//! architecture is the same enum through serde; and every `match` on it is a place the compiler
//! points at when a layer is added (CONTRIBUTING.md walks through it).
//!
//! Each layer owns, in its own file: its shape rule (output shape from input shape, with an error
//! naming it when the input does not fit), its parameter slots (names, shapes, initialisers),
//! and its GPU and CPU forward and backward passes.

use crate::activation::Activation;
use crate::config::batch_norm::BatchNormConfig;
use crate::error::{Result, WgnnError};
use crate::init::Initializer;

pub mod activation;
pub mod attention;
pub mod batch_norm;
pub mod conv2d;
pub mod dense;
pub mod dropout;
pub mod embedding;
pub mod layer_norm;
pub mod pool2d;
pub mod positional;
pub mod reshape;
pub mod residual;
pub mod scale;
pub(crate) mod step;
pub mod tied_dense;

pub use crate::kernels::conv2d::Padding;
pub use crate::kernels::pool2d::Pool2dConfig;
pub use attention::MultiHeadAttention;
pub use conv2d::Conv2D;
pub use dense::Dense;
pub use embedding::Embedding;
pub use layer_norm::LayerNormConfig;
pub use pool2d::Pooling;
pub use positional::PositionalEmbedding;
pub use residual::Residual;
pub use scale::Scale;
pub use tied_dense::TiedDense;

/// One layer of a sequential model. Data and activations are channels-last, one row per sample:
/// a `[28, 28, 1]` input is `[rows, 28, 28, 1]` in memory.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// y = act(x·W + b) on a 1-D input, or on each position of a `[T, C]` one.
    Dense(Dense),
    /// An activation on its own (softmax included): Keras' `Activation`.
    Activation(Activation),
    /// Inverted dropout of this rate while training, the identity in `evaluate` and `predict`.
    Dropout(f32),
    /// Batch normalisation over the last axis (the features, or the channels of an image).
    BatchNorm(BatchNormConfig),
    /// Flattens a multi-axis sample to one axis (a no-op in memory: rows are channels-last).
    Flatten,
    /// Reads a sample as another shape of the same size (a 784-wide row as `[28, 28, 1]`).
    Reshape(Vec<usize>),
    /// A 2-D convolution of `[H, W, C]` images.
    Conv2D(Conv2D),
    /// Max, average or global average pooling of `[H, W, C]` images.
    Pool(Pooling),
    /// The end of a residual block: its input (the branch's output) plus the input of layer
    /// `from` (the branch's first), projected if the shapes differ.
    Add(Residual),
    /// Multiplies by a constant: y = factor · x.
    Scale(Scale),
    /// Multi-head self-attention over the tokens of a `[T, C]` sample (nanoGPT's
    /// `CausalSelfAttention`): `[T, C]` → `[T, C]`.
    MultiHeadAttention(MultiHeadAttention),
    /// Token ids `[T]` to rows of a learned table, `[T, width]`: a token model's first layer.
    Embedding(Embedding),
    /// A learned row per position added to a `[T, C]` sample.
    PositionalEmbedding(PositionalEmbedding),
    /// The output head sharing an embedding's table: logits = h·tableᵀ per position.
    TiedDense(TiedDense),
    /// Layer normalisation over the last axis (each of a `[T, C]` sample's T rows on its own).
    LayerNorm(LayerNormConfig),
}

/// How a parameter slot starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SlotInit {
    /// Drawn by the initialiser from the model's seed, with the layer's fans.
    Draw {
        init: Initializer,
        fan_in: usize,
        fan_out: usize,
    },
    Zeros,
    Ones,
}

/// One named parameter tensor of a layer.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotSpec {
    /// The tensor's name in saved files: `layers.{i}.{name}`.
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub init: SlotInit,
    /// Trained by the optimizer (false: state kept beside the weights, like running statistics).
    pub trainable: bool,
}

impl SlotSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Layer {
    /// Keras' `Dense(units, activation)` with a bias and Glorot-uniform weights.
    pub fn dense(units: usize, activation: Activation) -> Layer {
        Layer::Dense(Dense { units, activation, use_bias: true, init: Initializer::GlorotUniform })
    }

    /// Keras' `Conv2D(filters, (kh, kw), activation=…)`: stride 1, padding valid, a bias.
    pub fn conv2d(filters: usize, kernel: (usize, usize), activation: Activation) -> Layer {
        Layer::Conv2D(Conv2D::new(filters, kernel, activation))
    }

    /// Keras' `MaxPooling2D(pool_size)`: windows moved by their own size, padding valid.
    pub fn max_pool2d(pool_size: (usize, usize)) -> Layer {
        Layer::Pool(Pooling::Max(Pool2dConfig::new(pool_size)))
    }

    /// Keras' `AveragePooling2D(pool_size)`.
    pub fn average_pooling2d(pool_size: (usize, usize)) -> Layer {
        Layer::Pool(Pooling::Average(Pool2dConfig::new(pool_size)))
    }

    /// Keras' `GlobalAveragePooling2D()`: `[H, W, C]` → `[C]`.
    pub fn global_average_pooling2d() -> Layer {
        Layer::Pool(Pooling::GlobalAverage)
    }

    /// nanoGPT's `CausalSelfAttention(n_head)` on `[T, C]` samples (`causal`; false: every token
    /// attends to every token): biases, normal(0, 0.02) weights.
    pub fn multi_head_attention(heads: usize, causal: bool) -> Layer {
        Layer::MultiHeadAttention(MultiHeadAttention::new(heads, causal))
    }

    /// Keras' `Embedding(vocab, width)`, its table drawn normal(0, 0.02) as nanoGPT's.
    pub fn embedding(vocab: usize, width: usize) -> Layer {
        Layer::Embedding(Embedding::new(vocab, width))
    }

    /// A short name for messages and summaries: `dense(64, relu)`, `dropout(0.2)`.
    pub fn describe(&self) -> String {
        match self {
            Layer::Dense(d) => d.describe(),
            Layer::Activation(a) => format!("activation({})", a.name()),
            Layer::Dropout(rate) => format!("dropout({rate})"),
            Layer::BatchNorm(_) => "batch_norm".to_string(),
            Layer::Flatten => "flatten".to_string(),
            Layer::Reshape(target) => format!("reshape({target:?})"),
            Layer::Conv2D(c) => c.describe(),
            Layer::Pool(p) => p.describe(),
            Layer::Add(r) => r.describe(),
            Layer::Scale(s) => s.describe(),
            Layer::MultiHeadAttention(a) => a.describe(),
            Layer::Embedding(e) => e.describe(),
            Layer::PositionalEmbedding(p) => p.describe(),
            Layer::TiedDense(t) => t.describe(),
            Layer::LayerNorm(c) => c.describe(),
        }
    }

    /// Checks the layer's own settings (a width of 0, a dropout rate outside [0, 1), …).
    pub fn validate(&self, index: usize) -> Result<()> {
        let op = self.op(index);
        match self {
            Layer::Dense(d) => d.validate(&op),
            Layer::Activation(a) => a.validate(),
            Layer::Dropout(rate) => dropout::validate(&op, *rate),
            Layer::BatchNorm(cfg) => cfg.validate(&op),
            Layer::Flatten | Layer::Pool(_) => Ok(()),
            Layer::Reshape(target) => reshape::validate(&op, target),
            Layer::Conv2D(c) => c.validate(&op),
            Layer::Add(r) => r.validate(&op, index),
            Layer::Scale(s) => s.validate(&op),
            Layer::MultiHeadAttention(a) => a.validate(&op),
            Layer::Embedding(e) => e.validate(&op, index),
            Layer::PositionalEmbedding(p) => p.validate(&op),
            // Its table is another layer's: `TiedDense::check_tie` checks it at build.
            Layer::TiedDense(_) => Ok(()),
            Layer::LayerNorm(c) => c.validate(&op),
        }
    }

    /// The shape of one sample after this layer, from the shape before it; an error naming the
    /// layer (`index` in the model) and both shapes when the input does not fit, its shapes led
    /// by the sample's `input` shape.
    pub fn output_shape(&self, index: usize, input: &[usize]) -> Result<Vec<usize>> {
        let op = self.op(index);
        let output = match self {
            Layer::Dense(d) => d.output_shape(&op, input),
            Layer::Flatten => crate::host_memory::checked_product(input).map(|n| vec![n]).ok_or_else(|| {
                WgnnError::shape_of(
                    &op,
                    &[("input", input)],
                    format!("a {input:?} input holds more values than a usize counts"),
                )
            }),
            Layer::Reshape(target) => reshape::output_shape(&op, input, target),
            Layer::Activation(Activation::Softmax) if input.len() != 1 => Err(WgnnError::shape_of(
                &op,
                &[("input", input)],
                format!("softmax runs over one axis, got a {input:?} input: add Flatten before it"),
            )),
            // The sum's shapes are checked against the shortcut's by `Residual::check_shapes`.
            Layer::Activation(_) | Layer::Dropout(_) | Layer::BatchNorm(_) | Layer::Add(_) | Layer::Scale(_) => {
                Ok(input.to_vec())
            }
            Layer::Conv2D(c) => c.output_shape(&op, input),
            Layer::Pool(p) => p.output_shape(&op, input),
            Layer::MultiHeadAttention(a) => a.output_shape(&op, input),
            Layer::Embedding(e) => e.output_shape(&op, input),
            Layer::PositionalEmbedding(p) => p.output_shape(&op, input),
            Layer::TiedDense(t) => t.output_shape(&op, input),
            Layer::LayerNorm(c) => c.output_shape(&op, input),
        };
        // Conv and pool errors come from the batch's dims ([1, H, W, C]): name the sample too.
        output.map_err(|e| e.with_operand("input", input))
    }

    /// The layer's parameter tensors for an input of `input` shape (a residual sum's: the
    /// shortcut's, see [`Layer::slot_input`]), in the order they are laid out and drawn from the
    /// seed.
    pub fn slots(&self, input: &[usize]) -> Vec<SlotSpec> {
        match self {
            Layer::Add(r) => r.slots(input),
            Layer::Dense(d) => d.slots(input),
            Layer::BatchNorm(_) => batch_norm::slots(input),
            Layer::Conv2D(c) => c.slots(input),
            Layer::MultiHeadAttention(a) => a.slots(input),
            Layer::Embedding(e) => e.slots(),
            Layer::PositionalEmbedding(p) => p.slots(input),
            Layer::LayerNorm(c) => c.slots(input),
            Layer::TiedDense(_)
            | Layer::Activation(_)
            | Layer::Dropout(_)
            | Layer::Flatten
            | Layer::Reshape(_)
            | Layer::Pool(_)
            | Layer::Scale(_) => Vec::new(),
        }
    }

    /// The shape [`Layer::slots`] takes for layer `index` of a model whose layers' input shapes
    /// are `shapes`: its input's, or a residual sum's shortcut's (its projection's input).
    pub fn slot_input<'s>(&self, index: usize, shapes: &'s [Vec<usize>]) -> &'s [usize] {
        match self {
            Layer::Add(r) => &shapes[r.from.min(index)],
            _ => &shapes[index],
        }
    }

    /// The layer's computation in the training step, for a layer that computes something from its
    /// input: the one list through which the model's step reaches a layer's kernels.
    pub(crate) fn step_core(&self) -> Option<&dyn step::StepCore> {
        match self {
            Layer::Dense(d) => Some(d),
            Layer::Conv2D(c) => Some(c),
            Layer::Pool(p) => Some(p),
            Layer::Scale(s) => Some(s),
            Layer::MultiHeadAttention(a) => Some(a),
            Layer::Embedding(e) => Some(e),
            Layer::PositionalEmbedding(p) => Some(p),
            Layer::TiedDense(t) => Some(t),
            Layer::LayerNorm(c) => Some(c),
            _ => None,
        }
    }

    /// The residual sum this layer is, if it is one.
    pub fn residual(&self) -> Option<&Residual> {
        match self {
            Layer::Add(r) => Some(r),
            _ => None,
        }
    }

    /// The name errors use for layer `index`: `layer 2 (dense(64, relu))`.
    pub fn op(&self, index: usize) -> String {
        format!("layer {index} ({})", self.describe())
    }
}

/// Elements per sample of a shape.
pub fn features(shape: &[usize]) -> usize {
    shape.iter().product()
}
