//! scikit-learn's `train_test_split(..., test_size=f, random_state=seed)` (shuffled, not
//! stratified) as row indices, so an example can split its data exactly as the tutorial it
//! follows does and be compared with the tutorial's figures.

use crate::error::{Result, WgnnError};
use crate::numpy_random::NumpyRandomState;

/// The `(train, test)` row indices that `train_test_split` gives `n` rows with a fractional
/// `test_size` and an integer `random_state`, in scikit-learn's order (`X_train = X[train]`).
///
/// As in scikit-learn's `ShuffleSplit`: `n_test = ceil(test_size · n)` (in f64, as Python
/// computes it), `n_train = n − n_test`, `perm = RandomState(random_state).permutation(n)`,
/// `test = perm[..n_test]`, `train = perm[n_test..]`.
pub fn train_test_split_indices(n: usize, test_size: f64, random_state: u32) -> Result<(Vec<usize>, Vec<usize>)> {
    const OP: &str = "train_test_split_indices";
    if !(test_size > 0.0 && test_size < 1.0) {
        return Err(WgnnError::invalid(OP, format!("test_size must be in (0, 1), got {test_size}")));
    }
    // test_size < 1, so n_test <= n.
    let n_test = (test_size * n as f64).ceil() as usize;
    if n_test >= n {
        return Err(WgnnError::invalid(
            OP,
            format!("test_size {test_size} of {n} rows leaves no training rows ({n_test} test rows)"),
        ));
    }
    let mut order = NumpyRandomState::new(random_state).permutation(n);
    let train = order.split_off(n_test);
    Ok((train, order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_ceil_of_the_test_fraction() {
        let (train, test) = train_test_split_indices(410, 0.15, 42).unwrap();
        assert_eq!((train.len(), test.len()), (348, 62));
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..410).collect::<Vec<_>>());
    }

    #[test]
    fn rejects_fractions_outside_zero_one_and_empty_training_sets() {
        for bad in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            let err = train_test_split_indices(100, bad, 0).unwrap_err();
            assert!(err.to_string().contains("test_size must be in (0, 1)"), "{err}");
        }
        // ceil(0.5 · 1) = 1 test row of 1: no training rows, as scikit-learn refuses too.
        let err = train_test_split_indices(1, 0.5, 0).unwrap_err();
        assert!(err.to_string().contains("leaves no training rows"), "{err}");
        assert!(train_test_split_indices(0, 0.5, 0).is_err());
    }
}
