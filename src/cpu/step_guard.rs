//! CPU reference of shaders/step_guard.wgsl.

/// A finite `batch_totals[0]` adds batch_totals to totals[0..2] and advances t
/// (`counters[0]`) with `counters[1]` = 0; a non-finite one counts a skipped batch of `rows` rows in
/// totals[2..4] and sets `counters[1]` = 1. batch_totals is zeroed.
pub fn guard_step(counters: &mut [u32; 2], batch_totals: &mut [f32; 2], totals: &mut [f32; 4], rows: u32) {
    if batch_totals[0].is_finite() {
        totals[0] += batch_totals[0];
        totals[1] += batch_totals[1];
        counters[0] += 1;
        counters[1] = 0;
    } else {
        totals[2] += 1.0;
        totals[3] += rows as f32;
        counters[1] = 1;
    }
    *batch_totals = [0.0; 2];
}
