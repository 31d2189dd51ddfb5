//! The reshape layer (Keras' `Reshape`): one sample's values read as another shape of the same
//! size, e.g. a 784-wide row as a `[28, 28, 1]` image. A no-op in memory (rows stay
//! channels-last), so it has no kernels: forward and backward pass the values on as they are.

use crate::error::{Result, WgnnError};
use crate::host_memory::{checked_product, count_text};

pub(super) fn validate(op: &str, target: &[usize]) -> Result<()> {
    if target.is_empty() || target.contains(&0) {
        return Err(WgnnError::invalid(op, format!("the target shape {target:?} must have axes of at least 1")));
    }
    Ok(())
}

/// `target`, where it holds as many values as `input`.
pub(super) fn output_shape(op: &str, input: &[usize], target: &[usize]) -> Result<Vec<usize>> {
    let (have, want) = (checked_product(input), checked_product(target));
    if have.is_none() || have != want {
        return Err(WgnnError::shape_of(
            op,
            &[("input", input), ("target", target)],
            format!(
                "a {input:?} input has {} values per sample, {target:?} needs {}",
                count_text(have),
                count_text(want)
            ),
        ));
    }
    Ok(target.to_vec())
}
