// The subgroup matmul's loads of op(B) and stores of C through vec4 views (appended after
// matmul_subgroup.wgsl, before an A source): K, N and (with TRANS_A) M multiples of 4, every view
// 16-byte aligned (the wrapper checks). A row of A is len / 4 vec4s.

fn sg_row_len(len: u32) -> u32 {
    return len / 4u;
}

// op(B) rows k .. k + 3 at this lane's 4 columns 4·n4 .. + 3, as columns = rows (zero past kend).
fn sg_b_quad(k: u32, n4: u32, kend: u32) -> mat4x4<f32> {
    if (TRANS_B) {
        // B stored [N, K]: a vec4 along k per column, transposed into rows of op(B); as many loads
        // as without the transpose. kend is a multiple of 4 here (K and the split length are).
        let wk = p.k / 4u;
        let q = min(k, p.k - 4u) / 4u;
        let nb = n4 * 4u;
        let blk = transpose(mat4x4<f32>(b4[nb * wk + q], b4[(nb + 1u) * wk + q], b4[(nb + 2u) * wk + q],
                                        b4[(nb + 3u) * wk + q]));
        return blk * f32(k < kend);
    }
    let w = p.n / 4u;
    let kl = p.k - 1u;
    let z = vec4<f32>();
    return mat4x4<f32>(select(z, b4[min(k, kl) * w + n4], k < kend),
                       select(z, b4[min(k + 1u, kl) * w + n4], k + 1u < kend),
                       select(z, b4[min(k + 2u, kl) * w + n4], k + 2u < kend),
                       select(z, b4[min(k + 3u, kl) * w + n4], k + 3u < kend));
}

// acc + the step over 4 k, as matmul_register adds it.
fn sg_step(acc: mat4x4<f32>, bq: mat4x4<f32>, a: mat4x4<f32>) -> mat4x4<f32> {
    return acc + bq * a;
}

fn sg_add_colsum(cs: vec4<f32>, bq: mat4x4<f32>) -> vec4<f32> {
    return cs + (bq[0] + bq[1] + bq[2] + bq[3]);
}

// C, the epilogue's bias or Y, and the column sums (or EPI 3's pre-activation, EPI 4's residual:
// matmul.wgsl) as vec4s: a row of a lane's block is one store, where lavapipe pays per lane and
// per store whatever its width (dW of 784×64: 4× fewer stores).
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> aux4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> colsum4: array<vec4<f32>>;

// finish() for the 4 outputs C[m, n0 .. n0 + 3]; `bias` is the bias at those columns.
fn sg_finish4(m: u32, n0: u32, sum: vec4<f32>, bias: vec4<f32>) {
    let i = (m * p.n + n0) / 4u;
    var r = sum;
    if (ACCUMULATE) { r += out4[i]; }
    if (EPI == 1u || EPI == 3u || EPI == 4u) {
        r += bias;
        if (EPI == 3u) { colsum4[i] = r; }
        if (EPI == 4u) { r += colsum4[i]; }
        r = vec4<f32>(act_forward(ACT, r.x, p.slope), act_forward(ACT, r.y, p.slope), act_forward(ACT, r.z, p.slope),
                      act_forward(ACT, r.w, p.slope));
    } else if (EPI == 2u) {
        let y = aux4[i];
        r *= vec4<f32>(act_derivative_from_saved(ACT, y.x, p.slope),
                       act_derivative_from_saved(ACT, y.y, p.slope),
                       act_derivative_from_saved(ACT, y.z, p.slope),
                       act_derivative_from_saved(ACT, y.w, p.slope));
    }
    out4[i] = r;
}

// store_block() with a vec4 per row: rows m0 .. m0 + 3 (those below M) at columns n0 .. n0 + 3.
fn sg_store_block(m0: u32, n0: u32, split: u32, blk: mat4x4<f32>, bias: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + i;
        if (m < p.m) {
            if (SPLIT) {
                out4[((split * p.m + m) * p.n + n0) / 4u] = blk[i];
            } else {
                sg_finish4(m, n0, blk[i], bias);
            }
        }
    }
}

// The bias at this lane's 4 columns, loaded once per lane, not once per row.
fn sg_bias(n4: u32) -> vec4<f32> {
    return aux4[n4];
}

fn sg_store_colsum(n4: u32, cs: vec4<f32>) {
    colsum4[n4] = cs;
}
