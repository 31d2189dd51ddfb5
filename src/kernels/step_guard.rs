//! GPU wrapper of shaders/step_guard.wgsl; CPU reference in src/cpu/step_guard.rs.

use super::check::{disjoint, expect_len};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub(crate) const STEP_GUARD: KernelFamily = KernelFamily {
    name: "step_guard",
    sources: &[include_str!("../../shaders/step_guard.wgsl")],
    storage: &[Access::ReadWrite; 3],
};

/// The counters of a step that skips a batch whose loss is not finite: if `batch_totals[0]` is
/// finite, totals[0..2] += batch_totals and `counters[0]` (t) += 1 with `counters[1]` = 0; else
/// `totals[2]` += 1, `totals[3]` += `rows` and `counters[1]` = 1, which makes the optimizer kernels
/// given `counters` ([t, skip] u32 `[2]`) leave everything unchanged. Zeroes batch_totals (`[2]`
/// f32, what the step's loss kernel added to) for the next step. (The step's gather advances the
/// batch position.)
/// totals: `[4]` f32 (Σ loss, Σ correct, skipped batches, skipped rows).
pub fn guard_step(gpu: &Gpu, counters: &Tensor, batch_totals: &Tensor, totals: &Tensor, rows: usize) -> Result<Plan> {
    const OP: &str = "guard_step";
    expect_len(OP, "counters", counters, DType::U32, 2, "[2] (t, skip)")?;
    expect_len(OP, "batch_totals", batch_totals, DType::F32, 2, "[2]")?;
    expect_len(OP, "totals", totals, DType::F32, 4, "[4]")?;
    let rows = u32::try_from(rows).map_err(|_| WgnnError::invalid(OP, format!("{rows} rows is past u32")))?;
    let named = [("counters", counters), ("batch_totals", batch_totals), ("totals", totals)];
    disjoint(OP, &named)?;
    let params = [rows, 0, 0, 0];
    let bindings = [counters, batch_totals, totals];
    Ok(dispatch(gpu, &STEP_GUARD, OP, &[], &params, &bindings, [1, 1, 1])?.into())
}
