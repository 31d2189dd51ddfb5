//! Where each layer's parameter tensors sit in the flat parameter buffer (and the gradient and
//! optimizer-state buffers, which share its layout).

use crate::layers::{Layer, SlotInit, SlotSpec};
use crate::rng::Rng;

/// Floats between parameter slices: 64 floats = 256 bytes, the largest storage offset alignment
/// wgpu allows a device to ask for, so every slice is bindable on every adapter.
pub(super) const PARAM_ALIGN: usize = 64;

/// One layer's parameter tensor, placed.
#[derive(Clone, Debug)]
pub(super) struct ParamSlot {
    /// The layer's index in the model.
    pub(super) layer: usize,
    pub(super) spec: SlotSpec,
    /// In floats, a multiple of [`PARAM_ALIGN`].
    pub(super) offset: usize,
}

/// The trained parameters first (`..trainable`), layer by layer, then the state kept beside
/// them (batch-norm running statistics), which the optimizer never touches but which is saved,
/// restored and copied with the weights.
#[derive(Clone, Debug)]
pub(super) struct ParamLayout {
    pub(super) slots: Vec<ParamSlot>,
    /// Floats of trained parameters at the start of the buffer (a multiple of PARAM_ALIGN).
    pub(super) trainable: usize,
    pub(super) total: usize,
}

impl ParamLayout {
    /// `shapes[i]`: layer i's input shape.
    pub(super) fn new(layers: &[Layer], shapes: &[Vec<usize>]) -> ParamLayout {
        let specs: Vec<(usize, SlotSpec)> = layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.slots(l.slot_input(i, shapes)).into_iter().map(move |spec| (i, spec)))
            .collect();
        let mut at = 0;
        let mut slots = Vec::new();
        let mut place = |trainable: bool, at: &mut usize| {
            for (layer, spec) in specs.iter().filter(|(_, s)| s.trainable == trainable) {
                slots.push(ParamSlot { layer: *layer, spec: spec.clone(), offset: *at });
                *at = (*at + spec.len()).next_multiple_of(PARAM_ALIGN);
            }
        };
        place(true, &mut at);
        let trainable = at.max(PARAM_ALIGN);
        at = trainable;
        place(false, &mut at);
        ParamLayout { slots, trainable, total: at }
    }

    /// Layer `layer`'s slot `name`.
    pub(super) fn slot(&self, layer: usize, name: &str) -> Option<&ParamSlot> {
        self.slots.iter().find(|s| s.layer == layer && s.spec.name == name)
    }

    /// Layer `layer`'s slots, in layout order.
    pub(super) fn layer_slots(&self, layer: usize) -> impl Iterator<Item = &ParamSlot> {
        self.slots.iter().filter(move |s| s.layer == layer)
    }

    /// The initial flat parameters: the drawn slots in layer order from `seed`, the others
    /// constant (the Keras defaults: zero biases, γ = 1, running variance 1).
    pub(super) fn initial(&self, seed: u64) -> Vec<f32> {
        let mut flat = vec![0.0f32; self.total];
        let mut rng = Rng::new(seed);
        let mut in_layer_order: Vec<&ParamSlot> = self.slots.iter().collect();
        in_layer_order.sort_by_key(|s| s.layer);
        for s in in_layer_order {
            let n = s.spec.len();
            let values = &mut flat[s.offset..s.offset + n];
            match s.spec.init {
                SlotInit::Draw { init, fan_in, fan_out } => {
                    values.copy_from_slice(&init.fill(fan_in, fan_out, n, &mut rng))
                }
                SlotInit::Zeros => {}
                SlotInit::Ones => values.fill(1.0),
            }
        }
        flat
    }
}
