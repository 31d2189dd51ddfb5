// dense_softmax_xent's W source for W and b in storage (see dense_softmax_xent.wgsl): W staged
// in workgroup memory, which every row reads all of.

@group(0) @binding(2) var<storage, read_write> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> b: array<f32>;

var<workgroup> w_shared: array<f32, MAX_W>;

fn stage_w(first: u32) {
    for (var i = first; i < p.k * p.c; i += WG) { w_shared[i] = w[i]; }
    workgroupBarrier();
}

fn w_at(i: u32) -> f32 {
    return w_shared[i];
}

fn b_at(c: u32) -> f32 {
    return b[c];
}
