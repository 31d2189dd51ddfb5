//! The pass from the layer list to the blocks a step runs: a block is a core (a dense layer, or
//! the input as it is) followed by what it can absorb — batch norm, an activation, dropout, a
//! flatten — so that a dense layer with its activation is one matmul with an epilogue, and its
//! backward writes the gradient of the layer below through that layer's activation in the same
//! dispatch. Unfused, every layer is a block of its own: the reference the fused step is tested
//! against (same losses and weights).

use std::ops::Range;

use super::layout::ParamLayout;
use crate::activation::Activation;
use crate::config::batch_norm::BatchNormConfig;
use crate::layers::{dropout, features, Conv2D, Layer, Pooling};

/// What a block computes first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Core {
    /// x·W (+ b): offsets of W `[inputs, units]` and b.
    Dense { units: usize, weight: usize, bias: Option<usize> },
    /// The block's input as it is.
    Identity,
    /// A convolution of `input` `[H, W, C]` images: offsets of its kernel and bias.
    Conv2D { conv: Conv2D, input: [usize; 3], weight: usize, bias: Option<usize> },
    /// Pooling of `input` `[H, W, C]` images.
    Pool { pooling: Pooling, input: [usize; 3] },
}

/// A batch norm a block applies to its core's output: its layer and the offsets of its slots.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct BlockNorm {
    pub(super) layer: usize,
    pub(super) cfg: BatchNormConfig,
    pub(super) beta: usize,
    pub(super) gamma: usize,
    pub(super) running_mean: usize,
    pub(super) running_var: usize,
    /// The normalised axis's length (the last axis where the norm's layer sits).
    pub(super) channels: usize,
}

/// One unit of a step: core → batch norm → activation → dropout (each but the core optional).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Block {
    pub(super) core: Core,
    pub(super) norm: Option<BlockNorm>,
    pub(super) act: Activation,
    /// (rate, mask seed).
    pub(super) dropout: Option<(f32, u32)>,
    /// Features per row in and out.
    pub(super) inputs: usize,
    pub(super) outputs: usize,
    /// The model's layers this block runs.
    pub(super) layers: Range<usize>,
}

impl Block {
    fn new(core: Core, inputs: usize, outputs: usize, layer: usize) -> Block {
        Block { core, norm: None, act: Activation::Identity, dropout: None, inputs, outputs, layers: layer..layer + 1 }
    }

    /// Whether the core writes `act` itself (a matmul epilogue), so no dispatch applies it.
    pub(super) fn act_in_core(&self, act: Activation) -> bool {
        matches!(self.core, Core::Dense { .. } | Core::Conv2D { .. }) && self.norm.is_none() && act.is_elementwise()
    }

    /// Whether batch norm's normalising pass writes `act` itself, so no dispatch applies it.
    pub(super) fn act_in_norm(&self, act: Activation) -> bool {
        self.norm.is_some() && act.is_elementwise()
    }

    /// Whether the block reads nothing but passes its input on (a flatten, or an activation
    /// applied elsewhere).
    pub(super) fn is_noop(&self, act: Activation) -> bool {
        self.core == Core::Identity && self.norm.is_none() && act == Activation::Identity && self.dropout.is_none()
    }

    fn has_bias(&self) -> bool {
        matches!(self.core, Core::Dense { bias: Some(_), .. } | Core::Conv2D { bias: Some(_), .. })
    }
}

/// The blocks of `layers` (`shapes[i]`: layer i's input shape, `shapes[n]` the output's).
/// `fuse`: absorb what a block can (see the module docs); else one block per layer, and a dense
/// layer's own activation a block of its own too.
pub(super) fn blocks(
    layers: &[Layer],
    shapes: &[Vec<usize>],
    layout: &ParamLayout,
    seed: u64,
    fuse: bool,
) -> Vec<Block> {
    let offset = |layer: usize, name: &str| layout.slot(layer, name).map(|s| s.offset);
    let mut out: Vec<Block> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let (inputs, outputs) = (features(&shapes[i]), features(&shapes[i + 1]));
        let norm = |cfg: BatchNormConfig| BlockNorm {
            layer: i,
            cfg,
            beta: offset(i, "beta").unwrap_or(0),
            gamma: offset(i, "gamma").unwrap_or(0),
            running_mean: offset(i, "running_mean").unwrap_or(0),
            running_var: offset(i, "running_var").unwrap_or(0),
            channels: shapes[i].last().copied().unwrap_or(1),
        };
        if let (true, Some(b)) = (fuse, out.last_mut()) {
            let absorbed = match *layer {
                // Shape-only layers: the block's output read as another shape.
                Layer::Flatten | Layer::Reshape(_) => true,
                Layer::BatchNorm(cfg)
                    if b.norm.is_none() && b.act == Activation::Identity && b.dropout.is_none() && !b.has_bias() =>
                {
                    b.norm = Some(norm(cfg));
                    true
                }
                Layer::Activation(a) if b.act == Activation::Identity && b.dropout.is_none() => {
                    b.act = a;
                    true
                }
                // A rate of 0 is the identity, even while training.
                Layer::Dropout(0.0) => true,
                Layer::Dropout(rate) if b.dropout.is_none() => {
                    b.dropout = Some((rate, dropout::seed(seed, layers, i)));
                    true
                }
                _ => false,
            };
            if absorbed {
                b.outputs = outputs;
                b.layers.end = i + 1;
                continue;
            }
        }
        let mut block = match *layer {
            Layer::Dense(d) => Block::new(
                Core::Dense { units: d.units, weight: offset(i, "weight").unwrap_or(0), bias: offset(i, "bias") },
                inputs,
                outputs,
                i,
            ),
            Layer::Conv2D(conv) => Block::new(
                Core::Conv2D {
                    conv,
                    input: image(&shapes[i]),
                    weight: offset(i, "weight").unwrap_or(0),
                    bias: offset(i, "bias"),
                },
                inputs,
                outputs,
                i,
            ),
            Layer::Pool(pooling) => Block::new(Core::Pool { pooling, input: image(&shapes[i]) }, inputs, outputs, i),
            _ => Block::new(Core::Identity, inputs, outputs, i),
        };
        let own_act = match *layer {
            Layer::Dense(d) => Some(d.activation),
            Layer::Conv2D(c) => Some(c.activation),
            _ => None,
        };
        match *layer {
            Layer::Dense(_) | Layer::Conv2D(_) if fuse => block.act = own_act.unwrap_or(Activation::Identity),
            Layer::Dense(_) | Layer::Conv2D(_) if own_act != Some(Activation::Identity) => {
                out.push(block);
                block = Block::new(Core::Identity, outputs, outputs, i);
                block.act = own_act.unwrap_or(Activation::Identity);
            }
            Layer::Activation(a) => block.act = a,
            Layer::Dropout(rate) if rate > 0.0 => block.dropout = Some((rate, dropout::seed(seed, layers, i))),
            Layer::BatchNorm(cfg) => block.norm = Some(norm(cfg)),
            Layer::Dense(_)
            | Layer::Conv2D(_)
            | Layer::Pool(_)
            | Layer::Flatten
            | Layer::Reshape(_)
            | Layer::Dropout(_) => {}
        }
        out.push(block);
    }
    if fuse {
        // A leading flatten or reshape reads the input as it lies: nothing to run.
        while out.len() > 1 && out[0].is_noop(out[0].act) {
            let first = out.remove(0);
            out[0].layers.start = first.layers.start;
        }
    }
    out
}

/// `[H, W, C]` of an image shape (checked by the layer's shape rule before any block is made).
fn image(shape: &[usize]) -> [usize; 3] {
    match *shape {
        [h, w, c] => [h, w, c],
        _ => [1, 1, features(shape)],
    }
}
