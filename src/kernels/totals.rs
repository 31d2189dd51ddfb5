//! GPU wrapper of shaders/totals.wgsl; CPU reference in src/cpu/totals.rs.

use super::check::{disjoint, expect_len};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::{Dispatch, Plan};
use crate::registry::{dispatch, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

pub(crate) const TOTALS: KernelFamily = KernelFamily {
    name: "totals",
    sources: &[include_str!("../../shaders/totals.wgsl")],
    storage: &[Access::ReadWrite, Access::ReadWrite, Access::ReadWrite],
};

/// Must match `WG` in totals.wgsl.
const WG: usize = 256;
/// Rows one workgroup sums: 8,192 loop iterations per invocation, far below the loop cap.
/// A batch longer than this is summed in blocks, then the partials summed again.
pub const TOTALS_BLOCK: usize = WG * 8192;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TotalsParams {
    rows: u32,
    block: u32,
    stride: u32,
    off_a: u32,
    off_b: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

/// out (+)= (Σ a, Σ b).  a, b: `[rows]`, out: `[2]`. A fixed-order reduction: one workgroup when
/// rows ≤ [`TOTALS_BLOCK`], else blocks summed into a scratch tensor owned by the plan, then again.
pub fn totals(gpu: &Gpu, a: &Tensor, b: &Tensor, out: &Tensor, accumulate: bool) -> Result<Plan> {
    totals_blocked(gpu, a, b, out, accumulate, TOTALS_BLOCK)
}

/// [`totals`] with `block` rows per workgroup (a multiple of 256, at most [`TOTALS_BLOCK`]); small
/// blocks exercise the multi-pass path on small inputs.
pub fn totals_blocked(gpu: &Gpu, a: &Tensor, b: &Tensor, out: &Tensor, accumulate: bool, block: usize) -> Result<Plan> {
    const OP: &str = "totals";
    if block == 0 || !block.is_multiple_of(WG) || block > TOTALS_BLOCK {
        return Err(WgnnError::invalid(
            OP,
            format!("block of {block} rows must be a positive multiple of {WG}, at most {TOTALS_BLOCK}"),
        ));
    }
    let rows = a.len();
    a.expect_nonempty(OP)?;
    expect_len(OP, "a", a, DType::F32, rows, "[rows]")?;
    expect_len(OP, "b", b, DType::F32, rows, &format!("[{rows}] like a"))?;
    expect_len(OP, "out", out, DType::F32, 2, "[2]")?;
    disjoint(OP, &[("a", a), ("out", out)])?;
    disjoint(OP, &[("b", b), ("out", out)])?;

    let mut plan = Plan::new();
    let (mut a, mut b) = (a.clone(), b.clone());
    let (mut stride, mut off_b) = (1u32, 0u32);
    let mut rows_left = rows;
    while rows_left > block {
        let groups = rows_left.div_ceil(block);
        let partial = Tensor::zeros(gpu, &[groups, 2])?;
        plan.push(totals_dispatch(gpu, &a, &b, &partial, rows_left, block, stride, off_b, false, groups)?);
        (a, b) = (partial.clone(), partial);
        (stride, off_b) = (2, 1);
        rows_left = groups;
    }
    plan.push(totals_dispatch(gpu, &a, &b, out, rows_left, block, stride, off_b, accumulate, 1)?);
    Ok(plan)
}

#[allow(clippy::too_many_arguments)]
fn totals_dispatch(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    rows: usize,
    block: usize,
    stride: u32,
    off_b: u32,
    accumulate: bool,
    groups: usize,
) -> Result<Dispatch> {
    let params = TotalsParams {
        rows: rows as u32,
        block: block as u32,
        stride,
        off_a: 0,
        off_b,
        accumulate: accumulate as u32,
        _pad0: 0,
        _pad1: 0,
    };
    dispatch(gpu, &TOTALS, "totals", &[], &params, &[a, b, out], [groups as u32, 1, 1])
}
