// Subgroup-shared matmul for CPU adapters (lavapipe). Appended to activation.wgsl + matmul.wgsl
// (it uses their bindings, p, k_range and emit), then its loads and stores of op(B) and C
// (matmul_subgroup_vec4.wgsl: vec4 views; matmul_subgroup_edges.wgsl: scalars, any shape), then
// an A source; a separate module because it needs Features::SUBGROUP.
//
// lavapipe turns a storage load whose address is not a compile-time constant into a loop over the
// 8 SIMD lanes (a scalar load and a bounds check per lane and component), so loads, not
// arithmetic, are the cost. Here a workgroup is one subgroup of 8 invocations: lane l owns 4
// columns (one vec4 of op(B) per k) and all 16 (TALL: 32) rows of the tile; op(A) is loaded once
// for the whole subgroup, each lane a different 4-long part of a 32-long K chunk, and handed to the other
// lanes with subgroupShuffle (NARROW, for N ≤ 16: two 16-row halves of 4 lanes, each handing
// op(A) round within itself over 16-long chunks). Needs: subgroup size ≥ 8; with the vec4 loads and stores, K, N and
// (with TRANS_A) M multiples of 4 (the wrapper checks). op(B) may be transposed (dX = dZ·Wᵀ).
//
// Blocks are mat4x4s as in matmul_register: acc_b[i] is output row 4b + i (a vec4 over this
// lane's columns), a_b[i] the 4 values of op(A) row 4b + i over 4 consecutive k, and a step over
// those 4 k is acc_b += Bq · a_b with Bq's columns the 4 rows of op(B).

// Where op(A) comes from is the appended A source's business (matmul_a_storage.wgsl: the A
// binding; matmul_a_storage_edges.wgsl: the same by scalars; matmul_gathered.wgsl: rows of the
// resident data set picked by an index list): it defines a_batch_start(), a_row_base(r, len,
// start) — where stored A's row r begins, rows len long in sg_row_len's unit — a_at(base, q) —
// vec4 q (columns 4q .. 4q + 3, zero past the row's end) of the stored row that begins at base —
// and a_duties(), run at the end. The I/O file defines sg_row_len(len) (a row of len floats in
// a_at's unit), sg_b_quad, sg_step and sg_add_colsum (a step's sums, added in the order of the
// register kernel of the same shapes: the same results to the bit whichever of the two runs),
// sg_bias, sg_store_block and sg_store_colsum.

// Vec4s that cover len floats.
fn sg_quads(len: u32) -> u32 {
    return (len + 3u) / 4u;
}

// The starts of stored A's rows first .. first + 3 (each clamped to `last`).
fn sg_rows(first: u32, last: u32, len: u32, start: u32) -> vec4<u32> {
    return vec4<u32>(a_row_base(min(first, last), len, start), a_row_base(min(first + 1u, last), len, start),
                     a_row_base(min(first + 2u, last), len, start), a_row_base(min(first + 3u, last), len, start));
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
        let c = min(mb / 4u, sg_quads(p.m) - 1u);
        let z = vec4<f32>();
        return transpose(mat4x4<f32>(select(z, a_at(rows.x, c), k < kend), select(z, a_at(rows.y, c), k + 1u < kend),
                                     select(z, a_at(rows.z, c), k + 2u < kend),
                                     select(z, a_at(rows.w, c), k + 3u < kend)));
    }
    let q = min(k / 4u, sg_quads(p.k) - 1u);
    let blk = mat4x4<f32>(a_at(rows.x, q), a_at(rows.y, q), a_at(rows.z, q), a_at(rows.w, q));
    // kend is K or a multiple of 4 (the split length is), so the 4 k go together: past K the A
    // source gives zeros.
    return blk * f32(k < kend);
}

fn sg_shuffle(a: mat4x4<f32>, lane: u32) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupShuffle(a[0], lane), subgroupShuffle(a[1], lane), subgroupShuffle(a[2], lane),
                       subgroupShuffle(a[3], lane));
}

// A lane's tile at column quad n4: rows m0 .. m0 + 15 (TALL: 31) from blocks t0 .. t7 (t4 .. t7
// with TALL), and the column sums cs.
fn sg_store_tile(m0: u32, n4: u32, split: u32, t0: mat4x4<f32>, t1: mat4x4<f32>, t2: mat4x4<f32>, t3: mat4x4<f32>,
                 t4: mat4x4<f32>, t5: mat4x4<f32>, t6: mat4x4<f32>, t7: mat4x4<f32>, cs: vec4<f32>) {
    var bias = vec4<f32>();
    if (EPI != 2u && HAS_BIAS) { bias = sg_bias(n4); }
    sg_store_block(m0, n4 * 4u, split, t0, bias);
    sg_store_block(m0 + 4u, n4 * 4u, split, t1, bias);
    sg_store_block(m0 + 8u, n4 * 4u, split, t2, bias);
    sg_store_block(m0 + 12u, n4 * 4u, split, t3, bias);
    if (TALL) {
        sg_store_block(m0 + 16u, n4 * 4u, split, t4, bias);
        sg_store_block(m0 + 20u, n4 * 4u, split, t5, bias);
        sg_store_block(m0 + 24u, n4 * 4u, split, t6, bias);
        sg_store_block(m0 + 28u, n4 * 4u, split, t7, bias);
    }
    if (COLSUM_B && m0 == 0u) { sg_store_colsum(n4, cs); }
}

// Rows per workgroup tile: 16, or 32 (TALL) where M and K are large enough: each op(B) value is
// then loaded half as often per output. The wrapper picks it.
override TALL: bool = false;
// Columns per lane: 4, or 8 (WIDE: quads n4 and n4 + 8 of the workgroup's 16): each op(A) value,
// loaded and handed round once, then serves twice the outputs. The wrapper picks it.
override WIDE: bool = false;
// Two 16-row halves of 4 column quads (NARROW, for N ≤ 16; not with TALL or WIDE): lanes 0–3 take
// rows m0 .. m0 + 15 and lanes 4–7 rows m0 + 16 .. m0 + 31, each group handing op(A) round
// within itself over 16-long K chunks. With 4 lanes a tile, an output of 16 columns or fewer
// would leave half of every subgroup idle. The sums' order is the same as with 8 lanes a tile.
override NARROW: bool = false;
// Two halves of 4 lanes on the same 16 rows (K_HALVES, for N ≤ 16 where NARROW does not apply, as
// a weight gradient with few rows): each half takes every other 16-long K chunk, and the halves'
// sums are added at the end. Half of every subgroup would idle otherwise; the sums' order differs
// from the 8-lane tiles' (as a split of K does).
override K_HALVES: bool = false;

@compute @workgroup_size(8)
fn matmul_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    // NARROW, K_HALVES: this lane's half, and its place among the half's 4 lanes.
    let halves = NARROW || K_HALVES;
    let half = select(0u, lane / 4u, halves);
    let part = select(lane, lane % 4u, halves);
    let wg_m0 = wid.y * select(16u, 32u, TALL || NARROW);
    let m0 = wg_m0 + select(0u, 16u * half, NARROW);
    let n4_raw = select(wid.x * select(8u, 16u, WIDE) + lane, wid.x * 4u + part, halves);
    let chunk = select(32u, 16u, halves);
    // K_HALVES: a pass of the K loop covers two chunks, this half's starting k_off in.
    let pass_len = select(chunk, 32u, K_HALVES);
    let k_off = select(0u, 16u * half, K_HALVES);
    let w = sg_quads(p.n);
    let n4 = min(n4_raw, w - 1u);
    let n4w_raw = n4_raw + 8u;
    let n4w = min(n4w_raw, w - 1u);
    let kr = k_range(wid.z);
    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    // WIDE: the same rows at quad n4w.
    var wac0 = mat4x4<f32>();
    var wac1 = mat4x4<f32>();
    var wac2 = mat4x4<f32>();
    var wac3 = mat4x4<f32>();
    var wac4 = mat4x4<f32>();
    var wac5 = mat4x4<f32>();
    var wac6 = mat4x4<f32>();
    var wac7 = mat4x4<f32>();
    var cs = vec4<f32>();  // COLSUM_B: Σ_k op(B)[k, this lane's columns]
    var csw = vec4<f32>();
    // Stored A's rows: the tile's 16 (32) without TRANS_A, fixed over K; with it, per chunk below.
    // Lane l finds the starts of tile rows l, l + 8, .. and hands them out by subgroupShuffle: a
    // gathered A's are loads (of the index list), 4 per lane instead of 32 (each one inlined code
    // that lavapipe compiles and runs per lane).
    let start = a_batch_start();
    let ml = p.m - 1u;
    let lk = sg_row_len(p.k);
    var r0 = vec4<u32>();
    var r1 = vec4<u32>();
    var r2 = vec4<u32>();
    var r3 = vec4<u32>();
    var r4 = vec4<u32>();
    var r5 = vec4<u32>();
    var r6 = vec4<u32>();
    var r7 = vec4<u32>();
    if (!TRANS_A && halves) {
        // Lane part finds rows part, part + 4, .. of its half; the half's lanes hand them round.
        let g = 4u * half;
        r0 = sg_row_starts(a_row_base(min(m0 + part, ml), lk, start), g);
        r1 = sg_row_starts(a_row_base(min(m0 + 4u + part, ml), lk, start), g);
        r2 = sg_row_starts(a_row_base(min(m0 + 8u + part, ml), lk, start), g);
        r3 = sg_row_starts(a_row_base(min(m0 + 12u + part, ml), lk, start), g);
    }
    if (!TRANS_A && !halves) {
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
    for (var k0 = kr.x; k0 < kr.y; k0 += pass_len) {
        // This lane's share of its chunk: kh + 4·part .. + 3, for the 16 (TALL: 32) rows. Past
        // kend (K_HALVES' second half at the end) op(A) and op(B) read as zeros.
        let kh = k0 + k_off;
        let ks = kh + 4u * part;
        var rk = vec4<u32>();
        if (TRANS_A) { rk = sg_rows(ks, p.k - 1u, sg_row_len(p.m), start); }
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
        // The chunk's steps of 4 k before kend (the same in every lane): 8 (NARROW, K_HALVES: 4),
        // fewer in a last partial chunk, whose op(B) loads past kend would only be zeroed.
        let steps = min(chunk / 4u, (kr.y - k0 + 3u) / 4u);
        for (var j = 0u; j < steps; j++) {
            let k = kh + 4u * j;
            let bq = sg_b_quad(k, n4, kr.y);
            if (COLSUM_B) { cs = sg_add_colsum(cs, bq); }
            // The lane holding k .. k + 3 of this lane's rows: j, or j of this lane's half.
            let src = 4u * half + j;
            let s0 = sg_shuffle(a0, src);
            let s1 = sg_shuffle(a1, src);
            let s2 = sg_shuffle(a2, src);
            let s3 = sg_shuffle(a3, src);
            acc0 = sg_step(acc0, bq, s0);
            acc1 = sg_step(acc1, bq, s1);
            acc2 = sg_step(acc2, bq, s2);
            acc3 = sg_step(acc3, bq, s3);
            var bw = mat4x4<f32>();
            if (WIDE) {
                bw = sg_b_quad(k, n4w, kr.y);
                if (COLSUM_B) { csw = sg_add_colsum(csw, bw); }
                wac0 = sg_step(wac0, bw, s0);
                wac1 = sg_step(wac1, bw, s1);
                wac2 = sg_step(wac2, bw, s2);
                wac3 = sg_step(wac3, bw, s3);
            }
            if (TALL) {
                let s4 = sg_shuffle(a4, j);
                let s5 = sg_shuffle(a5, j);
                let s6 = sg_shuffle(a6, j);
                let s7 = sg_shuffle(a7, j);
                acc4 = sg_step(acc4, bq, s4);
                acc5 = sg_step(acc5, bq, s5);
                acc6 = sg_step(acc6, bq, s6);
                acc7 = sg_step(acc7, bq, s7);
                if (WIDE) {
                    wac4 = sg_step(wac4, bw, s4);
                    wac5 = sg_step(wac5, bw, s5);
                    wac6 = sg_step(wac6, bw, s6);
                    wac7 = sg_step(wac7, bw, s7);
                }
            }
        }
    }
    if (K_HALVES) {
        // Lane l and l ^ 4 hold the same outputs over the two halves' chunks.
        let other = lane ^ 4u;
        acc0 += sg_shuffle(acc0, other);
        acc1 += sg_shuffle(acc1, other);
        acc2 += sg_shuffle(acc2, other);
        acc3 += sg_shuffle(acc3, other);
        cs += subgroupShuffle(cs, other);
    }
    if (n4_raw < w && !(K_HALVES && half == 1u)) {
        sg_store_tile(m0, n4_raw, wid.z, acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7, cs);
    }
    if (WIDE && n4w_raw < w) {
        sg_store_tile(m0, n4w_raw, wid.z, wac0, wac1, wac2, wac3, wac4, wac5, wac6, wac7, csw);
    }
    a_duties(wid, lane, wg_m0, select(16u, 32u, TALL || NARROW), start);
}
