//! What the optimizer tests share (tests/optimizer.rs, tests/optimizer_rules.rs).

/// Updates each check runs.
pub const STEPS: u32 = 5;

/// Lengths that take the vec4 kernels (multiples of 4 floats, at 16-byte aligned offsets); the
/// shared SIZES mostly take the scalar ones.
pub const VEC4_SIZES: &[usize] = &[4, 60, 1028];

/// Checks that `plan` runs the vec4 module exactly where len is a multiple of 4 (every test tensor
/// sits at an offset that is a multiple of 16 bytes).
pub fn assert_family(plan: &wgnn::internals::kernels::Plan, len: usize, what: &str) {
    let family = plan.dispatches[0].label.split("::").next().unwrap();
    assert_eq!(family, if len.is_multiple_of(4) { "optimizer_vec4" } else { "optimizer" }, "{what}");
}

/// Asserts `result` is an error whose message contains every one of `needles`.
pub fn expect_err<T>(what: &str, result: wgnn::Result<T>, needles: &[&str]) {
    let msg = match result {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(msg.contains(n), "{what}: message {msg:?} does not contain {n:?}");
    }
}
