//! The flash backward's subgroup kernels (shaders/flash_attention_subgroup.wgsl): each key's (dq)
//! or query's (dk/dv) head loaded once per subgroup of 8 and broadcast, where lavapipe otherwise
//! loads it once per invocation. The same function as [`super::flash_attention`]'s plain
//! backward, checked against the same CPU reference; that module's wrapper checks the shapes and
//! picks these kernels where [`flash_subgroup_runs`] and the device profile prefers
//! subgroups (CPU adapters).

use super::attention_dims::{AttentionDims, AttentionParams};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::registry::{dispatch, grid_1d, Access, Constant, KernelFamily};
use crate::tensor::Tensor;

/// The plain vec4 kernels' module with the subgroup entry points appended (a module of its own:
/// it compiles only where the device has `Features::SUBGROUP`).
pub(crate) const FLASH_ATTENTION_SUBGROUP: KernelFamily = KernelFamily {
    name: "flash_attention_subgroup",
    sources: &[
        include_str!("../../shaders/flash_attention.wgsl"),
        include_str!("../../shaders/flash_attention_vec4.wgsl"),
        include_str!("../../shaders/dropout_hash.wgsl"),
        include_str!("../../shaders/attention_dropout.wgsl"),
        include_str!("../../shaders/flash_attention_subgroup.wgsl"),
    ],
    storage: &[Access::ReadWrite; 7],
};

/// Invocations per workgroup: one subgroup (the shader's SG).
const SG: usize = 8;

/// Whether the subgroup kernels run on `gpu` at `dims` with these bindings (qkv, out, lse, dout,
/// delta, dqkv, then the step counter): subgroups of at least 8, heads of a multiple of 4 values
/// (vec4 loads) and views aligned to 16 bytes.
pub fn flash_subgroup_runs(gpu: &Gpu, dims: &AttentionDims, bindings: &[&Tensor]) -> bool {
    let views = &bindings[..bindings.len().saturating_sub(1)];
    gpu.profile().matmul.subgroup_kernel
        && dims.head_size().is_multiple_of(4)
        && views.iter().all(|t| t.byte_offset().is_multiple_of(16))
}

/// An error naming `op` unless the subgroup kernels run on `gpu` at `dims` with `bindings`.
fn check_runs(op: &str, gpu: &Gpu, dims: &AttentionDims, bindings: &[&Tensor]) -> Result<()> {
    if flash_subgroup_runs(gpu, dims, bindings) {
        return Ok(());
    }
    Err(WgnnError::invalid(
        op,
        format!(
            "the subgroup kernels need subgroups of at least {SG} (this adapter's: {:?}), heads of a multiple of 4 \
             values (here {}) and 16-byte aligned views",
            gpu.profile().subgroup_sizes,
            dims.head_size()
        ),
    ))
}

/// The constants of a pipeline with `rows` query rows per lane.
fn constants(dims: &AttentionDims, rows: usize, dropout: bool) -> Vec<Constant> {
    let mut constants = vec![("HS4", dims.head_size().div_ceil(4) as f64), ("ROWS", rows as f64)];
    if dropout {
        constants.push(("DROPOUT", 1.0));
    }
    constants
}

/// The forward's subgroup dispatch with `rows` query rows per lane, over `bindings` (checked by
/// the caller); an error naming `op` where it does not run here.
pub(crate) fn forward_subgroup_plan(
    op: &str,
    gpu: &Gpu,
    dims: &AttentionDims,
    bindings: &[&Tensor; 7],
    params: &AttentionParams,
    rows: usize,
    dropout: bool,
) -> Result<Plan> {
    check_runs(op, gpu, dims, bindings)?;
    let groups = dims.batch * dims.heads * dims.seq.div_ceil(SG * rows);
    let grid = grid_1d(gpu, groups * SG, SG as u32);
    let constants = constants(dims, rows, dropout);
    let family = &FLASH_ATTENTION_SUBGROUP;
    Ok(dispatch(gpu, family, "flash_attention_forward_sg", &constants, params, bindings, grid)?.into())
}

/// The backward's two subgroup dispatches, dq (with `rows` query rows per lane, writing D) then
/// dk/dv (a key row per lane), over `bindings` (checked by the caller); an error naming `op`
/// where they do not run here.
pub(crate) fn backward_subgroup_plan(
    op: &str,
    gpu: &Gpu,
    dims: &AttentionDims,
    bindings: &[&Tensor; 7],
    params: &AttentionParams,
    rows: usize,
    dropout: bool,
) -> Result<Plan> {
    check_runs(op, gpu, dims, bindings)?;
    let pairs = dims.batch * dims.heads;
    let family = &FLASH_ATTENTION_SUBGROUP;
    let mut plan = Plan::new();
    let grid = grid_1d(gpu, pairs * dims.seq.div_ceil(SG * rows) * SG, SG as u32);
    let dq = constants(dims, rows, dropout);
    plan.push(dispatch(gpu, family, "flash_attention_backward_dq_sg", &dq, params, bindings, grid)?);
    let grid = grid_1d(gpu, pairs * dims.seq.div_ceil(SG) * SG, SG as u32);
    let dkv = constants(dims, 1, dropout);
    plan.push(dispatch(gpu, family, "flash_attention_backward_dkv_sg", &dkv, params, bindings, grid)?);
    Ok(plan)
}
