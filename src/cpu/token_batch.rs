//! CPU reference of shaders/token_batch.wgsl: nanoGPT's get_batch from a counter-based hash, so
//! the GPU's windows are reproduced exactly.

use super::dropout::{dropout_hash, pcg_hash};

/// The 32-bit seed the shader takes from a 64-bit one: the low word keyed by the high word's hash.
pub fn window_seed(seed: u64) -> u32 {
    (seed as u32) ^ pcg_hash((seed >> 32) as u32)
}

/// The first token of each of the `batch` windows of `block` + 1 tokens drawn at (`seed`,
/// `step`) from `len` tokens, rows `first..first + batch` of the step's batch:
/// ⌊hash(seed, step, first + b) · (len − block) / 2³²⌋, each in [0, len − block) (as
/// `torch.randint(len − block, (batch,))`). Needs block < len ≤ 2³² and first + batch ≤ 2³².
pub fn window_offsets(len: usize, block: usize, step: u32, seed: u64, first: usize, batch: usize) -> Vec<usize> {
    assert!(block < len && len <= u32::MAX as usize, "token_windows: block {block} must be below len {len}");
    assert!(first + batch <= u32::MAX as usize + 1, "token_windows: rows {first} + {batch} past 2^32");
    let starts = (len - block) as u64;
    let seed = window_seed(seed);
    (first..first + batch).map(|b| ((dropout_hash(seed, step, b as u32) as u64 * starts) >> 32) as usize).collect()
}

/// (x, y), each `[batch, block]`: the windows at [`window_offsets`] (rows `first..first + batch`
/// of the step's batch), x their first `block` tokens, y the `block` after the first (the
/// next-token targets). tokens: `[len]`.
pub fn token_windows(
    tokens: &[u32],
    step: u32,
    seed: u64,
    first: usize,
    batch: usize,
    block: usize,
) -> (Vec<u32>, Vec<u32>) {
    let mut x = Vec::with_capacity(batch * block);
    let mut y = Vec::with_capacity(batch * block);
    for o in window_offsets(tokens.len(), block, step, seed, first, batch) {
        x.extend_from_slice(&tokens[o..o + block]);
        y.extend_from_slice(&tokens[o + 1..o + block + 1]);
    }
    (x, y)
}

/// `step[0] += 1` (wrapping, as the shader's u32): what a step does to the counter its windows
/// are drawn at.
pub fn advance_step(step: &mut [u32]) {
    step[0] = step[0].wrapping_add(1);
}
