//! Which matmul variant a product takes without the autotuner: the device profile's static
//! choice ([`choose_variant`]) and the shape rules it and the tuner share (vec4 loads, the
//! subgroup kernel).

use crate::device::Gpu;
use crate::matmul_kernel::MatmulVariant;

/// vec4 loads need every dimension read along its contiguous axis to be a multiple of 4: K for
/// A [M, K] and B [N, K], M for A stored [K, M], N for B stored [K, N].
pub(crate) fn vec4_ok(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> bool {
    k.is_multiple_of(4) && (!trans_a || m.is_multiple_of(4)) && (trans_b || n.is_multiple_of(4))
}

/// Whether the subgroup kernel runs this product: the device profile says it runs (subgroups of
/// at least its 8-invocation workgroup), vec4 loads possible and N a multiple of 4 (each lane owns
/// 4 whole columns).
pub(crate) fn subgroup_ok(gpu: &Gpu, m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> bool {
    gpu.profile().matmul.subgroup_kernel && n.is_multiple_of(4) && vec4_ok(m, n, k, trans_a, trans_b)
}

/// Whether the subgroup kernel runs a product of any shape by scalar loads and stores (its edges
/// module): where the profile says the subgroup kernel runs.
pub(crate) fn subgroup_edges_ok(gpu: &Gpu) -> bool {
    gpu.profile().matmul.subgroup_kernel
}

/// Whether the subgroup kernel runs two 16-row halves of 4 lanes each (NARROW) rather than 16 rows
/// of 8 lanes at this shape: at most 16 columns, where 8 lanes a tile would leave half of them
/// idle, and enough rows that the halved count of workgroups still meets the split-K target (so
/// that no split, and no sum, changes: the results are those of the 8-lane tiles).
pub fn subgroup_narrow(gpu: &Gpu, m: usize, n: usize) -> bool {
    n.div_ceil(4) <= 4 && m.div_ceil(32) >= gpu.profile().matmul.split_k_target_groups
}

/// Whether the subgroup kernel runs two halves of 4 lanes over alternate K chunks of the same 16
/// rows (K_HALVES) at this shape, with op(A) read in place (a convolution's patches, a data
/// set's rows: products no other kernel runs): at most 16 columns where [`subgroup_narrow`] does
/// not apply (too few rows, as in a small kernel's gradient), and K at least two chunks. The
/// halves' sums are added at the end, so the results differ from the 8-lane tiles' in rounding,
/// as a split of K's do.
pub fn subgroup_k_halves(gpu: &Gpu, m: usize, n: usize, k: usize) -> bool {
    n <= 16 && k >= 32 && !subgroup_narrow(gpu, m, n)
}

/// Which variant the engine picks for this shape on this device, by its profile's policy.
///
/// On a CPU adapter (lavapipe) workgroup memory and barriers are slow and per-lane loads cost more
/// than the arithmetic, so many outputs per invocation and no workgroup memory win at every
/// measured shape (BENCHMARKS.md). Sharing op(A) across the subgroup cuts the loads 2–4× more
/// where it applies, by scalars too where a dimension is not a multiple of 4 (a vocabulary of 65:
/// 1.7–2.6× faster than the register blockings) except for narrow outputs of few rows, which take
/// the 8×4 blocking (invocations along M: 8 rows each loads fewer values per output); with rows
/// enough, the subgroup kernel's two 4-lane halves ([`subgroup_narrow`]) take those too. Elsewhere 4×8 was the most even of the two register blockings. On a GPU (not
/// measured yet): tiles in workgroup memory for large products, 4×8 registers elsewhere.
pub fn choose_variant(gpu: &Gpu, m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> MatmulVariant {
    let policy = &gpu.profile().matmul;
    let narrow = policy.lanes_m_max_n.is_some_and(|max| n <= max);
    // Narrow outputs with rows enough for the subgroup kernel's two 4-lane halves take it (by
    // scalars where N is not a multiple of 4): 256×64·64×10, 3 runs, medians 162–176 µs against
    // the 8×4 register blocking's 165–274, minima 52–71 against 96–115 (BENCHMARKS.md,
    // 2026-12-07 (before midnight)). The same sums in the same order either way.
    let halves = subgroup_narrow(gpu, m, n);
    let subgroup = subgroup_ok(gpu, m, n, k, trans_a, trans_b) || (subgroup_edges_ok(gpu) && (!narrow || halves));
    if policy.prefer_subgroup && subgroup {
        MatmulVariant::Subgroup
    } else if policy.tiled_from.is_some_and(|(tm, tn, tk)| m >= tm && n >= tn && k >= tk) {
        MatmulVariant::Tiled
    } else if narrow {
        MatmulVariant::RegisterTall
    } else {
        MatmulVariant::Register
    }
}
