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

/// Which variant the engine picks for this shape on this device, by its profile's policy.
///
/// On a CPU adapter (lavapipe) workgroup memory and barriers are slow and per-lane loads cost more
/// than the arithmetic, so many outputs per invocation and no workgroup memory win at every
/// measured shape (BENCHMARKS.md). Sharing op(A) across the subgroup cuts the loads 2–4× more
/// where it applies, by scalars too where a dimension is not a multiple of 4 (a vocabulary of 65:
/// 1.7–2.6× faster than the register blockings) except for narrow outputs, which take the 8×4
/// blocking (invocations along M: 8 rows each loads fewer values per output; the subgroup kernel
/// even there). Elsewhere 4×8 was the most even of the two register blockings. On a GPU (not
/// measured yet): tiles in workgroup memory for large products, 4×8 registers elsewhere.
pub fn choose_variant(gpu: &Gpu, m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> MatmulVariant {
    let policy = &gpu.profile().matmul;
    let narrow = policy.lanes_m_max_n.is_some_and(|max| n <= max);
    let subgroup = subgroup_ok(gpu, m, n, k, trans_a, trans_b) || (subgroup_edges_ok(gpu) && !narrow);
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
