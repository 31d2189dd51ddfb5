// Workgroup-tiled, register-blocked matmul (the GPU-class variant). Row-major throughout.
//   C[M, N] (+)= op(A) · op(B), op(A) = A [M, K] or Aᵀ with A [K, M] (TRANS_A),
//                               op(B) = B [K, N] or Bᵀ with B [N, K] (TRANS_B).
// Epilogue (p.epi) as in matmul.wgsl: 1: C = act(A·B + bias) (p.has_bias), 2: C = (A·B) ⊙ act'(Y),
// 3: as 1 keeping A·B + bias at binding 5, 4: C = act(A·B + bias + R) with R at binding 5;
// p.accumulate: C += A·B; COLSUM_B: also colsum[n] = Σ_k op(B)[k, n] (no split-K). The epilogue's
// switches are uniforms, not override constants: they run once per output, and one pipeline then
// serves a layer's forward, backward and plain products (each pipeline costs a compile).
// Needs activation.wgsl prepended.
//
// A workgroup computes a BM×BN tile of C with TX×TY invocations, each TM×TN outputs (TM, TN 4 or
// 8) held in registers as 4×4 blocks. K is walked in steps of BK: the workgroup stages op(A)'s
// BM×BK and op(B)'s BK×BN pieces in workgroup memory, both k-major (a row per k, vec4 over m or
// n), so that every invocation reads its operands as whole vec4s. Invocation (tx, ty) owns the
// row quads ty + i·TY and column quads tx + j·TX: neighbouring invocations read neighbouring
// vec4s of workgroup memory and write neighbouring vec4s of C.
//
// Split-K (p.split): each workgroup z sums K chunk [z·kc, min((z+1)·kc, K)) (kc a multiple of BK)
// into the [splits, M, N] partials, and `mmr_reduce` sums them in a fixed order and finishes.
// lavapipe stops an invocation after 65,535 loop iterations in all; per BK of K this kernel runs
// BK/4 + a few, so the wrapper's cap on kc keeps it far below that.
//
// Entry points: mmr_vec4 (operands loaded as vec4s: the contiguous dimensions of A and B are
// multiples of 4 and their views 16-byte aligned; the wrapper checks), mmr_scalar (any shape),
// mmr_reduce. The vec4 and scalar views of A and B share bindings, so no entry point uses both.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override COLSUM_B: bool = false;
// Tile geometry (the wrapper derives and checks the dependent ones: TX = BN/TN, TY = BM/TM,
// A_TILE = BM·BK/4 and B_TILE = BN·BK/4 vec4s, A_LOADS / B_LOADS values each invocation stages
// per step: vec4s in mmr_vec4, scalars in mmr_scalar).
override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override TM: u32 = 4u;
override TN: u32 = 4u;
override TX: u32 = 16u;
override TY: u32 = 16u;
override A_TILE: u32 = 256u;
override B_TILE: u32 = 256u;
override A_LOADS: u32 = 1u;
override B_LOADS: u32 = 1u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    kc: u32,      // K per split, a multiple of BK
    splits: u32,
    slope: f32,   // leaky relu's negative slope
    epi: u32,     // 0 none, 1 bias + activation, 2 activation gradient, 3 and 4 (see above)
    act: u32,     // activation.wgsl's code
    accumulate: u32,
    has_bias: u32,
    split: u32,   // this dispatch writes the [splits, M, N] partials (the reduction finishes)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;          // A (mmr_reduce: the partials)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // B
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // C, or the [splits, M, N] partials
@group(0) @binding(4) var<storage, read> aux: array<f32>;        // bias [N] or Y [M, N]
@group(0) @binding(5) var<storage, read_write> colsum: array<f32>;  // COLSUM_B: [N]
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;

// [k][m / 4] and [k][n / 4]: row kk of the op(A) piece holds its BM rows at that k.
var<workgroup> tile_a: array<vec4<f32>, A_TILE>;
var<workgroup> tile_b: array<vec4<f32>, B_TILE>;

// The invocation's 4×4 blocks: acc_ij is row quad i × column quad j, column r of the matrix
// holding output row r (a vec4 over the 4 columns), so a step over 4 k is acc += Bk · Ak.
var<private> acc00: mat4x4<f32>;
var<private> acc01: mat4x4<f32>;
var<private> acc10: mat4x4<f32>;
var<private> acc11: mat4x4<f32>;
var<private> col_sums: array<vec4<f32>, 2>;

// Accumulate + epilogue for one finished output (as matmul.wgsl's finish).
fn finish(m: u32, n: u32, sum: f32) {
    let i = m * p.n + n;
    var r = sum;
    if (p.accumulate != 0u) { r += out[i]; }
    if (p.epi == 1u || p.epi == 3u || p.epi == 4u) {
        if (p.has_bias != 0u) { r += aux[n]; }
        if (p.epi == 3u) { colsum[i] = r; }
        if (p.epi == 4u) { r += colsum[i]; }
        r = act_forward(p.act, r, p.slope);
    } else if (p.epi == 2u) {
        r *= act_derivative_from_saved(p.act, aux[i], p.slope);
    }
    out[i] = r;
}

fn emit(m: u32, n: u32, split: u32, sum: f32) {
    if (p.split != 0u) {
        out[(split * p.m + m) * p.n + n] = sum;
    } else {
        finish(m, n, sum);
    }
}

// op(A) rows 4·rq .. + 3 (tile-relative quad) at tile k kk .. kk + 3, as a block whose column r
// is row r over the 4 k.
fn a_block(kk: u32, rq: u32) -> mat4x4<f32> {
    let w = BM / 4u;
    return transpose(mat4x4<f32>(tile_a[kk * w + rq], tile_a[(kk + 1u) * w + rq], tile_a[(kk + 2u) * w + rq],
                                 tile_a[(kk + 3u) * w + rq]));
}

// op(B) rows kk .. kk + 3 at tile columns 4·cq .. + 3, as a block whose column j is row kk + j.
fn b_block(kk: u32, cq: u32) -> mat4x4<f32> {
    let w = BN / 4u;
    return mat4x4<f32>(tile_b[kk * w + cq], tile_b[(kk + 1u) * w + cq], tile_b[(kk + 2u) * w + cq],
                       tile_b[(kk + 3u) * w + cq]);
}

// The staged step: acc += op(A) piece · op(B) piece for this invocation's quads. TM, TN are
// constants of the pipeline, so the branches fold away.
fn multiply_tile(tx: u32, ty: u32) {
    for (var kk = 0u; kk < BK; kk += 4u) {
        let a0 = a_block(kk, ty);
        let b0 = b_block(kk, tx);
        acc00 += b0 * a0;
        if (COLSUM_B) { col_sums[0] += b0[0] + b0[1] + b0[2] + b0[3]; }
        if (TN == 8u) {
            let b1 = b_block(kk, tx + TX);
            acc01 += b1 * a0;
            if (COLSUM_B) { col_sums[1] += b1[0] + b1[1] + b1[2] + b1[3]; }
            if (TM == 8u) {
                let a1 = a_block(kk, ty + TY);
                acc10 += b0 * a1;
                acc11 += b1 * a1;
            }
        } else if (TM == 8u) {
            acc10 += b0 * a_block(kk, ty + TY);
        }
    }
}

// One staged value's place: op(A)[m, k] → tile_a, op(B)[k, n] → tile_b (tile-relative m, n, k).
fn put_a(mm: u32, kk: u32, v: f32) {
    tile_a[kk * (BM / 4u) + mm / 4u][mm % 4u] = v;
}
fn put_b(kk: u32, nn: u32, v: f32) {
    tile_b[kk * (BN / 4u) + nn / 4u][nn % 4u] = v;
}

// Stages the step at k0 (values past M, N or kend are zeros) with vec4 loads along each stored
// operand's contiguous axis.
fn stage_vec4(li: u32, m0: u32, n0: u32, k0: u32, kend: u32) {
    let z = vec4<f32>();
    for (var s = 0u; s < A_LOADS; s++) {
        let i = li + s * TX * TY;
        if (TRANS_A) {
            // A [K, M]: a vec4 along m, stored as is.
            let kk = i / (BM / 4u);
            let mq = i % (BM / 4u);
            let k = k0 + kk;
            let m = m0 + 4u * mq;
            var v = z;
            if (k < kend && m < p.m) { v = a4[(k * p.m + m) / 4u]; }
            tile_a[i] = v;
        } else {
            // A [M, K]: a vec4 along k, scattered into 4 rows of the k-major piece.
            let mm = i / (BK / 4u);
            let kk = 4u * (i % (BK / 4u));
            let m = m0 + mm;
            let k = k0 + kk;
            var v = z;
            if (k < kend && m < p.m) { v = a4[(m * p.k + k) / 4u]; }
            put_a(mm, kk, v.x);
            put_a(mm, kk + 1u, v.y);
            put_a(mm, kk + 2u, v.z);
            put_a(mm, kk + 3u, v.w);
        }
    }
    for (var s = 0u; s < B_LOADS; s++) {
        let i = li + s * TX * TY;
        if (TRANS_B) {
            // B [N, K]: a vec4 along k, scattered.
            let nn = i / (BK / 4u);
            let kk = 4u * (i % (BK / 4u));
            let n = n0 + nn;
            let k = k0 + kk;
            var v = z;
            if (k < kend && n < p.n) { v = b4[(n * p.k + k) / 4u]; }
            put_b(kk, nn, v.x);
            put_b(kk + 1u, nn, v.y);
            put_b(kk + 2u, nn, v.z);
            put_b(kk + 3u, nn, v.w);
        } else {
            // B [K, N]: a vec4 along n, stored as is.
            let kk = i / (BN / 4u);
            let nq = i % (BN / 4u);
            let k = k0 + kk;
            let n = n0 + 4u * nq;
            var v = z;
            if (k < kend && n < p.n) { v = b4[(k * p.n + n) / 4u]; }
            tile_b[i] = v;
        }
    }
}

// The same with scalar loads, consecutive invocations along the contiguous axis: any shape.
fn stage_scalar(li: u32, m0: u32, n0: u32, k0: u32, kend: u32) {
    for (var s = 0u; s < A_LOADS; s++) {
        let i = li + s * TX * TY;
        var mm: u32;
        var kk: u32;
        if (TRANS_A) {
            kk = i / BM;
            mm = i % BM;
        } else {
            mm = i / BK;
            kk = i % BK;
        }
        let m = m0 + mm;
        let k = k0 + kk;
        var v = 0.0;
        if (k < kend && m < p.m) {
            if (TRANS_A) { v = a[k * p.m + m]; } else { v = a[m * p.k + k]; }
        }
        put_a(mm, kk, v);
    }
    for (var s = 0u; s < B_LOADS; s++) {
        let i = li + s * TX * TY;
        var nn: u32;
        var kk: u32;
        if (TRANS_B) {
            nn = i / BK;
            kk = i % BK;
        } else {
            kk = i / BN;
            nn = i % BN;
        }
        let n = n0 + nn;
        let k = k0 + kk;
        var v = 0.0;
        if (k < kend && n < p.n) {
            if (TRANS_B) { v = b[n * p.k + k]; } else { v = b[k * p.n + n]; }
        }
        put_b(kk, nn, v);
    }
}

fn store_block(m0: u32, n0: u32, split: u32, blk: mat4x4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        let m = m0 + r;
        if (m < p.m) {
            for (var c = 0u; c < 4u; c++) {
                if (n0 + c < p.n) { emit(m, n0 + c, split, blk[r][c]); }
            }
        }
    }
}

// Writes the invocation's outputs (and, from the first row of invocations of the first row of
// tiles, its column sums).
fn store_tile(wid: vec3<u32>, tx: u32, ty: u32) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let ma = m0 + 4u * ty;
    let mb = m0 + 4u * (ty + TY);
    let na = n0 + 4u * tx;
    let nb = n0 + 4u * (tx + TX);
    store_block(ma, na, wid.z, acc00);
    if (TN == 8u) { store_block(ma, nb, wid.z, acc01); }
    if (TM == 8u) {
        store_block(mb, na, wid.z, acc10);
        if (TN == 8u) { store_block(mb, nb, wid.z, acc11); }
    }
    if (COLSUM_B && wid.y == 0u && ty == 0u) {
        for (var c = 0u; c < 4u; c++) {
            if (na + c < p.n) { colsum[na + c] = col_sums[0][c]; }
            if (TN == 8u && nb + c < p.n) { colsum[nb + c] = col_sums[1][c]; }
        }
    }
}

// Both main entry points: no early return, every invocation reaches every barrier (the step
// loop's bounds are the same across the workgroup).
@compute @workgroup_size(TX, TY)
fn mmr_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let k_begin = wid.z * p.kc;
    let k_end = min(k_begin + p.kc, p.k);
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        stage_vec4(li, wid.y * BM, wid.x * BN, k0, k_end);
        workgroupBarrier();
        multiply_tile(lid.x, lid.y);
        workgroupBarrier();
    }
    store_tile(wid, lid.x, lid.y);
}

@compute @workgroup_size(TX, TY)
fn mmr_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let k_begin = wid.z * p.kc;
    let k_end = min(k_begin + p.kc, p.k);
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        stage_scalar(li, wid.y * BM, wid.x * BN, k0, k_end);
        workgroupBarrier();
        multiply_tile(lid.x, lid.y);
        workgroupBarrier();
    }
    store_tile(wid, lid.x, lid.y);
}

override WG: u32 = 256u;

// C (+)= epilogue(Σ_split partials[split]); a: [splits, M, N]. 1-D grid folded into y.
@compute @workgroup_size(WG)
fn mmr_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    let mn = p.m * p.n;
    if (i >= mn) { return; }
    var s = 0.0;
    for (var z = 0u; z < p.splits; z++) {
        s += a[z * mn + i];
    }
    finish(i / p.n, i % p.n, s);
}
