//! What a matmul is asked for beyond its operands: op(A) and op(B) transposed or not, accumulate,
//! the fused epilogue, and optionally the variant ([`MatmulOptions`]). Shared by the matmul
//! wrappers, their checks and the autotuner.

use crate::activation::Activation;
use crate::matmul_kernel::MatmulVariant;
use crate::tensor::Tensor;

/// What is applied to each finished output of a matmul.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    None,
    /// C = act(A·B + bias), bias: `[N]` broadcast over rows (or None).
    BiasAct {
        bias: Option<&'a Tensor>,
        act: Activation,
    },
    /// C = (A·B) ⊙ act'(Y) with Y: [M, N] what that activation's forward saved: its output, or
    /// its input for the GELUs ([`Activation::saves_input`]; activation.wgsl's
    /// act_derivative_from_saved).
    ActGrad {
        y: &'a Tensor,
        act: Activation,
    },
    /// C = act(A·B + bias) as [`Epilogue::BiasAct`], and `pre` = A·B + bias: `[M, N]` (no
    /// split-K aside), the activation's input that a GELU's backward reads
    /// ([`Activation::saves_input`]), kept by the same dispatch instead of a pass of its own.
    BiasActKeep {
        bias: Option<&'a Tensor>,
        act: Activation,
        pre: &'a Tensor,
    },
    /// C = act(A·B + bias + R), R `[M, N]`: the end of a residual branch (its last dense layer
    /// with the sum `f(x) + x` after it, R the shortcut) in one dispatch instead of two.
    Residual {
        bias: Option<&'a Tensor>,
        residual: &'a Tensor,
        act: Activation,
    },
}

/// Options of [`super::matmul::matmul`]; `MatmulOptions::default()` is a plain C = A·B.
#[derive(Clone, Copy, Debug)]
pub struct MatmulOptions<'a> {
    pub trans_a: bool,
    pub trans_b: bool,
    /// C += op(A)·op(B) instead of C = (only with `Epilogue::None`).
    pub accumulate: bool,
    pub epilogue: Epilogue<'a>,
    /// None: the engine picks (the autotuner's pick, [`crate::autotune`], where it is on; else
    /// [`super::matmul_choice::choose_variant`]).
    pub variant: Option<MatmulVariant>,
}

impl Default for MatmulOptions<'_> {
    fn default() -> Self {
        MatmulOptions { trans_a: false, trans_b: false, accumulate: false, epilogue: Epilogue::None, variant: None }
    }
}
