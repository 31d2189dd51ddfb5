// Inverted dropout, training only, elementwise over a flat tensor of `len` values.
//   dropout_forward:  keep = hash(seed, t, i) >= threshold;  mask[i] = keep ? scale : 0
//                     y[i] = x[i] * mask[i]                  x, y, mask: [len], step: [1] u32
//                     t = step[0] − lag (lag 1 where the step's gather already advanced the counter)
//   dropout_backward: dx[i] = dy[i] * mask[i]                dy, mask, dx: [len]
// threshold = floor(p·2^32) and scale = 1/(1−p) come from the host. The keep decision is a
// counter-based hash of (seed, t, element index): no random numbers are uploaded, the same seed
// and t give the same mask, and `step` (the global step counter on the GPU) is read, never
// written. The hash is in dropout_hash.wgsl (prepended; attention's dropout draws its masks from it
// too); src/cpu/dropout.rs has the same hash in Rust: masks are bit-identical.

override WG: u32 = 256u;

struct Params {
    len: u32,
    seed: u32,
    threshold: u32,  // keep iff hash >= threshold
    scale: f32,      // 1 / (1 − p)
    lag: u32,        // subtracted from step[0]
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;     // forward: x     backward: dy
@group(0) @binding(2) var<storage, read_write> step: array<u32>;  // forward: step  backward: unused
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // forward: y     backward: dx
@group(0) @binding(4) var<storage, read_write> mask: array<f32>;  // forward: written, backward: read

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn dropout_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let keep = dropout_hash(p.seed, step[0] - p.lag, i) >= p.threshold;
    let m = select(0.0, p.scale, keep);
    mask[i] = m;
    out[i] = a[i] * m;
}

@compute @workgroup_size(WG)
fn dropout_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.len) { return; }
    out[i] = a[i] * mask[i];
}
