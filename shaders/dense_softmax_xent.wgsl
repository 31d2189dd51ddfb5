// The output layer of a training step and its softmax cross-entropy in one dispatch, replacing
// three (the layer's forward product, the loss, and the backward product into the layer below).
// One workgroup loops over the batch rows, an invocation per row at a time, with W staged in
// workgroup memory (every row reads all of it):
//   z[c]     = b[c] + Σ_k h[r, k]·W[k, c]                  h: [rows, K], W: [K, C], b: [C]
//   dZ[r, c] = (softmax(z)[c] − [c == label[r]]) · grad_scale          dZ: [rows, C], label: [rows]
//   dH[r, k] = (Σ_c dZ[r, c]·W[k, c]) · act′(h[r, k])                    dH: [rows, K]
//   totals[0] += Σ_r (logsumexp(z) − z[label[r]]),  totals[1] += Σ_r [first argmax of z == label[r]]
// h is the output of the layer below (activation ACT, derivative from its output), so dH is that
// layer's dZ; dZ feeds the output layer's dW and db. The sums are added in a fixed order (each
// invocation its strided rows, then invocation 0 over the invocations), as softmax_xent's. A label
// ≥ C (possible only when the host could not check it) gives a NaN loss. The wrapper keeps C ≤
// MAX_C, K·C ≤ MAX_W and each invocation's loops far below lavapipe's 65,535-iteration cap.
// Needs activation.wgsl prepended and a W source appended, which defines stage_w(lid) (run by every
// invocation first), w_at(i) = W's value i (row-major [K, C]) and b_at(c):
// dense_softmax_xent_w_storage.wgsl stages W from storage in workgroup memory;
// dense_softmax_xent_w_uniform.wgsl reads W and b from one uniform window, which lavapipe loads
// ~10× faster than storage or workgroup memory (a scalar load per SIMD group where the index is
// the same in every lane, as it is here, instead of a loop over the lanes).

override WG: u32 = 64u;
override ACT: u32 = 0u;
// The classes, as a constant: every loop over them has a constant trip count, so z's indices are
// constants once unrolled and z lives in registers. With the count from the uniform, z was a
// private array indexed at run time, which llvmpipe keeps in memory and reads by a loop over its
// SIMD lanes at every access.
override C: u32 = 1u;
const MAX_C: u32 = 32u;

struct Params {
    rows: u32,
    k: u32,
    c: u32,       // C, as the wrapper checked it
    grad_scale: f32,
    slope: f32,   // the layer below's leaky relu slope
    b_at: u32,    // uniform W source: where b starts in the window, in floats

    _pad1: u32,
    _pad2: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict. Bindings 2 and 3 are the W source's.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> h: array<f32>;
@group(0) @binding(4) var<storage, read_write> labels: array<u32>;
@group(0) @binding(5) var<storage, read_write> dz: array<f32>;
@group(0) @binding(6) var<storage, read_write> dh: array<f32>;
@group(0) @binding(7) var<storage, read_write> totals: array<f32>;

const MAX_W: u32 = 3072u;  // 12 KiB: with `partial`, within WebGPU's default 16 KiB

var<workgroup> partial: array<vec2<f32>, WG>;

// Row r: writes dZ[r, :] and dH[r, :]; returns (loss, correct).
fn output_row(r: u32) -> vec2<f32> {
    let k_len = p.k;
    let c_len = C;
    var z: array<f32, MAX_C>;
    for (var c = 0u; c < c_len; c++) { z[c] = b_at(c); }
    for (var k = 0u; k < k_len; k++) {
        let hk = h[r * k_len + k];
        for (var c = 0u; c < c_len; c++) { z[c] += hk * w_at(k * c_len + c); }
    }
    // Stable softmax: the maximum (and the first column reaching it) subtracted before exp.
    var m = z[0];
    var best = 0u;
    for (var c = 1u; c < c_len; c++) {
        if (z[c] > m) {
            m = z[c];
            best = c;
        }
    }
    var s = 0.0;
    for (var c = 0u; c < c_len; c++) { s += exp(z[c] - m); }
    let label = labels[r];
    let valid = label < c_len;
    // NaN's bits through a `let`: a constant expression that is NaN is a shader-creation error
    // in WGSL (Tint refuses it; naga let it through).
    let nan_bits = 0x7fc00000u;
    let loss = select(bitcast<f32>(nan_bits), m + log(s) - z[min(label, c_len - 1u)], valid);
    let correct = select(0.0, 1.0, valid && best == label);
    // z becomes dZ's row.
    for (var c = 0u; c < c_len; c++) {
        z[c] = (exp(z[c] - m) / s - select(0.0, 1.0, c == label)) * p.grad_scale;
        dz[r * c_len + c] = z[c];
    }
    for (var k = 0u; k < k_len; k++) {
        var g = 0.0;
        for (var c = 0u; c < c_len; c++) { g += z[c] * w_at(k * c_len + c); }
        let i = r * k_len + k;
        dh[i] = g * act_derivative_from_saved(ACT, h[i], p.slope);
    }
    return vec2<f32>(loss, correct);
}

@compute @workgroup_size(WG)
fn dense_softmax_xent(@builtin(local_invocation_id) lid: vec3<u32>) {
    stage_w(lid.x);
    var sums = vec2<f32>();
    for (var r = lid.x; r < p.rows; r += WG) {
        sums += output_row(r);
    }
    partial[lid.x] = sums;
    workgroupBarrier();
    if (lid.x == 0u) {
        var t = vec2<f32>(totals[0], totals[1]);
        for (var i = 0u; i < WG; i++) {
            t += partial[i];
        }
        totals[0] = t.x;
        totals[1] = t.y;
    }
}
