// flash_attention.wgsl's bindings as vec4 arrays, for heads of a multiple of 4 values (so every
// head starts at a multiple of 4) and views aligned to 16 bytes: one load or store per chunk.

// All read_write: views of one activation buffer bound read-only and writable in the same
// dispatch would conflict in wgpu's usage tracking.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> qkv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> dout: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dqkv: array<vec4<f32>>;

fn qkv4(base: u32, c: u32) -> vec4<f32> {
    return qkv[base / 4u + c];
}

fn out4(base: u32, c: u32) -> vec4<f32> {
    return out[base / 4u + c];
}

fn dout4(base: u32, c: u32) -> vec4<f32> {
    return dout[base / 4u + c];
}

fn store_out4(base: u32, c: u32, v: vec4<f32>) {
    out[base / 4u + c] = v;
}

fn store_dqkv4(base: u32, c: u32, v: vec4<f32>) {
    dqkv[base / 4u + c] = v;
}
