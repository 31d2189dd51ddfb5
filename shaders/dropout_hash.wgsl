// The dropout masks' counter-based hash, shared by every kernel that draws a mask (dropout.wgsl,
// attention.wgsl and flash_attention.wgsl with their dropout): element `index` of the mask of
// (seed, t) is kept iff dropout_hash(seed, t, index) >= ⌊p·2³²⌋. src/cpu/dropout.rs has the same
// hash in Rust, so the masks are bit-identical on the CPU and every GPU.

// PCG-RXS-M-XS hash of one u32 (Jarzynski & Olano, "Hash Functions for GPU Rendering", 2020).
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// The random word of element `index` at (seed, step): two keyed rounds over the index.
fn dropout_hash(seed: u32, t: u32, index: u32) -> u32 {
    let key = pcg_hash(seed ^ pcg_hash(t));
    return pcg_hash(pcg_hash(index ^ key) ^ pcg_hash(key));
}
