//! The convolution and pooling rows: every forward and backward variant of a 3×3 convolution
//! (with im2col + sgemm (+ col2im) on the CPU as the baseline), max pooling, global average pooling.

use super::{host_sgemm, time_cpu, up, Bench, Work};
use wgnn::internals::cpu;
use wgnn::internals::kernels::conv2d::{
    conv2d_backward_input_kernel, conv2d_backward_input_using, conv2d_backward_weights, conv2d_direct_fits,
    conv2d_forward_kernel, conv2d_forward_using, conv2d_implicit_applies, conv2d_implicit_input_fits,
    conv2d_implicit_runs, Conv2dConfig, Conv2dDims, ConvForwardKernel, ConvInputGradKernel, ConvPatches,
};
use wgnn::internals::kernels::pool2d::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward, global_avg_pool2d_forward,
    max_pool2d_backward, max_pool2d_backward_with_output, max_pool2d_forward, Pool2dConfig, Pool2dDims,
};
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Tensor};

/// The patch matrix of x, `[rows·Ho·Wo, kh·kw·C_in]` (for the im2col + sgemm baseline).
pub(super) fn host_im2col(x: &[f32], d: &Conv2dDims) -> Vec<f32> {
    let (win, ci, patch) = (&d.window, d.c_in, d.patch_len());
    let mut col = vec![0.0f32; d.rows * win.ho * win.wo * patch];
    for r in 0..d.rows {
        for oy in 0..win.ho {
            for ox in 0..win.wo {
                let row = &mut col[((r * win.ho + oy) * win.wo + ox) * patch..][..patch];
                for ky in 0..win.kh {
                    for kx in 0..win.kw {
                        if let Some((iy, ix)) = win.input_cell(oy, ox, ky, kx) {
                            let src = &x[((r * win.h + iy) * win.w + ix) * ci..][..ci];
                            row[(ky * win.kw + kx) * ci..][..ci].copy_from_slice(src);
                        }
                    }
                }
            }
        }
    }
    col
}

/// dx from the patch-matrix gradient: each entry added back where host_im2col read it.
pub(super) fn host_col2im(dcol: &[f32], d: &Conv2dDims) -> Vec<f32> {
    let (win, ci, patch) = (&d.window, d.c_in, d.patch_len());
    let mut dx = vec![0.0f32; d.rows * win.h * win.w * ci];
    for r in 0..d.rows {
        for oy in 0..win.ho {
            for ox in 0..win.wo {
                let row = &dcol[((r * win.ho + oy) * win.wo + ox) * patch..][..patch];
                for ky in 0..win.kh {
                    for kx in 0..win.kw {
                        if let Some((iy, ix)) = win.input_cell(oy, ox, ky, kx) {
                            let dst = &mut dx[((r * win.h + iy) * win.w + ix) * ci..][..ci];
                            for (o, v) in dst.iter_mut().zip(&row[(ky * win.kw + kx) * ci..][..ci]) {
                                *o += v;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// One 3×3 valid convolution of the mnist_convnet: forward (bias + relu), kernel + bias gradient
/// and input gradient. The `sgemm` column is the same work on the CPU as im2col + sgemm (+ col2im).
pub(super) fn bench_conv2d(bench: &mut Bench, rng: &mut Rng, x_shape: [usize; 4], c_out: usize) {
    let [rows, h, w, ci] = x_shape;
    let k_shape = [3, 3, ci, c_out];
    let cfg = Conv2dConfig::default();
    let d = Conv2dDims::new("bench", &x_shape, &k_shape, &cfg).unwrap();
    let shape = format!("{rows}x{h}x{w}x{ci} k3x3→{c_out}");
    let gpu = bench.gpu.clone();
    let x = rng.vec_uniform(x_shape.iter().product(), -1.0, 1.0);
    let k = rng.vec_uniform(k_shape.iter().product(), -0.5, 0.5);
    let b = rng.vec_uniform(c_out, -0.5, 0.5);
    let dz = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
    let (xt, kt, bt, dzt) =
        (up(&gpu, &x_shape, &x), up(&gpu, &k_shape, &k), up(&gpu, &[c_out], &b), up(&gpu, &d.y_shape(), &dz));
    let (m, patch) = (rows * d.window.ho * d.window.wo, d.patch_len());
    let work = Work::Flops(2.0 * (m * patch * c_out) as f64);
    let tol = (2e-5 * (patch as f32).sqrt(), 1e-4);
    // Every forward kernel that runs this shape (im2col, direct, implicit), `*` on the one
    // conv2d_forward picks.
    // "kept": the forward as a training step runs it, keeping the patch matrix for the kernel gradient.
    let kernels = [
        (ConvForwardKernel::Im2colMatmul, "im2col"),
        (ConvForwardKernel::Direct, "direct"),
        (ConvForwardKernel::Implicit, "implicit"),
    ];
    for ((using, name), kept) in kernels.into_iter().flat_map(|k| [(k, false), (k, true)]) {
        let patches = if kept { ConvPatches::new(&gpu, &d).unwrap() } else { None };
        if kept && (patches.is_none() || using == ConvForwardKernel::Implicit) {
            continue;
        }
        let name = if kept { format!("{name} kept") } else { name.to_string() };
        let yt = Tensor::zeros(&gpu, &d.y_shape()).unwrap();
        let fits = match using {
            ConvForwardKernel::Im2colMatmul => true,
            ConvForwardKernel::Direct => conv2d_direct_fits(&d, &kt, Some(&bt), &yt),
            ConvForwardKernel::Implicit => conv2d_implicit_runs(&gpu, &xt, &d),
        };
        if !fits || !bench.wants(&format!("conv2d_forward {name} {shape}")) {
            continue;
        }
        let picked = conv2d_forward_kernel(&gpu, &d, &kt, Some(&bt), &yt) == using;
        let plan =
            conv2d_forward_using(&gpu, &xt, &kt, Some(&bt), &yt, Activation::Relu, &cfg, patches.as_ref(), using)
                .unwrap();
        let (cpu_s, want) = time_cpu(|| cpu::conv2d_forward(&x, &k, Some(&b), &d, Activation::Relu));
        let (sgemm_s, _) = time_cpu(|| {
            host_sgemm(m, patch, c_out, &host_im2col(&x, &d), (patch as isize, 1), &k, (c_out as isize, 1))
        });
        bench.row("conv2d_forward", &name, shape.clone(), picked, &plan, &yt, &want, tol, work, cpu_s, Some(sgemm_s));
    }
    let (dk_want, _) = cpu::conv2d_backward_weights(&x, &dz, &d);
    // The kernel gradient reads x's patches in place where the engine's forward would.
    let dk_kernel =
        if conv2d_implicit_applies(&gpu, &d) && conv2d_implicit_runs(&gpu, &xt, &d) { "implicit" } else { "im2col" };
    if bench.wants(&format!("conv2d_backward_weights {dk_kernel} {shape} +db")) {
        let (dkt, dbt) = (Tensor::zeros(&gpu, &k_shape).unwrap(), Tensor::zeros(&gpu, &[c_out]).unwrap());
        let plan = conv2d_backward_weights(&gpu, &xt, &dzt, &dkt, Some(&dbt), &cfg).unwrap();
        let (cpu_s, _) = time_cpu(|| cpu::conv2d_backward_weights(&x, &dz, &d));
        let (sgemm_s, _) = time_cpu(|| {
            host_sgemm(patch, m, c_out, &host_im2col(&x, &d), (1, patch as isize), &dz, (c_out as isize, 1))
        });
        let tol = (2e-5 * (m as f32).sqrt(), 1e-4);
        bench.row(
            "conv2d_backward_weights",
            dk_kernel,
            format!("{shape} +db"),
            true,
            &plan,
            &dkt,
            &dk_want,
            tol,
            work,
            cpu_s,
            Some(sgemm_s),
        );
    }
    // Both input-gradient kernels where they run, `*` on the one conv2d_backward_input picks.
    let (cpu_s, want) = time_cpu(|| cpu::conv2d_backward_input(&dz, &k, &d, None));
    let (sgemm_s, _) =
        time_cpu(|| host_col2im(&host_sgemm(m, c_out, patch, &dz, (c_out as isize, 1), &k, (1, c_out as isize)), &d));
    let tol = (2e-5 * (c_out as f32 * 9.0).sqrt(), 1e-4);
    for (using, name) in [(ConvInputGradKernel::Col2im, "col2im"), (ConvInputGradKernel::Implicit, "implicit")] {
        let runs = using == ConvInputGradKernel::Col2im || conv2d_implicit_input_fits(&gpu, &d);
        if !runs || !bench.wants(&format!("conv2d_backward_input {name} {shape}")) {
            continue;
        }
        let dxt = Tensor::zeros(&gpu, &x_shape).unwrap();
        let plan = conv2d_backward_input_using(&gpu, &dzt, &kt, &dxt, &cfg, None, using).unwrap();
        let picked = conv2d_backward_input_kernel(&gpu, &d) == using;
        let shape = shape.clone();
        bench.row("conv2d_backward_input", name, shape, picked, &plan, &dxt, &want, tol, work, cpu_s, Some(sgemm_s));
    }
}

/// Max and average pooling 2×2, stride 2, valid, forward and backward.
pub(super) fn bench_pool2d(bench: &mut Bench, rng: &mut Rng, x_shape: [usize; 4]) {
    let cfg = Pool2dConfig::new((2, 2));
    let d = Pool2dDims::new("bench", &x_shape, &cfg).unwrap();
    let [rows, h, w, c] = x_shape;
    let shape = format!("{rows}x{h}x{w}x{c} pool 2");
    let gpu = bench.gpu.clone();
    let x = rng.vec_uniform(x_shape.iter().product(), -1.0, 1.0);
    let dy = rng.vec_uniform(d.y_shape().iter().product(), -1.0, 1.0);
    let (xt, dyt) = (up(&gpu, &x_shape, &x), up(&gpu, &d.y_shape(), &dy));
    let (yt, dxt) = (Tensor::zeros(&gpu, &d.y_shape()).unwrap(), Tensor::zeros(&gpu, &x_shape).unwrap());
    let (x_len, y_len) = (x.len() as f64, dy.len() as f64);
    if bench.wants(&format!("max_pool2d_forward window {shape}")) {
        let argmax = Tensor::zeros_u32(&gpu, &d.y_shape()).unwrap();
        let plan = max_pool2d_forward(&gpu, &xt, &yt, &argmax, &cfg).unwrap();
        let (cpu_s, (want, _)) = time_cpu(|| cpu::max_pool2d_forward(&x, &d));
        let work = Work::Bytes(4.0 * (x_len + 2.0 * y_len));
        bench.row(
            "max_pool2d_forward",
            "window",
            shape.clone(),
            true,
            &plan,
            &yt,
            &want,
            (0.0, 0.0),
            work,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("max_pool2d_backward tiles {shape}")) {
        let (_, argmax) = cpu::max_pool2d_forward(&x, &d);
        let at = Tensor::from_u32(&gpu, &d.y_shape(), &argmax).unwrap();
        let plan = max_pool2d_backward(&gpu, &dyt, &at, &dxt, &cfg, None).unwrap();
        let (cpu_s, want) = time_cpu(|| cpu::max_pool2d_backward(&dy, &argmax, &d, None));
        let work = Work::Bytes(4.0 * (x_len + 2.0 * y_len));
        bench.row(
            "max_pool2d_backward",
            "tiles",
            shape.clone(),
            true,
            &plan,
            &dxt,
            &want,
            (1e-6, 1e-6),
            work,
            cpu_s,
            None,
        );
    }
    // Through relu below, as a CNN step runs it: act′ read at every cell, or (the layer's pick)
    // once a window from the forward's output.
    let h: Vec<f32> = x.iter().map(|&v| v.max(0.0)).collect();
    let (ht, (pooled, argmax)) = (up(&gpu, &x_shape, &h), cpu::max_pool2d_forward(&h, &d));
    let (pooled_t, at) = (up(&gpu, &d.y_shape(), &pooled), Tensor::from_u32(&gpu, &d.y_shape(), &argmax).unwrap());
    let (cpu_s, want) = time_cpu(|| cpu::max_pool2d_backward(&dy, &argmax, &d, Some((&h, Activation::Relu))));
    for (name, with_output) in [("tiles relu below", false), ("tiles at max relu below", true)] {
        if !bench.wants(&format!("max_pool2d_backward {name} {shape}")) {
            continue;
        }
        let below = Some((&ht, Activation::Relu));
        let plan = match with_output {
            true => max_pool2d_backward_with_output(&gpu, &dyt, &at, &pooled_t, &dxt, &cfg, below).unwrap(),
            false => max_pool2d_backward(&gpu, &dyt, &at, &dxt, &cfg, below).unwrap(),
        };
        let reads = if with_output { 3.0 * y_len } else { x_len + 2.0 * y_len };
        let work = Work::Bytes(4.0 * (x_len + reads));
        let shape = shape.clone();
        bench.row("max_pool2d_backward", name, shape, with_output, &plan, &dxt, &want, (1e-6, 1e-6), work, cpu_s, None);
    }
    if bench.wants(&format!("avg_pool2d_forward window {shape}")) {
        let plan = avg_pool2d_forward(&gpu, &xt, &yt, &cfg).unwrap();
        let (cpu_s, want) = time_cpu(|| cpu::avg_pool2d_forward(&x, &d));
        let work = Work::Bytes(4.0 * (x_len + y_len));
        bench.row(
            "avg_pool2d_forward",
            "window",
            shape.clone(),
            true,
            &plan,
            &yt,
            &want,
            (1e-6, 1e-5),
            work,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("avg_pool2d_backward tiles {shape}")) {
        let plan = avg_pool2d_backward(&gpu, &dyt, &dxt, &cfg, None).unwrap();
        let (cpu_s, want) = time_cpu(|| cpu::avg_pool2d_backward(&dy, &d, None));
        let work = Work::Bytes(4.0 * (x_len + y_len));
        bench.row("avg_pool2d_backward", "tiles", shape, true, &plan, &dxt, &want, (1e-6, 1e-5), work, cpu_s, None);
    }
}

pub(super) fn bench_global_avg_pool2d(bench: &mut Bench, rng: &mut Rng, x_shape: [usize; 4]) {
    let [rows, h, w, c] = x_shape;
    let shape = format!("{rows}x{h}x{w}x{c}");
    let gpu = bench.gpu.clone();
    let x = rng.vec_uniform(x_shape.iter().product(), -1.0, 1.0);
    let dy = rng.vec_uniform(rows * c, -1.0, 1.0);
    let work = Work::Bytes(4.0 * (x.len() + dy.len()) as f64);
    if bench.wants(&format!("global_avg_pool2d_forward chunked {shape}")) {
        let yt = Tensor::zeros(&gpu, &[rows, c]).unwrap();
        let plan = global_avg_pool2d_forward(&gpu, &up(&gpu, &x_shape, &x), &yt).unwrap();
        let (cpu_s, want) = time_cpu(|| cpu::global_avg_pool2d_forward(&x, x_shape));
        bench.row(
            "global_avg_pool2d_forward",
            "chunked",
            shape.clone(),
            true,
            &plan,
            &yt,
            &want,
            (1e-6, 1e-4),
            work,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("global_avg_pool2d_backward spread {shape}")) {
        let dxt = Tensor::zeros(&gpu, &x_shape).unwrap();
        let plan = global_avg_pool2d_backward(&gpu, &up(&gpu, &[rows, c], &dy), &dxt, None).unwrap();
        let (cpu_s, want) = time_cpu(|| cpu::global_avg_pool2d_backward(&dy, x_shape, None));
        bench.row(
            "global_avg_pool2d_backward",
            "spread",
            shape,
            true,
            &plan,
            &dxt,
            &want,
            (1e-7, 1e-6),
            work,
            cpu_s,
            None,
        );
    }
}
