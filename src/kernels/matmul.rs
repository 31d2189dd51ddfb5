//! GPU wrapper of shaders/matmul.wgsl; CPU reference in src/cpu/matmul.rs.
//!
//! C[M, N] (+)= op(A)·op(B) with an optional fused epilogue, in one of several variants. K is split
//! into chunks (split-K) when it is long, because lavapipe silently stops a shader invocation's
//! loops after 65,535 iterations, and also when the output alone gives too few workgroups to keep
//! the device busy. Split chunks write a [splits, M, N] scratch owned by the plan; a second
//! dispatch sums it in a fixed order and applies accumulate and the epilogue.

use super::gather::BatchStart;
use super::matmul_check::{check_column_sum, check_epilogue, check_operands, describe, Dims, EpilogueArgs};
use super::matmul_choice::{subgroup_edges_ok, subgroup_ok, vec4_ok};
use super::matmul_conv_a::{matmul_conv_patches_supported, ConvPatchesA};
use super::matmul_gathered_a::{check_gathered, MATMUL_GATHERED};
use super::matmul_register::{matmul_register, matmul_register_column_sum};
use super::reduce::column_sum;
use super::ACTIVATION_WGSL;
use crate::autotune::{matmul_kernel, Candidate, MatmulKernel};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::profile::MatmulPolicy;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::Tensor;

// Their public paths stay here, where the matmul's users look for them.
pub use super::matmul_choice::{choose_variant, subgroup_k_halves, subgroup_narrow};
pub use super::matmul_conv_a::ConvPatchesA as ConvPatchesOperand;
pub use super::matmul_gathered_a::{matmul_gathered_supported, GatheredA};
pub use super::matmul_options::{Epilogue, MatmulOptions};
pub use crate::matmul_kernel::MatmulVariant;

pub(crate) const MATMUL: KernelFamily = KernelFamily {
    name: "matmul",
    sources: &[ACTIVATION_WGSL, include_str!("../../shaders/matmul.wgsl")],
    storage: &[Access::Read, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite],
};

/// The subgroup variant: a module of its own, since it only compiles where the device has
/// `Features::SUBGROUP`; op(A) from its binding.
pub(crate) const MATMUL_SUBGROUP: KernelFamily = KernelFamily {
    name: "matmul_subgroup",
    sources: &[
        ACTIVATION_WGSL,
        include_str!("../../shaders/matmul.wgsl"),
        include_str!("../../shaders/matmul_subgroup.wgsl"),
        include_str!("../../shaders/matmul_subgroup_vec4.wgsl"),
        include_str!("../../shaders/matmul_a_storage.wgsl"),
    ],
    storage: &[Access::Read, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite],
};

/// The subgroup variant for any shape (K, N or a transposed A's M not a multiple of 4, or views
/// not 16-byte aligned): op(B), C and op(A) by masked scalar loads and stores.
pub(crate) const MATMUL_SUBGROUP_EDGES: KernelFamily = KernelFamily {
    name: "matmul_subgroup_edges",
    sources: &[
        ACTIVATION_WGSL,
        include_str!("../../shaders/matmul.wgsl"),
        include_str!("../../shaders/matmul_subgroup.wgsl"),
        include_str!("../../shaders/matmul_subgroup_edges.wgsl"),
        include_str!("../../shaders/matmul_a_storage_edges.wgsl"),
    ],
    storage: &[Access::Read, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    /// K per split.
    kc: u32,
    splits: u32,
    slope: f32,
    /// op(A) gathered ([`GatheredA`]): the batch rows, the fixed start or the counter's stride,
    /// and the features' scale and shift.
    rows: u32,
    start: u32,
    stride: u32,
    scale: f32,
    shift: f32,
    _pad: u32,
}

/// One specialisation of a variant: entry point, workgroup shape, outputs per invocation, and the
/// longest K chunk an invocation may loop over (well below the loop cap, [`crate::profile::LOOP_CAP`],
/// the count summed over the inner loops too).
struct KernelShape {
    entry: &'static str,
    wg: [u32; 2],
    /// Outputs per invocation along M and N.
    block: [u32; 2],
    max_kc: usize,
    register: bool,
    family: &'static KernelFamily,
}

fn kernel_shape(variant: MatmulVariant, vec4: bool, policy: &MatmulPolicy) -> KernelShape {
    let register_entry = if vec4 { "matmul_register" } else { "matmul_register_scalar" };
    match variant {
        MatmulVariant::Naive => KernelShape {
            entry: "matmul_naive",
            wg: [16, 16],
            block: [1, 1],
            max_kc: 4096,
            register: false,
            family: &MATMUL,
        },
        // 4096 / 16 tile steps × (1 + 16) inner iterations = 4,352.
        MatmulVariant::Tiled => KernelShape {
            entry: "matmul_tiled",
            wg: [16, 16],
            block: [1, 1],
            max_kc: 4096,
            register: false,
            family: &MATMUL,
        },
        // The workgroups are the profile's: one row of invocations on a CPU adapter, more
        // invocations per workgroup on a GPU.
        MatmulVariant::Register => KernelShape {
            entry: register_entry,
            wg: policy.register_workgroup,
            block: [4, 8],
            max_kc: 2048,
            register: true,
            family: &MATMUL,
        },
        MatmulVariant::RegisterTall => KernelShape {
            entry: register_entry,
            wg: policy.register_tall_workgroup,
            block: [8, 4],
            max_kc: 2048,
            register: true,
            family: &MATMUL,
        },
        // The vec4 module where subgroup_ok, the edges one elsewhere where the subgroup kernel runs
        // (the wrapper falls back to Register where it does not).
        MatmulVariant::Subgroup => KernelShape {
            entry: "matmul_subgroup",
            wg: [8, 1],
            block: [16, 4],
            max_kc: SUBGROUP_MAX_KC,
            register: false,
            family: &MATMUL_SUBGROUP,
        },
    }
}

/// The fewest rows of C one workgroup of any variant covers on `gpu` (its profile's workgroup
/// shapes; the workgroup-memory tiles cover more): a product of up to this many times the grid's
/// per-dimension limit of rows dispatches whichever variant the engine picks.
pub(crate) fn min_rows_per_workgroup(gpu: &Gpu) -> usize {
    let policy = &gpu.profile().matmul;
    let rows = |v| {
        let shape = kernel_shape(v, true, policy);
        (shape.wg[1] * shape.block[0]) as usize
    };
    MatmulVariant::ALL.into_iter().map(rows).min().unwrap_or(1)
}

/// From this M (op(A) = A; see the next for Aᵀ) and K on, the subgroup kernel takes 32-row tiles: op(B) loaded half as often per
/// output. Measured 10–17% faster at 256×784·784×64 and 784×256·256×64; slower where M is short
/// (32 rows: too few workgroups, so K gets split).
const SUBGROUP_TALL_MIN_M: usize = 64;
/// With op(A) = Aᵀ (a weight gradient, M a layer's width) from M = 128: at batch 256 the 64×64
/// weight gradient of a hidden layer then takes the 16-row kernel, no slower per epoch, whose
/// pipeline it shares with the partial last batch's, where the 32-row one was a pipeline of its
/// own (the first layer's, read from the data set, is another family): one compile fewer in a cold
/// shader cache's first epoch (~0.3 s of llvmpipe's).
const SUBGROUP_TALL_MIN_M_TRANS_A: usize = 128;
/// From this K on (op(A) = A; Aᵀ below): at K = 64, 256×64·64×64 took 100.8 µs against 199.5–219.9
/// with 16-row tiles, its Bᵀ form 106–141 against 212–226; at K = 32 the col2im input gradient's
/// product too (64×13×13×16 → 3×3 → 32 with col2im: 4.35–4.52 ms against 4.66–4.84; lavapipe,
/// BENCHMARKS.md, 2026-12-07 (before midnight)). The sums and any split of K stay as they were.
const SUBGROUP_TALL_MIN_K: usize = 32;
/// With Aᵀ from K = 64 (256×64·64×64 Aᵀ: 130–155 µs against 198–205): at K = 32 a weight gradient
/// (784×32·32×64 Aᵀ, the first layer's at batch 32) ran no faster (144–211 µs against 158–163).
const SUBGROUP_TALL_MIN_K_TRANS_A: usize = 64;

/// K per split of the subgroup kernel.
const SUBGROUP_MAX_KC: usize = 2048;

/// How many K chunks: enough that no chunk passes `max_kc`, and on small outputs more, so that
/// the device has the profile's target of workgroups (each chunk keeping at least `MIN_KC` of K).
fn split_count(gpu: &Gpu, groups: usize, k: usize, max_kc: usize) -> usize {
    const MIN_KC: usize = 128;
    let needed = k.div_ceil(max_kc);
    let target_groups = gpu.profile().matmul.split_k_target_groups;
    let for_parallelism = target_groups.div_ceil(groups.max(1)).min(k / MIN_KC).max(1);
    needed.max(for_parallelism)
}

/// Whether the subgroup kernel gives each lane 8 columns (WIDE) rather than 4 at this shape, with
/// `tile_rows` rows a workgroup: where that wastes no more lanes past N than 4 columns would and
/// still leaves the product enough workgroups not to split K for parallelism (so that the split,
/// and every sum, is what it would be with 4: the results do not change). Each op(A) value then
/// serves twice the outputs for one load and one hand-round: 9–17% faster at char_gpt's products
/// on lavapipe (BENCHMARKS.md, 2026-12-07 (night)).
fn subgroup_wide(gpu: &Gpu, m: usize, n: usize, tile_rows: usize) -> bool {
    let quads = n.div_ceil(4);
    let groups = quads.div_ceil(16) * m.div_ceil(tile_rows);
    quads.div_ceil(16) * 16 == quads.div_ceil(8) * 8 && groups >= gpu.profile().matmul.split_k_target_groups
}

/// `C[M,N]` (+)= op(A)·op(B): A is `[M,K]` (or `[K,M]` when trans_a), B is `[K,N]` (or `[N,K]` when
/// trans_b). Row-major. The epilogue is applied to the full sum; accumulate works only without one.
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor, c: &Tensor, opts: &MatmulOptions) -> Result<Plan> {
    matmul_plan("matmul", gpu, AOperand::Stored(a), b, c, None, opts)
}

/// [`matmul`] that also writes `col_sum[n]` = Σ_k op(B)[k, n] (col_sum: `[N]`): a weight gradient
/// dW = Xᵀ·dZ with its bias gradient db = Σ_rows dZ. op(B) must not be transposed. One dispatch
/// where the kernel can add the sums from the op(B) values it loads anyway (register and subgroup
/// variants, K not split): on lavapipe a dispatch costs more than the sum. Otherwise the plan is
/// the matmul and a [`column_sum`].
pub fn matmul_column_sum(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    col_sum: &Tensor,
    opts: &MatmulOptions,
) -> Result<Plan> {
    matmul_plan("matmul_column_sum", gpu, AOperand::Stored(a), b, c, Some(col_sum), opts)
}

/// [`matmul`] (or with `col_sum`, [`matmul_column_sum`]) with op(A) gathered from a data set: a
/// training step's first layer, forward and weight gradient, without a gather dispatch or the
/// gathered copy. Only where [`matmul_gathered_supported`]; the variant is the subgroup kernel.
pub fn matmul_gathered(
    gpu: &Gpu,
    a: &GatheredA,
    b: &Tensor,
    c: &Tensor,
    col_sum: Option<&Tensor>,
    opts: &MatmulOptions,
) -> Result<Plan> {
    matmul_plan("matmul_gathered", gpu, AOperand::Gathered(a), b, c, col_sum, opts)
}

/// [`matmul`] (or with `col_sum`, [`matmul_column_sum`]) with op(A) the patch matrix of an image
/// read in place ([`ConvPatchesOperand`]: implicit GEMM), op(A) = A for a convolution's forward or
/// Aᵀ for its kernel gradient. Only where [`ConvPatchesOperand::fits`] and the product runs on the
/// subgroup kernel (an error elsewhere).
pub fn matmul_conv_patches(
    gpu: &Gpu,
    a: &ConvPatchesA,
    b: &Tensor,
    c: &Tensor,
    col_sum: Option<&Tensor>,
    opts: &MatmulOptions,
) -> Result<Plan> {
    matmul_plan("matmul_conv_patches", gpu, AOperand::Patches(a), b, c, col_sum, opts)
}

/// The plan of an autotuner candidate: its variant by [`matmul`] or [`matmul_column_sum`], its
/// tile by [`matmul_register`] or [`matmul_register_column_sum`].
fn plan_candidate(gpu: &Gpu, candidate: &Candidate) -> Result<Plan> {
    let Candidate { a, b, c, col_sum, ref opts, kernel } = *candidate;
    match (kernel, col_sum) {
        (MatmulKernel::Variant(_), None) => matmul(gpu, a, b, c, opts),
        (MatmulKernel::Variant(_), Some(s)) => matmul_column_sum(gpu, a, b, c, s, opts),
        (MatmulKernel::Tile(t), None) => matmul_register(gpu, a, b, c, opts, t),
        (MatmulKernel::Tile(t), Some(s)) => matmul_register_column_sum(gpu, a, b, c, s, opts, t),
    }
}

/// Where op(A) comes from.
#[derive(Clone, Copy)]
enum AOperand<'a> {
    Stored(&'a Tensor),
    Gathered(&'a GatheredA<'a>),
    Patches(&'a ConvPatchesA<'a>),
}

fn matmul_plan(
    op: &'static str,
    gpu: &Gpu,
    a_operand: AOperand,
    b: &Tensor,
    c: &Tensor,
    col_sum: Option<&Tensor>,
    opts: &MatmulOptions,
) -> Result<Plan> {
    const OP: &str = "matmul";
    if let AOperand::Gathered(g) = a_operand {
        if g.src.chunks.len() != 1 {
            return Err(WgnnError::invalid(
                op,
                format!(
                    "op(A) gathered from a data set in {} feature chunks; one is read in place",
                    g.src.chunks.len()
                ),
            ));
        }
    }
    // A gathered from a data set is bound as its words, [stored_rows, dim] as a shape.
    let (a, a_read_as, a_note) = match a_operand {
        AOperand::Stored(a) => (a, None, ""),
        AOperand::Gathered(g) => (&g.src.chunks[0], Some((g.stored_rows, g.src.dim)), " gathered"),
        AOperand::Patches(pa) => (pa.image, Some(pa.stored_shape()), " read as patches"),
    };
    let a_shape = a_read_as.map_or_else(|| a.shape().to_vec(), |(r, c)| vec![r, c]);
    let form = describe(opts, &a_shape, a_note, b, c);
    let dims = check_operands(OP, a, a_read_as, b, c, opts, &form)?;
    let Dims { m, n, k } = dims;
    if let Some(s) = col_sum {
        check_column_sum(op, s, [a, b, c], n, opts, &form)?;
    }
    let dummy = dummy(gpu)?;
    let EpilogueArgs { epi, has_bias, act, aux, extra } = check_epilogue(OP, gpu, opts, [a, b, c], dims, &form)?;

    // The vec4 views (a4 and b4; out4, aux4 and colsum4 in the subgroup kernel) need 16-byte
    // aligned bindings. Every adapter wgpu serves today aligns storage views to 32 bytes or more,
    // but the limit allows less: other offsets take the scalar kernels.
    if let (Some(_), Some(_)) = (&extra, col_sum) {
        return Err(WgnnError::invalid(op, format!("column sums take no epilogue of their own: {form}")));
    }
    let aligned = [a, b, c, &aux].into_iter().chain(col_sum).chain(&extra).all(|t| t.byte_offset().is_multiple_of(16));
    let (gathered, patches) = match a_operand {
        AOperand::Gathered(g) => (Some(g), None),
        AOperand::Patches(pa) => (None, Some(pa)),
        AOperand::Stored(_) => (None, None),
    };
    let mut variant = match (opts.variant, gathered.is_some() || patches.is_some()) {
        (Some(v), _) => v,
        (None, false) if aligned => match matmul_kernel(gpu, m, n, k, opts, col_sum.is_some(), plan_candidate)? {
            MatmulKernel::Variant(v) => v,
            MatmulKernel::Tile(tile) => {
                return match col_sum {
                    Some(s) => matmul_register_column_sum(gpu, a, b, c, s, opts, tile),
                    None => matmul_register(gpu, a, b, c, opts, tile),
                }
            }
        },
        (None, _) => choose_variant(gpu, m, n, k, opts.trans_a, opts.trans_b),
    };
    if let Some(g) = gathered {
        let mut others = vec![("B", b), ("C", c), ("bias or Y", &aux)];
        others.extend(extra.as_ref().map(|t| ("pre or residual", t)));
        others.extend(col_sum.map(|s| ("col_sum", s)));
        check_gathered(op, gpu, g, n, opts, &others)?;
        if !aligned || opts.variant.is_some_and(|v| v != MatmulVariant::Subgroup) {
            return Err(WgnnError::invalid(
                op,
                format!("op(A) gathered runs only on the subgroup kernel, with 16-byte aligned views: {form}"),
            ));
        }
        variant = MatmulVariant::Subgroup;
    }
    if let Some(pa) = patches {
        let forced_other = opts.variant.is_some_and(|v| v != MatmulVariant::Subgroup);
        if forced_other || !aligned || !matmul_conv_patches_supported(gpu, pa, n, opts.trans_a, opts.trans_b) {
            return Err(pa.unfit(op));
        }
        variant = MatmulVariant::Subgroup;
    }
    // The subgroup kernel by scalars where its vec4 views do not apply (a stored A only).
    let subgroup_vec4 = aligned && subgroup_ok(gpu, m, n, k, opts.trans_a, opts.trans_b);
    let edges = variant == MatmulVariant::Subgroup
        && !subgroup_vec4
        && gathered.is_none()
        && patches.is_none()
        && subgroup_edges_ok(gpu);
    if variant == MatmulVariant::Subgroup && !edges && !subgroup_vec4 {
        variant = MatmulVariant::Register;
    }
    let vec4 = aligned && vec4_ok(m, n, k, opts.trans_a, opts.trans_b);
    let policy = &gpu.profile().matmul;
    let mut shape = kernel_shape(variant, vec4, policy);
    if gathered.is_some() {
        shape.family = &MATMUL_GATHERED;
    }
    if let Some(pa) = patches {
        shape.family = pa.family();
    }
    if edges {
        shape.family = &MATMUL_SUBGROUP_EDGES;
    }
    let (tall_min_m, tall_min_k) = match opts.trans_a {
        true => (SUBGROUP_TALL_MIN_M_TRANS_A, SUBGROUP_TALL_MIN_K_TRANS_A),
        false => (SUBGROUP_TALL_MIN_M, SUBGROUP_TALL_MIN_K),
    };
    // At most 16 columns: two halves of 4 lanes rather than TALL's 32 rows with half the lanes idle.
    let narrow = variant == MatmulVariant::Subgroup && subgroup_narrow(gpu, m, n);
    // Not on a stored A: the tuner may run such a product on the register kernel instead, and the
    // results must not depend on which (the K halves round differently).
    let a_stored = gathered.is_none() && patches.is_none();
    let k_halves = variant == MatmulVariant::Subgroup && !a_stored && subgroup_k_halves(gpu, m, n, k);
    let tall = variant == MatmulVariant::Subgroup && m >= tall_min_m && k >= tall_min_k && !narrow && !k_halves;
    if tall {
        shape.block[0] = 32;
    }
    // Not by scalars: that module with 8 columns is more than SwiftShader (Chromium's fallback
    // WebGPU, CI's Tint check) compiles in its time limit.
    let wide = variant == MatmulVariant::Subgroup && !edges && subgroup_wide(gpu, m, n, shape.block[0] as usize);
    if wide {
        shape.block[1] = 8;
    }
    if narrow || k_halves {
        // 32 (K_HALVES: 16) rows and 16 columns a workgroup: 2 columns a lane on average.
        shape.block = [if narrow { 32 } else { 16 }, 2];
    }
    // Few columns (CPU-adapter policy): the one row of invocations runs along M instead of N.
    let lanes_m = shape.register && shape.wg[1] == 1 && policy.lanes_m_max_n.is_some_and(|max| n <= max);
    let (grid_x, grid_y) = if lanes_m {
        (m.div_ceil((shape.wg[0] * shape.block[0]) as usize), n.div_ceil(shape.block[1] as usize))
    } else {
        (n.div_ceil((shape.wg[0] * shape.block[1]) as usize), m.div_ceil((shape.wg[1] * shape.block[0]) as usize))
    };
    // With column sums only the loop cap splits K: a split costs a reduction dispatch and the
    // sums their own, more than the parallelism gains on these (small) products.
    let splits =
        if col_sum.is_some() { k.div_ceil(shape.max_kc) } else { split_count(gpu, grid_x * grid_y, k, shape.max_kc) };
    // A multiple of 4, as the vec4 kernel steps K by 4.
    let kc = k.div_ceil(splits).next_multiple_of(4);
    let splits = k.div_ceil(kc);

    let params = MatmulParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        kc: kc as u32,
        splits: splits as u32,
        slope: act.slope(),
        rows: gathered.map_or(0, |g| g.rows as u32),
        start: match gathered.map(|g| g.start) {
            Some(BatchStart::At(s)) => s as u32,
            _ => 0,
        },
        stride: match gathered.map(|g| g.start) {
            Some(BatchStart::Counter { stride, .. }) => stride as u32,
            _ => 0,
        },
        scale: gathered.map_or(1.0, |g| g.src.scale),
        shift: gathered.map_or(0.0, |g| g.src.shift),
        _pad: 0,
    };
    let split = splits > 1;
    // The kernels that add op(B)'s column sums (register and subgroup, one pass over K).
    let fused_sum = col_sum.is_some() && !split && (shape.register || variant == MatmulVariant::Subgroup);
    let flag = |b: bool| b as u32 as f64;
    let mut constants = vec![
        ("TRANS_A", flag(opts.trans_a)),
        ("TRANS_B", flag(opts.trans_b)),
        ("SPLIT", flag(split)),
        // With split-K these belong to the reduction only.
        ("ACCUMULATE", flag(opts.accumulate && !split)),
        ("EPI", if split { 0.0 } else { epi as f64 }),
        ("HAS_BIAS", flag(has_bias && !split)),
        ("ACT", if split { 0.0 } else { act.code() as f64 }),
        ("COLSUM_B", flag(fused_sum)),
    ];
    if variant == MatmulVariant::Subgroup {
        constants.push(("TALL", flag(tall)));
        constants.push(("WIDE", flag(wide)));
        constants.push(("NARROW", flag(narrow)));
        constants.push(("K_HALVES", flag(k_halves)));
    }
    if edges {
        constants.push(("QUAD_SUMS", flag(vec4)));
    }
    if let Some(g) = gathered {
        let (from_counter, parity, advance_t) = match g.start {
            BatchStart::At(_) => (false, 0, false),
            BatchStart::Counter { parity, t, .. } => (true, parity, t.is_some() && g.labels.is_some()),
        };
        constants.extend([
            ("START_FROM_COUNTER", flag(from_counter)),
            ("PARITY", parity as f64),
            ("WRITE_LABELS", flag(g.labels.is_some())),
            ("ADVANCE_T", flag(advance_t)),
        ]);
    }
    if let Some(pa) = patches {
        constants.extend(pa.constants());
    }
    if shape.register {
        constants.extend([
            ("WX", shape.wg[0] as f64),
            ("WY", shape.wg[1] as f64),
            ("RB", (shape.block[0] / 4) as f64),
            ("CB", (shape.block[1] / 4) as f64),
            ("LANES_M", flag(lanes_m)),
        ]);
    }
    let grid = [grid_x as u32, grid_y as u32, splits as u32];
    let mut plan = Plan::new();
    // Binding 5: the column sums with COLSUM_B, the epilogue's pre-activation or residual with
    // EPI 3 or 4; elsewhere C (already writable) fills it.
    let sums_out = extra.as_ref().unwrap_or(if fused_sum { col_sum.unwrap_or(c) } else { c });
    if let (Some(s), false) = (col_sum, fused_sum) {
        // Summed first: B does not change in between, and the order does not matter.
        plan.extend(column_sum(gpu, b, s, false)?);
    }
    if !split {
        let bindings = with_gathered(gathered, vec![a, b, c, &aux, sums_out], c);
        plan.push(dispatch(gpu, shape.family, shape.entry, &constants, &params, &bindings, grid)?);
        return Ok(plan);
    }
    let partial = Tensor::zeros(gpu, &[splits, m, n])?;
    let bindings = with_gathered(gathered, vec![a, b, &partial, &dummy, &partial], &partial);
    plan.push(dispatch(gpu, shape.family, shape.entry, &constants, &params, &bindings, grid)?);
    const WG: u32 = 256;
    let reduce_constants = [
        ("ACCUMULATE", flag(opts.accumulate)),
        ("EPI", epi as f64),
        ("HAS_BIAS", flag(has_bias)),
        ("ACT", act.code() as f64),
        ("WG", WG as f64),
    ];
    let grid = grid_1d(gpu, m * n, WG);
    plan.push(dispatch(
        gpu,
        &MATMUL,
        "matmul_reduce",
        &reduce_constants,
        &params,
        &[&partial, &dummy, c, &aux, extra.as_ref().unwrap_or(c)],
        grid,
    )?);
    Ok(plan)
}

/// A dispatch's bindings with a gathered A's own (idx, labels, epoch_step, y, t) after the five of
/// a stored A; `fill`, already bound writable, stands in for the cells it never touches.
fn with_gathered<'t>(
    gathered: Option<&'t GatheredA<'t>>,
    mut bindings: Vec<&'t Tensor>,
    fill: &'t Tensor,
) -> Vec<&'t Tensor> {
    if let Some(g) = gathered {
        let (epoch_step, t) = match g.start {
            BatchStart::Counter { epoch_step, t, .. } => (epoch_step, t.unwrap_or(fill)),
            BatchStart::At(_) => (fill, fill),
        };
        bindings.extend([g.idx, &g.src.labels, epoch_step, g.labels.unwrap_or(fill), t]);
    }
    bindings
}
