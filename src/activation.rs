//! Activation functions: the codes the shaders switch on, and their CPU definitions.

use crate::error::{Result, WgnnError};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    /// Leaky relu with the given negative slope (≥ 0).
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
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

    /// Parses "relu", "sigmoid", "tanh", "identity"/"linear", "leaky_relu" (slope 0.01) or
    /// "leaky_relu:0.2".
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
                    "unknown activation {name:?} (known: identity, relu, leaky_relu[:slope], sigmoid, tanh, softmax)"
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
            Activation::Softmax => z,
        }
    }

    /// act'(z) written in terms of y = act(z); 1 for softmax, whose Jacobian is not diagonal (see
    /// [`crate::cpu::softmax_backward`]).
    pub fn derivative_from_output(self, y: f32) -> f32 {
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
            Activation::Softmax => 1.0,
        }
    }
}
