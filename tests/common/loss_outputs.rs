//! What the loss kernels' tests share: one call's outputs downloaded, how many dispatches a loss
//! with totals takes, and the check that bad input is an error naming the kernel.

use wgnn::WgnnError;

/// Outputs of one GPU loss call, downloaded (mse's `dpred` and `abs_rows` as `dlogits` and
/// `correct`).
pub struct Got {
    pub loss: Vec<f32>,
    pub dlogits: Vec<f32>,
    pub correct: Vec<f32>,
    pub totals: Vec<f32>,
    /// 1 where the loss dispatch adds the totals itself, 2 where totals.wgsl does.
    pub dispatches: usize,
}

/// How many dispatches a loss with totals takes at n×c: the totals fused into the loss dispatch
/// up to 2,048 rows while one invocation loops at most 16,384 times (rows per invocation × 4c).
pub fn expected_dispatches(n: usize, c: usize) -> usize {
    if n <= 2048 && n.div_ceil(64) * 4 * c <= 16_384 {
        1
    } else {
        2
    }
}

/// Asserts `result` is an error whose message contains every one of `needles`.
pub fn expect_err<T>(what: &str, result: wgnn::Result<T>, needles: &[&str]) -> WgnnError {
    let err = match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e,
    };
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "{what}: message {msg:?} does not contain {n:?}");
    }
    err
}
