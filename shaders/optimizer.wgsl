// In-place optimizer updates, elementwise over flat tensors of `len` values (views into large
// parameter, gradient and state buffers). Hyper-parameters travel in the uniform.
//   sgd_update:  g = grad + wd·param;  with momentum: vel = μ·vel + g, g = nesterov ? g + μ·vel : vel
//                param −= lr·g                                  param, grad, vel: [len]
//   adam_update: g = grad + wd·param;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//                param −= lr · (m / (1−β1^t)) / (√(v / (1−β2^t)) + eps)
//                                                               param, grad, m, v: [len], step: [1] = t
// PyTorch's definitions (velocity starts at zero, so its first step is vel = g; dampening 0).
// t is read from `step` (1-based; 0 is taken as 1) and never written.

override WG: u32 = 256u;
override MOMENTUM: bool = false;

struct Params {
    len: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,   // sgd: μ     adam: β1
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    _pad: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> state1: array<f32>;   // sgd: velocity  adam: m
@group(0) @binding(4) var<storage, read_write> state2: array<f32>;   // adam: v
@group(0) @binding(5) var<storage, read_write> step: array<u32>;     // adam: t

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// b^t with the builtin (exp2(t·log2 b)): one transcendental pair instead of a loop per element,
// which on lavapipe cost more than the rest of the update. Exact for b = 0, where log2 is -inf.
fn pow_u32(b: f32, t: u32) -> f32 {
    return select(pow(b, f32(t)), 0.0, b == 0.0);
}

@compute @workgroup_size(WG)
fn sgd_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.len) { return; }
    var g = grad[i] + p.weight_decay * param[i];
    if (MOMENTUM) {
        let vel = p.momentum * state1[i] + g;
        state1[i] = vel;
        g = select(vel, g + p.momentum * vel, p.nesterov != 0u);
    }
    param[i] -= p.lr * g;
}

@compute @workgroup_size(WG)
fn adam_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= p.len) { return; }
    let t = max(step[0], 1u);
    let beta1 = p.momentum;
    let g = grad[i] + p.weight_decay * param[i];
    let m = beta1 * state1[i] + (1.0 - beta1) * g;
    let v = p.beta2 * state2[i] + (1.0 - p.beta2) * g * g;
    state1[i] = m;
    state2[i] = v;
    let m_hat = m / (1.0 - pow_u32(beta1, t));
    let v_hat = v / (1.0 - pow_u32(p.beta2, t));
    param[i] -= p.lr * m_hat / (sqrt(v_hat) + p.eps);
}
