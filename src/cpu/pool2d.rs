//! CPU reference of shaders/pool2d.wgsl: max, average and global average pooling, channels-last
//! (`[rows, H, W, C]`), with the window geometry of [`super::conv2d::Window`].

use super::conv2d::{rank4, through, with_shapes, Padding, Window};
use crate::activation::Activation;
use crate::error::{Result, WgnnError};

/// Keras' MaxPooling2D / AveragePooling2D arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dConfig {
    pub pool_size: (usize, usize),
    /// `None`: the pool size (Keras' default).
    pub strides: Option<(usize, usize)>,
    pub padding: Padding,
}

impl Pool2dConfig {
    /// A `pool_size` window moved by its own size, padding valid (Keras' defaults).
    pub fn new(pool_size: (usize, usize)) -> Pool2dConfig {
        Pool2dConfig { pool_size, strides: None, padding: Padding::Valid }
    }
}

/// The sizes of one pooling: x `[rows, h, w, channels]` → y `[rows, ho, wo, channels]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dDims {
    pub rows: usize,
    pub channels: usize,
    pub window: Window,
}

impl Pool2dDims {
    /// Checks x `[rows, h, w, channels]` against the config; errors name `op` and the shape.
    pub fn new(op: &str, x_shape: &[usize], cfg: &Pool2dConfig) -> Result<Pool2dDims> {
        let [rows, h, w, channels] = rank4(op, "x", x_shape, "[rows, H, W, C]")?;
        let operands = [("x", x_shape)];
        let shapes = format!("x {x_shape:?}, pool {:?}", cfg.pool_size);
        if rows == 0 || channels == 0 {
            return Err(WgnnError::shape_of(op, &operands, format!("rows and channels must be at least 1 ({shapes})")));
        }
        let strides = cfg.strides.unwrap_or(cfg.pool_size);
        let window = Window::new(op, (h, w), cfg.pool_size, strides, cfg.padding)
            .map_err(|e| with_shapes(e, &operands, &shapes))?;
        Ok(Pool2dDims { rows, channels, window })
    }

    pub fn x_shape(&self) -> [usize; 4] {
        [self.rows, self.window.h, self.window.w, self.channels]
    }
    pub fn y_shape(&self) -> [usize; 4] {
        [self.rows, self.window.ho, self.window.wo, self.channels]
    }
}

/// Calls `f(y_index, cells)` for every output, `cells` the x indices of its window's cells inside
/// the image, in row-major window order.
fn for_each_window(d: &Pool2dDims, mut f: impl FnMut(usize, &[usize])) {
    let (win, ch) = (&d.window, d.channels);
    let mut cells = Vec::with_capacity(win.kh * win.kw);
    for r in 0..d.rows {
        for oy in 0..win.ho {
            for ox in 0..win.wo {
                for c in 0..ch {
                    cells.clear();
                    for ky in 0..win.kh {
                        for kx in 0..win.kw {
                            if let Some((iy, ix)) = win.input_cell(oy, ox, ky, kx) {
                                cells.push(((r * win.h + iy) * win.w + ix) * ch + c);
                            }
                        }
                    }
                    f(((r * win.ho + oy) * win.wo + ox) * ch + c, &cells);
                }
            }
        }
    }
}

fn check_len(op: &str, what: &str, len: usize, shape: [usize; 4]) {
    assert_eq!(len, shape.iter().product::<usize>(), "{op}: {what} must be {shape:?}");
}

/// The maximum of each window and the x index it came from: the first in row-major window order
/// among equal values; a NaN wins over every number (the first NaN), so that a diverged layer
/// stays visible.  x `[rows, h, w, c]` → (y `[rows, ho, wo, c]`, argmax `[rows, ho, wo, c]`).
pub fn max_pool2d_forward(x: &[f32], d: &Pool2dDims) -> (Vec<f32>, Vec<u32>) {
    check_len("max_pool2d_forward", "x", x.len(), d.x_shape());
    let n = d.y_shape().iter().product();
    let (mut y, mut argmax) = (vec![0.0f32; n], vec![0u32; n]);
    for_each_window(d, |o, cells| {
        let mut best = cells[0];
        for &i in &cells[1..] {
            if !x[best].is_nan() && (x[i].is_nan() || x[i] > x[best]) {
                best = i;
            }
        }
        y[o] = x[best];
        argmax[o] = best as u32;
    });
    (y, argmax)
}

/// A batch norm's per-channel factors `[channels]` as its training forward applies them:
/// y = γ·((x − mean)·inv_std) + β (mean and inv_std the batch's, from its statistics pass).
#[derive(Clone, Copy, Debug)]
pub struct ChannelNorm<T> {
    pub gamma: T,
    pub beta: T,
    pub mean: T,
    pub inv_std: T,
}

/// [`max_pool2d_forward`] of act(batch norm of x): each value normalised as the batch norm's
/// training forward does (`norm`, then `act`), then pooled.  x `[rows, h, w, c]` → (y, argmax)
/// `[rows, ho, wo, c]`.
pub fn max_pool2d_forward_normalized(
    x: &[f32],
    norm: &ChannelNorm<&[f32]>,
    d: &Pool2dDims,
    act: Activation,
) -> (Vec<f32>, Vec<u32>) {
    check_len("max_pool2d_forward_normalized", "x", x.len(), d.x_shape());
    let c = d.channels;
    for (name, t) in [("gamma", norm.gamma), ("beta", norm.beta), ("mean", norm.mean), ("inv_std", norm.inv_std)] {
        assert_eq!(t.len(), c, "max_pool2d_forward_normalized: {name} must have one value per channel");
    }
    let h: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = i % c;
            act.forward(norm.gamma[k] * ((v - norm.mean[k]) * norm.inv_std[k]) + norm.beta[k])
        })
        .collect();
    max_pool2d_forward(&h, d)
}

/// dx: each dy value added at its window's argmax.  dy, argmax `[rows, ho, wo, c]` → dx
/// `[rows, h, w, c]`. `below`: the pool's input as an element-wise activation's output, whose
/// derivative then multiplies dx.
pub fn max_pool2d_backward(
    dy: &[f32],
    argmax: &[u32],
    d: &Pool2dDims,
    below: Option<(&[f32], Activation)>,
) -> Vec<f32> {
    check_len("max_pool2d_backward", "dy", dy.len(), d.y_shape());
    check_len("max_pool2d_backward", "argmax", argmax.len(), d.y_shape());
    let mut dx = vec![0.0f32; d.x_shape().iter().product()];
    for (&g, &i) in dy.iter().zip(argmax) {
        dx[i as usize] += g;
    }
    through(dx, below)
}

/// The mean of each window's cells inside the image (Keras' `same` average pooling divides by
/// that count, not the window's size).  x `[rows, h, w, c]` → y `[rows, ho, wo, c]`.
pub fn avg_pool2d_forward(x: &[f32], d: &Pool2dDims) -> Vec<f32> {
    check_len("avg_pool2d_forward", "x", x.len(), d.x_shape());
    let mut y = vec![0.0f32; d.y_shape().iter().product()];
    for_each_window(d, |o, cells| {
        y[o] = (cells.iter().map(|&i| x[i] as f64).sum::<f64>() / cells.len() as f64) as f32;
    });
    y
}

/// dx: each dy value spread evenly over its window's cells inside the image.  dy `[rows, ho, wo,
/// c]` → dx `[rows, h, w, c]`; `below` as in [`max_pool2d_backward`].
pub fn avg_pool2d_backward(dy: &[f32], d: &Pool2dDims, below: Option<(&[f32], Activation)>) -> Vec<f32> {
    check_len("avg_pool2d_backward", "dy", dy.len(), d.y_shape());
    let mut dx = vec![0.0f64; d.x_shape().iter().product()];
    for_each_window(d, |o, cells| {
        for &i in cells {
            dx[i] += dy[o] as f64 / cells.len() as f64;
        }
    });
    through(dx.into_iter().map(|v| v as f32).collect(), below)
}

/// The mean over each image's h·w positions.  x `[rows, h, w, c]` → y `[rows, c]`.
pub fn global_avg_pool2d_forward(x: &[f32], x_shape: [usize; 4]) -> Vec<f32> {
    check_len("global_avg_pool2d_forward", "x", x.len(), x_shape);
    let [rows, h, w, c] = x_shape;
    let mut y = vec![0.0f64; rows * c];
    for (i, &v) in x.iter().enumerate() {
        y[i / (h * w * c) * c + i % c] += v as f64;
    }
    y.into_iter().map(|s| (s / (h * w) as f64) as f32).collect()
}

/// dx = dy / (h·w) at every position.  dy `[rows, c]` → dx `[rows, h, w, c]` (`x_shape`);
/// `below` as in [`max_pool2d_backward`].
pub fn global_avg_pool2d_backward(dy: &[f32], x_shape: [usize; 4], below: Option<(&[f32], Activation)>) -> Vec<f32> {
    let [rows, h, w, c] = x_shape;
    assert_eq!(dy.len(), rows * c, "global_avg_pool2d_backward: dy must be [rows, c]");
    through((0..rows * h * w * c).map(|i| dy[i / (h * w * c) * c + i % c] / (h * w) as f32).collect(), below)
}
