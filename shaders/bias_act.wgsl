// Fused bias + activation, elementwise over a [rows, cols] matrix.
//   bias_act_forward:  Y[r, c]  = act(X[r, c] + b[c])         X, Y: [rows, cols], b: [cols]
//   bias_act_backward: dZ[r, c] = dY[r, c] * act'(Y[r, c])     dY, Y, dZ: [rows, cols]
//     (Y: the forward's output, or its input Z for the GELUs: see activation.wgsl)
// The bias gradient db = column_sum(dZ) is reduce.wgsl's (a long column must be split there).
// Needs activation.wgsl prepended.

override ACT: u32 = 0u;
override HAS_BIAS: bool = true;
override WG: u32 = 256u;

struct Params {
    rows: u32,
    cols: u32,
    slope: f32,   // leaky relu's negative slope
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;         // forward: X    backward: dY
@group(0) @binding(2) var<storage, read> b: array<f32>;         // forward: bias backward: Y
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // forward: Y    backward: dZ

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn bias_act_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.rows * p.cols) { return; }
    var z = a[i];
    if (HAS_BIAS) { z += b[i % p.cols]; }
    out[i] = act_forward(ACT, z, p.slope);
}

@compute @workgroup_size(WG)
fn bias_act_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.rows * p.cols) { return; }
    out[i] = a[i] * act_derivative_from_saved(ACT, b[i], p.slope);
}
