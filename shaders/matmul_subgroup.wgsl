// Subgroup-shared matmul for CPU adapters (lavapipe). Appended to activation.wgsl + matmul.wgsl
// (it uses their bindings, p, k_range and the b4 view, and stores through its own vec4 views of
// C, the epilogue input and the column sums), then an A source; a separate module because it
// needs Features::SUBGROUP.
//
// lavapipe turns a storage load whose address is not a compile-time constant into a loop over the
// 8 SIMD lanes (a scalar load and a bounds check per lane and component), so loads, not
// arithmetic, are the cost. Here a workgroup is one subgroup of 8 invocations: lane l owns 4
// columns (one vec4 of op(B) per k) and all 16 (TALL: 32) rows of the tile; op(A) is loaded once
// for the whole subgroup, each lane a different 4-long part of a 32-long K chunk, and handed to the other
// lanes with subgroupShuffle. Needs: subgroup size ≥ 8, K, N and
// (with TRANS_A) M multiples of 4 (the wrapper checks). op(B) may be transposed (dX = dZ·Wᵀ).
//
// Blocks are mat4x4s as in matmul_register: acc_b[i] is output row 4b + i (a vec4 over this
// lane's columns), a_b[i] the 4 values of op(A) row 4b + i over 4 consecutive k, and a step over
// those 4 k is acc_b += Bq · a_b with Bq's columns the 4 rows of op(B).

// Where op(A) comes from is the appended A source's business (matmul_a_storage.wgsl: the A
// binding; matmul_gathered.wgsl: rows of the resident data set picked by an index list): it
// defines a_batch_start(), a_row_base(r, len4, start) — the vec4 index where stored A's row r
// begins, rows len4 vec4s long — a_at(base, q) — vec4 q (columns 4q .. 4q + 3) of the stored
// row that begins at base — and a_duties(), run at the end.

// The starts of stored A's rows first .. first + 3 (each clamped to `last`).
fn sg_rows(first: u32, last: u32, len4: u32, start: u32) -> vec4<u32> {
    return vec4<u32>(a_row_base(min(first, last), len4, start), a_row_base(min(first + 1u, last), len4, start),
                     a_row_base(min(first + 2u, last), len4, start), a_row_base(min(first + 3u, last), len4, start));
}

// The row starts that lanes first .. first + 3 hold in `own`.
fn sg_row_starts(own: u32, first: u32) -> vec4<u32> {
    return vec4<u32>(subgroupShuffle(own, first), subgroupShuffle(own, first + 1u), subgroupShuffle(own, first + 2u),
                     subgroupShuffle(own, first + 3u));
}

// op(A) rows mb .. mb + 3 at k .. k + 3 (zero past kend), as columns = rows. `rows`: the starts
// of stored A's rows mb .. mb + 3, or with TRANS_A (A stored [K, M]) of rows k .. k + 3.
fn sg_a_block(rows: vec4<u32>, mb: u32, k: u32, kend: u32) -> mat4x4<f32> {
    if (TRANS_A) {
        // A vec4 along m per k, transposed into rows.
        let c = min(mb, p.m - 4u) / 4u;
        let z = vec4<f32>();
        return transpose(mat4x4<f32>(select(z, a_at(rows.x, c), k < kend), select(z, a_at(rows.y, c), k + 1u < kend),
                                     select(z, a_at(rows.z, c), k + 2u < kend),
                                     select(z, a_at(rows.w, c), k + 3u < kend)));
    }
    let q = min(k, p.k - 4u) / 4u;
    let blk = mat4x4<f32>(a_at(rows.x, q), a_at(rows.y, q), a_at(rows.z, q), a_at(rows.w, q));
    // kend is a multiple of 4 here (K and the split length are), so the 4 k go together.
    return blk * f32(k < kend);
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

fn sg_shuffle(a: mat4x4<f32>, lane: u32) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupShuffle(a[0], lane), subgroupShuffle(a[1], lane), subgroupShuffle(a[2], lane),
                       subgroupShuffle(a[3], lane));
}

// C, the epilogue's bias or Y, and the column sums (or EPI 3's pre-activation, EPI 4's residual:
// matmul.wgsl) as vec4s (N is a multiple of 4 here, and the
// wrapper checks every view is 16-byte aligned): a row of a lane's block is one store, where
// lavapipe pays per lane and per store whatever its width (dW of 784×64: 4× fewer stores).
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> aux4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> colsum4: array<vec4<f32>>;

// finish() for the 4 outputs C[m, n0 .. n0 + 3]; `bias` is the bias at those columns (loaded
// once per lane, not once per row).
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

// Rows per workgroup tile: 16, or 32 (TALL) where M and K are large enough: each op(B) value is
// then loaded half as often per output. The wrapper picks it.
override TALL: bool = false;

@compute @workgroup_size(8)
fn matmul_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let m0 = wid.y * select(16u, 32u, TALL);
    let n4_raw = wid.x * 8u + lane;
    let w = p.n / 4u;
    let n4 = min(n4_raw, w - 1u);
    let kr = k_range(wid.z);
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    var cs = vec4<f32>();  // COLSUM_B: Σ_k op(B)[k, this lane's columns]
    // Stored A's rows: the tile's 16 (32) without TRANS_A, fixed over K; with it, per chunk below.
    // Lane l finds the starts of tile rows l, l + 8, .. and hands them out by subgroupShuffle: a
    // gathered A's are loads (of the index list), 4 per lane instead of 32 (each one inlined code
    // that lavapipe compiles and runs per lane).
    let start = a_batch_start();
    let ml = p.m - 1u;
    let lk = p.k / 4u;
    var r0 = vec4<u32>();
    var r1 = vec4<u32>();
    var r2 = vec4<u32>();
    var r3 = vec4<u32>();
    var r4 = vec4<u32>();
    var r5 = vec4<u32>();
    var r6 = vec4<u32>();
    var r7 = vec4<u32>();
    if (!TRANS_A) {
        let own0 = a_row_base(min(m0 + lane, ml), lk, start);
        let own1 = a_row_base(min(m0 + 8u + lane, ml), lk, start);
        r0 = sg_row_starts(own0, 0u);
        r1 = sg_row_starts(own0, 4u);
        r2 = sg_row_starts(own1, 0u);
        r3 = sg_row_starts(own1, 4u);
        if (TALL) {
            let own2 = a_row_base(min(m0 + 16u + lane, ml), lk, start);
            let own3 = a_row_base(min(m0 + 24u + lane, ml), lk, start);
            r4 = sg_row_starts(own2, 0u);
            r5 = sg_row_starts(own2, 4u);
            r6 = sg_row_starts(own3, 0u);
            r7 = sg_row_starts(own3, 4u);
        }
    }
    // No early return and no branch around the subgroup operations: every lane stays active.
    for (var k0 = kr.x; k0 < kr.y; k0 += 32u) {
        // This lane's share of the chunk: k0 + 4·lane .. + 3, for the 16 (TALL: 32) rows.
        let ks = k0 + 4u * lane;
        var rk = vec4<u32>();
        if (TRANS_A) { rk = sg_rows(ks, p.k - 1u, p.m / 4u, start); }
        let a0 = sg_a_block(select(r0, rk, TRANS_A), m0, ks, kr.y);
        let a1 = sg_a_block(select(r1, rk, TRANS_A), m0 + 4u, ks, kr.y);
        let a2 = sg_a_block(select(r2, rk, TRANS_A), m0 + 8u, ks, kr.y);
        let a3 = sg_a_block(select(r3, rk, TRANS_A), m0 + 12u, ks, kr.y);
        var a4 = mat4x4<f32>();
        var a5 = mat4x4<f32>();
        var a6 = mat4x4<f32>();
        var a7 = mat4x4<f32>();
        if (TALL) {
            a4 = sg_a_block(select(r4, rk, TRANS_A), m0 + 16u, ks, kr.y);
            a5 = sg_a_block(select(r5, rk, TRANS_A), m0 + 20u, ks, kr.y);
            a6 = sg_a_block(select(r6, rk, TRANS_A), m0 + 24u, ks, kr.y);
            a7 = sg_a_block(select(r7, rk, TRANS_A), m0 + 28u, ks, kr.y);
        }
        // The chunk's steps of 4 k before kend (the same in every lane): 8, fewer in a last
        // partial chunk, whose op(B) loads past kend would only be zeroed.
        let steps = min(8u, (kr.y - k0 + 3u) / 4u);
        for (var j = 0u; j < steps; j++) {
            let k = k0 + 4u * j;
            let bq = sg_b_quad(k, n4, kr.y);
            if (COLSUM_B) { cs += bq[0] + bq[1] + bq[2] + bq[3]; }
            acc0 += bq * sg_shuffle(a0, j);
            acc1 += bq * sg_shuffle(a1, j);
            acc2 += bq * sg_shuffle(a2, j);
            acc3 += bq * sg_shuffle(a3, j);
            if (TALL) {
                acc4 += bq * sg_shuffle(a4, j);
                acc5 += bq * sg_shuffle(a5, j);
                acc6 += bq * sg_shuffle(a6, j);
                acc7 += bq * sg_shuffle(a7, j);
            }
        }
    }
    if (n4_raw < w) {
        var bias = vec4<f32>();
        if (EPI != 2u && HAS_BIAS) { bias = aux4[n4_raw]; }
        sg_store_block(m0, n4_raw * 4u, wid.z, acc0, bias);
        sg_store_block(m0 + 4u, n4_raw * 4u, wid.z, acc1, bias);
        sg_store_block(m0 + 8u, n4_raw * 4u, wid.z, acc2, bias);
        sg_store_block(m0 + 12u, n4_raw * 4u, wid.z, acc3, bias);
        if (TALL) {
            sg_store_block(m0 + 16u, n4_raw * 4u, wid.z, acc4, bias);
            sg_store_block(m0 + 20u, n4_raw * 4u, wid.z, acc5, bias);
            sg_store_block(m0 + 24u, n4_raw * 4u, wid.z, acc6, bias);
            sg_store_block(m0 + 28u, n4_raw * 4u, wid.z, acc7, bias);
        }
        if (COLSUM_B && m0 == 0u) { colsum4[n4_raw] = cs; }
    }
    a_duties(wid, lane, m0, select(16u, 32u, TALL), start);
}
