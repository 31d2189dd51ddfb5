//! GPU wrapper of shaders/conv2d.wgsl (im2col, col2im) and the matmuls it feeds; CPU reference
//! in src/cpu/conv2d.rs. The patch matrix itself (its dispatches, chunks, and the matrix kept
//! from the forward) is src/kernels/conv2d_patches.rs.
//!
//! Channels-last, as Keras: x `[rows, H, W, C_in]`, kernel `[kh, kw, C_in, C_out]`, bias
//! `[C_out]`, y `[rows, Ho, Wo, C_out]`; strides ≥ 1, padding valid or same (TensorFlow's split).
//!
//! Design: the forward of a small patch (at most [`MAX_DIRECT_PATCH`] values: a first layer of
//! 1 to 3 channels) to at most [`PICK_DIRECT_MAX_CHANNELS`] channels runs the direct kernel of src/kernels/conv2d_direct.rs, no patch matrix
//! (it writes the patches only where the forward keeps them); where [`conv2d_implicit_applies`]
//! (no padding, a CPU adapter's subgroup kernel), the kernel gradient and the forward read the
//! patches straight from x (src/kernels/conv2d_implicit.rs);
//! everything else is im2col + the engine's matmul. With the patch
//! matrix col `[rows·Ho·Wo, K]` (K = kh·kw·C_in rounded up to a multiple of 4, so that the vec4
//! and subgroup matmuls apply; the extra columns are zero) and the kernel read as `[K, C_out]`:
//! - forward: y = act(col·kernel + b), the bias and activation fused as the matmul's epilogue;
//! - kernel gradient: dkernel = colᵀ·dZ with db = Σ dZ fused ([`matmul_column_sum`]); the sum over
//!   rows·Ho·Wo is the matmul's K, which it splits for lavapipe's 65,535-iteration loop cap;
//! - input gradient: dcol = dZ·kernelᵀ, then col2im sums each pixel's entries (a gather: no
//!   atomics, a fixed order).
//!
//! Why: the products run on the matmul variants the engine already tunes per adapter, with their
//! split-K and epilogues. Measured on lavapipe (2 shared cores, loaded), at the mnist_convnet's
//! shapes at batch 128, forward: a direct kernel (4 positions × 4 output channels an invocation,
//! patches gathered from x as it goes; a prototype, not kept) took 0.40 s for the first layer
//! (3×3, 1 → 32 channels) and 2.8 s for the second (3×3, 32 → 64), against 0.29 s and 0.39 s for
//! im2col + matmul; padding K (9 → 12) then took the first to 0.12 s. The cost of im2col is the
//! patch matrix, written and read once per product: on lavapipe ~20% of the second layer's
//! forward. A 1×1 kernel at stride 1 needs none: x is the matrix. Where the patch
//! matrix of the whole batch passes the device's binding size, the batch is cut into chunks of
//! images (sized so that every view of y or dZ starts at an aligned offset), one scratch reused.
//! Where it is built in one piece, a training step keeps the forward's patch matrix for the kernel
//! gradient ([`conv2d_forward_keeping_patches`], [`conv2d_backward_weights_from_patches`]) rather
//! than building it twice.

use super::check::expect_len;
use super::conv2d_direct::conv2d_direct;
use super::conv2d_implicit;
use super::conv2d_patches::{chunks, col2im, copy, direct, im2col, images_per_chunk, kernel_matrix, padded_patch};
use super::matmul::{matmul, matmul_column_sum, subgroup_narrow, Epilogue, MatmulOptions};
use super::reduce::column_sum;
use crate::activation::Activation;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::kernels::bias_act::bias_act_backward;
use crate::plan::Plan;
use crate::tensor::{DType, Tensor};

pub use super::conv2d_direct::{
    conv2d_direct_fits, ConvForwardKernel, MAX_DIRECT_CHANNELS, MAX_DIRECT_PATCH, PICK_DIRECT_MAX_CHANNELS,
};
pub use super::conv2d_implicit::{
    conv2d_backward_input_kernel, conv2d_implicit_applies, conv2d_implicit_input_fits, conv2d_implicit_runs,
    ConvInputGradKernel,
};
pub use super::conv2d_patches::ConvPatches;
pub use crate::cpu::conv2d::{Conv2dConfig, Conv2dDims, Padding, Window, MAX_WINDOW_CELLS};

/// `t` is an f32 tensor of exactly `shape`, the shape that the operands `given` imply (named in
/// the error's shapes after `t`; `context` names them and the config in its text).
pub(crate) fn expect_shape(
    op: &str,
    what: &str,
    t: &Tensor,
    shape: &[usize],
    given: &[(&str, &[usize])],
    context: &str,
) -> Result<()> {
    t.expect_dtype(op, DType::F32)?;
    if t.shape() != shape {
        let mut shapes = vec![(what, t.shape())];
        shapes.extend(given.iter().filter(|(name, _)| *name != what));
        return Err(WgnnError::shape_of(
            op,
            &shapes,
            format!("{what} must be {shape:?}, got {:?} ({context})", t.shape()),
        ));
    }
    Ok(())
}

/// No output shares memory with another binding, and every tensor is indexable by the shaders'
/// u32 arithmetic.
pub(crate) fn check_bindings(op: &str, outputs: &[(&str, &Tensor)], inputs: &[(&str, &Tensor)]) -> Result<()> {
    for (i, (name, out)) in outputs.iter().enumerate() {
        for (other, t) in outputs[i + 1..].iter().chain(inputs) {
            if out.overlaps(t) {
                return Err(WgnnError::invalid(
                    op,
                    format!("{name} {:?} and {other} {:?} share memory", out.shape(), t.shape()),
                ));
            }
        }
    }
    for (name, t) in outputs.iter().chain(inputs) {
        if t.len() > u32::MAX as usize {
            return Err(WgnnError::invalid(
                op,
                format!("{name} {:?} has more values than a u32 index reaches", t.shape()),
            ));
        }
    }
    Ok(())
}

/// The patch matrix a training step keeps from the forward for the kernel gradient: none where
/// the kernel gradient reads x's patches in place ([`conv2d_implicit_applies`]), else
/// [`ConvPatches::new`]'s.
pub fn conv2d_step_patches(gpu: &Gpu, d: &Conv2dDims) -> Result<Option<ConvPatches>> {
    if conv2d_implicit_applies(gpu, d) {
        return Ok(None);
    }
    ConvPatches::new(gpu, d)
}

/// y = act(conv(x, kernel) + bias).  x `[rows, H, W, C_in]`, kernel `[kh, kw, C_in, C_out]`, bias
/// `[C_out]` (or none), y `[rows, Ho, Wo, C_out]` with Ho, Wo from `cfg` ([`Conv2dDims`]).
pub fn conv2d_forward(
    gpu: &Gpu,
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    act: Activation,
    cfg: &Conv2dConfig,
) -> Result<Plan> {
    forward("conv2d_forward", gpu, x, kernel, bias, y, act, cfg, None, None)
}

/// [`conv2d_forward`] that builds the batch's patch matrix into `patches` and leaves it there for
/// [`conv2d_backward_weights_from_patches`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_keeping_patches(
    gpu: &Gpu,
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    act: Activation,
    cfg: &Conv2dConfig,
    patches: &ConvPatches,
) -> Result<Plan> {
    forward("conv2d_forward_keeping_patches", gpu, x, kernel, bias, y, act, cfg, Some(patches), None)
}

/// [`conv2d_forward`] (with `patches`, [`conv2d_forward_keeping_patches`]) by the given kernel
/// rather than the one the engine picks, for tests and benchmarks; [`ConvForwardKernel::Direct`]
/// where [`conv2d_direct_fits`] says it does not is an error.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_using(
    gpu: &Gpu,
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    act: Activation,
    cfg: &Conv2dConfig,
    patches: Option<&ConvPatches>,
    using: ConvForwardKernel,
) -> Result<Plan> {
    forward("conv2d_forward_using", gpu, x, kernel, bias, y, act, cfg, patches, Some(using))
}

/// The kernel [`conv2d_forward`] runs: on a CPU adapter, the implicit GEMM for exactly 16 output
/// channels where the subgroup matmul's two 16-row halves fill its lanes
/// ([`subgroup_narrow`]: lavapipe, 64×28×28×1 → 3×3 → 16, 2.05 ms against the direct kernel's
/// 2.78; BENCHMARKS.md, 2026-12-07 (before midnight)); else the direct one wherever it fits with at most
/// [`PICK_DIRECT_MAX_CHANNELS`] output channels (fewer passes over memory on any device), except
/// a 1×1 kernel at stride 1, whose patch matrix is x itself; else the implicit GEMM where
/// [`conv2d_implicit_applies`] (no patch matrix to keep, and x's view 16-byte aligned where C_in
/// is a multiple of 4: the forward falls back to the patch path otherwise). Where C_in is not a
/// multiple of 4 its patch vec4s are gathered from scalars, still ahead of writing the patches
/// (lavapipe, 128×28×28×1 → 3×3 → 32: 7.8 ms against 11.2; BENCHMARKS.md, 2026-12-07 (night)).
pub fn conv2d_forward_kernel(
    gpu: &Gpu,
    d: &Conv2dDims,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> ConvForwardKernel {
    let implicit = !direct(gpu, d) && conv2d_implicit_applies(gpu, d);
    let positions = d.rows * d.window.ho * d.window.wo;
    if implicit && d.c_out == 16 && subgroup_narrow(gpu, positions, d.c_out) {
        ConvForwardKernel::Implicit
    } else if !direct(gpu, d) && d.c_out <= PICK_DIRECT_MAX_CHANNELS && conv2d_direct_fits(d, kernel, bias, y) {
        ConvForwardKernel::Direct
    } else if implicit {
        ConvForwardKernel::Implicit
    } else {
        ConvForwardKernel::Im2colMatmul
    }
}

#[allow(clippy::too_many_arguments)]
fn forward(
    op: &str,
    gpu: &Gpu,
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    act: Activation,
    cfg: &Conv2dConfig,
    patches: Option<&ConvPatches>,
    using: Option<ConvForwardKernel>,
) -> Result<Plan> {
    act.validate_elementwise(op)?;
    let d = Conv2dDims::new(op, x.shape(), kernel.shape(), cfg)?;
    let given = [("x", x.shape()), ("kernel", kernel.shape())];
    let context = format!("x {:?}, kernel {:?}, {cfg:?}", x.shape(), kernel.shape());
    expect_shape(op, "x", x, &d.x_shape(), &given, &context)?;
    expect_shape(op, "kernel", kernel, &d.kernel_shape(), &given, &context)?;
    expect_shape(op, "y", y, &d.y_shape(), &given, &context)?;
    let mut inputs = vec![("x", x), ("kernel", kernel)];
    if let Some(b) = bias {
        expect_len(op, "bias", b, DType::F32, d.c_out, &format!("[{}] ({context})", d.c_out))?;
        inputs.push(("bias", b));
    }
    let mut outputs = vec![("y", y)];
    if let Some(kept) = patches {
        kept.expect_dims(op, &d)?;
        outputs.push(("patches", kept.tensor()));
    }
    check_bindings(op, &outputs, &inputs)?;
    let win = &d.window;
    let mut kind = using.unwrap_or_else(|| conv2d_forward_kernel(gpu, &d, kernel, bias, y));
    let implicit_fits = patches.is_none() && conv2d_implicit::forward_fits(gpu, x, &d);
    if using.is_none() && kind == ConvForwardKernel::Implicit && !implicit_fits {
        kind = ConvForwardKernel::Im2colMatmul;
    }
    match kind {
        ConvForwardKernel::Direct => {
            let mut plan = Plan::new();
            plan.push(conv2d_direct(op, gpu, x, kernel, bias, y, act, &d, patches.map(|kept| kept.tensor()))?);
            return Ok(plan);
        }
        ConvForwardKernel::Implicit if !implicit_fits => {
            return Err(WgnnError::invalid(
                op,
                format!(
                    "the implicit GEMM needs no padding, the subgroup matmul, a 16-byte aligned x and no patch \
                     matrix to keep: {context}{}",
                    if patches.is_some() { ", patches given" } else { "" }
                ),
            ));
        }
        ConvForwardKernel::Implicit => return conv2d_implicit::forward(gpu, x, kernel, bias, y, act, &d),
        ConvForwardKernel::Im2colMatmul => {}
    }
    let opts = MatmulOptions { epilogue: Epilogue::BiasAct { bias, act }, ..Default::default() };
    if direct(gpu, &d) {
        let (x2, k2) = (x.reshape(&[d.rows * win.h * win.w, d.c_in])?, kernel.reshape(&[d.c_in, d.c_out])?);
        return matmul(gpu, &x2, &k2, &y.reshape(&[d.rows * win.ho * win.wo, d.c_out])?, &opts);
    }
    let (per_chunk, positions, k) = (images_per_chunk(op, gpu, &d)?, win.ho * win.wo, padded_patch(&d));
    let col = match patches {
        Some(kept) => kept.tensor().clone(),
        None => Tensor::zeros(gpu, &[per_chunk * positions, k])?,
    };
    let mut plan = Plan::new();
    let k2 = kernel_matrix(gpu, kernel, &d, &mut plan)?;
    for (r0, n) in chunks(d.rows, per_chunk) {
        plan.push(im2col(gpu, x, &col, &d, n, r0)?);
        let col_n = col.view(0, &[n * positions, k])?;
        let y_n = y.view(r0 * positions * d.c_out, &[n * positions, d.c_out])?;
        plan.extend(matmul(gpu, &col_n, &k2, &y_n, &opts)?);
    }
    Ok(plan)
}

/// dz = dy ⊙ act′(y), the gradient at the convolution's output before its activation, from the
/// forward output y.  dy, y, dz `[rows, Ho, Wo, C_out]`. (bias_act_backward on the `[rows·Ho·Wo,
/// C_out]` matrices; the bias gradient comes with [`conv2d_backward_weights`].)
pub fn conv2d_backward_activation(gpu: &Gpu, dy: &Tensor, y: &Tensor, dz: &Tensor, act: Activation) -> Result<Plan> {
    const OP: &str = "conv2d_backward_activation";
    let shape = match dy.shape() {
        [_, _, _, _] => dy.shape().to_vec(),
        other => {
            return Err(WgnnError::shape_of(
                OP,
                &[("dy", other)],
                format!("dy must be [rows, Ho, Wo, C_out], got {other:?}"),
            ))
        }
    };
    let given = [("dy", dy.shape())];
    let context = format!("dy {shape:?}");
    expect_shape(OP, "dy", dy, &shape, &given, &context)?;
    expect_shape(OP, "y", y, &shape, &given, &context)?;
    expect_shape(OP, "dz", dz, &shape, &given, &context)?;
    let m = [shape[0] * shape[1] * shape[2], shape[3]];
    bias_act_backward(gpu, &dy.reshape(&m)?, &y.reshape(&m)?, &dz.reshape(&m)?, None, act, false)
}

/// dx = the input gradient of the convolution (the activation's derivative already applied: dz
/// from [`conv2d_backward_activation`]).  dz `[rows, Ho, Wo, C_out]`, kernel `[kh, kw, C_in,
/// C_out]`, dx `[rows, H, W, C_in]` (overwritten). `below`: x `[rows, H, W, C_in]` as the output of
/// an element-wise activation, whose derivative then multiplies dx.
pub fn conv2d_backward_input(
    gpu: &Gpu,
    dz: &Tensor,
    kernel: &Tensor,
    dx: &Tensor,
    cfg: &Conv2dConfig,
    below: Option<(&Tensor, Activation)>,
) -> Result<Plan> {
    backward_input("conv2d_backward_input", gpu, dz, kernel, dx, cfg, below, None)
}

/// [`conv2d_backward_input`] by the given kernel rather than the one the engine picks
/// ([`conv2d_backward_input_kernel`]), for tests and benchmarks; [`ConvInputGradKernel::Implicit`]
/// where it does not run (`conv2d_implicit::conv2d_implicit_input_fits`) is an error. A 1×1 kernel at
/// stride 1 is one product either way.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input_using(
    gpu: &Gpu,
    dz: &Tensor,
    kernel: &Tensor,
    dx: &Tensor,
    cfg: &Conv2dConfig,
    below: Option<(&Tensor, Activation)>,
    using: ConvInputGradKernel,
) -> Result<Plan> {
    backward_input("conv2d_backward_input_using", gpu, dz, kernel, dx, cfg, below, Some(using))
}

#[allow(clippy::too_many_arguments)]
fn backward_input(
    op: &'static str,
    gpu: &Gpu,
    dz: &Tensor,
    kernel: &Tensor,
    dx: &Tensor,
    cfg: &Conv2dConfig,
    below: Option<(&Tensor, Activation)>,
    using: Option<ConvInputGradKernel>,
) -> Result<Plan> {
    let d = Conv2dDims::new(op, dx.shape(), kernel.shape(), cfg)?;
    let given = [("dx", dx.shape()), ("kernel", kernel.shape())];
    let context = format!("dx {:?}, kernel {:?}, {cfg:?}", dx.shape(), kernel.shape());
    expect_shape(op, "dx", dx, &d.x_shape(), &given, &context)?;
    expect_shape(op, "kernel", kernel, &d.kernel_shape(), &given, &context)?;
    expect_shape(op, "dz", dz, &d.y_shape(), &given, &context)?;
    let mut inputs = vec![("dz", dz), ("kernel", kernel)];
    if let Some((y, act)) = below {
        act.validate_elementwise(op)?;
        expect_shape(op, "below", y, &d.x_shape(), &given, &context)?;
        inputs.push(("below", y));
    }
    check_bindings(op, &[("dx", dx)], &inputs)?;
    let win = &d.window;
    let positions = win.ho * win.wo;
    if direct(gpu, &d) {
        let (dz2, k2) = (dz.reshape(&[d.rows * positions, d.c_out])?, kernel.reshape(&[d.c_in, d.c_out])?);
        let pixels = [d.rows * win.h * win.w, d.c_in];
        let y2 = below.map(|(y, act)| y.reshape(&pixels).map(|y| (y, act))).transpose()?;
        let epilogue = match &y2 {
            Some((y, act)) => Epilogue::ActGrad { y, act: *act },
            None => Epilogue::None,
        };
        let opts = MatmulOptions { trans_b: true, epilogue, ..Default::default() };
        return matmul(gpu, &dz2, &k2, &dx.reshape(&pixels)?, &opts);
    }
    let kind = using.unwrap_or_else(|| conv2d_backward_input_kernel(gpu, &d));
    if kind == ConvInputGradKernel::Implicit {
        return conv2d_implicit::input_gradient(op, gpu, dz, kernel, dx, &d, below);
    }
    let opts = MatmulOptions { trans_b: true, ..Default::default() };
    let (per_chunk, k) = (images_per_chunk(op, gpu, &d)?, padded_patch(&d));
    let dcol = Tensor::zeros(gpu, &[per_chunk * positions, k])?;
    let mut plan = Plan::new();
    let k2 = kernel_matrix(gpu, kernel, &d, &mut plan)?;
    for (r0, n) in chunks(d.rows, per_chunk) {
        let dz_n = dz.view(r0 * positions * d.c_out, &[n * positions, d.c_out])?;
        let dcol_n = dcol.view(0, &[n * positions, k])?;
        plan.extend(matmul(gpu, &dz_n, &k2, &dcol_n, &opts)?);
        plan.push(col2im(gpu, &dcol_n, dx, &d, (n, r0), below)?);
    }
    Ok(plan)
}

/// dkernel = Σ over every output position of its x patch ⊗ dz, and dbias = Σ dz (overwritten).
/// x `[rows, H, W, C_in]`, dz `[rows, Ho, Wo, C_out]`, dkernel `[kh, kw, C_in, C_out]`, dbias
/// `[C_out]` (or none). The sum over rows·Ho·Wo is split as lavapipe's loop cap needs.
pub fn conv2d_backward_weights(
    gpu: &Gpu,
    x: &Tensor,
    dz: &Tensor,
    dkernel: &Tensor,
    dbias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Plan> {
    backward_weights("conv2d_backward_weights", gpu, x, None, dz, dkernel, dbias, cfg)
}

/// [`conv2d_backward_weights`] from x's patch matrix as [`conv2d_forward_keeping_patches`] left
/// it (x, unchanged since, gives the shapes): no patch matrix is built.
pub fn conv2d_backward_weights_from_patches(
    gpu: &Gpu,
    x: &Tensor,
    patches: &ConvPatches,
    dz: &Tensor,
    dkernel: &Tensor,
    dbias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Plan> {
    backward_weights("conv2d_backward_weights_from_patches", gpu, x, Some(patches), dz, dkernel, dbias, cfg)
}

#[allow(clippy::too_many_arguments)]
fn backward_weights(
    op: &str,
    gpu: &Gpu,
    x: &Tensor,
    patches: Option<&ConvPatches>,
    dz: &Tensor,
    dkernel: &Tensor,
    dbias: Option<&Tensor>,
    cfg: &Conv2dConfig,
) -> Result<Plan> {
    let d = Conv2dDims::new(op, x.shape(), dkernel.shape(), cfg)?;
    let given = [("x", x.shape()), ("dkernel", dkernel.shape())];
    let context = format!("x {:?}, dkernel {:?}, {cfg:?}", x.shape(), dkernel.shape());
    expect_shape(op, "x", x, &d.x_shape(), &given, &context)?;
    expect_shape(op, "dkernel", dkernel, &d.kernel_shape(), &given, &context)?;
    expect_shape(op, "dz", dz, &d.y_shape(), &given, &context)?;
    let mut outputs = vec![("dkernel", dkernel)];
    if let Some(db) = dbias {
        expect_len(op, "dbias", db, DType::F32, d.c_out, &format!("[{}] ({context})", d.c_out))?;
        outputs.push(("dbias", db));
    }
    let mut inputs = vec![("x", x), ("dz", dz)];
    if let Some(kept) = patches {
        kept.expect_dims(op, &d)?;
        inputs.push(("patches", kept.tensor()));
    }
    check_bindings(op, &outputs, &inputs)?;
    let (win, patch, k) = (&d.window, d.patch_len(), padded_patch(&d));
    let positions = win.ho * win.wo;
    // Where the patch is padded, the products write a padded matrix (its last rows: zero columns'
    // gradients), copied back at the end.
    let padded = !direct(gpu, &d) && k != patch;
    let dk2 = if padded { Tensor::zeros(gpu, &[k, d.c_out])? } else { dkernel.reshape(&[patch, d.c_out])? };
    // dK = colᵀ·dZ (+ db = Σ dZ): the first chunk writes, the others add.
    let product = |col: &Tensor, dz_n: &Tensor, first: bool| -> Result<Plan> {
        let opts = MatmulOptions { trans_a: true, accumulate: !first, ..Default::default() };
        match (dbias, first) {
            (Some(db), true) => matmul_column_sum(gpu, col, dz_n, &dk2, db, &opts),
            (Some(db), false) => {
                let mut plan = matmul(gpu, col, dz_n, &dk2, &opts)?;
                plan.extend(column_sum(gpu, dz_n, db, true)?);
                Ok(plan)
            }
            (None, _) => matmul(gpu, col, dz_n, &dk2, &opts),
        }
    };
    if direct(gpu, &d) {
        let x2 = x.reshape(&[d.rows * win.h * win.w, d.c_in])?;
        return product(&x2, &dz.reshape(&[d.rows * positions, d.c_out])?, true);
    }
    if patches.is_none() && conv2d_implicit_applies(gpu, &d) && conv2d_implicit::kernel_gradient_fits(gpu, x, &d) {
        return conv2d_implicit::kernel_gradient(gpu, x, dz, dkernel, dbias, &d);
    }
    let per_chunk = images_per_chunk(op, gpu, &d)?;
    let col = match patches {
        Some(kept) => kept.tensor().clone(),
        None => Tensor::zeros(gpu, &[per_chunk * positions, k])?,
    };
    let mut plan = Plan::new();
    for (r0, n) in chunks(d.rows, per_chunk) {
        if patches.is_none() {
            plan.push(im2col(gpu, x, &col, &d, n, r0)?);
        }
        let col_n = col.view(0, &[n * positions, k])?;
        let dz_n = dz.view(r0 * positions * d.c_out, &[n * positions, d.c_out])?;
        plan.extend(product(&col_n, &dz_n, r0 == 0)?);
    }
    if padded {
        plan.push(copy(gpu, &dk2, dkernel, dkernel.len())?);
    }
    Ok(plan)
}
