// Multi-head self-attention, the clear version (llm.c's layout): every score is written. Causal
// (p.causal = 1: query i attends to keys j ≤ i) or not (to every key: "j ≤ i" below reads j < T,
// "i ≥ j" reads i < T, and no entry is masked).
//   qkv:   [B, T, 3C]   each token's query | key | value, each [C] = NH heads of HS = C / NH
//   out:   [B, T, C]    out[b, i, h·HS + d] = Σ_{j ≤ i} P[b, h, i, j] · v[b, j, h, d]
//   probs: [B, NH, T, T] P[b, h, i, j] = softmax_j(q_i·k_j / √HS) for j ≤ i, exactly 0 for j > i
// Forward:  attention_scores (one invocation per (b, h, i, j)) → attention_softmax (per row, the
//           row maximum subtracted) → attention_values (per output element).
// Backward (dout: [B, T, C] → dqkv: [B, T, 3C], overwritten; dscores: [B, NH, T, T] scratch):
//   attention_backward_scores:  dP[b, h, i, j] = dout_i·v_j (0 for j > i)
//   attention_backward_softmax: dS = P ⊙ (dP − Σ_j P ⊙ dP) / √HS, in place, per row
//   attention_backward_qkv:     dq_i = Σ_{j ≤ i} dS_ij k_j,  dk_j = Σ_{i ≥ j} dS_ij q_i,
//                               dv_j = Σ_{i ≥ j} P_ij dout_i, one invocation per element of dqkv.
// With dropout (the DROPOUT pipelines, attention_dropout.wgsl's mask M, weights 0 or 1/(1 − p)):
//   attention_scores also zeroes the masked entries of `dropped` (bound at dscores' slot)
//   attention_softmax also writes dropped = P ⊙ M (at dscores' slot); attention_values reads it
//                     (the wrapper binds it at probs' slot), so out = (P ⊙ M)·v
//   attention_backward_scores: dP = (dout_i·v_j) ⊙ M;  the softmax's gradient then uses P as
//                     before (Σ_j P dP = dout_i·out_i); dv = (P ⊙ M)ᵀ dout (dropped bound at
//                     probs' slot for attention_backward_qkv).
// Each invocation loops at most 3·T or HS times: the wrapper keeps both far below lavapipe's
// 65,535-iteration loop cap. No workgroup memory and no subgroup operations, so any subgroup size
// gives the same result.

override WG: u32 = 64u;

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

// All read_write: views of one activation buffer bound read-only and writable in the same
// dispatch would conflict in wgpu's usage tracking.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> dscores: array<f32>;
@group(0) @binding(6) var<storage, read_write> dqkv: array<f32>;

fn item_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Where token (b, i)'s part (0 query, 1 key, 2 value) of head h starts in qkv.
fn qkv_at(part: u32, b: u32, i: u32, h: u32) -> u32 {
    return (b * p.seq + i) * 3u * p.channels + part * p.channels + h * p.head_size;
}

// One past the last key query i attends to.
fn key_end(i: u32) -> u32 {
    return select(p.seq, i + 1u, p.causal != 0u);
}

// The first query that attends to key j.
fn query_start(j: u32) -> u32 {
    return select(0u, j, p.causal != 0u);
}

// Score element idx of [B, NH, T, T]: (b, h, i, j).
fn score_coords(idx: u32) -> vec4<u32> {
    let t = p.seq;
    let j = idx % t;
    let i = (idx / t) % t;
    let bh = idx / (t * t);
    return vec4<u32>(bh / p.heads, bh % p.heads, i, j);
}

@compute @workgroup_size(WG)
fn attention_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = item_index(wid, nwg, lid);
    if (idx >= p.batch * p.heads * p.seq * p.seq) { return; }
    let s = score_coords(idx);
    if (s.w >= key_end(s.z)) {
        probs[idx] = 0.0;
        if (DROPOUT) {
            dscores[idx] = 0.0;
        }
        return;
    }
    let q = qkv_at(0u, s.x, s.z, s.y);
    let k = qkv_at(1u, s.x, s.w, s.y);
    var acc = 0.0;
    for (var d = 0u; d < p.head_size; d++) {
        acc += qkv[q + d] * qkv[k + d];
    }
    probs[idx] = acc * p.scale;
}

@compute @workgroup_size(WG)
fn attention_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = item_index(wid, nwg, lid);
    if (r >= p.batch * p.heads * p.seq) { return; }
    let base = r * p.seq;
    let n = key_end(r % p.seq);
    var m = probs[base];
    for (var j = 1u; j < n; j++) {
        m = max(m, probs[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < n; j++) {
        sum += exp(probs[base + j] - m);
    }
    let inv = 1.0 / sum;
    if (DROPOUT) {
        let key = mask_key();
        for (var j = 0u; j < n; j++) {
            let pj = exp(probs[base + j] - m) * inv;
            probs[base + j] = pj;
            dscores[base + j] = pj * mask_weight(key, base + j);
        }
        return;
    }
    for (var j = 0u; j < n; j++) {
        probs[base + j] = exp(probs[base + j] - m) * inv;
    }
}

@compute @workgroup_size(WG)
fn attention_values(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = item_index(wid, nwg, lid);
    if (idx >= p.batch * p.seq * p.channels) { return; }
    let c = idx % p.channels;
    let bi = idx / p.channels;
    let b = bi / p.seq;
    let i = bi % p.seq;
    let h = c / p.head_size;
    let row = ((b * p.heads + h) * p.seq + i) * p.seq;
    let v = qkv_at(2u, b, 0u, h) + c % p.head_size;
    let stride = 3u * p.channels;
    var acc = 0.0;
    for (var j = 0u; j < key_end(i); j++) {
        acc += probs[row + j] * qkv[v + j * stride];
    }
    out[idx] = acc;
}

@compute @workgroup_size(WG)
fn attention_backward_scores(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = item_index(wid, nwg, lid);
    if (idx >= p.batch * p.heads * p.seq * p.seq) { return; }
    let s = score_coords(idx);
    if (s.w >= key_end(s.z)) {
        dscores[idx] = 0.0;
        return;
    }
    let g = (s.x * p.seq + s.z) * p.channels + s.y * p.head_size;
    let v = qkv_at(2u, s.x, s.w, s.y);
    var acc = 0.0;
    for (var d = 0u; d < p.head_size; d++) {
        acc += dout[g + d] * qkv[v + d];
    }
    if (DROPOUT) {
        acc *= mask_weight(mask_key(), idx);
    }
    dscores[idx] = acc;
}

@compute @workgroup_size(WG)
fn attention_backward_softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = item_index(wid, nwg, lid);
    if (r >= p.batch * p.heads * p.seq) { return; }
    let base = r * p.seq;
    let n = key_end(r % p.seq);
    var row_dot = 0.0;
    for (var j = 0u; j < n; j++) {
        row_dot += probs[base + j] * dscores[base + j];
    }
    for (var j = 0u; j < n; j++) {
        dscores[base + j] = probs[base + j] * (dscores[base + j] - row_dot) * p.scale;
    }
}

@compute @workgroup_size(WG)
fn attention_backward_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = item_index(wid, nwg, lid);
    let c3 = 3u * p.channels;
    if (idx >= p.batch * p.seq * c3) { return; }
    let part = (idx % c3) / p.channels;
    let c = idx % p.channels;
    let bi = idx / c3;
    let b = bi / p.seq;
    let i = bi % p.seq;
    let h = c / p.head_size;
    let d = c % p.head_size;
    let rows = (b * p.heads + h) * p.seq;
    var acc = 0.0;
    if (part == 0u) {
        // dq_i = Σ_{j ≤ i} dS_ij k_j: along row i of dS.
        let k = qkv_at(1u, b, 0u, h) + d;
        for (var j = 0u; j < key_end(i); j++) {
            acc += dscores[(rows + i) * p.seq + j] * qkv[k + j * c3];
        }
    } else if (part == 1u) {
        // dk_i = Σ_{r ≥ i} dS_ri q_r: down column i of dS.
        let q = qkv_at(0u, b, 0u, h) + d;
        for (var r = query_start(i); r < p.seq; r++) {
            acc += dscores[(rows + r) * p.seq + i] * qkv[q + r * c3];
        }
    } else {
        // dv_i = Σ_{r ≥ i} P_ri dout_r: down column i of P (of P ⊙ M with dropout).
        let g = b * p.seq * p.channels + c;
        for (var r = query_start(i); r < p.seq; r++) {
            acc += probs[(rows + r) * p.seq + i] * dout[g + r * p.channels];
        }
    }
    dqkv[idx] = acc;
}
