//! op(A) of [`super::matmul::matmul_gathered`] read in place from a resident data set: what it
//! is ([`GatheredA`]), its kernel family, where it runs ([`matmul_gathered_supported`]) and its
//! own checks (the layout, the index range, labels and counters).

use super::check::{disjoint, expect_len};
use super::gather::{BatchStart, GpuRows};
use super::matmul_choice::subgroup_ok;
use super::matmul_options::MatmulOptions;
use super::ACTIVATION_WGSL;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::profile::KernelNeeds;
use crate::registry::{Access, KernelFamily};
use crate::tensor::{DType, Tensor};

/// The subgroup variant with op(A) gathered from a resident data set
/// ([`super::matmul::matmul_gathered`]).
pub(crate) const MATMUL_GATHERED: KernelFamily = KernelFamily {
    name: "matmul_gathered",
    sources: &[
        ACTIVATION_WGSL,
        include_str!("../../shaders/matmul.wgsl"),
        include_str!("../../shaders/matmul_subgroup.wgsl"),
        include_str!("../../shaders/matmul_subgroup_vec4.wgsl"),
        include_str!("../../shaders/matmul_gathered.wgsl"),
    ],
    storage: &[
        Access::Read,      // the data set's words
        Access::Read,      // B
        Access::ReadWrite, // C
        Access::Read,      // bias or Y
        Access::ReadWrite, // column sums
        Access::Read,      // idx
        Access::Read,      // labels
        Access::ReadWrite, // epoch_step
        Access::ReadWrite, // y
        Access::ReadWrite, // t
    ],
};

/// op(A) of [`super::matmul::matmul_gathered`]: a batch of rows of a resident data set, read where
/// they lie instead of from a gathered copy. Stored A's row r is `norm(src[idx[start + r], :])` as
/// [`super::gather::gather_rows`] would have written it, for r < `rows`; rows up to `stored_rows`
/// repeat the last one (finite values, for a weight gradient over padded rows whose dZ rows are
/// zero).
#[derive(Clone, Copy)]
pub struct GatheredA<'a> {
    pub src: &'a GpuRows,
    /// `[n]` u32, the index list.
    pub idx: &'a Tensor,
    pub start: BatchStart<'a>,
    pub rows: usize,
    /// Stored A is `[stored_rows, dim]`: op(A) = A (`[M = rows, K = dim]`, stored_rows = rows) or
    /// Aᵀ (`[M = dim, K = stored_rows]`).
    pub stored_rows: usize,
    /// Where given (op(A) = A only): the dispatch also does the rest of the gather it replaces,
    /// the batch's labels `[rows]` u32 and the counters of a [`BatchStart::Counter`].
    pub labels: Option<&'a Tensor>,
}

impl GatheredA<'_> {
    /// op(A)'s (M, K).
    pub(crate) fn mk(&self, trans_a: bool) -> (usize, usize) {
        if trans_a {
            (self.src.dim, self.stored_rows)
        } else {
            (self.stored_rows, self.src.dim)
        }
    }
}

/// Whether [`super::matmul::matmul_gathered`] runs op(A)·op(B) with `a` and N columns on `gpu`: u8 features in one
/// binding, whole words per row and no standardisation, the subgroup kernel, and the device's
/// storage bindings per stage (10). The other operands' views must also be 16-byte aligned (the
/// wrapper checks; a model's always are).
pub fn matmul_gathered_supported(gpu: &Gpu, a: &GatheredA, n: usize, trans_a: bool, trans_b: bool) -> bool {
    let (m, k) = a.mk(trans_a);
    let src = a.src;
    src.source_u8
        && src.chunks.len() == 1
        && src.mean_std.is_none()
        && src.dim.is_multiple_of(4)
        && gpu.profile().fits(KernelNeeds { storage_buffers: MATMUL_GATHERED.storage.len(), ..Default::default() })
        && subgroup_ok(gpu, m, n, k, trans_a, trans_b)
}

/// The gathered A's own checks: the data set's layout, the index range, labels and counters.
pub(crate) fn check_gathered(
    op: &str,
    gpu: &Gpu,
    g: &GatheredA,
    n: usize,
    opts: &MatmulOptions,
    others: &[(&str, &Tensor)],
) -> Result<()> {
    if !matmul_gathered_supported(gpu, g, n, opts.trans_a, opts.trans_b) {
        return Err(WgnnError::invalid(
            op,
            format!(
                "op(A) gathered from a data set of {} features ({}, {} chunk(s), standardised: {}) needs u8 \
                 features in one binding, whole words per row, no standardisation and the subgroup kernel",
                g.src.dim,
                if g.src.source_u8 { "u8" } else { "f32" },
                g.src.chunks.len(),
                g.src.mean_std.is_some()
            ),
        ));
    }
    g.idx.expect_dtype(op, DType::U32)?;
    g.src.labels.expect_dtype(op, DType::U32)?;
    if g.rows == 0 || g.rows > g.stored_rows || (!opts.trans_a && g.rows != g.stored_rows) {
        return Err(WgnnError::shape_of(
            op,
            &[("a", &[g.stored_rows, g.src.dim])],
            format!("{} batch rows in a stored A of {} rows (≥ 1; equal unless op(A) = Aᵀ)", g.rows, g.stored_rows),
        ));
    }
    let mut named = vec![("features", &g.src.chunks[0]), ("idx", g.idx), ("labels", &g.src.labels)];
    named.extend_from_slice(others);
    if let Some(y) = g.labels {
        if opts.trans_a {
            return Err(WgnnError::invalid(op, "the batch's labels are written only with op(A) = A"));
        }
        expect_len(op, "labels", y, DType::U32, g.rows, "[rows]")?;
        named.push(("labels out", y));
    }
    match g.start {
        BatchStart::At(s) => {
            if s + g.rows > g.idx.len() {
                return Err(WgnnError::shape_of(
                    op,
                    &[("idx", g.idx.shape())],
                    format!("rows {s}..{} past the index list of {}", s + g.rows, g.idx.len()),
                ));
            }
        }
        BatchStart::Counter { epoch_step, parity, t, .. } => {
            expect_len(op, "epoch_step", epoch_step, DType::U32, 2, "[2] (the position cells)")?;
            if parity > 1 {
                return Err(WgnnError::invalid(op, format!("parity {parity}; 0 or 1")));
            }
            named.push(("epoch_step", epoch_step));
            if let Some(t) = t {
                expect_len(op, "t", t, DType::U32, 1, "[1]")?;
                named.push(("t", t));
            }
        }
    }
    disjoint(op, &named)
}
