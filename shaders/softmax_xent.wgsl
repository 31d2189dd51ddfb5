// Softmax cross-entropy, fused, one invocation per row of a [rows, cols] matrix of logits.
//   softmax_xent: loss[r]       = logsumexp(Z[r, :]) − Z[r, label[r]]          Z: [rows, cols], label: [rows]
//                 dZ[r, c]      = (softmax(Z[r, :])[c] − [c == label[r]]) · grad_scale     dZ: [rows, cols]
//                 correct[r]    = 1 if the first argmax of Z[r, :] is label[r], else 0   loss, correct: [rows]
//   softmax_xent_dense (one-hot or soft targets T: [rows, cols], bound at `labels` as f32 bits):
//                 loss[r]       = Σ_c T[r, c]·(logsumexp(Z[r, :]) − Z[r, c])
//                 dZ[r, c]      = (softmax(Z[r, :])[c]·Σ_c' T[r, c'] − T[r, c]) · grad_scale
//                 correct[r]    = 1 if the first argmax of Z[r, :] is the first argmax of T[r, :]
//   softmax:      P[r, c]       = softmax(Z[r, :])[c]                          P: [rows, cols] (bound at dZ)
// The row maximum is subtracted before exp, so logits of ±1e4 stay finite. Each invocation loops
// at most 4·cols times: the wrapper caps cols far below lavapipe's 65,535-iteration loop cap.
// A label ≥ cols (possible only when the host could not check it) gives a NaN loss.
// Batch totals (FUSED_TOTALS, for small batches): one workgroup loops over the rows, then
//                 totals[0] += Σ_r loss[r],  totals[1] += Σ_r correct[r]          totals: [2]
// in a fixed order (each invocation its strided rows, then invocation 0 over the invocations):
// this saves totals.wgsl's second dispatch, which on lavapipe cost more than the loss itself.
// Without it (large batches) the wrapper adds totals.wgsl's reduction.

override WG: u32 = 64u;
override HAS_DLOGITS: bool = true;
override FUSED_TOTALS: bool = false;

struct Params {
    rows: u32,
    cols: u32,
    grad_scale: f32,
    _pad: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer (logits and dlogits in one
// activation buffer) bound read-only and writable in the same dispatch would conflict.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> labels: array<u32>;   // dense: f32 targets' bits
@group(0) @binding(3) var<storage, read_write> loss_rows: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;   // softmax: probs
@group(0) @binding(5) var<storage, read_write> correct_rows: array<f32>;
@group(0) @binding(6) var<storage, read_write> totals: array<f32>;

var<workgroup> partial: array<vec2<f32>, WG>;

fn row_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// The row's maximum and the column of its first occurrence.
fn row_max(base: u32) -> vec2<f32> {
    var m = logits[base];
    var best = 0u;
    for (var c = 1u; c < p.cols; c++) {
        let z = logits[base + c];
        if (z > m) {
            m = z;
            best = c;
        }
    }
    return vec2<f32>(m, f32(best));
}

fn row_sum_exp(base: u32, m: f32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        s += exp(logits[base + c] - m);
    }
    return s;
}

// One row of softmax_xent; returns (loss, correct).
fn sparse_row(r: u32) -> vec2<f32> {
    let base = r * p.cols;
    let mx = row_max(base);
    let m = mx.x;
    let best = u32(mx.y);
    let s = row_sum_exp(base, m);
    let label = labels[r];
    let valid = label < p.cols;
    let z_label = logits[base + min(label, p.cols - 1u)];
    // NaN's bits through a `let`: a constant expression that is NaN is a shader-creation error
    // in WGSL (Tint refuses it; naga let it through).
    let nan_bits = 0x7fc00000u;
    let loss = select(bitcast<f32>(nan_bits), m + log(s) - z_label, valid);
    let correct = select(0.0, 1.0, valid && best == label);
    loss_rows[r] = loss;
    correct_rows[r] = correct;
    if (HAS_DLOGITS) {
        for (var c = 0u; c < p.cols; c++) {
            let prob = exp(logits[base + c] - m) / s;
            dlogits[base + c] = (prob - select(0.0, 1.0, c == label)) * p.grad_scale;
        }
    }
    return vec2<f32>(loss, correct);
}

// FUSED_TOTALS: this invocation's (Σ loss, Σ correct) into the single workgroup's totals.
fn add_to_totals(lid: u32, sums: vec2<f32>) {
    partial[lid] = sums;
    workgroupBarrier();
    if (lid == 0u) {
        var t = vec2<f32>(totals[0], totals[1]);
        for (var i = 0u; i < WG; i++) {
            t += partial[i];
        }
        totals[0] = t.x;
        totals[1] = t.y;
    }
}

@compute @workgroup_size(WG)
fn softmax_xent(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    if (FUSED_TOTALS) {
        var sums = vec2<f32>();
        for (var r = lid.x; r < p.rows; r += WG) {
            sums += sparse_row(r);
        }
        add_to_totals(lid.x, sums);
        return;
    }
    let r = row_index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    _ = sparse_row(r);
}

// One row of softmax_xent_dense; returns (loss, correct).
fn dense_row(r: u32) -> vec2<f32> {
    let base = r * p.cols;
    let mx = row_max(base);
    let m = mx.x;
    let best = u32(mx.y);
    let s = row_sum_exp(base, m);
    // Σ t, Σ t·(m − z) (each term ≥ 0, so huge logits stay finite) and the targets' first argmax.
    var t_sum = 0.0;
    var t_gap = 0.0;
    var t_max = bitcast<f32>(labels[base]);
    var t_best = 0u;
    for (var c = 0u; c < p.cols; c++) {
        let t = bitcast<f32>(labels[base + c]);
        t_sum += t;
        t_gap += t * (m - logits[base + c]);
        if (t > t_max) {
            t_max = t;
            t_best = c;
        }
    }
    let loss = t_sum * log(s) + t_gap;
    let correct = select(0.0, 1.0, best == t_best);
    loss_rows[r] = loss;
    correct_rows[r] = correct;
    if (HAS_DLOGITS) {
        for (var c = 0u; c < p.cols; c++) {
            let prob = exp(logits[base + c] - m) / s;
            dlogits[base + c] = (prob * t_sum - bitcast<f32>(labels[base + c])) * p.grad_scale;
        }
    }
    return vec2<f32>(loss, correct);
}

@compute @workgroup_size(WG)
fn softmax_xent_dense(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>) {
    if (FUSED_TOTALS) {
        var sums = vec2<f32>();
        for (var r = lid.x; r < p.rows; r += WG) {
            sums += dense_row(r);
        }
        add_to_totals(lid.x, sums);
        return;
    }
    let r = row_index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    _ = dense_row(r);
}

@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(wid, nwg, lid);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let m = row_max(base).x;
    let s = row_sum_exp(base, m);
    for (var c = 0u; c < p.cols; c++) {
        dlogits[base + c] = exp(logits[base + c] - m) / s;
    }
}
