// Learned positional embedding added to a batch of token vectors.
//   positional_add_forward: out[b, t, c] = x[b, t, c] + pos[t, c]
//                           x, out: [batch, block, cols]; pos: [block_max ≥ block, cols]
//   positional_clear_tail:  dpos[t, c] = 0 for t ≥ block (rows of positions the batch has not)
// Its backward dpos[t] = Σ_b dy[b, t] is reduce.wgsl's column sum over dy seen as
// [batch, block · cols] (a fixed order: the same bits on every run); dx = dy passes through.
// The forward runs on a 2-D grid, x over a sample's values and y over the samples (folded into
// z past the per-dimension workgroup limit), so that no invocation divides (a division by a
// uniform is one per SIMD lane on lavapipe); the clear on a 1-D grid, folded into y.
// Written over `V` (a lane width prepended, after activation.wgsl: lanes_vec4.wgsl where cols is
// a multiple of 4, every count below then in vec4s), as embedding.wgsl.

override WG: u32 = 256u;

struct Params {
    total: u32,      // clear: (block_max − block) · cols
    per_sample: u32, // block · cols
    samples: u32,    // forward: batch
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read> pos: array<V>;
@group(0) @binding(3) var<storage, read_write> out: array<V>;  // forward: out; clear: dpos

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn positional_add_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x;
    let sample = wid.z * nwg.y + wid.y;
    if (j >= p.per_sample || sample >= p.samples) { return; }
    let i = sample * p.per_sample + j;
    out[i] = x[i] + pos[j];
}

@compute @workgroup_size(WG)
fn positional_clear_tail(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.total) { return; }
    out[p.per_sample + i] = splat(0.0);
}
