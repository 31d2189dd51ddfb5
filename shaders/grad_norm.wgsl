// Clipping by global norm (PyTorch's clip_grad_norm_, Keras' global_clipnorm) on the device, with
// no readback, in two stages of a fixed order (the same bits on every run, on every adapter):
//   grad_sum_squares: partial[g] = Σ grad[i]² over block g, BLOCK = WG·PER_LANE elements of V
//                                                              grad: [len] V, partial: [groups]
//   clip_factor:      n = √(Σ_g partial[g]);  out = [min(1, max_norm / (n + 1e-6)), n]   out: [2]
// The update kernels multiply the gradient by out[0] as they read it (optimizer.wgsl's CLIPPED):
// one read of the gradients here and none more, where a rescaling pass would read and write them.
// Each invocation sums PER_LANE elements WG apart, then a tree in workgroup memory (no subgroup
// operations: the order does not depend on the subgroup size). clip_factor is one workgroup whose
// invocations each sum ⌈groups / WG⌉ partials: 64 at 2^26 f32 values, far below lavapipe's
// 65,535-iteration loop cap. A norm past f32's range (squares summing to infinity) gives the
// factor 0, as PyTorch's; a NaN norm leaves the factor 1 and the NaN gradients as they are.
// V, the element type, is f32 or vec4<f32> (with `sq`, its squared length), prepended by the
// wrapper; `len` counts elements of V.

const WG: u32 = 256u;
override PER_LANE: u32 = 16u;

struct Params {
    len: u32,
    groups: u32,
    max_norm: f32,
    _pad: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> grad: array<V>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> part: array<f32, WG>;

// Sums part[0..WG) into part[0].
fn tree_sum(lane: u32) {
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lane < width) {
            part[lane] += part[lane + width];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn grad_sum_squares(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    // The grid folds into two dimensions past 65,535 workgroups; its extra ones sum nothing.
    let g = wid.y * nwg.x + wid.x;
    var s = 0.0;
    if (g < p.groups) {
        let first = g * WG * PER_LANE + lid.x;
        for (var k = 0u; k < PER_LANE; k++) {
            let i = first + k * WG;
            if (i < p.len) {
                s += sq(grad[i]);
            }
        }
    }
    part[lid.x] = s;
    tree_sum(lid.x);
    if (lid.x == 0u && g < p.groups) {
        partial[g] = part[0];
    }
}

@compute @workgroup_size(WG)
fn clip_factor(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    // arrayLength, not the uniform, bounds the loop (lavapipe runs some uniform-bounded loops
    // ~100× slower); the wrapper binds exactly `groups` partials.
    let groups = arrayLength(&partial);
    for (var g = lid.x; g < groups; g += WG) {
        s += partial[g];
    }
    part[lid.x] = s;
    tree_sum(lid.x);
    if (lid.x == 0u) {
        let norm = sqrt(part[0]);
        let factor = p.max_norm / (norm + 1e-6);
        out[0] = select(1.0, factor, factor < 1.0);
        out[1] = norm;
    }
}
