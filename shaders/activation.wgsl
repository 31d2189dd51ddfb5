// Activations shared by the kernels that apply one or its derivative on the way (bias_act, matmul,
// matmul_register, batch_norm, conv2d, pool2d: prepended to each by its kernel family).
// Codes match `Activation::code` in src/activation.rs:
//   0 identity, 1 relu, 2 leaky relu (slope from the caller), 3 sigmoid, 4 tanh,
//   5 GELU (GPT-2's tanh approximation), 6 GELU (exact, erf).
// Derivatives are taken from what the forward saved for the backward (`saved`): the OUTPUT y for
// codes 0–4, so their backward needs no saved input; the INPUT z for the GELUs (5, 6), which are
// not monotone, so y does not give z back (Activation::saves_input in src/activation.rs).

const GELU_TANH_SCALE: f32 = 0.7978846;   // √(2/π)
const GELU_TANH_CUBIC: f32 = 0.044715;
const INV_SQRT_2PI: f32 = 0.3989423;

// tanh(z), stable for large |z| (never exp of a large positive number).
fn act_tanh(z: f32) -> f32 {
    let t = exp(-2.0 * abs(z));
    return sign(z) * (1.0 - t) / (1.0 + t);
}

// Φ(z), the standard normal CDF: erfc(a), a = |z|/√2, by Numerical Recipes' Chebyshev fit erfcc
// (relative error < 1.2e-7; WGSL has no erf), then Φ = erfc/2 on the left, 1 − erfc/2 on the
// right, so the left tail keeps its relative precision. As normal_cdf in src/activation.rs.
fn normal_cdf(z: f32) -> f32 {
    let a = abs(z) * 0.70710678;
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let half_erfc = 0.5 * t * exp(-a * a + poly);
    return select(1.0 - half_erfc, half_erfc, z < 0.0);
}

fn act_forward(code: u32, z: f32, slope: f32) -> f32 {
    switch code {
        // Not max(z, 0): that may turn NaN into 0, hiding a diverged layer from the loss check.
        case 1u: { return select(z, 0.0, z < 0.0); }
        case 2u: { return select(slope * z, z, z > 0.0); }
        case 3u: {
            // Stable for large |z|: never exp of a large positive number.
            if (z >= 0.0) { return 1.0 / (1.0 + exp(-z)); }
            let e = exp(z);
            return e / (1.0 + e);
        }
        case 4u: { return act_tanh(z); }
        case 5u: { return 0.5 * z * (1.0 + act_tanh(GELU_TANH_SCALE * (z + GELU_TANH_CUBIC * z * z * z))); }
        case 6u: { return z * normal_cdf(z); }
        default: { return z; }
    }
}

// act'(z) from `saved`: y = act(z) for codes 0–4, z for the GELUs.
fn act_derivative_from_saved(code: u32, saved: f32, slope: f32) -> f32 {
    let y = saved;
    let z = saved;
    switch code {
        case 1u: { return select(0.0, 1.0, y > 0.0); }
        case 2u: { return select(slope, 1.0, y > 0.0); }
        case 3u: { return y * (1.0 - y); }
        case 4u: { return 1.0 - y * y; }
        case 5u: {
            let t = act_tanh(GELU_TANH_SCALE * (z + GELU_TANH_CUBIC * z * z * z));
            return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_TANH_SCALE * (1.0 + 3.0 * GELU_TANH_CUBIC * z * z);
        }
        case 6u: { return normal_cdf(z) + z * exp(-0.5 * z * z) * INV_SQRT_2PI; }
        default: { return 1.0; }
    }
}
