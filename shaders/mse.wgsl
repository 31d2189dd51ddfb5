// Mean squared error, one invocation per row of a [rows, cols] matrix of predictions.
//   mse: loss[r]    = Σ_c (P[r, c] − T[r, c])² / cols          P, T: [rows, cols]; loss: [rows]
//        dP[r, c]   = 2·(P[r, c] − T[r, c]) / cols · grad_scale  dP: [rows, cols]
//        abs[r]     = Σ_c |P[r, c] − T[r, c]| / cols (the MAE metric, summed by totals.wgsl as the
//                     second total, where the classification losses put the correct count)
// Each invocation loops cols times: the wrapper caps cols far below lavapipe's 65,535-iteration
// loop cap. The batch totals are totals.wgsl's.

override WG: u32 = 64u;
override HAS_DPRED: bool = true;

struct Params {
    rows: u32,
    cols: u32,
    grad_scale: f32,
    _pad: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> pred: array<f32>;
@group(0) @binding(2) var<storage, read_write> targets: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss_rows: array<f32>;
@group(0) @binding(4) var<storage, read_write> dpred: array<f32>;
@group(0) @binding(5) var<storage, read_write> abs_rows: array<f32>;

@compute @workgroup_size(WG)
fn mse(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let inv_cols = 1.0 / f32(p.cols);
    let dscale = 2.0 * inv_cols * p.grad_scale;
    var sq = 0.0;
    var ab = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let e = pred[base + c] - targets[base + c];
        sq += e * e;
        ab += abs(e);
        if (HAS_DPRED) {
            dpred[base + c] = e * dscale;
        }
    }
    loss_rows[r] = sq * inv_cols;
    abs_rows[r] = ab * inv_cols;
}
