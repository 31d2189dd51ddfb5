// Attention dropout, shared by attention.wgsl and flash_attention.wgsl (which declare `p`, the
// Params with seed, threshold, keep_scale and lag) and appended after dropout_hash.wgsl: score
// (b, h, i, j) is kept with weight 1/(1 − rate) or dropped, by dropout_hash(seed, t, index) with
// index ((b·NH + h)·T + i)·T + j and t = step[0] − lag — the dropout layer's mask, so the CPU
// reference (src/cpu/attention.rs) draws the same. Pipelines built without DROPOUT never read
// `step` (a dummy is bound) and compile to what they were before dropout existed.

override DROPOUT: bool = false;

// The global step counter, u32 [1]: read, never written.
@group(0) @binding(7) var<storage, read_write> step: array<u32>;

// dropout_hash's key and its hash, the same for a whole invocation: two hashes per score after.
struct MaskKey {
    key: u32,
    key_hash: u32,
}

fn mask_key() -> MaskKey {
    let key = pcg_hash(p.seed ^ pcg_hash(step[0] - p.lag));
    return MaskKey(key, pcg_hash(key));
}

// The weight of score `index`: 0 (dropped) or 1/(1 − rate) (kept); dropout_hash(p.seed, t, index).
fn mask_weight(k: MaskKey, index: u32) -> f32 {
    let keep = pcg_hash(pcg_hash(index ^ k.key) ^ k.key_hash) >= p.threshold;
    return select(0.0, p.keep_scale, keep);
}
