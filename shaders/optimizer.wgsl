// In-place optimizer updates, elementwise over flat tensors of `len` values (views into large
// parameter, gradient and state buffers). Hyper-parameters travel in the uniform. PyTorch's
// definitions; every state tensor starts at zero. lr is the scheduled rate lr(t) below.
//   sgd_update:      g = grad + wd·p;  with momentum: vel = μ·vel + g, g = nesterov ? g + μ·vel : vel
//                    p −= lr·g                                      p, grad, vel: [len]
//   adam_update:     g = grad + wd·p;  m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//                    p −= lr · (m / (1−β1^t)) / (√(v / (1−β2^t)) + eps)      m, v: [len]
//   adamw_update:    p −= lr·wd·p (decoupled), then Adam's update with g = grad
//   rmsprop_update:  g = grad + wd·p;  sq = ρ·sq + (1−ρ)·g²;  a = √sq + eps
//                    with momentum: buf = μ·buf + g/a, p −= lr·buf;  else p −= lr·g/a   sq, buf: [len]
//   adagrad_update:  g = grad + wd·p;  sum = (t == 1 ? initial_accumulator : sum) + g²
//                    p −= lr·g / (√sum + eps)                       sum: [len]
//   adadelta_update: g = grad + wd·p;  v = ρ·v + (1−ρ)·g²;  δ = √(u + eps) / √(v + eps) · g
//                    u = ρ·u + (1−ρ)·δ²;  p −= lr·δ                 v, u: [len]
// With eps_keras (Keras' formulas): rmsprop and adagrad divide by √(sq + eps) and √(sum + eps);
// adam by (√v + eps)/√(1−β2^t), i.e. eps added before the bias correction.
// V, the element type, is f32 or vec4<f32> (an `alias V = ...;` line prepended by the wrapper): the
// vec4 module moves four values per load, which on lavapipe costs what one scalar load does (every
// storage load is a per-lane loop there); it runs where len and every view's offset are multiples
// of 4 floats, with `len` in the uniform counting vec4s. The rules read the same for both types.
// t is read from `step` (1-based; 0 is taken as 1) and never written; `step` is only bound where
// the rule (Adam, AdamW, Adagrad) or the schedule reads it, or where GUARDED: then `step` is
// [t, skip] and every entry returns at once when skip ≠ 0 (step_guard.wgsl sets it for a batch
// whose loss is not finite), leaving parameters and state as they were.
// CLIPPED: every rule reads the gradient times grad_scale[0] (global-norm clipping's factor,
// grad_norm.wgsl), PyTorch's clip_grad_norm_ before the step, without a pass that rescales it.
// MASKED (Adam, AdamW): weight decay applies only where decay_mask's bit is set (bit i % 32 of
// word i / 32 for value i: nanoGPT's decay of matrices, not of biases and norm gains).
// Learning-rate schedules (SCHEDULE), of k = t − 1, the number of updates before this one:
//   0 constant:    lr
//   1 step:        lr · γ^⌊k / every⌋                               (PyTorch StepLR)
//   2 exponential: lr · rate^(k / decay_steps)                       (Keras ExponentialDecay)
//   3 cosine:      min + (lr − min) · (1 + cos(π · min(k, T) / T)) / 2  (Keras CosineDecay, alpha = min/lr)
//   4 warmup, then cosine (nanoGPT's get_lr), W = warmup_steps < T:
//                  k < W: lr · (k + 1) / W;  else min + (lr − min) · (1 + cos(π · (min(k, T) − W) / (T − W))) / 2

override WG: u32 = 256u;
override MOMENTUM: bool = false;
override SCHEDULE: u32 = 0u;
override GUARDED: bool = false;
override PER_LANE: u32 = 4u;  // values of V per invocation
override CLIPPED: bool = false;
override MASKED: bool = false;

const PI: f32 = 3.14159265358979;

struct Params {
    len: u32,          // elements of V
    nesterov: u32,
    lr: f32,           // the base rate, before the schedule
    momentum: f32,     // sgd, rmsprop: μ   adam, adamw: β1
    beta2: f32,        // adam, adamw: β2   rmsprop, adadelta: ρ   adagrad: initial accumulator
    eps: f32,
    weight_decay: f32,
    sched_steps: u32,  // step: every   exponential: decay_steps   cosine, warmup-cosine: T
    sched_value: f32,  // step: γ       exponential: rate          cosine, warmup-cosine: min
    log2_hi: f32,      // step, exponential: log2(sched_value) = log2_hi + log2_lo, hi to 7 bits
    log2_lo: f32,
    eps_keras: u32,    // adam, rmsprop, adagrad: 1 for Keras' placement of eps (below)
    ln_beta1: f32,     // adam: ln β1 and ln β2 from the host (at least −100: β = 0 works)
    ln_beta2: f32,
    warmup_steps: u32, // warmup-cosine: W
    _pad1: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<V>;
@group(0) @binding(2) var<storage, read_write> grad: array<V>;
@group(0) @binding(3) var<storage, read_write> state1: array<V>;   // velocity, m, square average, sum, v
@group(0) @binding(4) var<storage, read_write> state2: array<V>;   // adam(w): v   rmsprop: buf   adadelta: u
@group(0) @binding(5) var<storage, read_write> step: array<u32>;     // t, and skip when GUARDED
@group(0) @binding(6) var<storage, read_write> decay_mask: array<u32>; // MASKED: a bit per value
@group(0) @binding(7) var<storage, read_write> grad_scale: array<f32>; // CLIPPED: [0] the factor

// The clipping factor (CLIPPED), read once per invocation rather than once per value: on
// lavapipe every load is a loop over the SIMD lanes, this one a ninth of AdamW's.
fn clip_scale() -> f32 {
    if (CLIPPED) {
        return grad_scale[0];
    }
    return 1.0;
}

// The gradient of element i as the rule takes it: scaled by the clipping factor (`scale`, from
// clip_scale) when CLIPPED.
fn grad_at(i: u32, scale: f32) -> V {
    if (CLIPPED) {
        return grad[i] * scale;
    }
    return grad[i];
}

// 1 where element i's values are decayed, 0 where not (`decay_bits`, per element type, reads
// the mask); 1 everywhere when not MASKED.
fn decays(i: u32) -> V {
    if (MASKED) {
        return decay_bits(i);
    }
    return V(1.0);
}

// Each invocation updates PER_LANE values of V, WG apart (a workgroup covers WG·PER_LANE
// consecutive ones): the per-update work (t, the scheduled rate, bias corrections, the skip flag)
// is done once per invocation, and lavapipe's per-lane and per-workgroup costs are paid less often.
fn first_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG * PER_LANE + lid.x;
}

// e^x − 1 for x ≤ 0 without cancellation: the Taylor series for |x| < 1 (truncated below 3e-9
// relative), else exp(x) − 1, where 1 − e^x ≥ 0.63 so exp's error is not magnified.
fn expm1_nonpositive(x: f32) -> f32 {
    if (x > -1.0) {
        return x * (1.0 + x / 2.0 * (1.0 + x / 3.0 * (1.0 + x / 4.0 * (1.0 + x / 5.0 * (1.0 + x / 6.0
            * (1.0 + x / 7.0 * (1.0 + x / 8.0 * (1.0 + x / 9.0 * (1.0 + x / 10.0 * (1.0 + x / 11.0))))))))));
    }
    return exp(x) - 1.0;
}

// 1 − β^t for Adam's bias corrections, as −expm1(t·ln β) with ln β from the host (f64, rounded):
// β^t rounded to f32 and subtracted from 1 keeps only its absolute error, 6e-8, which is 3e-5 of
// 1 − β2^2 at β2 = 0.999 (and the builtin pow, exp2(t·log2 β), adds log2's absolute error times
// t). Here the product t·ln β carries ~1 ulp and −expm1 never magnifies a relative error of its
// argument, so the result is within a few ulps for every t.
fn one_minus_pow(ln_b: f32, t: u32) -> f32 {
    return -expm1_nonpositive(f32(t) * ln_b);
}

// sin(x) and cos(x) for 0 ≤ x ≤ π/4 by their Taylor series (truncation below 2e-9 relative):
// a few ulps on every adapter, where WGSL bounds the builtin cos only absolutely (2^-11).
fn sin_quarter(x: f32) -> f32 {
    let x2 = x * x;
    return x * (1.0 - x2 / 6.0 * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0 * (1.0 - x2 / 72.0 * (1.0 - x2 / 110.0)))));
}

fn cos_quarter(x: f32) -> f32 {
    let x2 = x * x;
    return 1.0 - x2 / 2.0 * (1.0 - x2 / 12.0 * (1.0 - x2 / 30.0 * (1.0 - x2 / 56.0 * (1.0 - x2 / 90.0))));
}

// (1 + cos(π·done/total)) / 2 = cos²(π·done/(2·total)) = sin²(π·left/(2·total)), left = total − done:
// the form whose argument is ≤ π/4, so the factor keeps its relative precision down to the last
// update, where it is ~(π·left/(2·total))² and 1 + cos(π·f) would cancel.
fn cosine_factor(done: u32, total: u32) -> f32 {
    let left = total - done;
    if (done <= left) {
        let c = cos_quarter(PI * 0.5 * f32(done) / f32(total));
        return c * c;
    }
    let s = sin_quarter(PI * 0.5 * f32(left) / f32(total));
    return s * s;
}

// sched_value^(q + frac), 0 ≤ frac < 1, as exp2 of q·log2(value) + frac·log2(value) with log2(value)
// from the host in two parts (hi has 7 significant bits, so q·hi is exact for q < 2^17): the
// exponent's integer part goes to ldexp (exact) and exp2 sees only a small, accurately summed rest.
// The builtin pow(value, k/steps) instead multiplies log2's error (absolute, 2^-21 in WGSL's bound)
// by the exponent, and powering by squaring doubles each rounding at every later square: both lose
// ~1e-4 by k = 100,000.
fn schedule_pow(q: u32, frac: f32) -> f32 {
    let qf = f32(q);
    let big = qf * p.log2_hi;
    let whole = clamp(floor(big), -256.0, 127.0);
    let rest = (big - whole) + qf * p.log2_lo + frac * (p.log2_hi + p.log2_lo);
    return ldexp(exp2(rest), i32(whole));
}

// Whether this step's update is skipped (never when not GUARDED: step may then be 1 long).
fn skipped() -> bool {
    return GUARDED && step[1] != 0u;
}

fn step_t() -> u32 {
    return max(step[0], 1u);
}

// The scheduled learning rate of update t; the uniform's lr when SCHEDULE is 0 (step not read).
fn scheduled_lr() -> f32 {
    if (SCHEDULE == 0u) {
        return p.lr;
    }
    let k = step_t() - 1u;
    if (SCHEDULE == 1u) {
        return p.lr * schedule_pow(k / p.sched_steps, 0.0);
    }
    if (SCHEDULE == 2u) {
        return p.lr * schedule_pow(k / p.sched_steps, f32(k % p.sched_steps) / f32(p.sched_steps));
    }
    if (SCHEDULE == 3u) {
        let done = min(k, p.sched_steps);
        return p.sched_value + (p.lr - p.sched_value) * cosine_factor(done, p.sched_steps);
    }
    let warmup = p.warmup_steps;
    if (k < warmup) {
        return p.lr * f32(k + 1u) / f32(warmup);
    }
    let done = min(k, p.sched_steps) - warmup;
    return p.sched_value + (p.lr - p.sched_value) * cosine_factor(done, p.sched_steps - warmup);
}

@compute @workgroup_size(WG)
fn sgd_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let first = first_index(wid, nwg, lid);
    if (first >= p.len || skipped()) { return; }
    let lr = scheduled_lr();
    let scale = clip_scale();
    for (var k = 0u; k < PER_LANE; k++) {
        let i = first + k * WG;
        if (i < p.len) {
            let w = param[i];
            var g = grad_at(i, scale) + p.weight_decay * w;
            if (MOMENTUM) {
                let vel = p.momentum * state1[i] + g;
                state1[i] = vel;
                g = select(vel, g + p.momentum * vel, p.nesterov != 0u);
            }
            param[i] = w - lr * g;
        }
    }
}

// Adam's bias corrections of update t as factors, and the eps they leave in the denominator:
// m̂ / (√v̂ + eps) = (m·c.x) / (√v·c.y + c.z), c.z = eps (PyTorch) or eps·c.y (Keras).
fn adam_corrections() -> vec3<f32> {
    let t = step_t();
    let c2 = 1.0 / sqrt(one_minus_pow(p.ln_beta2, t));
    return vec3<f32>(1.0 / one_minus_pow(p.ln_beta1, t), c2, select(p.eps, p.eps * c2, p.eps_keras != 0u));
}

// The root of an average with eps: √avg + eps (PyTorch) or √(avg + eps) (Keras).
fn root_with_eps(avg: V) -> V {
    return select(sqrt(avg) + p.eps, sqrt(avg + p.eps), p.eps_keras != 0u);
}

// Adam's moments and step for value i with weight w and gradient g; `decay` is the decoupled
// factor p ← p·decay applied first (AdamW).
fn adam_step(i: u32, w: V, g: V, decay: V, lr: f32, c: vec3<f32>) {
    let beta1 = p.momentum;
    let m = beta1 * state1[i] + (1.0 - beta1) * g;
    let v = p.beta2 * state2[i] + (1.0 - p.beta2) * g * g;
    state1[i] = m;
    state2[i] = v;
    param[i] = w * decay - lr * (m * c.x) / (sqrt(v) * c.y + c.z);
}

@compute @workgroup_size(WG)
fn adam_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let first = first_index(wid, nwg, lid);
    if (first >= p.len || skipped()) { return; }
    let lr = scheduled_lr();
    let scale = clip_scale();
    let c = adam_corrections();
    for (var k = 0u; k < PER_LANE; k++) {
        let i = first + k * WG;
        if (i < p.len) {
            let w = param[i];
            adam_step(i, w, grad_at(i, scale) + p.weight_decay * decays(i) * w, V(1.0), lr, c);
        }
    }
}

@compute @workgroup_size(WG)
fn adamw_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let first = first_index(wid, nwg, lid);
    if (first >= p.len || skipped()) { return; }
    let lr = scheduled_lr();
    let scale = clip_scale();
    let c = adam_corrections();
    for (var k = 0u; k < PER_LANE; k++) {
        let i = first + k * WG;
        if (i < p.len) {
            adam_step(i, param[i], grad_at(i, scale), 1.0 - lr * p.weight_decay * decays(i), lr, c);
        }
    }
}

@compute @workgroup_size(WG)
fn rmsprop_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let first = first_index(wid, nwg, lid);
    if (first >= p.len || skipped()) { return; }
    let lr = scheduled_lr();
    let scale = clip_scale();
    let rho = p.beta2;
    for (var k = 0u; k < PER_LANE; k++) {
        let i = first + k * WG;
        if (i < p.len) {
            let w = param[i];
            let g = grad_at(i, scale) + p.weight_decay * w;
            let sq = rho * state1[i] + (1.0 - rho) * g * g;
            state1[i] = sq;
            var d = g / root_with_eps(sq);
            if (MOMENTUM) {
                d = p.momentum * state2[i] + d;
                state2[i] = d;
            }
            param[i] = w - lr * d;
        }
    }
}

@compute @workgroup_size(WG)
fn adagrad_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let first = first_index(wid, nwg, lid);
    if (first >= p.len || skipped()) { return; }
    let lr = scheduled_lr();
    let scale = clip_scale();
    let first_update = step_t() == 1u;
    for (var k = 0u; k < PER_LANE; k++) {
        let i = first + k * WG;
        if (i < p.len) {
            let w = param[i];
            let g = grad_at(i, scale) + p.weight_decay * w;
            let before = select(state1[i], V(p.beta2), first_update);
            let sum = before + g * g;
            state1[i] = sum;
            param[i] = w - lr * g / root_with_eps(sum);
        }
    }
}

@compute @workgroup_size(WG)
fn adadelta_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let first = first_index(wid, nwg, lid);
    if (first >= p.len || skipped()) { return; }
    let lr = scheduled_lr();
    let scale = clip_scale();
    let rho = p.beta2;
    for (var k = 0u; k < PER_LANE; k++) {
        let i = first + k * WG;
        if (i < p.len) {
            let w = param[i];
            let g = grad_at(i, scale) + p.weight_decay * w;
            let v = rho * state1[i] + (1.0 - rho) * g * g;
            let u = state2[i];
            let delta = sqrt(u + p.eps) / sqrt(v + p.eps) * g;
            state1[i] = v;
            state2[i] = rho * u + (1.0 - rho) * delta * delta;
            param[i] = w - lr * delta;
        }
    }
}
