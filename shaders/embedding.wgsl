// Token embedding: rows of a table picked by token ids.
//   embedding_forward:  out[n, c] = table[ids[n], c], or 0 where ids[n] ≥ vocab
//                       ids: [tokens] u32, or u8 packed 4 per u32 word (IDS_U8, byte n % 4 of word
//                       n / 4, least significant first); table: [vocab, cols]; out: [tokens, cols]
//   embedding_clear:    dtable[v, c] = 0 (before a backward that overwrites)
//   embedding_backward: dtable[ids[n], c] += dy[n, c] for n in [p.first, p.first + p.count), in
//                       order of n; ids ≥ vocab are skipped
// The backward is one invocation per channel c walking the tokens in order: each owns column c of
// dtable, so repeated ids need no atomics and their gradients are summed in token order — the
// same bits on every run. O(tokens · cols) work, parallel over cols only. Each dispatch walks at
// most p.count tokens (the wrapper keeps it far below lavapipe's 65,535-iteration loop cap and
// chains dispatches, which wgpu orders).
// The forward runs on a 2-D grid: x over columns, y over tokens (folded into z past the
// per-dimension workgroup limit). Nothing reads out of bounds, whatever the ids.
// Written over `V` (a lane width prepended, after activation.wgsl: lanes_scalar.wgsl, or
// lanes_vec4.wgsl where cols is a multiple of 4; then the table's and the tokens' rows are in
// vec4s of four columns and p.cols = cols / 4): on lavapipe every load is a loop over the SIMD
// lanes, so a vec4 moves four values for the cost of one, and the id is read once for them.

override IDS_U8: bool = false;
override WG: u32 = 64u;

struct Params {
    tokens: u32,
    cols: u32,
    vocab: u32,
    first: u32,   // backward: first token of this dispatch
    count: u32,   // backward: tokens in this dispatch
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> table: array<V>;  // forward: table; backward: dy
@group(0) @binding(3) var<storage, read_write> out: array<V>;    // forward: out; backward: dtable

fn token_id(n: u32) -> u32 {
    if (IDS_U8) {
        return (ids[n / 4u] >> (8u * (n % 4u))) & 0xffu;
    }
    return ids[n];
}

@compute @workgroup_size(WG)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = gid.x;
    let n = wid.z * nwg.y + wid.y;
    if (c >= p.cols || n >= p.tokens) { return; }
    let v = token_id(n);
    var value = splat(0.0);
    if (v < p.vocab) {
        value = table[v * p.cols + c];
    }
    out[n * p.cols + c] = value;
}

@compute @workgroup_size(WG)
fn embedding_clear(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * WG + gid.x;
    if (i >= p.vocab * p.cols) { return; }
    out[i] = splat(0.0);
}

@compute @workgroup_size(WG)
fn embedding_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.cols) { return; }
    let end = p.first + p.count;
    for (var n = p.first; n < end; n++) {
        let v = token_id(n);
        if (v < p.vocab) {
            out[v * p.cols + c] += table[n * p.cols + c];
        }
    }
}
