// The step counters of a training step that skips batches whose loss is not finite (`fit` with
// skip_nonfinite_batches). One invocation, recorded after the loss and the backward pass, before
// the update. (The step's gather advances the batch position, skipped or not.)
//   guard_step: if batch_totals[0] (the batch's Σ loss) is finite:
//                   totals[0] += batch_totals[0]; totals[1] += batch_totals[1]
//                   counters[0] += 1 (t, the updates so far); counters[1] = 0
//               else:
//                   totals[2] += 1 (skipped batches); totals[3] += rows (their rows)
//                   counters[1] = 1: the optimizer kernels, bound to counters [t, skip], return
//                   at once, so parameters, optimizer state and t stay as they were
//               batch_totals = 0 (the loss kernel adds the next batch's sums to it)
//   counters: u32 [2]; batch_totals: f32 [2]; totals: f32 [4].

struct Params {
    rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> counters: array<u32>;
@group(0) @binding(2) var<storage, read_write> batch_totals: array<f32>;
@group(0) @binding(3) var<storage, read_write> totals: array<f32>;

// NaN and ±inf have every exponent bit set (WGSL has no isnan/isinf, and a compiler may assume
// floats are finite, so the test is on the bits).
fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(1)
fn guard_step() {
    if (is_finite(batch_totals[0])) {
        totals[0] += batch_totals[0];
        totals[1] += batch_totals[1];
        counters[0] += 1u;
        counters[1] = 0u;
    } else {
        totals[2] += 1.0;
        totals[3] += f32(p.rows);
        counters[1] = 1u;
    }
    batch_totals[0] = 0.0;
    batch_totals[1] = 0.0;
}
