// Activations shared by the kernels that apply one or its derivative on the way (bias_act, matmul,
// matmul_register, batch_norm, conv2d, pool2d: prepended to each by its kernel family).
// Codes match `Activation::code` in src/activation.rs:
//   0 identity, 1 relu, 2 leaky relu (slope from the caller), 3 sigmoid, 4 tanh.
// Derivatives are written in terms of the forward OUTPUT y, so backward needs no saved input.

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
        case 4u: {
            let t = exp(-2.0 * abs(z));
            return sign(z) * (1.0 - t) / (1.0 + t);
        }
        default: { return z; }
    }
}

fn act_derivative_from_output(code: u32, y: f32, slope: f32) -> f32 {
    switch code {
        case 1u: { return select(0.0, 1.0, y > 0.0); }
        case 2u: { return select(slope, 1.0, y > 0.0); }
        case 3u: { return y * (1.0 - y); }
        case 4u: { return 1.0 - y * y; }
        default: { return 1.0; }
    }
}
