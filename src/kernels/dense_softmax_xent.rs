//! GPU wrapper of shaders/dense_softmax_xent.wgsl; CPU reference in src/cpu/dense_softmax_xent.rs.

use super::check::{disjoint, expect_len};
use super::ACTIVATION_WGSL;
use crate::activation::Activation;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::profile::{KernelNeeds, LOOP_CAP};
use crate::registry::{dispatch, Access, KernelFamily};
use crate::tensor::{DType, Tensor};

/// W and b from storage (W staged in workgroup memory).
pub(crate) const DENSE_SOFTMAX_XENT: KernelFamily = KernelFamily {
    name: "dense_softmax_xent",
    sources: &[
        ACTIVATION_WGSL,
        include_str!("../../shaders/dense_softmax_xent.wgsl"),
        include_str!("../../shaders/dense_softmax_xent_w_storage.wgsl"),
    ],
    storage: &[Access::ReadWrite; 7],
};

/// W and b read from one uniform window of the buffer that holds both (binding 3 unused).
pub(crate) const DENSE_SOFTMAX_XENT_UNIFORM: KernelFamily = KernelFamily {
    name: "dense_softmax_xent_uniform",
    sources: &[
        ACTIVATION_WGSL,
        include_str!("../../shaders/dense_softmax_xent.wgsl"),
        include_str!("../../shaders/dense_softmax_xent_w_uniform.wgsl"),
    ],
    storage: &[
        Access::ReadWrite,
        Access::Uniform,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
};

/// Floats of the uniform window (`MAX_W + 128` in dense_softmax_xent_w_uniform.wgsl): W, then b
/// within the window. A buffer holding W and b needs this many floats from W's start for the
/// uniform source; the model allocates its parameters with that much room after them.
pub const UNIFORM_WINDOW_FLOATS: usize = MAX_WEIGHTS + 128;

/// Most classes the fused output layer takes (`MAX_C` in the shader: z is a private array).
pub const MAX_CLASSES: usize = 32;
/// Most rows: one workgroup loops over them and adds the totals.
pub const MAX_ROWS: usize = 2048;
/// Most weights (K·C): W is staged in workgroup memory (`MAX_W` in the shader, 12 KiB).
pub const MAX_WEIGHTS: usize = 3072;
/// Most rows under each policy: the numbers and their measurements are the profile's.
pub use crate::profile::{
    CPU_ADAPTER_FUSED_OUTPUT_ROWS as CPU_ADAPTER_MAX_ROWS, GPU_FUSED_OUTPUT_ROWS as GPU_ADAPTER_MAX_ROWS,
};
/// Workgroup memory the shader declares: W staged (MAX_W f32) and the totals' partial sums (WG vec2).
const WORKGROUP_BYTES: u32 = (MAX_WEIGHTS * 4 + 256 * 8) as u32;
/// Most loop iterations one invocation may run, far below [`LOOP_CAP`].
const MAX_LOOP: usize = 32_768;
const _: () = assert!(MAX_LOOP < LOOP_CAP);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DenseSoftmaxXentParams {
    rows: u32,
    k: u32,
    c: u32,
    grad_scale: f32,
    slope: f32,
    /// Uniform source: b's start in the window, in floats.
    b_at: u32,
    _pad: [u32; 2],
}

/// Where [`dense_softmax_xent`] writes.
pub struct DenseSoftmaxXentOut<'a> {
    /// [rows, C]: (softmax(h·W + b) − onehot) · grad_scale, the output layer's dZ (overwritten).
    pub dz: &'a Tensor,
    /// [rows, K]: (dZ·Wᵀ) ⊙ act′(h), the layer below's dZ (overwritten).
    pub dh: &'a Tensor,
    /// `[2]`: += (Σ loss, Σ correct), in a fixed order.
    pub totals: &'a Tensor,
}

/// Invocations of the one workgroup: the rows rounded up to a subgroup's 32, at most 256.
fn workgroup_size(rows: usize) -> usize {
    rows.next_multiple_of(32).min(256)
}

/// Whether [`dense_softmax_xent`] takes `rows` rows of `k` inputs and `c` classes: C ≤
/// [`MAX_CLASSES`], rows ≤ [`MAX_ROWS`], K·C ≤ [`MAX_WEIGHTS`], and each invocation's loops
/// within the cap.
pub fn dense_softmax_xent_fits(rows: usize, k: usize, c: usize) -> bool {
    // Iterations of one invocation: per row, z's init, the forward product, max, Σexp, dZ, the
    // backward product; the row loop itself, W's staging, and invocation 0's totals over WG.
    let wg = workgroup_size(rows).max(1);
    let per_row = 2 * k * c + 2 * k + 4 * c + 1;
    let iterations = rows.div_ceil(wg) * per_row + (k * c).div_ceil(wg) + wg;
    (1..=MAX_CLASSES).contains(&c)
        && (1..=MAX_ROWS).contains(&rows)
        && (1..=MAX_WEIGHTS).contains(&(k * c))
        && iterations <= MAX_LOOP
}

/// Whether a training step should use [`dense_softmax_xent`] on `gpu`: where it fits, within the
/// device's limits (a device may be asked for less than the WebGPU defaults), and up to the
/// profile's `fused_output_max_rows` ([`CPU_ADAPTER_MAX_ROWS`] under the CPU-adapter policy,
/// [`GPU_ADAPTER_MAX_ROWS`] under the GPU one).
pub fn dense_softmax_xent_preferred(gpu: &Gpu, rows: usize, k: usize, c: usize) -> bool {
    let profile = gpu.profile();
    let needs = KernelNeeds {
        storage_buffers: DENSE_SOFTMAX_XENT.storage.len(),
        invocations: workgroup_size(rows) as u32,
        workgroup_bytes: WORKGROUP_BYTES,
    };
    dense_softmax_xent_fits(rows, k, c) && profile.fits(needs) && rows <= profile.fused_output_max_rows
}

/// The output layer's forward pass, softmax cross-entropy and backward pass into the layer below,
/// in one dispatch (a training step's last three otherwise). Where W and b lie in one buffer with
/// [`UNIFORM_WINDOW_FLOATS`] from W's start (a model's parameters do), the kernel reads them
/// through a uniform window, which lavapipe loads ~10× faster than storage; elsewhere it stages W
/// from storage.  h: [rows, K] f32, the layer below's
/// output with activation `act` (elementwise); w: [K, C]; b: `[C]`; labels: `[rows]` u32 (each <
/// C; checked here when uploaded from the host). `grad_scale` is usually 1/rows. Shapes must pass
/// [`dense_softmax_xent_fits`].
#[allow(clippy::too_many_arguments)]
pub fn dense_softmax_xent(
    gpu: &Gpu,
    h: &Tensor,
    w: &Tensor,
    b: &Tensor,
    labels: &Tensor,
    act: Activation,
    grad_scale: f32,
    out: &DenseSoftmaxXentOut,
) -> Result<Plan> {
    const OP: &str = "dense_softmax_xent";
    h.expect_dtype(OP, DType::F32)?;
    w.expect_dtype(OP, DType::F32)?;
    let (rows, k) = h.dims2(OP)?;
    let (wk, c) = w.dims2(OP)?;
    let shapes = format!("h {:?}, W {:?}", h.shape(), w.shape());
    if wk != k {
        return Err(WgnnError::shape_of(
            OP,
            &[("h", h.shape()), ("W", w.shape())],
            format!("W must have h's {k} columns as rows: {shapes}"),
        ));
    }
    if !dense_softmax_xent_fits(rows, k, c) {
        return Err(WgnnError::invalid(
            OP,
            format!(
                "{shapes}: takes 1..={MAX_ROWS} rows, 1..={MAX_CLASSES} classes, K·C ≤ {MAX_WEIGHTS} and loops within the cap"
            ),
        ));
    }
    expect_len(OP, "b", b, DType::F32, c, &format!("[{c}]"))?;
    expect_len(OP, "labels", labels, DType::U32, rows, &format!("[{rows}]"))?;
    if let Some(max) = labels.max_u32() {
        if max as usize >= c {
            return Err(WgnnError::LabelOutOfRange { op: OP.into(), label: max, classes: c });
        }
    }
    expect_len(OP, "dz", out.dz, DType::F32, rows * c, &format!("[{rows}, {c}]"))?;
    expect_len(OP, "dh", out.dh, DType::F32, rows * k, &format!("[{rows}, {k}]"))?;
    expect_len(OP, "totals", out.totals, DType::F32, 2, "[2]")?;
    act.validate_elementwise(OP)?;
    if act.saves_input() {
        return Err(WgnnError::invalid(
            OP,
            format!(
                "{}'s derivative needs its input, and h is its output: run the layer's matmul, \
                 softmax_xent and an ActGrad matmul given that input instead",
                act.name()
            ),
        ));
    }
    if !grad_scale.is_finite() {
        return Err(WgnnError::invalid(OP, format!("grad_scale = {grad_scale} must be finite")));
    }
    disjoint(
        OP,
        &[("h", h), ("W", w), ("b", b), ("labels", labels), ("dz", out.dz), ("dh", out.dh), ("totals", out.totals)],
    )?;
    let window = uniform_window(gpu, w, b, &[h, labels, out.dz, out.dh, out.totals]);
    let params = DenseSoftmaxXentParams {
        rows: rows as u32,
        k: k as u32,
        c: c as u32,
        grad_scale,
        slope: act.slope(),
        b_at: window.as_ref().map_or(0, |(_, b_at)| *b_at as u32),
        _pad: [0; 2],
    };
    let constants = [("WG", workgroup_size(rows) as f64), ("ACT", act.code() as f64), ("C", c as f64)];
    let d = match &window {
        Some((window, _)) => {
            // Binding 3 is unused there: dz, already writable, fills it.
            let bindings = [h, window, out.dz, labels, out.dz, out.dh, out.totals];
            dispatch(gpu, &DENSE_SOFTMAX_XENT_UNIFORM, OP, &constants, &params, &bindings, [1, 1, 1])?
        }
        None => {
            let bindings = [h, w, b, labels, out.dz, out.dh, out.totals];
            dispatch(gpu, &DENSE_SOFTMAX_XENT, OP, &constants, &params, &bindings, [1, 1, 1])?
        }
    };
    Ok(d.into())
}

/// The uniform window over W and b, and b's start in it, where they allow one: one buffer, b after
/// W and within the window, the window inside the buffer, at an offset and of a size the device
/// binds as a uniform buffer, and none of the dispatch's storage bindings (`others`, all
/// writable) in that buffer (wgpu would reject the mixed usage).
fn uniform_window(gpu: &Gpu, w: &Tensor, b: &Tensor, others: &[&Tensor]) -> Option<(Tensor, usize)> {
    let bytes = UNIFORM_WINDOW_FLOATS as u64 * 4;
    let b_at = (b.byte_offset().checked_sub(w.byte_offset())? / 4) as usize;
    let fits = w.same_buffer(b)
        && b_at >= w.len()
        && b_at + b.len() <= UNIFORM_WINDOW_FLOATS
        && w.bytes_to_buffer_end() >= bytes
        && gpu.profile().binds_uniform_window(bytes, w.byte_offset())
        && !others.iter().any(|t| t.same_buffer(w));
    fits.then(|| w.extended(&[UNIFORM_WINDOW_FLOATS]).ok().map(|t| (t, b_at))).flatten()
}
