// Sigmoid + binary cross-entropy, fused, one invocation per row of a single-output model.
//   sigmoid_bce: loss[r]    = max(z, 0) − z·t + log(1 + exp(−|z|))      z = Z[r], t = T[r]; Z, T: [rows]
//                dZ[r]      = (σ(z) − t) · grad_scale                    dZ: [rows]
//                correct[r] = 1 if (z > 0) == (t > 0.5), else 0          loss, correct: [rows]
// Targets are f32 bits, or with TARGETS_U32 integer labels 0/1 (a model's gathered labels),
// converted here: the buffer is declared u32 either way and f32 targets are bitcast.
// The stable forms never exponentiate a positive number, so logits of ±1e4 stay finite.
// The batch totals are totals.wgsl's.

override WG: u32 = 256u;
override HAS_DLOGITS: bool = true;
override TARGETS_U32: bool = false;

struct Params {
    rows: u32,
    grad_scale: f32,
    _pad0: u32,
    _pad1: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss_rows: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> correct_rows: array<f32>;

// σ(z) without overflow: exp is only taken of −|z|.
fn sigmoid(z: f32) -> f32 {
    let e = exp(-abs(z));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), z >= 0.0);
}

@compute @workgroup_size(WG)
fn sigmoid_bce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (r >= p.rows) { return; }
    let z = logits[r];
    let t = select(bitcast<f32>(targets[r]), f32(targets[r]), TARGETS_U32);
    loss_rows[r] = max(z, 0.0) - z * t + log(1.0 + exp(-abs(z)));
    correct_rows[r] = select(0.0, 1.0, (z > 0.0) == (t > 0.5));
    if (HAS_DLOGITS) {
        dlogits[r] = (sigmoid(z) - t) * p.grad_scale;
    }
}
