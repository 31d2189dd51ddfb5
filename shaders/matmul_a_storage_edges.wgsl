// The subgroup matmul's A source for a stored A of any shape (matmul_subgroup.wgsl says what each
// function gives), read by scalars through matmul.wgsl's `a`: rows are K long (TRANS_A: M long),
// and a vec4 reaching past a row's end is zero there.

fn a_batch_start() -> u32 {
    return 0u;
}

fn a_row_base(r: u32, len: u32, start: u32) -> u32 {
    return r * len;
}

fn a_scalar(base: u32, j: u32, len: u32) -> f32 {
    return select(0.0, a[min(base + j, p.m * p.k - 1u)], j < len);
}

fn a_at(base: u32, q: u32) -> vec4<f32> {
    let len = select(p.k, p.m, TRANS_A);
    let j = 4u * q;
    return vec4<f32>(a_scalar(base, j, len), a_scalar(base, j + 1u, len), a_scalar(base, j + 2u, len),
                     a_scalar(base, j + 3u, len));
}

fn a_duties(wid: vec3<u32>, lane: u32, m0: u32, tile_rows: u32, start: u32) {}
