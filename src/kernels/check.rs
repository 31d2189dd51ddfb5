//! Argument checks shared by the loss and optimizer wrappers; each error names the op.

pub(crate) use crate::config::hyper;
use crate::error::{Result, WgnnError};
use crate::tensor::{DType, Tensor};

/// `t` is of `dtype` and holds exactly `len` values.
pub(crate) fn expect_len(op: &str, what: &str, t: &Tensor, dtype: DType, len: usize, want_shape: &str) -> Result<()> {
    t.expect_dtype(op, dtype)?;
    if t.len() != len {
        return Err(WgnnError::shape_of(
            op,
            &[(what, t.shape())],
            format!("{what} must be {want_shape} ({len} values), got {:?}", t.shape()),
        ));
    }
    Ok(())
}

/// No two of the named tensors share memory.
pub(crate) fn disjoint(op: &str, tensors: &[(&str, &Tensor)]) -> Result<()> {
    for (i, (a_name, a)) in tensors.iter().enumerate() {
        for (b_name, b) in &tensors[i + 1..] {
            if a.overlaps(b) {
                return Err(WgnnError::invalid(
                    op,
                    format!("{a_name} {:?} and {b_name} {:?} share memory", a.shape(), b.shape()),
                ));
            }
        }
    }
    Ok(())
}
