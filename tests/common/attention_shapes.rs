//! The shapes the attention kernels' tests run on.

/// (B, T, NH, hs) of every test against the reference: B 1 and 3, T 1, 7, 64 and 65 (around the
/// workgroup of 64), NH 1 and 4, hs 1, 8 and 32.
pub fn attention_shapes() -> Vec<(usize, usize, usize, usize)> {
    let mut shapes = Vec::new();
    for b in [1, 3] {
        for t in [1, 7, 64, 65] {
            for nh in [1, 4] {
                for hs in [1, 8, 32] {
                    shapes.push((b, t, nh, hs));
                }
            }
        }
    }
    shapes
}
