// Learned positional embedding added to a batch of token vectors.
//   positional_add_forward: out[b, t, c] = x[b, t, c] + pos[t, c]
//                           x, out: [batch, block, cols]; pos: [block_max ≥ block, cols]
//   positional_clear_tail:  dpos[t, c] = 0 for t ≥ block (rows of positions the batch has not)
// Its backward dpos[t] = Σ_b dy[b, t] is reduce.wgsl's column sum over dy seen as
// [batch, block · cols] (a fixed order: the same bits on every run); dx = dy passes through.
// 1-D grids, folded into y past the per-dimension workgroup limit.

override WG: u32 = 256u;

struct Params {
    total: u32,      // forward: batch · block · cols; clear: (block_max − block) · cols
    per_sample: u32, // block · cols
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> pos: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // forward: out; clear: dpos

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn positional_add_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.total) { return; }
    out[i] = x[i] + pos[i % p.per_sample];
}

@compute @workgroup_size(WG)
fn positional_clear_tail(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.total) { return; }
    out[p.per_sample + i] = 0.0;
}
