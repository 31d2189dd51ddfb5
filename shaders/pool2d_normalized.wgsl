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

@compute @workgroup_size(WG)
fn max_pool2d_forward_normalized(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = linear_index(wid, nwg, lid);
    if (o >= p.rows * p.ho * p.wo * p.c) { return; }
    let c = o % p.c;
    let g = gamma[c];
    let m = mean[c];
    let s = inv_std[c];
    let b = beta[c];
    let cells = window_cells(o);
    let first = cells.base + (cells.y0 * p.w + cells.x0) * p.c;
    var best = act_forward_v(ACT, g * ((src[first] - m) * s) + b, p.slope);
    var best_i = scalar_indices(first);
    for (var y = cells.y0; y < cells.y1; y++) {
        for (var x = cells.x0; x < cells.x1; x++) {
            let i = cells.base + (y * p.w + x) * p.c;
            let v = act_forward_v(ACT, g * ((src[i] - m) * s) + b, p.slope);
            let take = !is_nan(best) & (is_nan(v) | (v > best));
            best = select(best, v, take);
            best_i = select(best_i, scalar_indices(i), take);
        }
    }
    dst[o] = best;
    argmax_out[o] = best_i;
}
