// flash_attention.wgsl's kernels for CPU adapters (lavapipe), each key's (forward, dq) or query's
// (dk/dv) head loaded once per subgroup instead of once per invocation. Appended to
// flash_attention.wgsl and flash_attention_vec4.wgsl (heads of a multiple of 4, 16-byte aligned
// views) and the dropout sources: it uses their Params, bindings, constants, qkv_at/out_at, loads,
// stores and mask. Needs Features::SUBGROUP and subgroups of at least 8 (the wrapper checks).
//
// lavapipe runs a storage load whose address is not a compile-time constant as a loop over its
// SIMD lanes, so in the plain kernels every invocation of a subgroup pays for its own copy of the
// same key row. Here a workgroup is one subgroup of 8 invocations, all on one (b, h): lane l loads
// vec4 l (and l + 8) of the shared row, and subgroupBroadcast from a constant lane hands each vec4
// to all (one extract and a splat on lavapipe): 8× fewer loads for heads of 32.
//   flash_attention_forward_sg:      lane l owns query rows first + l·ROWS .. + ROWS − 1 of the
//                                    workgroup's 8·ROWS, keys in tiles of BC as the plain forward;
//   flash_attention_backward_dq_sg:  the same rows, D written first, then dq;
//   flash_attention_backward_dkv_sg: lane l owns key row first + l of the workgroup's 8; queries
//                                    from the workgroup's first key on.
// The key loops of the forward and dq run to the workgroup's last row's last key, a bound every
// lane shares (so that all broadcast together); a key after a lane's query scores LOWEST or adds
// nothing, and in dk/dv a query before the lane's key adds nothing. The arithmetic per (query,
// key) is the plain kernels', in the same order.

const SG: u32 = 8u;

// A head row of HS4 vec4s whose vec4 c lane c % 8 loaded: into own0 for c < 8, own1 after.
fn sg_head(own0: vec4<f32>, own1: vec4<f32>) -> array<vec4<f32>, HS4_MAX> {
    var r: array<vec4<f32>, HS4_MAX>;
    r[0] = subgroupBroadcast(own0, 0u);
    if (HS4 > 1u) { r[1] = subgroupBroadcast(own0, 1u); }
    if (HS4 > 2u) { r[2] = subgroupBroadcast(own0, 2u); }
    if (HS4 > 3u) { r[3] = subgroupBroadcast(own0, 3u); }
    if (HS4 > 4u) { r[4] = subgroupBroadcast(own0, 4u); }
    if (HS4 > 5u) { r[5] = subgroupBroadcast(own0, 5u); }
    if (HS4 > 6u) { r[6] = subgroupBroadcast(own0, 6u); }
    if (HS4 > 7u) { r[7] = subgroupBroadcast(own0, 7u); }
    if (HS4 > 8u) { r[8] = subgroupBroadcast(own1, 0u); }
    if (HS4 > 9u) { r[9] = subgroupBroadcast(own1, 1u); }
    if (HS4 > 10u) { r[10] = subgroupBroadcast(own1, 2u); }
    if (HS4 > 11u) { r[11] = subgroupBroadcast(own1, 3u); }
    if (HS4 > 12u) { r[12] = subgroupBroadcast(own1, 4u); }
    if (HS4 > 13u) { r[13] = subgroupBroadcast(own1, 5u); }
    if (HS4 > 14u) { r[14] = subgroupBroadcast(own1, 6u); }
    if (HS4 > 15u) { r[15] = subgroupBroadcast(own1, 7u); }
    return r;
}

// This lane's share of the head row of qkv that starts at `base`: vec4 `lane` (the last where the
// head has fewer), and vec4 lane + 8 where the head has more than 8.
fn sg_own_qkv(base: u32, lane: u32) -> array<vec4<f32>, 2> {
    var own: array<vec4<f32>, 2>;
    own[0] = qkv4(base, min(lane, HS4 - 1u));
    if (HS4 > SG) {
        own[1] = qkv4(base, min(lane + SG, HS4 - 1u));
    }
    return own;
}

// The same from dout.
fn sg_own_dout(base: u32, lane: u32) -> array<vec4<f32>, 2> {
    var own: array<vec4<f32>, 2>;
    own[0] = dout4(base, min(lane, HS4 - 1u));
    if (HS4 > SG) {
        own[1] = dout4(base, min(lane + SG, HS4 - 1u));
    }
    return own;
}

// The workgroup's index among the dispatch's (x, y) grid.
fn sg_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

@compute @workgroup_size(8)
fn flash_attention_backward_dq_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) lane: u32) {
    let tile = SG * ROWS;
    let tiles = (p.seq + tile - 1u) / tile;
    let group = sg_group(wid, nwg);
    // A whole workgroup past the end returns, before any subgroup operation.
    if (group >= p.batch * p.heads * tiles) { return; }
    let bh = group / tiles;
    let first = (group % tiles) * tile;
    let b = bh / p.heads;
    let h = bh % p.heads;
    let stride = 3u * p.channels;
    let i0 = first + lane * ROWS;
    // The last key any row of the workgroup attends to: the same in every lane.
    let last_key = select(p.seq - 1u, min(first + tile - 1u, p.seq - 1u), p.causal != 0u);
    var q: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var g: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var dq: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var d_i: array<f32, ROWS_MAX>;
    var lse_i: array<f32, ROWS_MAX>;
    for (var rr = 0u; rr < ROWS; rr++) {
        // Rows past T are computed on the last row and not written.
        let i = min(i0 + rr, p.seq - 1u);
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
    for (var j = 0u; j <= last_key; j++) {
        let k = k_base + j * stride;
        let own_k = sg_own_qkv(k, lane);
        let own_v = sg_own_qkv(k + p.channels, lane);
        let kj = sg_head(own_k[0], own_k[1]);
        let vj = sg_head(own_v[0], own_v[1]);
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
            // A key after the row's query adds nothing (select: its exp may overflow).
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

@compute @workgroup_size(8)
fn flash_attention_backward_dkv_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                   @builtin(local_invocation_index) lane: u32) {
    let tiles = (p.seq + SG - 1u) / SG;
    let group = sg_group(wid, nwg);
    if (group >= p.batch * p.heads * tiles) { return; }
    let bh = group / tiles;
    let first = (group % tiles) * SG;
    let b = bh / p.heads;
    let h = bh % p.heads;
    let stride = 3u * p.channels;
    // A key row past T is computed on the last one and not written.
    let j = min(first + lane, p.seq - 1u);
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
    // From the workgroup's first key on (the same in every lane).
    for (var i = select(0u, first, p.causal != 0u); i < p.seq; i++) {
        let own_q = sg_own_qkv(q_base + i * stride, lane);
        let own_g = sg_own_dout(g_base + i * p.channels, lane);
        let qi = sg_head(own_q[0], own_q[1]);
        let gi = sg_head(own_g[0], own_g[1]);
        var s = 0.0;
        var dp = 0.0;
        for (var c = 0u; c < HS4; c++) {
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
        // A query before the lane's key adds nothing (select: its exp may overflow).
        let attends = i >= j || p.causal == 0u;
        let ds = select(0.0, pij * (dp - delta[row]), attends);
        w = select(0.0, w, attends);
        for (var c = 0u; c < HS4; c++) {
            dv[c] += w * gi[c];
            dk[c] += ds * qi[c];
        }
    }
    if (first + lane < p.seq) {
        for (var c = 0u; c < HS4; c++) {
            store_dqkv4(k_base, c, dk[c] * p.scale);
            store_dqkv4(v_base, c, dv[c]);
        }
    }
}

@compute @workgroup_size(8)
fn flash_attention_forward_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lane: u32) {
    // Lane l owns query rows first + l·ROWS .. + ROWS − 1; rows past T are computed on the last
    // row and not written.
    let tile = SG * ROWS;
    let tiles = (p.seq + tile - 1u) / tile;
    let group = sg_group(wid, nwg);
    if (group >= p.batch * p.heads * tiles) { return; }
    let bh = group / tiles;
    let first = (group % tiles) * tile;
    let b = bh / p.heads;
    let h = bh % p.heads;
    let stride = 3u * p.channels;
    let i0 = first + lane * ROWS;
    // The last key any row of the workgroup attends to: the same in every lane.
    let last_key = select(p.seq - 1u, min(first + tile - 1u, p.seq - 1u), p.causal != 0u);
    var q: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var o: array<vec4<f32>, HS4_MAX * ROWS_MAX>;
    var m: array<f32, ROWS_MAX>;
    var l: array<f32, ROWS_MAX>;
    for (var rr = 0u; rr < ROWS; rr++) {
        let q_base = qkv_at(0u, b, min(i0 + rr, p.seq - 1u), h);
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
    for (var j0 = 0u; j0 <= last_key; j0 += BC) {
        let n = min(BC, last_key + 1u - j0);
        // The tile's scores row by row, as flash_attention_forward's (a key after a row's query
        // scores LOWEST; key 0 is in every row's first tile).
        var s: array<f32, BC * ROWS_MAX>;
        var tile_max: array<f32, ROWS_MAX>;
        for (var rr = 0u; rr < ROWS; rr++) {
            tile_max[rr] = LOWEST;
        }
        for (var jj = 0u; jj < n; jj++) {
            let own = sg_own_qkv(k_base + (j0 + jj) * stride, lane);
            let kj = sg_head(own[0], own[1]);
            for (var rr = 0u; rr < ROWS; rr++) {
                var acc = 0.0;
                for (var c = 0u; c < HS4; c++) {
                    acc += dot(q[rr * HS4 + c], kj[c]);
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
            let own = sg_own_qkv(v_base + (j0 + jj) * stride, lane);
            let vj = sg_head(own[0], own[1]);
            for (var rr = 0u; rr < ROWS; rr++) {
                let pj = exp(s[rr * BC + jj] - m[rr]);
                l[rr] += pj;
                var w = pj;
                if (DROPOUT) {
                    w *= mask_weight(key, (bh * p.seq + i0 + rr) * p.seq + j0 + jj);
                }
                for (var c = 0u; c < HS4; c++) {
                    o[rr * HS4 + c] += w * vj[c];
                }
            }
        }
    }
    for (var rr = 0u; rr < ROWS; rr++) {
        let i = i0 + rr;
        if (i < p.seq) {
            let inv = 1.0 / l[rr];
            let o_base = out_at(b, i, h);
            for (var c = 0u; c < HS4; c++) {
                store_out4(o_base, c, o[rr * HS4 + c] * inv);
            }
            lse[bh * p.seq + i] = m[rr] + log(l[rr]);
        }
    }
}
