//! GPU wrapper of shaders/positional.wgsl (and reduce.wgsl's column sum for the backward); CPU
//! reference in src/cpu/positional.rs.
//!
//! A learned positional embedding (GPT-2's `wpe`): row t of a `[block_max, cols]` table added to
//! the token at position t of every sample. Its backward sums dy over the batch in a fixed order
//! (deterministic, no atomics); the gradient w.r.t. x is dy itself, so it has no kernel.

use super::check::disjoint;
use super::reduce::column_sum;
use super::{lane_family, ACTIVATION_WGSL, LANES_SCALAR_WGSL, LANES_VEC4_WGSL};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

const POSITIONAL_WGSL: &str = include_str!("../../shaders/positional.wgsl");
const STORAGE: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite];

pub(crate) const POSITIONAL: KernelFamily = KernelFamily {
    name: "positional",
    sources: &[ACTIVATION_WGSL, LANES_SCALAR_WGSL, POSITIONAL_WGSL],
    storage: STORAGE,
};

/// The same over vec4s of four columns, where cols is a multiple of 4 and the views 16-byte
/// aligned.
pub(crate) const POSITIONAL_VEC4: KernelFamily = KernelFamily {
    name: "positional_vec4",
    sources: &[ACTIVATION_WGSL, LANES_VEC4_WGSL, POSITIONAL_WGSL],
    storage: STORAGE,
};

/// The family and lane width for rows of `cols` in `views`: vec4s where they fit.
fn lanes(cols: usize, views: &[&Tensor]) -> (&'static KernelFamily, usize) {
    lane_family(cols, views, &POSITIONAL, &POSITIONAL_VEC4)
}

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PositionalParams {
    total: u32,
    per_sample: u32,
    samples: u32,
    _pad: u32,
}

/// (batch, block, cols, block_max) of a `[batch, block, cols]` f32 tensor `x` (named `x_name`)
/// and a `[block_max ≥ block, cols]` table `table` (named `table_name`); at most 2³² − 1 values
/// in each.
fn check(op: &str, x_name: &str, x: &Tensor, table_name: &str, table: &Tensor) -> Result<[usize; 4]> {
    x.expect_dtype(op, DType::F32)?;
    table.expect_dtype(op, DType::F32)?;
    let shapes = [(x_name, x.shape()), (table_name, table.shape())];
    let [batch, block, cols] = x.shape()[..] else {
        return Err(WgnnError::shape_of(
            op,
            &shapes,
            format!("{x_name} must be [batch, block, cols], got {:?}", x.shape()),
        ));
    };
    x.expect_nonempty(op)?;
    let (block_max, table_cols) = table.dims2(op)?;
    if table_cols != cols || block_max < block {
        return Err(WgnnError::shape_of(
            op,
            &shapes,
            format!(
                "{x_name} {:?} needs {table_name} of [≥ {block}, {cols}] (a row per position), got {:?}",
                x.shape(),
                table.shape()
            ),
        ));
    }
    if x.len() > u32::MAX as usize || table.len() > u32::MAX as usize {
        return Err(WgnnError::shape_of(op, &shapes, "more than 2^32 - 1 values in one tensor"));
    }
    Ok([batch, block, cols, block_max])
}

/// out[b, t, :] = x[b, t, :] + pos[t, :]. x, out: `[batch, block, cols]`; pos:
/// `[block_max ≥ block, cols]` (rows past block unread). One dispatch.
pub fn positional_add_forward(gpu: &Gpu, x: &Tensor, pos: &Tensor, out: &Tensor) -> Result<Plan> {
    const OP: &str = "positional_add_forward";
    let [batch, block, cols, _] = check(OP, "x", x, "pos", pos)?;
    if out.shape() != x.shape() || out.dtype() != DType::F32 {
        return Err(WgnnError::shape_of(
            OP,
            &[("x", x.shape()), ("out", out.shape())],
            format!("out must be f32 {:?} like x, got {} {:?}", x.shape(), out.dtype().name(), out.shape()),
        ));
    }
    disjoint(OP, &[("x", x), ("pos", pos), ("out", out)])?;
    let (family, lanes) = lanes(cols, &[x, pos, out]);
    let per_sample = block * cols / lanes;
    let params = PositionalParams { total: 0, per_sample: per_sample as u32, samples: batch as u32, _pad: 0 };
    // x over a sample's values, y over the samples (folded into z past the limit).
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let grid = [per_sample.div_ceil(WG as usize) as u32, batch.min(max) as u32, batch.div_ceil(max) as u32];
    Ok(dispatch(gpu, family, "positional_add_forward", &[("WG", WG as f64)], &params, &[x, pos, out], grid)?.into())
}

/// dpos[t, :] (+)= Σ_b dy[b, t, :] for t < block, summed over the batch in order
/// (`accumulate`: add, else overwrite; overwriting also zeroes the rows t ≥ block, which this
/// batch did not use). dy: `[batch, block, cols]`; dpos: `[block_max ≥ block, cols]`. The
/// gradient w.r.t. x is dy itself. One or two dispatches (a batch past 4,096 samples: three).
pub fn positional_add_backward(gpu: &Gpu, dy: &Tensor, dpos: &Tensor, accumulate: bool) -> Result<Plan> {
    const OP: &str = "positional_add_backward";
    let [batch, block, cols, block_max] = check(OP, "dy", dy, "dpos", dpos)?;
    disjoint(OP, &[("dy", dy), ("dpos", dpos)])?;
    let used = block * cols;
    let mut plan = column_sum(gpu, &dy.reshape(&[batch, used])?, &dpos.view(0, &[used])?, accumulate)?;
    if !accumulate && block < block_max {
        let (family, lanes) = lanes(cols, &[dpos]);
        let tail = (block_max - block) * cols / lanes;
        let params = PositionalParams { total: tail as u32, per_sample: (used / lanes) as u32, samples: 0, _pad: 0 };
        let d = dummy(gpu)?;
        let grid = grid_1d(gpu, tail, WG);
        let slots = [&d, &d, dpos];
        plan.push(dispatch(gpu, family, "positional_clear_tail", &[("WG", WG as f64)], &params, &slots, grid)?);
    }
    Ok(plan)
}
