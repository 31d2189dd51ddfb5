// The subgroup matmul's loads of op(B) and stores of C by scalars (appended after
// matmul_subgroup.wgsl, before matmul_a_storage_edges.wgsl): any M, N and K, e.g. a vocabulary of
// 65 or 10 classes. Each value past N or K reads as zero and is not stored. lavapipe pays a vec4
// load as 4 scalar ones anyway; what this costs over the vec4 file is the masks. A row of A is
// len floats.

fn sg_row_len(len: u32) -> u32 {
    return len;
}

// op(B)[kk, n], zero past kend or N.
fn sg_b_at(kk: u32, n: u32, kend: u32) -> f32 {
    let i = select(kk * p.n + n, n * p.k + kk, TRANS_B);
    return select(0.0, b[min(i, p.k * p.n - 1u)], kk < kend && n < p.n);
}

// op(B) rows k .. k + 3 at this lane's 4 columns 4·n4 .. + 3, as columns = rows.
fn sg_b_row(k: u32, n: u32, kend: u32) -> vec4<f32> {
    return vec4<f32>(sg_b_at(k, n, kend), sg_b_at(k, n + 1u, kend), sg_b_at(k, n + 2u, kend), sg_b_at(k, n + 3u, kend));
}

fn sg_b_quad(k: u32, n4: u32, kend: u32) -> mat4x4<f32> {
    let n = 4u * n4;
    return mat4x4<f32>(sg_b_row(k, n, kend), sg_b_row(k + 1u, n, kend), sg_b_row(k + 2u, n, kend),
                       sg_b_row(k + 3u, n, kend));
}

// A step's sums in the order of the register kernel these shapes would run otherwise (the tuner
// may pick either, and the results must not depend on it): where its vec4 loads apply
// (QUAD_SUMS), matmul_register's step over 4 k; else matmul_register_scalar's outer product per k.
override QUAD_SUMS: bool = false;

fn sg_outer(bk: vec4<f32>, a: mat4x4<f32>, j: u32) -> mat4x4<f32> {
    return mat4x4<f32>(bk * a[0][j], bk * a[1][j], bk * a[2][j], bk * a[3][j]);
}

fn sg_step(acc: mat4x4<f32>, bq: mat4x4<f32>, a: mat4x4<f32>) -> mat4x4<f32> {
    if (QUAD_SUMS) { return acc + bq * a; }
    var r = acc;
    r += sg_outer(bq[0], a, 0u);
    r += sg_outer(bq[1], a, 1u);
    r += sg_outer(bq[2], a, 2u);
    r += sg_outer(bq[3], a, 3u);
    return r;
}

fn sg_add_colsum(cs: vec4<f32>, bq: mat4x4<f32>) -> vec4<f32> {
    if (QUAD_SUMS) { return cs + (bq[0] + bq[1] + bq[2] + bq[3]); }
    return cs + bq[0] + bq[1] + bq[2] + bq[3];
}

// finish() (matmul.wgsl) reads the bias itself, per output.
fn sg_bias(n4: u32) -> vec4<f32> {
    return vec4<f32>();
}

// Rows m0 .. m0 + 3 (those below M) at columns n0 .. n0 + 3 (those below N).
fn sg_store_block(m0: u32, n0: u32, split: u32, blk: mat4x4<f32>, bias: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + i;
        if (m < p.m) {
            let row = blk[i];
            if (n0 < p.n) { emit(m, n0, split, row.x); }
            if (n0 + 1u < p.n) { emit(m, n0 + 1u, split, row.y); }
            if (n0 + 2u < p.n) { emit(m, n0 + 2u, split, row.z); }
            if (n0 + 3u < p.n) { emit(m, n0 + 3u, split, row.w); }
        }
    }
}

fn sg_store_colsum(n4: u32, cs: vec4<f32>) {
    let n = 4u * n4;
    if (n < p.n) { colsum[n] = cs.x; }
    if (n + 1u < p.n) { colsum[n + 1u] = cs.y; }
    if (n + 2u < p.n) { colsum[n + 2u] = cs.z; }
    if (n + 3u < p.n) { colsum[n + 3u] = cs.w; }
}
