// Matrix multiply with a fused epilogue. Row-major throughout.
//   C[M, N] (+)= op(A) · op(B)
//   op(A) = A stored [M, K], or Aᵀ with A stored [K, M] (TRANS_A)
//   op(B) = B stored [K, N], or Bᵀ with B stored [N, K] (TRANS_B)
// Epilogue (EPI), applied once to the full sum:
//   1: C = act(A·B + bias)          bias: [N] (HAS_BIAS)
//   2: C = (A·B) ⊙ act'(Y)          Y: [M, N], what `act`'s forward saved: its output, or its
//                                   input for the GELUs (activation.wgsl)
//   3: as 1, and colsum[m, n] = A·B + bias: the pre-activation a GELU's backward reads, kept by
//      this dispatch ([M, N] at binding 5, which holds no column sums then)
//   4: C = act(A·B + bias + R)      R: [M, N] at binding 5: a residual sum f(x) + x
// Column sums of op(B) (COLSUM_B; register and subgroup variants, op(B) not transposed, no
// split-K): colsum[n] = Σ_k op(B)[k, n], added by the invocations of the first row block from the
// op(B) values they load anyway: dW = Xᵀ·dZ and db = Σ_rows dZ in one dispatch.
// Split-K (SPLIT): lavapipe silently stops an invocation's loops after 65,535 iterations in
// total, so K is cut into chunks of at most p.kc. Each chunk (workgroup z) writes its raw partial
// sum to out[split, M, N] (a scratch tensor), and `matmul_reduce` sums the splits in a fixed order
// (deterministic: no float atomics) and applies accumulate and the epilogue.
// Needs activation.wgsl prepended.
//
// Entry points (one per variant of src/kernels/matmul.rs):
//   matmul_naive           one output per invocation
//   matmul_tiled           16×16 tiles of A and B staged in workgroup memory
//   matmul_register        (4·RB)×(4·CB) outputs per invocation, vec4 loads; needs the
//                          contiguous dimensions to be multiples of 4 (checked by the wrapper)
//   matmul_register_scalar the same blocking with scalar loads: any shape
//   matmul_reduce          the split-K reduction and epilogue, one output per invocation

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override SPLIT: bool = false;
override ACCUMULATE: bool = false;
override EPI: u32 = 0u;
override HAS_BIAS: bool = false;
override ACT: u32 = 0u;
override COLSUM_B: bool = false;
// Workgroup shape (x along N, y along M) and register blocks of 4×4 outputs per invocation.
override WX: u32 = 16u;
override WY: u32 = 4u;
override RB: u32 = 1u;   // 1 to 4 row blocks (acc holds RB × CB ≤ 8 blocks)
override CB: u32 = 1u;   // 1 or 2 column blocks
// Register variants with few columns (N ≤ 16, CPU adapters): invocations side by side along M
// (x) and the column blocks along y, so every SIMD lane has outputs; along N most lanes of a
// 16-wide row of invocations would have none and still run every load (lavapipe loops over all
// 8 lanes per load). Rows of A then differ per lane, which costs nothing extra there.
override LANES_M: bool = false;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    kc: u32,       // K per split
    splits: u32,
    slope: f32,    // leaky relu's negative slope
    // op(A) gathered from a data set (matmul_gathered.wgsl; unread elsewhere): the batch's rows,
    // its fixed start in the index list (or the counter's stride), and the features' scale/shift.
    rows: u32,
    start: u32,
    stride: u32,
    scale: f32,
    shift: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;          // A (matmul_reduce: the partials)
@group(0) @binding(2) var<storage, read> b: array<f32>;          // B
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // C, or the [splits, M, N] partials
@group(0) @binding(4) var<storage, read> aux: array<f32>;        // bias [N] or Y [M, N]
@group(0) @binding(5) var<storage, read_write> colsum: array<f32>;  // COLSUM_B: [N]
// The same A and B seen as vec4s, used only by matmul_register (never with the scalar views in
// one entry point).
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;

// op(A)[m, k] and op(B)[k, n].
fn load_a(m: u32, k: u32) -> f32 {
    if (TRANS_A) { return a[k * p.m + m]; }
    return a[m * p.k + k];
}
fn load_b(k: u32, n: u32) -> f32 {
    if (TRANS_B) { return b[n * p.k + k]; }
    return b[k * p.n + n];
}

// Accumulate + epilogue for one finished output.
fn finish(m: u32, n: u32, sum: f32) {
    let i = m * p.n + n;
    var r = sum;
    if (ACCUMULATE) { r += out[i]; }
    if (EPI == 1u || EPI == 3u || EPI == 4u) {
        if (HAS_BIAS) { r += aux[n]; }
        if (EPI == 3u) { colsum[i] = r; }
        if (EPI == 4u) { r += colsum[i]; }
        r = act_forward(ACT, r, p.slope);
    } else if (EPI == 2u) {
        r *= act_derivative_from_saved(ACT, aux[i], p.slope);
    }
    out[i] = r;
}

// A raw sum over K chunk `split`: to the partials, or finished when K is not split.
fn emit(m: u32, n: u32, split: u32, sum: f32) {
    if (SPLIT) {
        out[(split * p.m + m) * p.n + n] = sum;
    } else {
        finish(m, n, sum);
    }
}

// [k_begin, k_end) of split z.
fn k_range(z: u32) -> vec2<u32> {
    let k0 = z * p.kc;
    return vec2<u32>(k0, min(k0 + p.kc, p.k));
}

@compute @workgroup_size(16, 16)
fn matmul_naive(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    let m = gid.y;
    if (m >= p.m || n >= p.n) { return; }
    let kr = k_range(gid.z);
    var s = 0.0;
    for (var k = kr.x; k < kr.y; k++) {
        s += load_a(m, k) * load_b(k, n);
    }
    emit(m, n, gid.z, s);
}

const TILE: u32 = 16u;
var<workgroup> tile_a: array<f32, 256>;  // [TILE (m), TILE (k)]
var<workgroup> tile_b: array<f32, 256>;  // [TILE (k), TILE (n)]

@compute @workgroup_size(16, 16)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wid.x * TILE + lid.x;
    let m = wid.y * TILE + lid.y;
    let kr = k_range(wid.z);
    var s = 0.0;
    // No early return: every invocation must reach the barriers.
    for (var t = kr.x; t < kr.y; t += TILE) {
        let ka = t + lid.x;
        let am = wid.y * TILE + lid.y;
        tile_a[lid.y * TILE + lid.x] = select(0.0, load_a(min(am, p.m - 1u), min(ka, p.k - 1u)), am < p.m && ka < kr.y);
        let kb = t + lid.y;
        tile_b[lid.y * TILE + lid.x] = select(0.0, load_b(min(kb, p.k - 1u), min(n, p.n - 1u)), n < p.n && kb < kr.y);
        workgroupBarrier();
        for (var kk = 0u; kk < TILE; kk++) {
            s += tile_a[lid.y * TILE + kk] * tile_b[kk * TILE + lid.x];
        }
        workgroupBarrier();
    }
    if (m < p.m && n < p.n) { emit(m, n, wid.z, s); }
}

// Register blocking: an invocation owns RB×CB blocks of 4×4 outputs. acc[rb * 2 + cb] is a
// block whose column i holds output row i (a vec4 over 4 columns), so a step over 4 values of k
// is one mat4x4 product: acc += Bk · Ak, with Bk's columns the 4 rows of op(B) (vec4 over n) and
// Ak's columns the 4 rows of op(A) (vec4 over k).
fn store_block(m0: u32, n0: u32, split: u32, blk: mat4x4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + i;
        if (m < p.m) {
            for (var j = 0u; j < 4u; j++) {
                if (n0 + j < p.n) { emit(m, n0 + j, split, blk[i][j]); }
            }
        }
    }
}

// COLSUM_B: the column sums of op(B) at n0 + 4·cb .. + 3 (the first row block's invocations).
fn store_colsum(n0: u32, cs: array<vec4<f32>, 2>) {
    for (var cb = 0u; cb < CB; cb++) {
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + 4u * cb + j;
            if (n < p.n) { colsum[n] = cs[cb][j]; }
        }
    }
}

@compute @workgroup_size(WX, WY)
fn matmul_register(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    // With one row of invocations per workgroup, the rows come from the workgroup id: the same in
    // every SIMD lane, so lavapipe loads A once per lane group instead of gathering per lane.
    let m0 = select(select(gid.y, wid.y, WY == 1u), gid.x, LANES_M) * 4u * RB;
    let n0 = select(gid.x, wid.y, LANES_M) * 4u * CB;
    if (m0 >= p.m || n0 >= p.n) { return; }
    let kr = k_range(gid.z);
    var acc = array<mat4x4<f32>, 8>();
    var cs: array<vec4<f32>, 2>;
    // Rows and columns past the end are clamped to the last one: valid loads whose results are
    // never stored.
    for (var k = kr.x; k < kr.y; k += 4u) {
        var ak: array<mat4x4<f32>, 4>;
        for (var rb = 0u; rb < RB; rb++) {
            let mb = m0 + 4u * rb;
            if (TRANS_A) {
                // A stored [K, M]: a vec4 along m per k, transposed into rows.
                let c = min(mb, p.m - 4u) / 4u;
                let w = p.m / 4u;
                ak[rb] = transpose(mat4x4<f32>(a4[k * w + c], a4[(k + 1u) * w + c], a4[(k + 2u) * w + c], a4[(k + 3u) * w + c]));
            } else {
                let w = p.k / 4u;
                let q = k / 4u;
                ak[rb] = mat4x4<f32>(a4[min(mb, p.m - 1u) * w + q], a4[min(mb + 1u, p.m - 1u) * w + q],
                                     a4[min(mb + 2u, p.m - 1u) * w + q], a4[min(mb + 3u, p.m - 1u) * w + q]);
            }
        }
        for (var cb = 0u; cb < CB; cb++) {
            let nb = n0 + 4u * cb;
            var bk: mat4x4<f32>;
            if (TRANS_B) {
                // B stored [N, K]: a vec4 along k per n, transposed into rows of op(B).
                let w = p.k / 4u;
                let q = k / 4u;
                bk = transpose(mat4x4<f32>(b4[min(nb, p.n - 1u) * w + q], b4[min(nb + 1u, p.n - 1u) * w + q],
                                           b4[min(nb + 2u, p.n - 1u) * w + q], b4[min(nb + 3u, p.n - 1u) * w + q]));
            } else {
                let c = min(nb, p.n - 4u) / 4u;
                let w = p.n / 4u;
                bk = mat4x4<f32>(b4[k * w + c], b4[(k + 1u) * w + c], b4[(k + 2u) * w + c], b4[(k + 3u) * w + c]);
            }
            if (COLSUM_B) { cs[cb] += bk[0] + bk[1] + bk[2] + bk[3]; }
            for (var rb = 0u; rb < RB; rb++) {
                acc[rb * 2u + cb] += bk * ak[rb];
            }
        }
    }
    for (var rb = 0u; rb < RB; rb++) {
        for (var cb = 0u; cb < CB; cb++) {
            store_block(m0 + 4u * rb, n0 + 4u * cb, gid.z, acc[rb * 2u + cb]);
        }
    }
    if (COLSUM_B && m0 == 0u) { store_colsum(n0, cs); }
}

@compute @workgroup_size(WX, WY)
fn matmul_register_scalar(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let m0 = select(select(gid.y, wid.y, WY == 1u), gid.x, LANES_M) * 4u * RB;
    let n0 = select(gid.x, wid.y, LANES_M) * 4u * CB;
    if (m0 >= p.m || n0 >= p.n) { return; }
    let kr = k_range(gid.z);
    let ml = p.m - 1u;
    let nl = p.n - 1u;
    var acc = array<mat4x4<f32>, 8>();
    var cs: array<vec4<f32>, 2>;
    for (var k = kr.x; k < kr.y; k++) {
        var ak: array<vec4<f32>, 4>;  // op(A)[m0.., k]
        for (var rb = 0u; rb < RB; rb++) {
            let mb = m0 + 4u * rb;
            ak[rb] = vec4<f32>(load_a(min(mb, ml), k), load_a(min(mb + 1u, ml), k),
                               load_a(min(mb + 2u, ml), k), load_a(min(mb + 3u, ml), k));
        }
        for (var cb = 0u; cb < CB; cb++) {
            let nb = n0 + 4u * cb;
            let bk = vec4<f32>(load_b(k, min(nb, nl)), load_b(k, min(nb + 1u, nl)),
                               load_b(k, min(nb + 2u, nl)), load_b(k, min(nb + 3u, nl)));
            if (COLSUM_B) { cs[cb] += bk; }
            for (var rb = 0u; rb < RB; rb++) {
                // Outer product: column i (output row i) += A[m0 + i, k] · op(B)[k, n0..].
                acc[rb * 2u + cb] += mat4x4<f32>(bk * ak[rb].x, bk * ak[rb].y, bk * ak[rb].z, bk * ak[rb].w);
            }
        }
    }
    for (var rb = 0u; rb < RB; rb++) {
        for (var cb = 0u; cb < CB; cb++) {
            store_block(m0 + 4u * rb, n0 + 4u * cb, gid.z, acc[rb * 2u + cb]);
        }
    }
    if (COLSUM_B && m0 == 0u) { store_colsum(n0, cs); }
}

override WG: u32 = 256u;

// C (+)= epilogue(Σ_split partials[split]).  a: [splits, M, N] → out: [M, N]. 1-D grid folded
// into y like grid_1d.
@compute @workgroup_size(WG)
fn matmul_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
