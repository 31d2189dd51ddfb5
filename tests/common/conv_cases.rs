//! The convolutions the conv2d tests try (tests/conv2d.rs, conv2d_patches.rs): awkward shapes,
//! the activations, and small helpers.

use wgnn::internals::kernels::conv2d::{Conv2dConfig, Conv2dDims, Padding};
use wgnn::{Activation, Gpu, Tensor, WgnnError};

/// One convolution to try: x `[rows, h, w, c_in]`, kernel `[kh, kw, c_in, c_out]`.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub x: [usize; 4],
    pub kernel: (usize, usize),
    pub c_out: usize,
    pub strides: (usize, usize),
    pub padding: Padding,
}

impl Case {
    pub fn cfg(&self) -> Conv2dConfig {
        Conv2dConfig { strides: self.strides, padding: self.padding }
    }
    pub fn kernel_shape(&self) -> [usize; 4] {
        [self.kernel.0, self.kernel.1, self.x[3], self.c_out]
    }
    pub fn dims(&self) -> Conv2dDims {
        Conv2dDims::new("test", &self.x, &self.kernel_shape(), &self.cfg()).unwrap()
    }
}

pub const fn case(
    x: [usize; 4],
    kernel: (usize, usize),
    c_out: usize,
    strides: (usize, usize),
    padding: Padding,
) -> Case {
    Case { x, kernel, c_out, strides, padding }
}

/// Odd sizes, strides 1 and 2, 1×1 to 5×5 kernels, C = 1 and 3, batch 1, `same` with even kernels,
/// a kernel as large as the image, a 1×1 kernel at stride 2 (not pointwise), and a patch length
/// (3·3·4 = 36) and channel counts that allow the vec4 and subgroup matmuls, and more.
pub const CASES: &[Case] = &[
    case([1, 7, 9, 3], (3, 3), 4, (1, 1), Padding::Valid),
    case([2, 7, 9, 1], (5, 5), 3, (2, 2), Padding::Same),
    case([3, 8, 6, 3], (2, 2), 5, (2, 2), Padding::Same),
    case([2, 9, 7, 1], (4, 2), 2, (1, 2), Padding::Same),
    case([2, 5, 5, 3], (1, 1), 8, (1, 1), Padding::Valid),
    case([2, 5, 7, 3], (1, 1), 4, (1, 1), Padding::Same),
    case([2, 6, 5, 4], (1, 1), 4, (2, 2), Padding::Same),
    case([1, 5, 5, 3], (5, 5), 4, (1, 1), Padding::Valid),
    case([2, 11, 11, 4], (3, 3), 8, (1, 1), Padding::Valid),
    case([1, 9, 9, 3], (3, 3), 2, (2, 2), Padding::Valid),
    case([1, 4, 4, 1], (6, 6), 1, (3, 3), Padding::Same),
    // 4, 8 and 16 channels: the vec4 im2col and col2im at the padding's edges; 5: a channel left
    // after groups of 4.
    case([2, 7, 6, 8], (3, 3), 4, (2, 1), Padding::Same),
    case([1, 5, 6, 16], (3, 3), 4, (1, 1), Padding::Same),
    case([1, 6, 5, 5], (2, 3), 3, (1, 1), Padding::Same),
    // Kernel rows too long for one invocation: im2col and col2im split the channels in segments.
    case([1, 3, 3, 2801], (3, 3), 2, (1, 1), Padding::Same),
    case([1, 3, 3, 11_200], (3, 3), 4, (1, 1), Padding::Same),
];

pub const ACTS: &[Activation] = &[
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.1),
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Gelu,
    Activation::GeluErf,
];

/// What an activation's forward keeps for its backward, from its input u: act(u), or u itself
/// for the GELUs.
pub fn saved(act: Activation, u: f32) -> f32 {
    if act.saves_input() {
        u
    } else {
        act.forward(u)
    }
}

pub fn up(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

/// The error `result` must be (`what`: the case, for the message).
pub fn expect_err(result: wgnn::Result<wgnn::Plan>, what: &str) -> WgnnError {
    match result {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e,
    }
}

pub fn assert_mentions(err: &WgnnError, parts: &[&str]) {
    let message = err.to_string();
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}
