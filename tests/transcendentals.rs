//! The WGSL builtins the kernels use (exp, log, exp2, sqrt), measured on the adapter at hand
//! against f64 over the ranges the kernels feed them. Prints the worst error per function and
//! adapter; fails past the bound WGSL's spec gives each, plus 1 ULP of slack (lavapipe's exp2 is
//! 3.2 ULP at x = −0.07, where the spec allows 3.14), so a driver with a fast approximation
//! (a 2^-12 hardware exp, say) is caught and the kernels' error can be reasoned from these bounds:
//!   exp, exp2: 3 + 2·|x| ULP;  log: 3 ULP outside [0.5, 2], absolute 2^-21 inside;
//!   sqrt: 1 / inverseSqrt's, taken as 4 ULP.
//! ULP is the spacing of f32 values at the true (f64) result. Measured on lavapipe (LLVM 15):
//! exp 64 ULP at x = −86.7 (3.9e-6 relative: the error grows with |x|, as the bound does), 2 ULP
//! for |x| < 1e-3; log 3.6 ULP (2.4e-7 relative, 1.5e-7 absolute near 1); exp2 3.2 ULP; sqrt
//! correctly rounded. The kernels feed:
//!   exp  — z − max(z) ≤ 0 (softmax, log-sum-exp), −|z| (sigmoid BCE, sigmoid), −2|z| (tanh, and
//!          GELU's tanh), −z²/2 and erfc's −a² + poly(t) ≤ 0 (exact GELU and its derivative);
//!   log  — a softmax row's Σ exp ∈ [1, classes], BCE's 1 + exp(−|z|) ∈ [1, 2];
//!   exp2 — the schedule's exponent rest in optimizer.wgsl, within [−2, 2];
//!   sqrt — optimizer second moments and batch-norm variances, [1e-30, 1e6].

mod common;
use common::*;

const SHADER: &str = r#"
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&x)) { return; }
    let v = x[i];
    switch (FUNCTION) {
        case 0u: { y[i] = exp(v); }
        case 1u: { y[i] = log(v); }
        case 2u: { y[i] = exp2(v); }
        default: { y[i] = sqrt(v); }
    }
}
"#;

/// Runs the builtin number `function` of SHADER over `xs` on the shared device.
fn evaluate(function: u32, xs: &[f32]) -> Vec<f32> {
    let gpu = gpu();
    let device = gpu.device();
    let source = format!("const FUNCTION: u32 = {function}u;\n{SHADER}");
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("transcendentals"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bytes = (xs.len() * 4) as u64;
    let input = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue().write_buffer(&input, 0, bytemuck::cast_slice(xs));
    let output = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: input.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: output.as_entire_binding() },
        ],
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups((xs.len() as u32).div_ceil(64), 1, 1);
    }
    encoder.copy_buffer_to_buffer(&output, 0, &staging, 0, bytes);
    gpu.queue().submit([encoder.finish()]);
    staging.slice(..).map_async(wgpu::MapMode::Read, |r| r.expect("map the transcendentals' output"));
    device.poll(wgpu::PollType::wait_indefinitely()).expect("wait for the transcendentals' kernel");
    let view = staging.slice(..).get_mapped_range().expect("read the transcendentals' output");
    let values = bytemuck::cast_slice(&view).to_vec();
    drop(view);
    staging.unmap();
    values
}

/// Added to every WGSL bound (see the top of the file).
const SLACK_ULPS: f64 = 1.0;

/// The spacing of f32 values at |v| (for v = 0, the smallest normal's).
fn ulp(v: f64) -> f64 {
    let v = (v.abs() as f32).max(f32::MIN_POSITIVE);
    (f32::from_bits(v.to_bits() + 1) - v) as f64
}

/// `count` points spread over [lo, hi] (evenly, or evenly in log when `log_spaced`), plus both ends.
fn grid(lo: f64, hi: f64, count: usize, log_spaced: bool) -> Vec<f32> {
    (0..=count)
        .map(|i| {
            let f = i as f64 / count as f64;
            if log_spaced {
                (lo.ln() + (hi.ln() - lo.ln()) * f).exp() as f32
            } else {
                (lo + (hi - lo) * f) as f32
            }
        })
        .collect()
}

/// Worst error over `xs` in ULP of the true result, and in `allowed(x)` units (≤ 1 passes).
fn measure(name: &str, function: u32, xs: &[f32], exact: fn(f64) -> f64, allowed_ulps: fn(f64) -> f64) {
    let got = evaluate(function, xs);
    let (mut worst_ulps, mut worst_at, mut worst_rel, mut worst_ratio) = (0.0f64, 0.0f32, 0.0f64, 0.0f64);
    let mut worst_abs = 0.0f64;
    for (&x, &g) in xs.iter().zip(&got) {
        let want = exact(x as f64);
        let err = (g as f64 - want).abs();
        let ulps = err / ulp(want);
        let ratio = ulps / (allowed_ulps(x as f64) + SLACK_ULPS);
        worst_abs = worst_abs.max(err);
        if want != 0.0 {
            worst_rel = worst_rel.max(err / want.abs());
        }
        if ulps > worst_ulps {
            (worst_ulps, worst_at) = (ulps, x);
        }
        if ratio > worst_ratio {
            worst_ratio = ratio;
        }
        assert!(
            ratio <= 1.0,
            "{name}({x:e}) = {g:e} on {}, f64 {want:e}: {ulps:.1} ULP, past WGSL's bound + 1 ULP, {:.1}",
            gpu().adapter_info().name,
            allowed_ulps(x as f64) + SLACK_ULPS
        );
    }
    println!(
        "{name} on {}: worst {worst_ulps:.2} ULP (at {worst_at:e}), relative {worst_rel:.2e}, absolute {worst_abs:.2e}, {:.0}% of WGSL's bound + 1 ULP",
        gpu().adapter_info().name,
        worst_ratio * 100.0
    );
}

#[test]
fn exp_within_wgsl_bound_on_kernel_ranges() {
    // z − max(z) over a softmax row, −|z| and −2|z|: down to where exp underflows f32's normals.
    measure("exp", 0, &grid(-87.0, 0.0, 200_000, false), f64::exp, |x| 3.0 + 2.0 * x.abs());
    measure("exp (small |x|)", 0, &grid(-1e-3, -1e-9, 20_000, false), f64::exp, |x| 3.0 + 2.0 * x.abs());
}

#[test]
fn log_within_wgsl_bound_on_kernel_ranges() {
    // Σ exp of a softmax row ∈ [1, classes], BCE's 1 + exp(−|z|) ∈ [1, 2]; WGSL bounds log only
    // absolutely (2^-21) in [0.5, 2]: given as ULP of the true result.
    let near_one: fn(f64) -> f64 =
        |x| if (0.5..=2.0).contains(&x) { (2f64.powi(-21) / ulp(x.ln())).max(3.0) } else { 3.0 };
    measure("log (sum of a softmax row)", 1, &grid(1.0, 1e4, 200_000, true), f64::ln, near_one);
    measure("log (BCE's 1 + e)", 1, &grid(1.0, 2.0, 100_000, false), f64::ln, near_one);
}

#[test]
fn exp2_within_wgsl_bound_on_kernel_ranges() {
    measure("exp2", 2, &grid(-2.0, 2.0, 100_000, false), f64::exp2, |x| 3.0 + 2.0 * x.abs());
}

#[test]
fn sqrt_within_bound_on_kernel_ranges() {
    measure("sqrt", 3, &grid(1e-30, 1e6, 200_000, true), f64::sqrt, |_| 4.0);
}
