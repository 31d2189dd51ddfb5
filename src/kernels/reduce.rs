//! GPU wrapper of shaders/reduce.wgsl; CPU reference in src/cpu/reduce.rs.

use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::{Dispatch, Plan};
use crate::registry::{dispatch, Access, KernelFamily};
use crate::tensor::Tensor;

pub(crate) const REDUCE: KernelFamily = KernelFamily {
    name: "reduce",
    sources: &[include_str!("../../shaders/reduce.wgsl")],
    storage: &[Access::Read, Access::ReadWrite],
};

/// Rows one invocation sums: far below the loop cap ([`crate::profile::LOOP_CAP`]).
pub const COLUMN_SUM_CHUNK: usize = 4096;
const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColumnSumParams {
    rows: u32,
    cols: u32,
    chunk: u32,
    accumulate: u32,
}

/// `out[c]` (+)= Σ_r x[r, c].  x: [rows, cols], out: `[cols]`. Rows past `COLUMN_SUM_CHUNK` are
/// summed in chunks into a scratch tensor owned by the plan, then summed again.
pub fn column_sum(gpu: &Gpu, x: &Tensor, out: &Tensor, accumulate: bool) -> Result<Plan> {
    const OP: &str = "column_sum";
    let (rows, cols) = x.dims2(OP)?;
    x.expect_nonempty(OP)?;
    if out.len() != cols {
        return Err(WgnnError::shape_of(
            OP,
            &[("x", x.shape()), ("out", out.shape())],
            format!("x is {:?}, so out must have {cols} values, got {:?}", x.shape(), out.shape()),
        ));
    }
    if x.overlaps(out) {
        return Err(WgnnError::invalid(OP, "x and out share memory"));
    }
    let mut plan = Plan::new();
    let mut input = x.clone();
    let mut rows_left = rows;
    while rows_left > COLUMN_SUM_CHUNK {
        let chunks = rows_left.div_ceil(COLUMN_SUM_CHUNK);
        let partial = Tensor::zeros(gpu, &[chunks, cols])?;
        plan.push(column_sum_dispatch(gpu, &input, &partial, rows_left, cols, false)?);
        input = partial;
        rows_left = chunks;
    }
    plan.push(column_sum_dispatch(gpu, &input, out, rows_left, cols, accumulate)?);
    Ok(plan)
}

fn column_sum_dispatch(
    gpu: &Gpu,
    x: &Tensor,
    out: &Tensor,
    rows: usize,
    cols: usize,
    accumulate: bool,
) -> Result<Dispatch> {
    let chunks = rows.div_ceil(COLUMN_SUM_CHUNK);
    let params = ColumnSumParams {
        rows: rows as u32,
        cols: cols as u32,
        chunk: COLUMN_SUM_CHUNK as u32,
        accumulate: accumulate as u32,
    };
    dispatch(gpu, &REDUCE, "column_sum", &[], &params, &[x, out], [cols.div_ceil(WG as usize) as u32, chunks as u32, 1])
}
