//! Weight decay on matrices only ([`DecayMask::Matrices`], nanoGPT's `configure_optimizers`):
//! which trained values decay, as the bit mask the update kernels and their CPU reference read.

use super::layout::ParamLayout;
use super::{Optimizer, Sequential};
use crate::config::DecayMask;

impl ParamLayout {
    /// A bit per trained value (bit i % 32 of word i / 32), set for the values of every trained
    /// tensor of two or more dimensions: dense and convolution kernels decay; biases, batch
    /// norm's γ and β (and the padding between slices, whose gradients are zero) do not.
    pub(super) fn matrix_bits(&self) -> Vec<u32> {
        let mut bits = vec![0u32; self.trainable.div_ceil(32)];
        for slot in self.slots.iter().filter(|s| s.spec.trainable && s.spec.shape.len() >= 2) {
            for i in slot.offset..slot.offset + slot.spec.len() {
                bits[i / 32] |= 1 << (i % 32);
            }
        }
        bits
    }
}

impl Sequential {
    /// The decay mask `optimizer` needs over the trained values: Some for Adam or AdamW set to
    /// decay matrices only, None where every value decays alike.
    pub(super) fn decay_mask(&self, optimizer: &Optimizer) -> Option<Vec<u32>> {
        match optimizer {
            Optimizer::Adam(c) | Optimizer::AdamW(c) if c.decay == DecayMask::Matrices => {
                Some(self.layout.matrix_bits())
            }
            _ => None,
        }
    }
}
