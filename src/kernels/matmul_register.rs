//! GPU wrapper of shaders/matmul_register.wgsl, the GPU-class matmul: C[M, N] (+)= op(A)·op(B)
//! with the epilogues, accumulate and column sums of [`super::matmul`], computed in workgroup
//! tiles of BM×BN outputs, TM×TN per invocation in registers, op(A) and op(B) staged in
//! workgroup memory. (Unlike `MatmulVariant::Register`, which reads storage directly and shares
//! nothing between invocations.) CPU reference: `crate::cpu::matmul`.
//!
//! The tile is chosen by the caller ([`RegisterTile`], presets in [`RegisterTile::PRESETS`]) and
//! travels as override constants: one pipeline per tile, form (transposes, vec4 or scalar loads)
//! and column sums or not; the epilogue travels in the uniform. K is split into chunks (at
//! most [`RegisterTile::max_kc`], and more on small outputs, for parallelism); chunks write a
//! `[splits, M, N]` scratch owned by the plan, summed in a fixed order by a second dispatch that
//! applies accumulate and the epilogue.

use super::matmul_check::{check_column_sum, check_epilogue, check_operands, describe, Dims, EpilogueArgs};
use super::matmul_options::MatmulOptions;
use super::reduce::column_sum;
use super::ACTIVATION_WGSL;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
pub use crate::matmul_kernel::RegisterTile;
use crate::plan::Plan;
use crate::registry::{dispatch, dummy, grid_1d, Access, KernelFamily};
use crate::tensor::Tensor;

const OP: &str = "matmul_register";

pub(crate) const MATMUL_REGISTER: KernelFamily = KernelFamily {
    name: "matmul_register",
    sources: &[ACTIVATION_WGSL, include_str!("../../shaders/matmul_register.wgsl")],
    storage: &[Access::Read, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite],
};

// The tile's geometry is plain data (crate::matmul_kernel); what it needs of a device is here.
impl RegisterTile {
    /// Whether the geometry is well formed (tm, tn 4 or 8, tiles divisible, each invocation
    /// staging whole vec4s) and fits `gpu`'s workgroup limits; the error says what does not.
    pub fn check(&self, gpu: &Gpu) -> Result<()> {
        let name = self.name();
        let bad = |why: String| Err(WgnnError::invalid(OP, format!("tile {name}: {why}")));
        if ![4, 8].contains(&self.tm) || ![4, 8].contains(&self.tn) {
            return bad("outputs per invocation (tm, tn) must be 4 or 8 each".into());
        }
        if self.bm == 0 || self.bn == 0 || !self.bm.is_multiple_of(self.tm) || !self.bn.is_multiple_of(self.tn) {
            return bad("bm and bn must be positive multiples of tm and tn".into());
        }
        if self.bk == 0 || !self.bk.is_multiple_of(4) {
            return bad("bk must be a positive multiple of 4".into());
        }
        let limits = gpu.limits();
        let (tx, ty) = self.threads();
        let nt = self.invocations();
        let workgroup = [
            (nt, limits.max_compute_invocations_per_workgroup, "max_compute_invocations_per_workgroup", "in all"),
            (tx, limits.max_compute_workgroup_size_x, "max_compute_workgroup_size_x", "along x"),
            (ty, limits.max_compute_workgroup_size_y, "max_compute_workgroup_size_y", "along y"),
        ];
        if let Some(&(amount, limit, limit_name, axis)) = workgroup.iter().find(|(amount, limit, ..)| amount > limit) {
            return Err(WgnnError::DeviceLimit {
                op: OP.into(),
                what: format!("tile {name}: a workgroup of {tx}×{ty}, {axis}"),
                amount: amount as u64,
                unit: "invocations",
                limit: limit as u64,
                limit_name,
            });
        }
        if self.workgroup_bytes() > limits.max_compute_workgroup_storage_size {
            // wgpu does not check a `var<workgroup>` array's size against the limit itself.
            return Err(WgnnError::DeviceLimit {
                op: OP.into(),
                what: format!("tile {name}'s workgroup memory"),
                amount: self.workgroup_bytes() as u64,
                unit: "bytes",
                limit: limits.max_compute_workgroup_storage_size as u64,
                limit_name: "max_compute_workgroup_storage_size",
            });
        }
        if !(self.bm * self.bk / 4).is_multiple_of(nt) || !(self.bn * self.bk / 4).is_multiple_of(nt) {
            return bad(format!("{nt} invocations must stage whole vec4s of op(A) and op(B) (bm·bk/4, bn·bk/4)"));
        }
        Ok(())
    }
}

/// Whether [`matmul_register`] runs `tile` on `gpu` (every shape, form and epilogue is
/// supported; only the tile can be out of the device's limits).
pub fn matmul_register_supported(gpu: &Gpu, tile: RegisterTile) -> bool {
    tile.check(gpu).is_ok()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    kc: u32,
    splits: u32,
    slope: f32,
    epi: u32,
    act: u32,
    accumulate: u32,
    has_bias: u32,
    split: u32,
    _pad: u32,
}

/// `C[M,N]` (+)= op(A)·op(B) with `tile`: A is `[M,K]` (or `[K,M]` when trans_a), B is `[K,N]`
/// (or `[N,K]` when trans_b), row-major, every size. The epilogue is applied to the full sum;
/// accumulate works only without one. `opts.variant` is ignored (this is a variant of its own).
pub fn matmul_register(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    opts: &MatmulOptions,
    tile: RegisterTile,
) -> Result<Plan> {
    plan(gpu, a, b, c, None, opts, tile)
}

/// [`matmul_register`] that also writes `col_sum[n]` = Σ_k op(B)[k, n] (`[N]`; op(B) not
/// transposed): a weight gradient and its bias gradient. One dispatch where K is not split; else
/// the matmul and a [`column_sum`].
pub fn matmul_register_column_sum(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    col_sum: &Tensor,
    opts: &MatmulOptions,
    tile: RegisterTile,
) -> Result<Plan> {
    plan(gpu, a, b, c, Some(col_sum), opts, tile)
}

/// How many K chunks: enough that none passes `max_kc`, and on small outputs more so that the
/// device has enough workgroups (each chunk keeping at least 128 of K), as `matmul` does.
fn split_count(gpu: &Gpu, groups: usize, k: usize, max_kc: usize) -> usize {
    const MIN_KC: usize = 128;
    let needed = k.div_ceil(max_kc);
    // The device profile's target: one workgroup per CPU thread at a time on lavapipe, many on a GPU.
    let target_groups = gpu.profile().matmul.split_k_target_groups;
    let for_parallelism = target_groups.div_ceil(groups.max(1)).min(k / MIN_KC).max(1);
    needed.max(for_parallelism)
}

fn plan(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    col_sum: Option<&Tensor>,
    opts: &MatmulOptions,
    tile: RegisterTile,
) -> Result<Plan> {
    let form = format!("{}, tile {}", describe(opts, a.shape(), "", b, c), tile.name());
    let dims = check_operands(OP, a, None, b, c, opts, &form)?;
    let Dims { m, n, k } = dims;
    if let Some(s) = col_sum {
        check_column_sum(OP, s, [a, b, c], n, opts, &form)?;
    }
    let EpilogueArgs { epi, has_bias, act, aux, extra } = check_epilogue(OP, gpu, opts, [a, b, c], dims, &form)?;
    tile.check(gpu)?;
    if let (Some(_), Some(_)) = (&extra, col_sum) {
        return Err(WgnnError::invalid(OP, format!("column sums take no epilogue of their own: {form}")));
    }

    // vec4 loads need each stored operand's contiguous dimension to be a multiple of 4 and its
    // view 16-byte aligned (C is stored a value at a time).
    let aligned = a.byte_offset().is_multiple_of(16) && b.byte_offset().is_multiple_of(16);
    let a_contiguous = if opts.trans_a { m } else { k };
    let b_contiguous = if opts.trans_b { k } else { n };
    let vec4 = aligned && a_contiguous.is_multiple_of(4) && b_contiguous.is_multiple_of(4);

    let (bm, bn, bk) = (tile.bm as usize, tile.bn as usize, tile.bk as usize);
    let (grid_x, grid_y) = (n.div_ceil(bn), m.div_ceil(bm));
    let max_kc = tile.max_kc() as usize;
    // With column sums only the loop cap splits K: a split costs a reduction and the sums a
    // dispatch of their own.
    let splits = if col_sum.is_some() { k.div_ceil(max_kc) } else { split_count(gpu, grid_x * grid_y, k, max_kc) };
    let kc = k.div_ceil(splits).next_multiple_of(bk);
    let splits = k.div_ceil(kc);
    let split = splits > 1;
    let fused_sum = col_sum.is_some() && !split;

    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        kc: kc as u32,
        splits: splits as u32,
        slope: act.slope(),
        epi,
        act: act.code(),
        accumulate: opts.accumulate as u32,
        has_bias: has_bias as u32,
        split: split as u32,
        _pad: 0,
    };
    let flag = |b: bool| b as u32 as f64;
    let (tx, ty) = tile.threads();
    let nt = tile.invocations();
    // Values each invocation stages per step: vec4s or scalars.
    let per = if vec4 { 4 } else { 1 };
    let constants = [
        ("TRANS_A", flag(opts.trans_a)),
        ("TRANS_B", flag(opts.trans_b)),
        ("COLSUM_B", flag(fused_sum)),
        ("BM", tile.bm as f64),
        ("BN", tile.bn as f64),
        ("BK", tile.bk as f64),
        ("TM", tile.tm as f64),
        ("TN", tile.tn as f64),
        ("TX", tx as f64),
        ("TY", ty as f64),
        ("A_TILE", (tile.bm * tile.bk / 4) as f64),
        ("B_TILE", (tile.bn * tile.bk / 4) as f64),
        ("A_LOADS", (tile.bm * tile.bk / per / nt) as f64),
        ("B_LOADS", (tile.bn * tile.bk / per / nt) as f64),
    ];
    let entry = if vec4 { "mmr_vec4" } else { "mmr_scalar" };
    let grid = [grid_x as u32, grid_y as u32, splits as u32];
    let mut plan = Plan::new();
    if let (Some(s), false) = (col_sum, fused_sum) {
        plan.extend(column_sum(gpu, b, s, false)?);
    }
    if !split {
        // Binding 5: the column sums with COLSUM_B, the epilogue's pre-activation or residual
        // with EPI 3 or 4; elsewhere C (already writable) fills it.
        let sums = extra.as_ref().unwrap_or(if fused_sum { col_sum.unwrap_or(c) } else { c });
        plan.push(dispatch(gpu, &MATMUL_REGISTER, entry, &constants, &params, &[a, b, c, &aux, sums], grid)?);
        return Ok(plan);
    }
    let partial = Tensor::zeros(gpu, &[splits, m, n])?;
    let dummy = dummy(gpu)?;
    plan.push(dispatch(gpu, &MATMUL_REGISTER, entry, &constants, &params, &[a, b, &partial, &dummy, &partial], grid)?);
    const WG: u32 = 256;
    plan.push(dispatch(
        gpu,
        &MATMUL_REGISTER,
        "mmr_reduce",
        &[("WG", WG as f64)],
        &params,
        &[&partial, &dummy, c, &aux, extra.as_ref().unwrap_or(c)],
        grid_1d(gpu, m * n, WG),
    )?);
    Ok(plan)
}
