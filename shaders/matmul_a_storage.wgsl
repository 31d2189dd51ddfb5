// The subgroup matmul's A source for a stored A (matmul_subgroup.wgsl says what each function
// gives): op(A) read from its binding through matmul.wgsl's a4 view.

fn a_batch_start() -> u32 {
    return 0u;
}

fn a_row_base(r: u32, len4: u32, start: u32) -> u32 {
    return r * len4;
}

fn a_at(base: u32, q: u32) -> vec4<f32> {
    return a4[base + q];
}

fn a_duties(wid: vec3<u32>, lane: u32, m0: u32, tile_rows: u32, start: u32) {}
