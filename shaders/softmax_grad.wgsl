// The backward of a row-wise softmax, one invocation per row of [rows, cols]:
//   softmax_backward: dZ[r, c] = Y[r, c]·(dY[r, c] − Σ_c' dY[r, c']·Y[r, c'])
//   Y: the forward's output softmax(Z), dY: the gradient w.r.t. Y, dZ: the gradient w.r.t. Z; all [rows, cols].
// Used where softmax is a layer's activation rather than fused with cross-entropy (a hidden
// softmax layer, or a softmax output under mean squared error). Each invocation loops 2·cols
// times: the wrapper caps cols far below lavapipe's 65,535-iteration loop cap.

override WG: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

// All read_write: views of one activation buffer may be bound together (see softmax_xent.wgsl).
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> dz: array<f32>;

@compute @workgroup_size(WG)
fn softmax_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.cols;
    var dot = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        dot += dy[base + c] * y[base + c];
    }
    for (var c = 0u; c < p.cols; c++) {
        dz[base + c] = y[base + c] * (dy[base + c] - dot);
    }
}
