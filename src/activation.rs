//! Activation functions: the codes the shaders switch on, and their CPU definitions.
//!
//! A backward pass multiplies by act′ computed from the tensor the forward saved for it
//! ([`Activation::derivative_from_saved`]): the output y for every activation but the GELUs, whose
//! derivative needs the input z ([`Activation::saves_input`]: GELU is not monotone, so y does not
//! give z back).

use crate::error::{Result, WgnnError};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    /// Leaky relu with the given negative slope (≥ 0).
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    /// GELU with GPT-2's tanh approximation: 0.5·z·(1 + tanh(√(2/π)·(z + 0.044715·z³))), PyTorch's
    /// `GELU(approximate='tanh')`. Its backward takes the input z (see [`Activation::saves_input`]).
    Gelu,
    /// Exact GELU, z·Φ(z) = 0.5·z·(1 + erf(z/√2)): PyTorch's `nn.GELU()` and Keras' `gelu` default.
    /// erf is a Chebyshev fit (relative error < 1.2e-7, in the shader as on the CPU; see
    /// [`normal_cdf`]). Its backward takes the input z.
    GeluErf,
    /// Row-wise softmax over a layer's units. Not elementwise, so the elementwise kernels
    /// (bias_act, matmul epilogues) refuse it: the model runs it through
    /// [`crate::kernels::softmax_xent::softmax`] and
    /// [`crate::kernels::softmax_grad::softmax_backward`], or fuses it with a cross-entropy loss.
    Softmax,
}

impl Activation {
    /// The `ACT` override constant of activation.wgsl.
    pub fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::LeakyRelu(_) => 2,
            Activation::Sigmoid => 3,
            Activation::Tanh => 4,
            Activation::Gelu => 5,
            Activation::GeluErf => 6,
            // Never reaches a shader: validate_elementwise refuses it first.
            Activation::Softmax => u32::MAX,
        }
    }

    /// Leaky relu's slope, 0 for the others.
    pub fn slope(self) -> f32 {
        match self {
            Activation::LeakyRelu(s) => s,
            _ => 0.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::LeakyRelu(_) => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Gelu => "gelu",
            Activation::GeluErf => "gelu_erf",
            Activation::Softmax => "softmax",
        }
    }

    /// The name as saved files write it and [`Activation::parse`] reads it back (leaky relu with
    /// its slope: `leaky_relu:0.01`).
    pub(crate) fn tag(self) -> String {
        match self {
            Activation::LeakyRelu(slope) => format!("leaky_relu:{slope}"),
            a => a.name().to_string(),
        }
    }

    /// Parses "relu", "sigmoid", "tanh", "identity"/"linear", "leaky_relu" (slope 0.01),
    /// "leaky_relu:0.2", "gelu" (the tanh approximation; also "gelu_tanh") or "gelu_erf" (exact;
    /// also "gelu_exact").
    pub fn parse(name: &str) -> Result<Activation> {
        let lower = name.trim().to_lowercase();
        let (base, arg) = match lower.split_once(':') {
            Some((b, a)) => (b, Some(a)),
            None => (lower.as_str(), None),
        };
        let act = match base {
            "identity" | "linear" | "none" => Activation::Identity,
            "relu" => Activation::Relu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softmax" => Activation::Softmax,
            "gelu" | "gelu_tanh" => Activation::Gelu,
            "gelu_erf" | "gelu_exact" => Activation::GeluErf,
            "leaky_relu" | "leakyrelu" => {
                let slope = match arg {
                    Some(a) => a
                        .parse::<f32>()
                        .map_err(|_| WgnnError::invalid("activation", format!("bad leaky relu slope {a:?}")))?,
                    None => 0.01,
                };
                Activation::LeakyRelu(slope)
            }
            _ => {
                return Err(WgnnError::invalid(
                    "activation",
                    format!(
                        "unknown activation {name:?} (known: identity, relu, leaky_relu[:slope], sigmoid, tanh, gelu, \
                     gelu_erf, softmax)"
                    ),
                ))
            }
        };
        act.validate()?;
        Ok(act)
    }

    /// Derivatives are taken from the forward output, which needs a non-negative leaky slope.
    pub fn validate(self) -> Result<()> {
        if let Activation::LeakyRelu(s) = self {
            if !(s.is_finite() && s >= 0.0) {
                return Err(WgnnError::invalid(
                    "activation",
                    format!("leaky relu slope must be finite and >= 0, got {s}"),
                ));
            }
        }
        Ok(())
    }

    /// Whether act(z) is a function of z alone (all but softmax).
    pub fn is_elementwise(self) -> bool {
        self != Activation::Softmax
    }

    /// [`Activation::validate`], and an error naming `op` for softmax, which an elementwise
    /// kernel cannot apply.
    pub fn validate_elementwise(self, op: &str) -> Result<()> {
        self.validate()?;
        if !self.is_elementwise() {
            return Err(WgnnError::invalid(
                op,
                "softmax is row-wise, not elementwise: use kernels::softmax_xent::softmax and \
                 kernels::softmax_grad::softmax_backward",
            ));
        }
        Ok(())
    }

    /// act(z), as activation.wgsl computes it. Softmax is row-wise: see [`crate::cpu::softmax`];
    /// here it is the identity, and the CPU references that apply activations elementwise assert
    /// they are not given it.
    pub fn forward(self, z: f32) -> f32 {
        match self {
            Activation::Identity => z,
            // NaN stays NaN (f32::max would give 0), as on the GPU.
            Activation::Relu => {
                if z < 0.0 {
                    0.0
                } else {
                    z
                }
            }
            Activation::LeakyRelu(s) => {
                if z > 0.0 {
                    z
                } else {
                    s * z
                }
            }
            Activation::Sigmoid => {
                if z >= 0.0 {
                    1.0 / (1.0 + (-z).exp())
                } else {
                    let e = z.exp();
                    e / (1.0 + e)
                }
            }
            Activation::Tanh => {
                let t = (-2.0 * z.abs()).exp();
                z.signum() * (1.0 - t) / (1.0 + t)
            }
            Activation::Gelu => {
                let u = GELU_TANH_SCALE * (z + GELU_TANH_CUBIC * z * z * z);
                0.5 * z * (1.0 + Activation::Tanh.forward(u))
            }
            Activation::GeluErf => z * normal_cdf(z),
            Activation::Softmax => z,
        }
    }

    /// Whether the backward is given the activation's input z rather than its output y (see
    /// [`Activation::derivative_from_saved`]): the GELUs.
    pub fn saves_input(self) -> bool {
        matches!(self, Activation::Gelu | Activation::GeluErf)
    }

    /// act'(z) from what the forward saved for the backward: y = act(z), or z itself where
    /// [`Activation::saves_input`] (the GELUs); 1 for softmax, whose Jacobian is not diagonal (see
    /// [`crate::cpu::softmax_backward`]). As activation.wgsl's act_derivative_from_saved.
    pub fn derivative_from_saved(self, saved: f32) -> f32 {
        let y = saved;
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu(s) => {
                if y > 0.0 {
                    1.0
                } else {
                    s
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
            Activation::Gelu => {
                let z = saved;
                let u = GELU_TANH_SCALE * (z + GELU_TANH_CUBIC * z * z * z);
                let t = Activation::Tanh.forward(u);
                0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_TANH_SCALE * (1.0 + 3.0 * GELU_TANH_CUBIC * z * z)
            }
            Activation::GeluErf => {
                let z = saved;
                normal_cdf(z) + z * (-0.5 * z * z).exp() * INV_SQRT_2PI
            }
            Activation::Softmax => 1.0,
        }
    }
}

/// √(2/π), the tanh approximation's scale.
const GELU_TANH_SCALE: f32 = 0.797_884_6;
/// The tanh approximation's cubic coefficient.
const GELU_TANH_CUBIC: f32 = 0.044_715;
/// 1/√(2π), the normal density's constant.
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Φ(z), the standard normal CDF = (1 + erf(z/√2))/2, for the exact GELU: erfc(a) for a ≥ 0 by
/// Numerical Recipes' Chebyshev fit `erfcc` (relative error < 1.2e-7 everywhere), then
/// Φ(z) = erfc(|z|/√2)/2 for z < 0 and 1 − that for z ≥ 0, so the left tail keeps its relative
/// precision instead of being 1 − (nearly 1). The same formula as activation.wgsl's normal_cdf
/// (WGSL has no erf); f64 here.
pub fn normal_cdf(z: f32) -> f32 {
    let a = (z as f64).abs() * std::f64::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * a);
    let c = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let poly = c.iter().rev().fold(0.0, |acc, &k| k + t * acc);
    let half_erfc = 0.5 * t * (-a * a + poly).exp();
    (if z < 0.0 { half_erfc } else { 1.0 - half_erfc }) as f32
}
