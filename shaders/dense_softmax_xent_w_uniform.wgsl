// dense_softmax_xent's W source for W and b in one uniform window (see dense_softmax_xent.wgsl):
// W [K, C] row-major from its start, b from p.b_at, MAX_W + 128 floats in all (the wrapper binds
// that many bytes of the buffer that holds both).

const WINDOW_VEC4S: u32 = (MAX_W + 128u) / 4u;

@group(0) @binding(2) var<uniform> window: array<vec4<f32>, WINDOW_VEC4S>;

fn stage_w(first: u32) {}

fn w_at(i: u32) -> f32 {
    return window[i / 4u][i % 4u];
}

fn b_at(c: u32) -> f32 {
    return w_at(p.b_at + c);
}
