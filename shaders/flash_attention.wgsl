// Multi-head self-attention, tiled as FlashAttention-2: the scores are never written. Causal
// (p.causal = 1) or not (every query attends to every key: "j ≤ i" below reads j < T, "i ≥ j"
// reads i < T; an invocation then loops as long as the causal one's last rows do).
// The same function as attention.wgsl (qkv [B, T, 3C] → out [B, T, C], heads of HS = C / NH, scale
// 1/√HS), with query or key rows per invocation and their heads in registers (HS ≤ 4·HS4_MAX):
//   flash_attention_forward:      per ROWS query rows i (1, 2 or 4: each key and value loaded
//                                 serves them all), keys in tiles of BC with an online softmax (a
//                                 running maximum m and sum l, the output rescaled by exp(m − m')
//                                 when the maximum grows) → out_i and lse_i = m + log l  [B, NH, T]
//   flash_attention_backward_dq:  per ROWS query rows i (1 or 2): D_i = dout_i·out_i (written to
//                                 delta [B, NH, T]),
//                                 then for each key j ≤ i the probability rebuilt as
//                                 P = exp(q_i·k_j/√HS − lse_i), dS = P (dout_i·v_j − D_i),
//                                 dq_i = Σ_j dS k_j / √HS
//   flash_attention_backward_dkv: per key row j, over queries i ≥ j (after the dq dispatch, which
//                                 wrote delta): dv_j = Σ_i P dout_i, dk_j = Σ_i dS q_i / √HS
// With dropout (the DROPOUT pipelines, attention_dropout.wgsl's mask M_ij, weights 0 or
// 1/(1 − p)): the forward weighs v_j by P_ij M_ij (m and l, so lse, are the softmax's as before);
// the backward uses dP = (dout_i·v_j) M_ij, dS = P (dP − D_i) with D_i = dout_i·out_i still, and
// dv_j = Σ_i P M dout_i.
// The bindings and the head's loads and stores are in flash_attention_scalar.wgsl (any head size)
// or flash_attention_vec4.wgsl (heads of a multiple of 4), appended to this file.
// dqkv is overwritten. A forward invocation's loops run about T·(2·⌈HS/4⌉·(ROWS + 1) + 2·ROWS + 2)
// times in all, dq's T·(⌈HS/4⌉·(2·ROWS + 1) + 2·ROWS + 1), dk/dv's T·(2·⌈HS/4⌉ + 2): the wrapper
// keeps each within 3/4 of lavapipe's 65,535-iteration loop cap. No workgroup memory and no
// subgroup operations, so any subgroup size gives the same result.

override WG: u32 = 64u;
// ⌈HS / 4⌉: the loops over a head have a bound fixed at pipeline creation, so that the compiler
// can unroll them and keep the head's registers in registers.
override HS4: u32 = 16u;

// Head values per invocation, in vec4s: heads of up to 64.
const HS4_MAX: u32 = 16u;
// Keys per tile of the forward's online softmax: one rescale of the output per tile.
const BC: u32 = 16u;
// Query rows per invocation of the forward (1, 2 or 4): each key and value loaded serves them all.
override ROWS: u32 = 1u;
const ROWS_MAX: u32 = 4u;
// Below any score: exp(LOWEST − m) is 0 for every finite m.
const LOWEST: f32 = -3.0e38;

struct Params {
    batch: u32,
    seq: u32,
    channels: u32,
    heads: u32,
    head_size: u32,
    scale: f32,
    // 1: query i attends to keys j ≤ i; 0: to every key.
    causal: u32,
    // Dropout (attention_dropout.wgsl): keep iff hash ≥ threshold, weight keep_scale, t = step[0] − lag.
    seed: u32,
    threshold: u32,
    keep_scale: f32,
    lag: u32,
    _pad1: u32,
}

fn row_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Where token (b, i)'s part (0 query, 1 key, 2 value) of head h starts in qkv.
fn qkv_at(part: u32, b: u32, i: u32, h: u32) -> u32 {
    return (b * p.seq + i) * 3u * p.channels + part * p.channels + h * p.head_size;
}

// Where token (b, i)'s head h starts in out and dout.
fn out_at(b: u32, i: u32, h: u32) -> u32 {
    return (b * p.seq + i) * p.channels + h * p.head_size;
}

@compute @workgroup_size(WG)
fn flash_attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_id) lid: vec3<u32>) {
    // Rows i0 .. i0 + ROWS − 1 of (b, h); those past T are computed and not written.
    let blocks = (p.seq + ROWS - 1u) / ROWS;
    let r = row_index(wid, nwg, lid);
    if (r >= p.batch * p.heads * blocks) { return; }
    let bh = r / blocks;
    let i0 = (r % blocks) * ROWS;
    let b = bh / p.heads;
    let h = bh % p.heads;
    let stride = 3u * p.channels;
    let last = min(i0 + ROWS - 1u, p.seq - 1u);
    // The last key any of the rows attends to.
    let last_key = select(p.seq - 1u, last, p.causal != 0u);
    var q: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var o: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var m: array<f32, ROWS_MAX>;
    var l: array<f32, ROWS_MAX>;
    for (var rr = 0u; rr < ROWS; rr++) {
        let q_base = qkv_at(0u, b, min(i0 + rr, last), h);
        for (var c = 0u; c < HS4; c++) {
            q[rr * HS4 + c] = qkv4(q_base, c) * p.scale;
            o[rr * HS4 + c] = vec4<f32>(0.0);
        }
        m[rr] = LOWEST;
        l[rr] = 0.0;
    }
    let k_base = qkv_at(1u, b, 0u, h);
    let v_base = qkv_at(2u, b, 0u, h);
    var key = MaskKey(0u, 0u);
    if (DROPOUT) {
        key = mask_key();
    }
    var kv: array<vec4<f32>, HS4_MAX>;
    for (var j0 = 0u; j0 <= last_key; j0 += BC) {
        let n = min(BC, last_key + 1u - j0);
        // Scores of the tile's keys, row by row; a key after a row's query scores LOWEST (weight 0;
        // key 0 is in every row's first tile, so each row's maximum is finite from then on).
        var s: array<f32, BC * ROWS_MAX>;
        var tile_max: array<f32, ROWS_MAX>;
        for (var rr = 0u; rr < ROWS; rr++) {
            tile_max[rr] = LOWEST;
        }
        for (var jj = 0u; jj < n; jj++) {
            let k = k_base + (j0 + jj) * stride;
            for (var c = 0u; c < HS4; c++) {
                kv[c] = qkv4(k, c);
            }
            for (var rr = 0u; rr < ROWS; rr++) {
                var acc = 0.0;
                for (var c = 0u; c < HS4; c++) {
                    acc += dot(q[rr * HS4 + c], kv[c]);
                }
                let score = select(LOWEST, acc, j0 + jj <= i0 + rr || p.causal == 0u);
                s[rr * BC + jj] = score;
                tile_max[rr] = max(tile_max[rr], score);
            }
        }
        for (var rr = 0u; rr < ROWS; rr++) {
            let m_new = max(m[rr], tile_max[rr]);
            let rescale = exp(m[rr] - m_new);
            l[rr] *= rescale;
            for (var c = 0u; c < HS4; c++) {
                o[rr * HS4 + c] *= rescale;
            }
            m[rr] = m_new;
        }
        for (var jj = 0u; jj < n; jj++) {
            let v = v_base + (j0 + jj) * stride;
            for (var c = 0u; c < HS4; c++) {
                kv[c] = qkv4(v, c);
            }
            for (var rr = 0u; rr < ROWS; rr++) {
                let pj = exp(s[rr * BC + jj] - m[rr]);
                l[rr] += pj;
                // Dropout weighs the value, not the running sum l.
                var w = pj;
                if (DROPOUT) {
                    w *= mask_weight(key, (bh * p.seq + i0 + rr) * p.seq + j0 + jj);
                }
                for (var c = 0u; c < HS4; c++) {
                    o[rr * HS4 + c] += w * kv[c];
                }
            }
        }
    }
    for (var rr = 0u; rr < ROWS; rr++) {
        let i = i0 + rr;
        if (i < p.seq) {
            // l ≥ 1: the maximum's own term is exp(0).
            let inv = 1.0 / l[rr];
            let o_base = out_at(b, i, h);
            for (var c = 0u; c < HS4; c++) {
                store_out4(o_base, c, o[rr * HS4 + c] * inv);
            }
            lse[bh * p.seq + i] = m[rr] + log(l[rr]);
        }
    }
}

@compute @workgroup_size(WG)
fn flash_attention_backward_dq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_id) lid: vec3<u32>) {
    // Query rows i0 .. i0 + ROWS − 1 of (b, h), as the forward's (1 or 2 here: 4 spill).
    let blocks = (p.seq + ROWS - 1u) / ROWS;
    let r = row_index(wid, nwg, lid);
    if (r >= p.batch * p.heads * blocks) { return; }
    let bh = r / blocks;
    let i0 = (r % blocks) * ROWS;
    let b = bh / p.heads;
    let h = bh % p.heads;
    let stride = 3u * p.channels;
    let last = min(i0 + ROWS - 1u, p.seq - 1u);
    let last_key = select(p.seq - 1u, last, p.causal != 0u);
    var q: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var g: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var dq: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var d_i: array<f32, ROWS_MAX>;
    var lse_i: array<f32, ROWS_MAX>;
    for (var rr = 0u; rr < ROWS; rr++) {
        let i = min(i0 + rr, last);
        let q_base = qkv_at(0u, b, i, h);
        let g_base = out_at(b, i, h);
        var d = 0.0;
        for (var c = 0u; c < HS4; c++) {
            q[rr * HS4 + c] = qkv4(q_base, c) * p.scale;
            g[rr * HS4 + c] = dout4(g_base, c);
            dq[rr * HS4 + c] = vec4<f32>(0.0);
            d += dot(g[rr * HS4 + c], out4(g_base, c));
        }
        d_i[rr] = d;
        lse_i[rr] = lse[bh * p.seq + i];
        if (i0 + rr < p.seq) {
            delta[bh * p.seq + i] = d;
        }
    }
    let k_base = qkv_at(1u, b, 0u, h);
    var key = MaskKey(0u, 0u);
    if (DROPOUT) {
        key = mask_key();
    }
    // Key j and value j, loaded once for every row.
    var kj: array<vec4<f32>, HS4_MAX>;
    var vj: array<vec4<f32>, HS4_MAX>;
    for (var j = 0u; j <= last_key; j++) {
        let k = k_base + j * stride;
        let v = k + p.channels;
        for (var c = 0u; c < HS4; c++) {
            kj[c] = qkv4(k, c);
            vj[c] = qkv4(v, c);
        }
        for (var rr = 0u; rr < ROWS; rr++) {
            var s = 0.0;
            var dp = 0.0;
            for (var c = 0u; c < HS4; c++) {
                s += dot(q[rr * HS4 + c], kj[c]);
                dp += dot(g[rr * HS4 + c], vj[c]);
            }
            if (DROPOUT) {
                dp *= mask_weight(key, (bh * p.seq + i0 + rr) * p.seq + j);
            }
            // A key after the row's query adds nothing.
            let ds = select(0.0, exp(s - lse_i[rr]) * (dp - d_i[rr]), j <= i0 + rr || p.causal == 0u);
            for (var c = 0u; c < HS4; c++) {
                dq[rr * HS4 + c] += ds * kj[c];
            }
        }
    }
    for (var rr = 0u; rr < ROWS; rr++) {
        if (i0 + rr < p.seq) {
            let q_base = qkv_at(0u, b, i0 + rr, h);
            for (var c = 0u; c < HS4; c++) {
                store_dqkv4(q_base, c, dq[rr * HS4 + c] * p.scale);
            }
        }
    }
}


@compute @workgroup_size(WG)
fn flash_attention_backward_dkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(wid, nwg, lid);
    if (r >= p.batch * p.heads * p.seq) { return; }
    let j = r % p.seq;
    let bh = r / p.seq;
    let b = bh / p.heads;
    let h = bh % p.heads;
    let stride = 3u * p.channels;
    var k: array<vec4<f32>, HS4_MAX>;
    var v: array<vec4<f32>, HS4_MAX>;
    var dk: array<vec4<f32>, HS4_MAX>;
    var dv: array<vec4<f32>, HS4_MAX>;
    let k_base = qkv_at(1u, b, j, h);
    let v_base = k_base + p.channels;
    for (var c = 0u; c < HS4; c++) {
        k[c] = qkv4(k_base, c) * p.scale;
        v[c] = qkv4(v_base, c);
        dk[c] = vec4<f32>(0.0);
        dv[c] = vec4<f32>(0.0);
    }
    let q_base = qkv_at(0u, b, 0u, h);
    let g_base = out_at(b, 0u, h);
    var key = MaskKey(0u, 0u);
    if (DROPOUT) {
        key = mask_key();
    }
    // Query i's q and dout, loaded once for the score and the gradients.
    var qi: array<vec4<f32>, HS4_MAX>;
    var gi: array<vec4<f32>, HS4_MAX>;
    for (var i = select(0u, j, p.causal != 0u); i < p.seq; i++) {
        let q = q_base + i * stride;
        let g = g_base + i * p.channels;
        var s = 0.0;
        var dp = 0.0;
        for (var c = 0u; c < HS4; c++) {
            qi[c] = qkv4(q, c);
            gi[c] = dout4(g, c);
            s += dot(k[c], qi[c]);
            dp += dot(v[c], gi[c]);
        }
        let row = bh * p.seq + i;
        let pij = exp(s - lse[row]);
        var w = pij;
        if (DROPOUT) {
            let m_ij = mask_weight(key, row * p.seq + j);
            w *= m_ij;
            dp *= m_ij;
        }
        let ds = pij * (dp - delta[row]);
        for (var c = 0u; c < HS4; c++) {
            dv[c] += w * gi[c];
            dk[c] += ds * qi[c];
        }
    }
    for (var c = 0u; c < HS4; c++) {
        store_dqkv4(k_base, c, dk[c] * p.scale);
        store_dqkv4(v_base, c, dv[c]);
    }
}
