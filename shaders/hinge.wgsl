// Binary hinge loss, one invocation per row of a single-output model.
//   hinge: y          = +1 if T[r] > 0 else −1     (labels in {−1, +1}, or {0, 1} with 0 → −1)
//          loss[r]    = max(0, 1 − y·z)                         z = Z[r]; Z, T, loss: [rows]
//          dZ[r]      = (y·z < 1 ? −y : 0) · grad_scale          dZ: [rows] (0 at the kink y·z = 1)
//          correct[r] = 1 if (z > 0) == (y > 0), else 0          correct: [rows]
// Keras' `hinge` (which maps {0, 1} labels to ±1 the same way). The batch totals are totals.wgsl's.

override WG: u32 = 256u;
override HAS_DLOGITS: bool = true;

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
@group(0) @binding(2) var<storage, read_write> targets: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss_rows: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> correct_rows: array<f32>;

@compute @workgroup_size(WG)
fn hinge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (r >= p.rows) { return; }
    let z = logits[r];
    let y = select(-1.0, 1.0, targets[r] > 0.0);
    let margin = y * z;
    // select, not max: a NaN score must give a NaN loss, which fit's checks see.
    let m = 1.0 - margin;
    loss_rows[r] = select(m, 0.0, m < 0.0);
    correct_rows[r] = select(0.0, 1.0, (z > 0.0) == (y > 0.0));
    if (HAS_DLOGITS) {
        dlogits[r] = select(0.0, -y, margin < 1.0) * p.grad_scale;
    }
}
