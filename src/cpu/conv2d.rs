//! CPU reference of the 2-D convolution (shaders/conv2d.wgsl with the matmul it feeds), and the
//! sliding-window geometry that the convolution and the pooling kernels share.
//!
//! Layout channels-last, as Keras': activations `[rows, H, W, C]`, kernels `[kh, kw, C_in,
//! C_out]`, bias `[C_out]`. The geometry lives here, at the bottom, so that the CPU reference and
//! the kernels (which re-export it) compute one and the same output shape and padding.

use crate::activation::Activation;
use crate::error::{Result, WgnnError};

/// Keras' `padding`: `Valid` uses only whole windows; `Same` pads with zeros (ignored cells, for
/// pooling) so that the output is `ceil(H / stride)` tall, TensorFlow's way: the padding is split
/// with its odd cell at the bottom (right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Valid,
    Same,
}

/// An invocation loops over at most one window (kernel or pool): lavapipe silently stops a shader
/// invocation's loops after 65,535 iterations, so a larger window is refused, not miscomputed.
pub const MAX_WINDOW_CELLS: usize = 16_384;

/// One sliding window over an `h × w` image: its size, stride, the output size and the padding
/// before the first row and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ho: usize,
    pub wo: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

/// Output length and padding before the first cell along one axis (TensorFlow's rule for `Same`:
/// pad_total = max((out − 1)·stride + k − n, 0), half of it first, the odd cell after).
fn axis(n: usize, k: usize, s: usize, padding: Padding) -> Option<(usize, usize)> {
    match padding {
        Padding::Valid => (n >= k).then(|| ((n - k) / s + 1, 0)),
        Padding::Same => {
            let out = n.div_ceil(s);
            let total = ((out - 1) * s + k).saturating_sub(n);
            Some((out, total / 2))
        }
    }
}

impl Window {
    /// The window of `kernel` cells moved by `stride` over an image of `hw`; errors name `op` and
    /// the shapes: a zero size or stride, a window past the image with `Valid`, or one of more
    /// than [`MAX_WINDOW_CELLS`].
    pub fn new(
        op: &str,
        hw: (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: Padding,
    ) -> Result<Window> {
        let ((h, w), (kh, kw), (sh, sw)) = (hw, kernel, stride);
        // The window first: a pooling's strides default to its window, so a 0×0 window is
        // what the caller gave.
        if kh == 0 || kw == 0 {
            return Err(WgnnError::invalid(op, format!("the window must be at least 1×1, got {kh}×{kw}")));
        }
        if sh == 0 || sw == 0 {
            return Err(WgnnError::invalid(op, format!("strides must be at least 1, got ({sh}, {sw})")));
        }
        if h == 0 || w == 0 {
            return Err(WgnnError::shape_of(
                op,
                &[("image", &[h, w])],
                format!("the image must be at least 1×1, got {h}×{w}"),
            ));
        }
        if kh.checked_mul(kw).is_none_or(|cells| cells > MAX_WINDOW_CELLS) {
            return Err(WgnnError::invalid(
                op,
                format!(
                    "a {kh}×{kw} window has more than {MAX_WINDOW_CELLS} cells (a shader invocation loops over one \
                     window; use global pooling for a whole image)"
                ),
            ));
        }
        match (axis(h, kh, sh, padding), axis(w, kw, sw, padding)) {
            (Some((ho, pad_top)), Some((wo, pad_left))) => {
                Ok(Window { h, w, kh, kw, sh, sw, ho, wo, pad_top, pad_left })
            }
            _ => Err(WgnnError::shape_of(
                op,
                &[("image", &[h, w]), ("window", &[kh, kw])],
                format!("a {kh}×{kw} window is larger than the {h}×{w} input (padding valid)"),
            )),
        }
    }

    /// The input cell under window cell (ky, kx) of output (oy, ox), if inside the image.
    pub fn input_cell(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.sh + ky).checked_sub(self.pad_top)?;
        let ix = (ox * self.sw + kx).checked_sub(self.pad_left)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }
}

/// Keras' `strides` and `padding` of a Conv2D layer (the kernel size is the kernel tensor's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub strides: (usize, usize),
    pub padding: Padding,
}

impl Default for Conv2dConfig {
    /// Keras' defaults: strides (1, 1), padding valid.
    fn default() -> Self {
        Conv2dConfig { strides: (1, 1), padding: Padding::Valid }
    }
}

/// The sizes of one convolution: x `[rows, h, w, c_in]` * kernel `[kh, kw, c_in, c_out]` →
/// y `[rows, ho, wo, c_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dDims {
    pub rows: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub window: Window,
}

/// `shape` as four sizes, or an error naming `what` and the layout wanted.
pub(crate) fn rank4(op: &str, what: &str, shape: &[usize], layout: &str) -> Result<[usize; 4]> {
    match *shape {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(WgnnError::shape_of(op, &[(what, shape)], format!("{what} must be {layout}, got {shape:?}"))),
    }
}

impl Conv2dDims {
    /// Checks x `[rows, h, w, c_in]` against the kernel `[kh, kw, c_in, c_out]` and the config;
    /// errors name `op` and both shapes.
    pub fn new(op: &str, x_shape: &[usize], kernel_shape: &[usize], cfg: &Conv2dConfig) -> Result<Conv2dDims> {
        let [rows, h, w, c_in] = rank4(op, "x", x_shape, "[rows, H, W, C_in]")?;
        let [kh, kw, kc, c_out] = rank4(op, "kernel", kernel_shape, "[kh, kw, C_in, C_out]")?;
        let operands = [("x", x_shape), ("kernel", kernel_shape)];
        let shapes = format!("x {x_shape:?}, kernel {kernel_shape:?}");
        if kc != c_in {
            return Err(WgnnError::shape_of(
                op,
                &operands,
                format!("channels differ: x has {c_in}, the kernel {kc} ({shapes})"),
            ));
        }
        if rows == 0 || c_in == 0 || c_out == 0 {
            return Err(WgnnError::shape_of(op, &operands, format!("rows and channels must be at least 1 ({shapes})")));
        }
        let window = Window::new(op, (h, w), (kh, kw), cfg.strides, cfg.padding)
            .map_err(|e| with_shapes(e, &operands, &shapes))?;
        Ok(Conv2dDims { rows, c_in, c_out, window })
    }

    pub fn x_shape(&self) -> [usize; 4] {
        [self.rows, self.window.h, self.window.w, self.c_in]
    }
    pub fn kernel_shape(&self) -> [usize; 4] {
        [self.window.kh, self.window.kw, self.c_in, self.c_out]
    }
    pub fn y_shape(&self) -> [usize; 4] {
        [self.rows, self.window.ho, self.window.wo, self.c_out]
    }
    /// Values in one row of the im2col matrix: kh·kw·c_in.
    pub fn patch_len(&self) -> usize {
        self.window.kh * self.window.kw * self.c_in
    }
}

/// `e` with `text` (naming the operands and the config) appended to its detail, and a shape
/// error's shapes followed by `operands`.
pub(crate) fn with_shapes(e: WgnnError, operands: &[(&str, &[usize])], text: &str) -> WgnnError {
    match e {
        WgnnError::Shape { op, mut shapes, detail } => {
            shapes.extend(operands.iter().map(|(name, shape)| (name.to_string(), shape.to_vec())));
            WgnnError::Shape { op, shapes, detail: format!("{detail} ({text})") }
        }
        WgnnError::InvalidArgument { op, detail } => {
            WgnnError::InvalidArgument { op, detail: format!("{detail} ({text})") }
        }
        other => other,
    }
}

/// Calls `f(out_index, x_index, kernel_index)` for every product of the convolution, the kernel
/// index counting (ky, kx, c_in) rows of the kernel as a `[kh·kw·c_in, c_out]` matrix.
fn for_each_tap(d: &Conv2dDims, mut f: impl FnMut(usize, usize, usize)) {
    let win = &d.window;
    for r in 0..d.rows {
        for oy in 0..win.ho {
            for ox in 0..win.wo {
                let out = (r * win.ho + oy) * win.wo + ox;
                for ky in 0..win.kh {
                    for kx in 0..win.kw {
                        if let Some((iy, ix)) = win.input_cell(oy, ox, ky, kx) {
                            let x_pixel = (r * win.h + iy) * win.w + ix;
                            f(out, x_pixel, ky * win.kw + kx);
                        }
                    }
                }
            }
        }
    }
}

/// y = act(conv(x, kernel) + bias).  x `[rows, h, w, c_in]`, kernel `[kh, kw, c_in, c_out]`,
/// bias `[c_out]` → y `[rows, ho, wo, c_out]`. Sums in f64.
pub fn conv2d_forward(x: &[f32], kernel: &[f32], bias: Option<&[f32]>, d: &Conv2dDims, act: Activation) -> Vec<f32> {
    let (ci, co) = (d.c_in, d.c_out);
    assert_eq!(x.len(), d.x_shape().iter().product::<usize>(), "conv2d_forward: x must be [rows, h, w, c_in]");
    assert_eq!(kernel.len(), d.kernel_shape().iter().product::<usize>(), "conv2d_forward: kernel size");
    assert!(act.is_elementwise(), "conv2d_forward: softmax is row-wise");
    let mut sum = vec![0.0f64; d.y_shape().iter().product()];
    for_each_tap(d, |out, x_pixel, cell| {
        for c in 0..ci {
            let xv = x[x_pixel * ci + c] as f64;
            let k_row = &kernel[(cell * ci + c) * co..][..co];
            for (s, &k) in sum[out * co..][..co].iter_mut().zip(k_row) {
                *s += xv * k as f64;
            }
        }
    });
    sum.iter().enumerate().map(|(i, &s)| act.forward(s as f32 + bias.map_or(0.0, |b| b[i % co]))).collect()
}

/// dz = dy ⊙ act′(y), the gradient before the activation, from the forward output y.  dy, y
/// `[rows, ho, wo, c_out]` (`c_out` given) → dz of the same shape.
pub fn conv2d_backward_activation(dy: &[f32], y: &[f32], c_out: usize, act: Activation) -> Vec<f32> {
    assert!(
        c_out > 0 && dy.len().is_multiple_of(c_out),
        "conv2d_backward_activation: dy must be [rows, ho, wo, c_out]"
    );
    super::bias_act::bias_act_backward(dy, y, dy.len() / c_out, c_out, act).0
}

/// dx = ∂(Σ dz·z)/∂x for z = conv(x, kernel): the input gradient.  dz `[rows, ho, wo, c_out]` (the
/// gradient at the convolution's output, before the activation), kernel `[kh, kw, c_in, c_out]`
/// → dx `[rows, h, w, c_in]`. `below`: x as the output of an element-wise activation, whose
/// derivative then multiplies dx.
pub fn conv2d_backward_input(
    dz: &[f32],
    kernel: &[f32],
    d: &Conv2dDims,
    below: Option<(&[f32], Activation)>,
) -> Vec<f32> {
    let (ci, co) = (d.c_in, d.c_out);
    assert_eq!(
        dz.len(),
        d.y_shape().iter().product::<usize>(),
        "conv2d_backward_input: dz must be [rows, ho, wo, c_out]"
    );
    assert_eq!(kernel.len(), d.kernel_shape().iter().product::<usize>(), "conv2d_backward_input: kernel size");
    let mut dx = vec![0.0f64; d.x_shape().iter().product()];
    for_each_tap(d, |out, x_pixel, cell| {
        let g = &dz[out * co..][..co];
        for c in 0..ci {
            let k_row = &kernel[(cell * ci + c) * co..][..co];
            dx[x_pixel * ci + c] += g.iter().zip(k_row).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
        }
    });
    through(dx.into_iter().map(|v| v as f32).collect(), below)
}

/// dx ⊙ act'(y) where the activation below (its output y) is given: the gradient through it.
pub(crate) fn through(mut dx: Vec<f32>, below: Option<(&[f32], Activation)>) -> Vec<f32> {
    if let Some((y, act)) = below {
        assert_eq!(y.len(), dx.len(), "backward through the activation below: y must have dx's shape");
        dx.iter_mut().zip(y).for_each(|(g, &y)| *g *= act.derivative_from_saved(y));
    }
    dx
}

/// The kernel and bias gradients: dkernel = Σ over every output of x-patch ⊗ dz, dbias = Σ dz.
/// x `[rows, h, w, c_in]`, dz `[rows, ho, wo, c_out]` → (dkernel `[kh, kw, c_in, c_out]`, dbias
/// `[c_out]`).
pub fn conv2d_backward_weights(x: &[f32], dz: &[f32], d: &Conv2dDims) -> (Vec<f32>, Vec<f32>) {
    let (ci, co) = (d.c_in, d.c_out);
    assert_eq!(x.len(), d.x_shape().iter().product::<usize>(), "conv2d_backward_weights: x must be [rows, h, w, c_in]");
    assert_eq!(
        dz.len(),
        d.y_shape().iter().product::<usize>(),
        "conv2d_backward_weights: dz must be [rows, ho, wo, c_out]"
    );
    let mut dk = vec![0.0f64; d.kernel_shape().iter().product()];
    for_each_tap(d, |out, x_pixel, cell| {
        let g = &dz[out * co..][..co];
        for c in 0..ci {
            let xv = x[x_pixel * ci + c] as f64;
            for (s, &gv) in dk[(cell * ci + c) * co..][..co].iter_mut().zip(g) {
                *s += xv * gv as f64;
            }
        }
    });
    let mut db = vec![0.0f64; co];
    for (i, &g) in dz.iter().enumerate() {
        db[i % co] += g as f64;
    }
    (dk.into_iter().map(|v| v as f32).collect(), db.into_iter().map(|v| v as f32).collect())
}
