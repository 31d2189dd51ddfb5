// flash_attention.wgsl's bindings as f32 arrays: any head size (the vec4 chunks' lanes past the
// head read its last value and are zeroed, their stores skipped).

// All read_write: views of one activation buffer bound read-only and writable in the same
// dispatch would conflict in wgpu's usage tracking.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dqkv: array<f32>;

// Which lanes of chunk c (values 4c..4c+3) lie inside the head.
fn lanes(c: u32) -> vec4<bool> {
    return vec4<u32>(4u * c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.head_size);
}

fn clamped(c: u32, k: u32) -> u32 {
    return min(4u * c + k, p.head_size - 1u);
}

fn qkv4(base: u32, c: u32) -> vec4<f32> {
    let x = vec4<f32>(qkv[base + clamped(c, 0u)], qkv[base + clamped(c, 1u)], qkv[base + clamped(c, 2u)],
                      qkv[base + clamped(c, 3u)]);
    return select(vec4<f32>(0.0), x, lanes(c));
}

fn out4(base: u32, c: u32) -> vec4<f32> {
    let x = vec4<f32>(out[base + clamped(c, 0u)], out[base + clamped(c, 1u)], out[base + clamped(c, 2u)],
                      out[base + clamped(c, 3u)]);
    return select(vec4<f32>(0.0), x, lanes(c));
}

fn dout4(base: u32, c: u32) -> vec4<f32> {
    let x = vec4<f32>(dout[base + clamped(c, 0u)], dout[base + clamped(c, 1u)], dout[base + clamped(c, 2u)],
                      dout[base + clamped(c, 3u)]);
    return select(vec4<f32>(0.0), x, lanes(c));
}

fn store_out4(base: u32, c: u32, v: vec4<f32>) {
    let d = 4u * c;
    out[base + d] = v.x;
    if (d + 1u < p.head_size) { out[base + d + 1u] = v.y; }
    if (d + 2u < p.head_size) { out[base + d + 2u] = v.z; }
    if (d + 3u < p.head_size) { out[base + d + 3u] = v.w; }
}

fn store_dqkv4(base: u32, c: u32, v: vec4<f32>) {
    let d = 4u * c;
    dqkv[base + d] = v.x;
    if (d + 1u < p.head_size) { dqkv[base + d + 1u] = v.y; }
    if (d + 2u < p.head_size) { dqkv[base + d + 2u] = v.z; }
    if (d + 3u < p.head_size) { dqkv[base + d + 3u] = v.w; }
}
