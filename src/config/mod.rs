//! Hyper-parameters the kernels, the CPU reference and the model all take, at the bottom of the
//! crate (they import only [`crate::error`]): the optimizers' and their learning-rate schedule,
//! and batch norm's. The kernel modules re-export them where they were first defined.

pub mod batch_norm;
pub mod optimizer;
pub mod update_rule;

pub use batch_norm::BatchNormConfig;
pub use optimizer::{
    AdadeltaConfig, AdagradConfig, AdamConfig, DecayMask, EpsPlacement, LrSchedule, RmsPropConfig, SgdConfig,
};
pub use update_rule::UpdateRule;

use crate::error::{Result, WgnnError};

/// `value` is finite and inside the range that `ok` accepts (`range` says which, for the message).
pub(crate) fn hyper(op: &str, name: &str, value: f32, range: &str, ok: bool) -> Result<()> {
    if !value.is_finite() || !ok {
        return Err(WgnnError::invalid(op, format!("{name} = {value} must be finite and {range}")));
    }
    Ok(())
}
