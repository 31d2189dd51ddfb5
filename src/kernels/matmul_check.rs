//! The operand and epilogue checks shared by the matmul wrappers ([`super::matmul`] and
//! [`super::matmul_register`]): one set of rules for what C (+)= op(A)·op(B) accepts, whichever
//! kernel runs it (an op(A) gathered from a data set has its own in [`super::matmul_gathered_a`]).
//! Each check takes the op its errors name, so every wrapper's messages stay its own.

use super::matmul_options::{Epilogue, MatmulOptions};
use crate::activation::Activation;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::registry::dummy;
use crate::tensor::{DType, Tensor};

/// op(A)·op(B) with C: (M, N, K).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// The product as the errors describe it, e.g. "op(A) = Aᵀ with A [3, 2], op(B) = B [3, 4], C [2, 4]";
/// `a_note` follows A's shape (" gathered" for an A read from a data set).
pub(crate) fn describe(opts: &MatmulOptions, a_shape: &[usize], a_note: &str, b: &Tensor, c: &Tensor) -> String {
    format!(
        "op(A) = {}{:?}{}, op(B) = {}{:?}, C {:?}",
        if opts.trans_a { "Aᵀ with A " } else { "A " },
        a_shape,
        a_note,
        if opts.trans_b { "Bᵀ with B " } else { "B " },
        b.shape(),
        c.shape()
    )
}

/// A, B and C: f32, 2-D and non-empty, op(A)'s and op(B)'s inner dimensions equal, C `[M, N]` and
/// sharing no memory with A or B. `a_read_as`: where A is bound as one tensor but read as another
/// shape (gathered from a data set's words), that shape; A's own dtype and shape are then not
/// checked here. `form` is [`describe`]'s.
pub(crate) fn check_operands(
    op: &str,
    a: &Tensor,
    a_read_as: Option<(usize, usize)>,
    b: &Tensor,
    c: &Tensor,
    opts: &MatmulOptions,
    form: &str,
) -> Result<Dims> {
    let stored: &[&Tensor] = if a_read_as.is_some() { &[b, c] } else { &[a, b, c] };
    for t in stored {
        t.expect_dtype(op, DType::F32)?;
        t.dims2(op)?;
        t.expect_nonempty(op)?;
    }
    let (ar, ac) = match a_read_as {
        Some(shape) => shape,
        None => a.dims2(op)?,
    };
    let (br, bc) = b.dims2(op)?;
    let (m, k) = if opts.trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if opts.trans_b { (bc, br) } else { (br, bc) };
    if k != kb {
        let a_shape = [ar, ac];
        let shapes = [("a", &a_shape[..]), ("b", b.shape()), ("c", c.shape())];
        return Err(WgnnError::shape_of(op, &shapes, format!("inner dimensions differ ({k} vs {kb}): {form}")));
    }
    if c.shape() != [m, n] {
        let a_shape = [ar, ac];
        let shapes = [("c", c.shape()), ("a", &a_shape[..]), ("b", b.shape())];
        return Err(WgnnError::shape_of(op, &shapes, format!("C must be [{m}, {n}]: {form}")));
    }
    if c.overlaps(a) || c.overlaps(b) {
        return Err(WgnnError::invalid(op, format!("C shares memory with A or B: {form}")));
    }
    Ok(Dims { m, n, k })
}

/// The column sums of op(B) (`col_sum`: f32 `[N]`): op(B) not transposed, `col_sum` sharing no
/// memory with A, B or C.
pub(crate) fn check_column_sum(
    op: &str,
    col_sum: &Tensor,
    [a, b, c]: [&Tensor; 3],
    n: usize,
    opts: &MatmulOptions,
    form: &str,
) -> Result<()> {
    if opts.trans_b {
        return Err(WgnnError::invalid(op, format!("the column sums need op(B) not transposed: {form}")));
    }
    col_sum.expect_dtype(op, DType::F32)?;
    if col_sum.len() != n {
        let shapes = [("col_sum", col_sum.shape()), ("a", a.shape()), ("b", b.shape()), ("c", c.shape())];
        let detail = format!("col_sum must have {n} values, got {:?}: {form}", col_sum.shape());
        return Err(WgnnError::shape_of(op, &shapes, detail));
    }
    if [a, b, c].iter().any(|t| col_sum.overlaps(t)) {
        return Err(WgnnError::invalid(op, format!("col_sum shares memory with A, B or C: {form}")));
    }
    Ok(())
}

/// The epilogue as a kernel takes it.
pub(crate) struct EpilogueArgs {
    /// The EPI code: 0 none, 1 bias and activation, 2 activation gradient, 3 bias and
    /// activation keeping the pre-activation, 4 bias, residual and activation.
    pub epi: u32,
    pub has_bias: bool,
    pub act: Activation,
    /// The bias or Y binding (the shared dummy where there is none).
    pub aux: Tensor,
    /// Binding 5 where the epilogue uses it (the column sums' elsewhere): the pre-activation it
    /// writes (3) or the residual it reads (4), `[M, N]`.
    pub extra: Option<Tensor>,
}

/// `bias` (if any) f32 `[N]`.
fn check_bias(op: &str, bias: Option<&Tensor>, n: usize, form: &str) -> Result<()> {
    if let Some(bias) = bias {
        bias.expect_dtype(op, DType::F32)?;
        if bias.len() != n {
            return Err(WgnnError::shape_of(
                op,
                &[("bias", bias.shape())],
                format!("bias must have {n} values, got {:?}: {form}", bias.shape()),
            ));
        }
    }
    Ok(())
}

/// `t` (the epilogue's `name`) f32 `[M, N]` like C.
fn check_like_c(op: &str, name: &str, t: &Tensor, [m, n]: [usize; 2], form: &str) -> Result<()> {
    t.expect_dtype(op, DType::F32)?;
    if t.shape() != [m, n] {
        let detail = format!("{name} must be [{m}, {n}] like C, got {:?}: {form}", t.shape());
        return Err(WgnnError::shape_of(op, &[(name, t.shape())], detail));
    }
    Ok(())
}

/// The epilogue's tensors (bias f32 `[N]`; Y, the kept pre-activation and the residual f32
/// `[M, N]`), its activation elementwise, no accumulate with an epilogue, C sharing no memory
/// with the bias, Y, the residual or the kept pre-activation, and the last two no buffer with A, B
/// or the bias.
pub(crate) fn check_epilogue(
    op: &str,
    gpu: &Gpu,
    opts: &MatmulOptions,
    [a, b, c]: [&Tensor; 3],
    Dims { m, n, .. }: Dims,
    form: &str,
) -> Result<EpilogueArgs> {
    let dummy = dummy(gpu)?;
    let mut extra = None;
    let (epi, has_bias, act, aux) = match opts.epilogue {
        Epilogue::None => (0u32, false, Activation::Identity, dummy),
        Epilogue::BiasAct { bias, act } => {
            check_bias(op, bias, n, form)?;
            (1, bias.is_some(), act, bias.cloned().unwrap_or(dummy))
        }
        Epilogue::ActGrad { y, act } => {
            check_like_c(op, "Y", y, [m, n], form)?;
            (2, false, act, y.clone())
        }
        Epilogue::BiasActKeep { bias, act, pre } => {
            check_bias(op, bias, n, form)?;
            check_like_c(op, "pre", pre, [m, n], form)?;
            if c.overlaps(pre) {
                return Err(WgnnError::invalid(op, format!("pre shares memory with C: {form}")));
            }
            extra = Some(pre.clone());
            (3, bias.is_some(), act, bias.cloned().unwrap_or(dummy))
        }
        Epilogue::Residual { bias, residual, act } => {
            check_bias(op, bias, n, form)?;
            check_like_c(op, "residual", residual, [m, n], form)?;
            if c.overlaps(residual) {
                return Err(WgnnError::invalid(op, format!("C shares memory with the residual: {form}")));
            }
            extra = Some(residual.clone());
            (4, bias.is_some(), act, bias.cloned().unwrap_or(dummy))
        }
    };
    act.validate_elementwise(op)?;
    if epi != 0 && opts.accumulate {
        return Err(WgnnError::invalid(op, format!("accumulate is only supported without an epilogue: {form}")));
    }
    if epi != 0 && c.overlaps(&aux) {
        return Err(WgnnError::invalid(op, format!("C shares memory with the epilogue's bias or Y: {form}")));
    }
    // Binding 5 is writable: a buffer bound there may not also be bound read-only (A, B, the
    // bias), even where the ranges do not overlap.
    if let Some(t) = &extra {
        if [a, b, &aux].into_iter().any(|o| t.same_buffer(o)) {
            let detail =
                format!("the epilogue's pre-activation or residual shares a buffer with A, B or the bias: {form}");
            return Err(WgnnError::invalid(op, detail));
        }
    }
    Ok(EpilogueArgs { epi, has_bias, act, aux, extra })
}
