//! GPU wrapper of shaders/gather.wgsl; CPU reference in src/cpu/gather.rs.

use super::check::{disjoint, expect_len};
use crate::data::Features;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::profile::KernelNeeds;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

/// Feature chunks the `*_chunked` entries bind: a data set of up to this many bindings of rows.
pub const MAX_FEATURE_CHUNKS: usize = 4;

/// One chunk of features (binding 1), for data sets within one binding: 8 storage bindings, the
/// WebGPU default per stage.
pub(crate) const GATHER: KernelFamily = KernelFamily {
    name: "gather",
    sources: &[include_str!("../../shaders/gather.wgsl")],
    storage: &[
        Access::Read,      // src0
        Access::Read,      // idx
        Access::Read,      // labels
        Access::Read,      // mean_std
        Access::ReadWrite, // epoch_step
        Access::ReadWrite, // x
        Access::ReadWrite, // y
        Access::ReadWrite, // t_counter
    ],
};

/// The same shader with chunks 1..=3 of the features at bindings 9..=11 (the `*_chunked` entries).
pub(crate) const GATHER_CHUNKED: KernelFamily = KernelFamily {
    name: "gather_chunked",
    sources: GATHER.sources,
    storage: &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::Read,
        Access::Read,
        Access::Read,
    ],
};

const WG: u32 = 64;
/// Invocations of the u8x4 entries' 1-D grid: 256 lanes, each a group of WORDS_PER_INVOCATION words.
const WG_U8X4: u32 = 256;
/// `WORDS` in gather.wgsl.
const WORDS_PER_INVOCATION: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    rows: u32,
    dim: u32,
    start: u32,
    stride: u32,
    scale: f32,
    shift: f32,
    rows_per_chunk: u32,
    _pad: u32,
}

/// A data set resident on the GPU: features as packed u8 (4 per u32 word) or f32 bits, labels u32.
/// Build it with [`GpuRows::upload`].
pub struct GpuRows {
    /// The features in chunks of `rows_per_chunk` whole rows (the last may hold fewer), each its
    /// own buffer within the device's binding limit: `[words]` u32, the chunk's rows packed from
    /// word 0 (u8: 4 features per word, the last word zero-padded; f32: one per word, as bits).
    pub chunks: Vec<Tensor>,
    pub rows_per_chunk: usize,
    /// `[total_rows]` u32.
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

/// Feature chunks a gather can bind on `gpu`: [`MAX_FEATURE_CHUNKS`] where the device allows the
/// chunked entries' 11 storage bindings per shader stage, else 1.
pub fn bindable_chunks(gpu: &Gpu) -> usize {
    if gpu.profile().fits(KernelNeeds { storage_buffers: GATHER_CHUNKED.storage.len(), ..Default::default() }) {
        MAX_FEATURE_CHUNKS
    } else {
        1
    }
}

/// The largest chunk of features in bytes: one binding and one buffer, and byte offsets that fit
/// the shader's u32 arithmetic.
fn chunk_capacity(gpu: &Gpu) -> u64 {
    let limits = gpu.limits();
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size).min(u32::MAX as u64) & !3
}

impl GpuRows {
    /// Uploads `labels.len()` rows of `dim` features (row-major), split into as few chunks of
    /// whole rows as the device's `max_storage_buffer_binding_size` and `max_buffer_size` allow:
    /// one for any data set that fits one binding. Scale 1, shift 0, no standardisation: set
    /// those fields afterwards. A data set that needs more chunks than a gather binds
    /// ([`bindable_chunks`]), a row larger than a binding, or labels larger than one binding is a
    /// [`WgnnError::DeviceLimit`] naming the limit and the shape.
    pub fn upload(gpu: &Gpu, features: &Features, labels: &[u32], dim: usize) -> Result<GpuRows> {
        const OP: &str = "upload_rows";
        let rows = labels.len();
        let (source_u8, kind, elem_bytes, len) = match features {
            Features::U8(v) => (true, "u8", 1u64, v.len()),
            Features::F32(v) => (false, "f32", 4u64, v.len()),
        };
        if dim == 0 || len != rows * dim {
            return Err(WgnnError::shape_of(
                OP,
                &[("features", &[len]), ("labels", &[rows])],
                format!("{len} {kind} features for {rows} labels of {dim} features each (dim ≥ 1)"),
            ));
        }
        let shape = format!("[{rows}, {dim}] {kind}");
        let binding = gpu.limits().max_storage_buffer_binding_size;
        let limit = |what: String, bytes: u64| WgnnError::DeviceLimit {
            op: OP.into(),
            what,
            amount: bytes,
            unit: "bytes",
            limit: binding,
            limit_name: "max_storage_buffer_binding_size",
        };
        let capacity = chunk_capacity(gpu);
        let row_bytes = dim as u64 * elem_bytes;
        // u8 chunks hold rows·dim bytes padded to a word: within `capacity` (a multiple of 4)
        // whenever rows·dim is.
        let rows_per_chunk = (capacity / row_bytes).min(rows.max(1) as u64) as usize;
        if rows_per_chunk == 0 {
            return Err(limit(format!("one row of a data set of shape {shape}"), row_bytes));
        }
        let chunks_needed = rows.div_ceil(rows_per_chunk).max(1);
        let most = bindable_chunks(gpu);
        // The shader's chunk arithmetic (3 · rows_per_chunk) and row indices are u32.
        if chunks_needed > most || rows as u64 * MAX_FEATURE_CHUNKS as u64 > u32::MAX as u64 {
            return Err(limit(
                format!(
                    "a data set of shape {shape} ({chunks_needed} chunks of ≤ {rows_per_chunk} rows needed, a \
                     gather binds {most})"
                ),
                rows as u64 * row_bytes,
            ));
        }
        if rows as u64 * 4 > binding {
            return Err(limit(format!("the labels of a data set of shape {shape}"), rows as u64 * 4));
        }
        let chunks = (0..chunks_needed)
            .map(|c| {
                let (first, end) = (c * rows_per_chunk * dim, ((c + 1) * rows_per_chunk).min(rows) * dim);
                let words: Vec<u32> = match features {
                    Features::U8(bytes) => bytes[first..end]
                        .chunks(4)
                        .map(|w| w.iter().enumerate().fold(0u32, |word, (i, &b)| word | (b as u32) << (8 * i)))
                        .collect(),
                    Features::F32(values) => values[first..end].iter().map(|v| v.to_bits()).collect(),
                };
                // An empty data set still gets one (empty) chunk: a tensor needs one element.
                let words = if words.is_empty() { vec![0] } else { words };
                Tensor::from_u32(gpu, &[words.len()], &words)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuRows {
            chunks,
            rows_per_chunk,
            labels: Tensor::from_u32(gpu, &[rows], labels)?,
            total_rows: rows,
            dim,
            source_u8,
            scale: 1.0,
            shift: 0.0,
            mean_std: None,
        })
    }
}

/// Where a gather takes its batch from within the index list.
#[derive(Clone, Copy, Debug)]
pub enum BatchStart<'a> {
    /// Fixed element offset into the index list.
    At(usize),
    /// A training step's own position, read on the GPU: `epoch_step[parity] * stride`, with
    /// epoch_step u32 `[2]`. The gather also advances the step counters, so that no dispatch of its
    /// own does: it writes `epoch_step[1 − parity]` = `epoch_step[parity]` + 1 (the next step,
    /// recorded with the other parity, reads it there) and adds one to `t` (u32 `[1]`, the update
    /// count the step's optimizer reads) where given.
    Counter { epoch_step: &'a Tensor, stride: usize, parity: usize, t: Option<&'a Tensor> },
}

/// x[r, :] = norm(src[idx[start + r], :]), `y[r]` = labels[idx[start + r]].
/// idx: `[n]` u32, x: [rows, dim] f32, y: `[rows]` u32; the counters of `start` as it says.
pub fn gather_rows(gpu: &Gpu, src: &GpuRows, idx: &Tensor, start: BatchStart, x: &Tensor, y: &Tensor) -> Result<Plan> {
    const OP: &str = "gather_rows";
    let (rows, dim) = x.dims2(OP)?;
    x.expect_nonempty(OP)?;
    idx.expect_dtype(OP, DType::U32)?;
    y.expect_dtype(OP, DType::U32)?;
    src.labels.expect_dtype(OP, DType::U32)?;
    if dim != src.dim || y.len() != rows {
        return Err(WgnnError::shape_of(
            OP,
            &[("src", &[src.total_rows, src.dim]), ("x", x.shape()), ("y", y.shape())],
            format!("data set has {} features; x is {:?}, y is {:?}", src.dim, x.shape(), y.shape()),
        ));
    }
    let chunks = src.chunks.len();
    let most = bindable_chunks(gpu);
    let rows_per_chunk_ok = src.rows_per_chunk > 0 && src.rows_per_chunk <= u32::MAX as usize / MAX_FEATURE_CHUNKS;
    if chunks == 0 || chunks > most || !rows_per_chunk_ok || src.rows_per_chunk * chunks < src.total_rows {
        return Err(WgnnError::invalid(
            OP,
            format!(
                "{chunks} feature chunks of {} rows for {} rows (1..={most} chunks bindable on this device)",
                src.rows_per_chunk, src.total_rows
            ),
        ));
    }
    let dummy = dummy(gpu)?;
    let (fixed_start, stride, parity, counters) = match start {
        BatchStart::At(s) => {
            if s + rows > idx.len() {
                return Err(WgnnError::shape_of(
                    OP,
                    &[("idx", idx.shape()), ("x", x.shape())],
                    format!("rows {s}..{} past the index list of {}", s + rows, idx.len()),
                ));
            }
            (s, 0, 0, None)
        }
        BatchStart::Counter { epoch_step, stride, parity, t } => {
            expect_len(OP, "epoch_step", epoch_step, DType::U32, 2, "[2] (the position cells)")?;
            if parity > 1 {
                return Err(WgnnError::invalid(OP, format!("parity {parity}; 0 or 1")));
            }
            if let Some(t) = t {
                expect_len(OP, "t", t, DType::U32, 1, "[1]")?;
            }
            let mut named = vec![("epoch_step", epoch_step), ("x", x), ("y", y), ("idx", idx), ("labels", &src.labels)];
            named.extend(t.map(|t| ("t", t)));
            named.extend(src.mean_std.as_ref().map(|m| ("mean_std", m)));
            named.extend(src.chunks.iter().map(|c| ("features", c)));
            disjoint(OP, &named)?;
            (0, stride, parity, Some((epoch_step, t)))
        }
    };
    let params = GatherParams {
        rows: rows as u32,
        dim: dim as u32,
        start: fixed_start as u32,
        stride: stride as u32,
        scale: src.scale,
        shift: src.shift,
        rows_per_chunk: src.rows_per_chunk as u32,
        _pad: 0,
    };
    // Whole packed words per row, stored as vec4s (so x's view must be 16-byte aligned). Each
    // chunk starts at a word, so this also holds within chunks.
    let u8x4 = src.source_u8 && dim % 4 == 0 && x.byte_offset().is_multiple_of(16);
    let wg = if u8x4 { WG_U8X4 } else { WG };
    let constants = [
        ("SOURCE_U8", src.source_u8 as u32 as f64),
        ("STANDARDIZE", src.mean_std.is_some() as u32 as f64),
        ("START_FROM_COUNTER", counters.is_some() as u32 as f64),
        ("PARITY", parity as f64),
        ("ADVANCE_T", counters.is_some_and(|(_, t)| t.is_some()) as u32 as f64),
        ("WG", wg as f64),
    ];
    let mean_std = src.mean_std.as_ref().unwrap_or(&dummy);
    let grid = if u8x4 {
        let groups_per_row = (dim / 4).div_ceil(WORDS_PER_INVOCATION);
        grid_1d(gpu, rows * groups_per_row, wg)
    } else {
        // One grid row per batch row: the y dimension must hold them.
        let max_rows = gpu.limits().max_compute_workgroups_per_dimension as usize;
        if rows > max_rows {
            return Err(WgnnError::invalid(OP, format!("{rows} rows in one gather; at most {max_rows}")));
        }
        [dim.div_ceil(wg as usize) as u32, rows as u32, 1]
    };
    // Unused counters bind y, already writable (the read-only dummy bound writable would
    // conflict with its other bindings); the shader never touches them.
    let epoch_step = counters.map_or(y, |(e, _)| e);
    let t = counters.and_then(|(_, t)| t).unwrap_or(y);
    let mut bindings = vec![&src.chunks[0], idx, &src.labels, mean_std, epoch_step, x, y, t];
    // A data set in one binding keeps to the 8-binding family, which every device can bind.
    let (family, entry) = if chunks == 1 {
        (&GATHER, if u8x4 { "gather_rows_u8x4" } else { OP })
    } else {
        bindings.extend((1..MAX_FEATURE_CHUNKS).map(|c| src.chunks.get(c).unwrap_or(&dummy)));
        (&GATHER_CHUNKED, if u8x4 { "gather_rows_u8x4_chunked" } else { "gather_rows_chunked" })
    };
    let d = dispatch(gpu, family, entry, &constants, &params, &bindings, grid)?;
    Ok(d.into())
}
