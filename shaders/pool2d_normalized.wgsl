// Max pooling of a batch norm's output computed on the way (src/kernels/pool2d_normalized.rs):
// the training step's batch norm → activation → max pool without the normalised image written
// and read back. Appended to activation.wgsl, a lane width and pool2d.wgsl (its bindings,
// Params, window_cells and NaN rule): `src` is the batch norm's input x [rows, H, W, C], and
//   max_pool2d_forward_normalized: y[o] = max over window o of act(γ·((x − μ)·inv_std) + β),
//                                  argmax as max_pool2d_forward's
// with μ, inv_std the batch's statistics (bn_finalize_stats's) and act = ACT (slope p.slope):
// bn_normalize's expression, so y and argmax are those of the two passes to the bit.

@group(0) @binding(6) var<storage, read> gamma: array<V>;
@group(0) @binding(7) var<storage, read> beta: array<V>;
@group(0) @binding(8) var<storage, read> mean: array<V>;
@group(0) @binding(9) var<storage, read> inv_std: array<V>;

// Outputs per invocation: OUTS consecutive windows along the output's rows (o, o + C, ..) of one
// channel (vec4), so that its four parameters are loaded once for them and the window's position
// is found by division once (on lavapipe every load is a loop over the SIMD lanes, and a division
// by a uniform is one per lane: the four parameters were 4 of an output's 11 memory accesses, the
// position 6 divisions).
override OUTS: u32 = 4u;

@compute @workgroup_size(WG)
fn max_pool2d_forward_normalized(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let j = linear_index(wid, nwg, lid);
    let windows = p.rows * p.ho * p.wo;
    let c = j % p.c;
    let w0 = j / p.c * OUTS;
    if (w0 >= windows) { return; }
    let g = gamma[c];
    let m = mean[c];
    let s = inv_std[c];
    let b = beta[c];
    // Window w0's place, then the next ones' by steps along the rows.
    var ox = w0 % p.wo;
    var oy = (w0 / p.wo) % p.ho;
    var r = w0 / (p.wo * p.ho);
    for (var q = 0u; q < min(OUTS, windows - w0); q++) {
        let cells = cells_at(r, oy, ox, c);
        // From −∞ with the first cell's index: the first cell then wins as it did as the start
        // (a NaN, or anything above −∞; a window of −∞ keeps its first index), one load fewer.
        // −∞'s bits through a `let`: a constant expression that is infinite is a shader-creation
        // error in WGSL (Tint refuses it; naga lets it through).
        let neg_inf_bits = 0xff800000u;
        var best = splat(bitcast<f32>(neg_inf_bits));
        var best_i = scalar_indices(cells.base + (cells.y0 * p.w + cells.x0) * p.c);
        for (var y = cells.y0; y < cells.y1; y++) {
            for (var x = cells.x0; x < cells.x1; x++) {
                let i = cells.base + (y * p.w + x) * p.c;
                let v = act_forward_v(ACT, g * ((src[i] - m) * s) + b, p.slope);
                let take = !is_nan(best) & (is_nan(v) | (v > best));
                best = select(best, v, take);
                best_i = select(best_i, scalar_indices(i), take);
            }
        }
        let o = (w0 + q) * p.c + c;
        dst[o] = best;
        argmax_out[o] = best_i;
        ox += 1u;
        if (ox == p.wo) {
            ox = 0u;
            oy += 1u;
            if (oy == p.ho) {
                oy = 0u;
                r += 1u;
            }
        }
    }
}
