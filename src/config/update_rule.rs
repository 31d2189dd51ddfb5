//! An update rule with its hyper-parameters, as one value: what
//! [`kernels::optimizer::update_with`](crate::kernels::optimizer::update_with) and its CPU
//! reference [`cpu::optimizer::update_with`](crate::cpu::optimizer::update_with) take, so a caller
//! (the model's step) picks the rule once and passes the extras (clipping, decay mask) to any.

use super::optimizer::{AdadeltaConfig, AdagradConfig, AdamConfig, RmsPropConfig, SgdConfig};

/// One of the update rules; each config documents its formula.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpdateRule {
    /// State: the velocity, when momentum ≠ 0.
    Sgd(SgdConfig),
    /// State: m, v.
    Adam(AdamConfig),
    /// State: m, v.
    AdamW(AdamConfig),
    /// State: the square average, and the momentum buffer when momentum ≠ 0.
    RmsProp(RmsPropConfig),
    /// State: the sum.
    Adagrad(AdagradConfig),
    /// State: the square average, the accumulated delta.
    Adadelta(AdadeltaConfig),
}

impl UpdateRule {
    /// The update kernel's name, which errors carry.
    pub fn op(&self) -> &'static str {
        match self {
            UpdateRule::Sgd(_) => "sgd_update",
            UpdateRule::Adam(_) => "adam_update",
            UpdateRule::AdamW(_) => "adamw_update",
            UpdateRule::RmsProp(_) => "rmsprop_update",
            UpdateRule::Adagrad(_) => "adagrad_update",
            UpdateRule::Adadelta(_) => "adadelta_update",
        }
    }

    /// How many state tensors of the parameters' length the rule keeps, in the order above.
    pub fn state_slots(&self) -> usize {
        match self {
            UpdateRule::Sgd(c) => (c.momentum != 0.0) as usize,
            UpdateRule::Adam(_) | UpdateRule::AdamW(_) => 2,
            UpdateRule::RmsProp(c) => 1 + (c.momentum != 0.0) as usize,
            UpdateRule::Adagrad(_) => 1,
            UpdateRule::Adadelta(_) => 2,
        }
    }
}
