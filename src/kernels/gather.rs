//! GPU wrapper of shaders/gather.wgsl; CPU reference in src/cpu/gather.rs.

use super::{dispatch, Access, KernelFamily, Plan};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::tensor::{DType, Tensor};

pub(crate) const GATHER: KernelFamily = KernelFamily {
    name: "gather",
    sources: &[include_str!("../../shaders/gather.wgsl")],
    storage: &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
};

const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    rows: u32,
    dim: u32,
    start: u32,
    stride: u32,
    scale: f32,
    shift: f32,
    _pad0: u32,
    _pad1: u32,
}

/// A data set resident on the GPU: features as packed u8 (4 per u32 word) or f32 bits, labels u32.
pub struct GpuRows {
    /// [words] u32: the raw feature bytes or f32 bits.
    pub features: Tensor,
    /// [total_rows] u32.
    pub labels: Tensor,
    pub total_rows: usize,
    pub dim: usize,
    pub source_u8: bool,
    /// v·scale + shift on the way out.
    pub scale: f32,
    pub shift: f32,
    /// [2, dim]: per-feature mean then std, applied after scale/shift.
    pub mean_std: Option<Tensor>,
}

/// Where a gather takes its batch from within the index list.
#[derive(Clone, Copy, Debug)]
pub enum BatchStart {
    /// Fixed element offset into the index list.
    At(usize),
    /// `epoch_step[0] * stride`: the training step's own position, read on the GPU.
    Counter { stride: usize },
}

/// x[r, :] = norm(src[idx[start + r], :]), y[r] = labels[idx[start + r]].
/// idx: [n] u32, x: [rows, dim] f32, y: [rows] u32, epoch_step: u32 [1] (read only for
/// `BatchStart::Counter`).
pub fn gather_rows(
    gpu: &Gpu,
    src: &GpuRows,
    idx: &Tensor,
    epoch_step: &Tensor,
    start: BatchStart,
    x: &Tensor,
    y: &Tensor,
) -> Result<Plan> {
    const OP: &str = "gather_rows";
    let (rows, dim) = x.dims2(OP)?;
    x.expect_nonempty(OP)?;
    idx.expect_dtype(OP, DType::U32)?;
    y.expect_dtype(OP, DType::U32)?;
    src.labels.expect_dtype(OP, DType::U32)?;
    if dim != src.dim || y.len() != rows {
        return Err(WgnnError::shape(
            OP,
            format!("data set has {} features; x is {:?}, y is {:?}", src.dim, x.shape(), y.shape()),
        ));
    }
    let (fixed_start, stride, from_counter) = match start {
        BatchStart::At(s) => {
            if s + rows > idx.len() {
                return Err(WgnnError::shape(
                    OP,
                    format!("rows {s}..{} past the index list of {}", s + rows, idx.len()),
                ));
            }
            (s, 0, false)
        }
        BatchStart::Counter { stride } => (0, stride, true),
    };
    let dummy = super::dummy(gpu)?;
    let params = GatherParams {
        rows: rows as u32,
        dim: dim as u32,
        start: fixed_start as u32,
        stride: stride as u32,
        scale: src.scale,
        shift: src.shift,
        _pad0: 0,
        _pad1: 0,
    };
    let constants = [
        ("SOURCE_U8", src.source_u8 as u32 as f64),
        ("STANDARDIZE", src.mean_std.is_some() as u32 as f64),
        ("START_FROM_COUNTER", from_counter as u32 as f64),
        ("WG", WG as f64),
    ];
    let mean_std = src.mean_std.as_ref().unwrap_or(&dummy);
    // One grid row per batch row: the y dimension must hold them.
    let max_rows = gpu.limits().max_compute_workgroups_per_dimension as usize;
    if rows > max_rows {
        return Err(WgnnError::invalid(OP, format!("{rows} rows in one gather; at most {max_rows}")));
    }
    // Whole packed words per row: one invocation per word.
    let (entry, per_row) = if src.source_u8 && dim % 4 == 0 { ("gather_rows_u8x4", dim / 4) } else { (OP, dim) };
    let grid = [per_row.div_ceil(WG as usize) as u32, rows as u32, 1];
    let d = dispatch(
        gpu,
        &GATHER,
        entry,
        &constants,
        &params,
        &[&src.features, idx, &src.labels, mean_std, epoch_step, x, y],
        grid,
    )?;
    Ok(d.into())
}

pub(crate) const COUNTERS: KernelFamily = KernelFamily {
    name: "counters",
    sources: &[include_str!("../../shaders/counters.wgsl")],
    storage: &[Access::ReadWrite, Access::ReadWrite],
};

/// epoch_step[0] += 1, global_step[0] += 1.  Both u32 [1], in separate buffers (each bindable).
pub fn advance_counters(gpu: &Gpu, epoch_step: &Tensor, global_step: &Tensor) -> Result<Plan> {
    const OP: &str = "advance_counters";
    for t in [epoch_step, global_step] {
        t.expect_dtype(OP, DType::U32)?;
        if t.len() != 1 {
            return Err(WgnnError::shape(OP, format!("counters are u32 [1], got {:?}", t.shape())));
        }
    }
    if epoch_step.overlaps(global_step) {
        return Err(WgnnError::invalid(OP, "the two counters share memory"));
    }
    Ok(dispatch(gpu, &COUNTERS, OP, &[], &[0u32; 4], &[epoch_step, global_step], [1, 1, 1])?.into())
}
