//! The layer a model stacks: a dense layer, with its optional dropout and batch norm, and the
//! batch norm's state as read back.

use super::*;

/// A fully connected layer: y = act(x·W + b), W: [inputs, units], b: `[units]`; with `dropout` > 0,
/// inverted dropout of that rate on y while training (Keras' `Dropout` layer after it), the
/// identity in `evaluate` and `predict`.
///
/// With `batch_norm`, y = act(BN(x·W)): batch normalisation of the pre-activation (Keras'
/// `Dense(use_bias=False)` → `BatchNormalization` → `Activation`). BN's shift β takes the place of
/// b (a bias before BN would be subtracted out again), its scale γ `[units]` is a further trained
/// parameter, and its running mean and variance `[units]` are kept beside the parameters. Training
/// normalises with the batch's statistics, `evaluate` and `predict` with the running ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dense {
    pub inputs: usize,
    pub units: usize,
    pub activation: Activation,
    pub dropout: f32,
    pub batch_norm: Option<BatchNormConfig>,
}

impl Dense {
    /// The seed of this layer's dropout masks (`layer`: its index), on the GPU and the CPU alike;
    /// the mask of step t is a hash of (seed, t, element).
    pub(super) fn dropout_seed(model_seed: u64, layer: usize) -> u32 {
        let mixed = model_seed ^ (layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed ^ (mixed >> 32)) as u32
    }
}

/// A batch-normalised layer's state beside W and b (b holds β), each `[units]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormState {
    pub gamma: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}
