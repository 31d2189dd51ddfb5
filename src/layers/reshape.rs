//! The reshape layer (Keras' `Reshape`): one sample's values read as another shape of the same
//! size, e.g. a 784-wide row as a `[28, 28, 1]` image. A no-op in memory (rows stay
//! channels-last), so it has no kernels: forward and backward pass the values on as they are.

use crate::error::{Result, WgnnError};
use crate::host_memory::checked_product;

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
        // An overflowing product is said as such, not as the number it wrapped to.
        let count = |n: Option<usize>| n.map_or_else(|| "more than a usize counts".to_string(), |n| n.to_string());
        return Err(WgnnError::shape_of(
            op,
            &[("input", input), ("target", target)],
            format!("a {input:?} input has {} values per sample, {target:?} needs {}", count(have), count(want)),
        ));
    }
    Ok(target.to_vec())
}
