//! Kernel benchmark (issue 5): `cargo bench --bench kernels [filter]`.
//!
//! For every kernel, variant and shape: validate against the CPU reference first (a failing row is
//! reported FAILED and not timed), then time on the device with timestamp queries (wall clock
//! around many dispatches in one submit where the adapter has none), and time the CPU reference
//! and, for matmul, `matrixmultiply::sgemm` at the same shape. Prints a table and writes
//! target/bench/kernels.{csv,json}.
//!
//! To add a kernel: write one `bench_<kernel>` function that builds its inputs and plan, computes
//! the CPU reference and calls `Bench::row`; call it from `main`.

#[path = "kernels/attention.rs"]
mod attention;
#[path = "kernels/layer_norm.rs"]
mod layer_norm;

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wgnn::autotune::MatmulShape;
use wgnn::data::Features;
use wgnn::internals::cpu;
use wgnn::internals::kernels::batch_norm::{
    batch_norm_backward, batch_norm_commit_running, batch_norm_forward_inference, batch_norm_forward_train,
    batch_norm_forward_train_deferred, BatchNormConfig,
};
use wgnn::internals::kernels::bias_act::{bias_act_backward, bias_act_forward};
use wgnn::internals::kernels::conv2d::{
    conv2d_backward_input_kernel, conv2d_backward_input_using, conv2d_backward_weights, conv2d_direct_fits,
    conv2d_forward_kernel, conv2d_forward_using, conv2d_implicit_applies, conv2d_implicit_input_fits,
    conv2d_implicit_runs, Conv2dConfig, Conv2dDims, ConvForwardKernel, ConvInputGradKernel, ConvPatches,
};
use wgnn::internals::kernels::dense_softmax_xent::{
    dense_softmax_xent, dense_softmax_xent_preferred, DenseSoftmaxXentOut, UNIFORM_WINDOW_FLOATS,
};
use wgnn::internals::kernels::dropout::{dropout_backward, dropout_forward};
use wgnn::internals::kernels::gather::{gather_rows, BatchStart, GpuRows};
use wgnn::internals::kernels::grad_norm::clip_factor;
use wgnn::internals::kernels::hinge::{hinge, HingeOut};
use wgnn::internals::kernels::matmul::{
    choose_variant, matmul, matmul_column_sum, matmul_gathered, matmul_gathered_supported, Epilogue, GatheredA,
    MatmulOptions, MatmulVariant,
};
use wgnn::internals::kernels::matmul_register::{matmul_register, matmul_register_supported, RegisterTile};
use wgnn::internals::kernels::mse::{mse, MseOut};
use wgnn::internals::kernels::optimizer::{
    adadelta_update, adagrad_update, adam_update, adamw_update, rmsprop_update, sgd_update, AdadeltaConfig,
    AdagradConfig, AdamConfig, EpsPlacement, LrSchedule, RmsPropConfig, SgdConfig,
};
use wgnn::internals::kernels::pool2d::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward, global_avg_pool2d_forward,
    max_pool2d_backward, max_pool2d_backward_with_output, max_pool2d_forward, Pool2dConfig, Pool2dDims,
};
use wgnn::internals::kernels::reduce::column_sum;
use wgnn::internals::kernels::sigmoid_bce::{sigmoid_bce, SigmoidBceOut};
use wgnn::internals::kernels::softmax_grad::softmax_backward;
use wgnn::internals::kernels::softmax_xent::{softmax, softmax_xent, SoftmaxXentOut};
use wgnn::internals::kernels::step_guard::guard_step;
use wgnn::internals::rng::Rng;
use wgnn::{Activation, Gpu, Plan, Tensor};

/// Device time spent timing one row (after one warm-up execution); at least MIN_REPS runs.
const ROW_BUDGET: Duration = Duration::from_millis(400);
const MIN_REPS: usize = 3;
const MAX_REPS: usize = 200;
/// CPU baselines are repeated until this much time has passed (at least once).
const CPU_BUDGET: Duration = Duration::from_millis(300);

/// What a row's throughput counts.
#[derive(Clone, Copy)]
enum Work {
    Flops(f64),
    Bytes(f64),
}

struct Row {
    kernel: String,
    variant: String,
    shape: String,
    picked: bool,
    max_err: f32,
    passed: bool,
    dispatches: usize,
    median_s: f64,
    min_s: f64,
    work: Work,
    cpu_ref_s: f64,
    sgemm_s: Option<f64>,
}

impl Row {
    fn rate(&self, seconds: f64) -> f64 {
        match self.work {
            Work::Flops(f) | Work::Bytes(f) => f / seconds / 1e9,
        }
    }
    fn unit(&self) -> &'static str {
        match self.work {
            Work::Flops(_) => "GFLOP/s",
            Work::Bytes(_) => "GB/s",
        }
    }
}

struct Bench {
    gpu: Gpu,
    /// A device of its own for the autotuner's rows: an empty cache and no budget, so that every
    /// shape is tuned on every candidate.
    tuned: Gpu,
    filter: Option<String>,
    timestamps: bool,
    rows: Vec<Row>,
}

/// Median and minimum.
fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0])
}

/// Seconds per call of `f`, repeated within CPU_BUDGET; (median, result of the last call).
fn time_cpu<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let start = Instant::now();
    let mut times = Vec::new();
    loop {
        let t = Instant::now();
        let out = f();
        times.push(t.elapsed().as_secs_f64());
        if start.elapsed() > CPU_BUDGET || times.len() >= 50 {
            return (stats(times).0, out);
        }
    }
}

/// max |got − want| and whether every value is within atol + rtol·|want|.
fn compare(got: &[f32], want: &[f32], atol: f32, rtol: f32) -> (f32, bool) {
    let mut max = 0.0f32;
    let mut ok = got.len() == want.len();
    for (&g, &w) in got.iter().zip(want) {
        let d = (g - w).abs();
        max = max.max(if d.is_finite() { d } else { f32::INFINITY });
        ok &= d <= atol + rtol * w.abs();
    }
    (max, ok)
}

impl Bench {
    fn wants(&self, label: &str) -> bool {
        self.filter.as_ref().is_none_or(|f| label.contains(f.as_str()))
    }

    /// Device seconds per execution of `plan`: (median, min). The plan has run once already.
    fn time_gpu(&self, plan: &Plan) -> (f64, f64) {
        if self.timestamps {
            let first = self.gpu.time_plan(plan, 1).unwrap()[0].max(1e-7);
            let reps = ((ROW_BUDGET.as_secs_f64() / first) as usize).clamp(MIN_REPS, MAX_REPS);
            // A single execution past the whole budget is timed once more, not MIN_REPS times.
            if first > ROW_BUDGET.as_secs_f64() {
                // One execution past the whole budget: that measurement is the row.
                return (first, first);
            }
            let mut times = self.gpu.time_plan(plan, reps).unwrap();
            times.push(first);
            stats(times)
        } else {
            // Wall clock around `batch` executions in one submit, after the warm-up run.
            let t = Instant::now();
            self.gpu.run(&[plan]).unwrap();
            self.gpu.wait().unwrap();
            let first = t.elapsed().as_secs_f64().max(1e-7);
            let batch = ((0.05 / first) as usize).clamp(1, 100);
            let rounds = ((ROW_BUDGET.as_secs_f64() / (first * batch as f64)) as usize).clamp(1, 10);
            let times = (0..rounds)
                .map(|_| {
                    let t = Instant::now();
                    self.gpu.run_repeated(&[plan], batch).unwrap();
                    self.gpu.wait().unwrap();
                    t.elapsed().as_secs_f64() / batch as f64
                })
                .collect();
            stats(times)
        }
    }

    /// Runs `plan` once, compares `output` with `want`, times it if it matched, records the row.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        kernel: &str,
        variant: &str,
        shape: String,
        picked: bool,
        plan: &Plan,
        output: &Tensor,
        want: &[f32],
        tol: (f32, f32),
        work: Work,
        cpu_ref_s: f64,
        sgemm_s: Option<f64>,
    ) {
        self.gpu.run(&[plan]).unwrap();
        let got = output.to_vec().unwrap();
        let (max_err, passed) = compare(&got, want, tol.0, tol.1);
        let (median_s, min_s) = if passed { self.time_gpu(plan) } else { (f64::NAN, f64::NAN) };
        let row = Row {
            kernel: kernel.into(),
            variant: variant.into(),
            shape,
            picked,
            max_err,
            passed,
            dispatches: plan.len(),
            median_s,
            min_s,
            work,
            cpu_ref_s,
            sgemm_s,
        };
        print_row(&row);
        self.rows.push(row);
    }
}

fn header() {
    println!(
        "{:<18} {:<14} {:<24} {:>9} {:>3} {:>11} {:>11} {:>9} {:>8} {:>11} {:>11} {:>9} {:>9}",
        "kernel",
        "variant",
        "shape",
        "max err",
        "nd",
        "median",
        "min",
        "rate",
        "unit",
        "cpu ref",
        "sgemm",
        "ref/gpu",
        "sgemm/gpu"
    );
}

fn fmt_time(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn print_row(r: &Row) {
    let variant = if r.picked { format!("{}*", r.variant) } else { r.variant.clone() };
    if !r.passed {
        println!("{:<18} {variant:<14} {:<24} {:>9.2e}  FAILED (not timed)", r.kernel, r.shape, r.max_err);
        return;
    }
    println!(
        "{:<18} {variant:<14} {:<24} {:>9.2e} {:>3} {:>11} {:>11} {:>9.2} {:>8} {:>11} {:>11} {:>9.2} {:>9}",
        r.kernel,
        r.shape,
        r.max_err,
        r.dispatches,
        fmt_time(r.median_s),
        fmt_time(r.min_s),
        r.rate(r.median_s),
        r.unit(),
        fmt_time(r.cpu_ref_s),
        r.sgemm_s.map_or("-".into(), fmt_time),
        r.cpu_ref_s / r.median_s,
        r.sgemm_s.map_or("-".into(), |s| format!("{:.2}", s / r.median_s)),
    );
}

/// One matmul shape and form: the CPU reference and sgemm once, then a row per variant.
fn bench_matmul(bench: &mut Bench, rng: &mut Rng, (m, k, n): (usize, usize, usize), (ta, tb): (bool, bool)) {
    let form = match (ta, tb) {
        (false, false) => "",
        (true, false) => "Aᵀ",
        (false, true) => "Bᵀ",
        (true, true) => "AᵀBᵀ",
    };
    let shape = format!("{m}x{k}·{k}x{n} {form}");
    let labels: Vec<String> = MatmulVariant::ALL.iter().map(|v| format!("matmul {} {shape}", v.name())).collect();
    if !labels.iter().any(|l| bench.wants(l)) {
        return;
    }
    let gpu = bench.gpu.clone();
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let at = Tensor::from_slice(&gpu, &if ta { [k, m] } else { [m, k] }, &a).unwrap();
    let bt = Tensor::from_slice(&gpu, &if tb { [n, k] } else { [k, n] }, &b).unwrap();
    let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();

    // The reference is slow (f64 sums): time one call only.
    let t = Instant::now();
    let want = cpu::matmul(&a, &b, m, k, n, ta, tb);
    let cpu_ref_s = t.elapsed().as_secs_f64();
    // Strides express the transposes, so sgemm reads the same layouts as the kernel.
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let (sgemm_s, _) = time_cpu(|| host_sgemm(m, k, n, &a, (rsa, csa), &b, (rsb, csb)));

    let picked = choose_variant(&gpu, m, n, k, ta, tb);
    let tol = (2e-5 * (k as f32).sqrt(), 1e-4);
    for (variant, label) in MatmulVariant::ALL.into_iter().zip(&labels) {
        if !bench.wants(label) {
            continue;
        }
        // The scalar variants take seconds per call on a CPU adapter at the largest shapes: the
        // default run keeps them to 1024³ without transposes; a filter naming them runs them all.
        let slow = matches!(variant, MatmulVariant::Naive | MatmulVariant::Tiled)
            && gpu.is_cpu_adapter()
            && m * n * k > 1 << 28;
        let named = bench.filter.as_ref().is_some_and(|f| f.contains(variant.name()));
        let plain_cube = m == n && n == k && !ta && !tb;
        if slow && !named && !plain_cube {
            println!(
                "{:<18} {:<14} {shape:<24} skipped (slow on a CPU adapter; filter `{}` runs it)",
                "matmul",
                variant.name(),
                variant.name()
            );
            continue;
        }
        let opts = MatmulOptions { trans_a: ta, trans_b: tb, variant: Some(variant), ..Default::default() };
        let plan = matmul(&gpu, &at, &bt, &ct, &opts).unwrap();
        let work = Work::Flops(2.0 * (m * n * k) as f64);
        bench.row(
            "matmul",
            variant.name(),
            shape.clone(),
            variant == picked,
            &plan,
            &ct,
            &want,
            tol,
            work,
            cpu_ref_s,
            Some(sgemm_s),
        );
    } // The autotuner's pick at this shape (a fresh tune on a device of its own with every candidate
      // timed: `Bench::tuned`), beside the static one starred above.
    if bench.wants(&format!("matmul tuned {shape}")) {
        let tuned = bench.tuned.clone();
        let opts = MatmulOptions { trans_a: ta, trans_b: tb, ..Default::default() };
        let (at, bt) = (at.to_vec().unwrap(), bt.to_vec().unwrap());
        let (a_shape, b_shape) = (if ta { [k, m] } else { [m, k] }, if tb { [n, k] } else { [k, n] });
        let at = Tensor::from_slice(&tuned, &a_shape, &at).unwrap();
        let bt = Tensor::from_slice(&tuned, &b_shape, &bt).unwrap();
        let ct = Tensor::zeros(&tuned, &[m, n]).unwrap();
        let plan = matmul(&tuned, &at, &bt, &ct, &opts).unwrap();
        let key = MatmulShape::of(m, n, k, &opts, false);
        let pick = tuned.tuned_picks().into_iter().rfind(|p| p.shape == key);
        let name = format!("tuned:{}", pick.map_or("?".into(), |p| p.kernel.name()));
        let work = Work::Flops(2.0 * (m * n * k) as f64);
        let gpu = std::mem::replace(&mut bench.gpu, tuned);
        bench.row("matmul", &name, shape.clone(), false, &plan, &ct, &want, tol, work, cpu_ref_s, Some(sgemm_s));
        bench.gpu = gpu;
    }
}

/// dW = Xᵀ·dZ with db = Σ_rows dZ (the engine's variant): validated on C, the sums checked too.
fn bench_matmul_column_sum(bench: &mut Bench, rng: &mut Rng, (m, k, n): (usize, usize, usize)) {
    let shape = format!("{m}x{k}·{k}x{n} Aᵀ +colsum");
    let variant = choose_variant(&bench.gpu, m, n, k, true, false);
    if !bench.wants(&format!("matmul_column_sum {} {shape}", variant.name())) {
        return;
    }
    let gpu = bench.gpu.clone();
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let (at, bt) = (up(&gpu, &[k, m], &a), up(&gpu, &[k, n], &b));
    let (ct, st) = (Tensor::zeros(&gpu, &[m, n]).unwrap(), Tensor::zeros(&gpu, &[n]).unwrap());
    let opts = MatmulOptions { trans_a: true, ..Default::default() };
    let plan = matmul_column_sum(&gpu, &at, &bt, &ct, &st, &opts).unwrap();
    let (cpu_s, (want, want_sums)) = time_cpu(|| cpu::matmul_column_sum(&a, &b, m, k, n, true));
    gpu.run(&[&plan]).unwrap();
    let (sums_err, sums_ok) = compare(&st.to_vec().unwrap(), &want_sums, 1e-4 * (k as f32).sqrt(), 1e-4);
    assert!(sums_ok, "matmul_column_sum {shape}: column sums off by {sums_err}");
    let tol = (2e-5 * (k as f32).sqrt(), 1e-4);
    let work = Work::Flops(2.0 * (m * n * k) as f64);
    bench.row("matmul_column_sum", variant.name(), shape, true, &plan, &ct, &want, tol, work, cpu_s, None);
}

fn bench_bias_act_forward(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols} relu");
    if !bench.wants(&format!("bias_act_forward fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let x = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let bias = rng.vec_uniform(cols, -1.0, 1.0);
    let (xt, bt, yt) = (
        Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap(),
        Tensor::from_slice(&gpu, &[cols], &bias).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
    );
    let plan = bias_act_forward(&gpu, &xt, Some(&bt), &yt, Activation::Relu).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::bias_act_forward(&x, Some(&bias), rows, cols, Activation::Relu));
    let bytes = 4.0 * (2 * rows * cols + cols) as f64;
    bench.row(
        "bias_act_forward",
        "fused",
        shape,
        true,
        &plan,
        &yt,
        &want,
        (1e-6, 1e-5),
        Work::Bytes(bytes),
        cpu_s,
        None,
    );
}

fn bench_bias_act_backward(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols} relu +db");
    if !bench.wants(&format!("bias_act_backward fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let y = cpu::bias_act_forward(&rng.vec_uniform(rows * cols, -1.0, 1.0), None, rows, cols, Activation::Relu);
    let (dyt, yt) =
        (Tensor::from_slice(&gpu, &[rows, cols], &dy).unwrap(), Tensor::from_slice(&gpu, &[rows, cols], &y).unwrap());
    let (dzt, dbt) = (Tensor::zeros(&gpu, &[rows, cols]).unwrap(), Tensor::zeros(&gpu, &[cols]).unwrap());
    let plan = bias_act_backward(&gpu, &dyt, &yt, &dzt, Some(&dbt), Activation::Relu, false).unwrap();
    let (cpu_s, (_, db)) = time_cpu(|| cpu::bias_act_backward(&dy, &y, rows, cols, Activation::Relu));
    // dy and y read, dz written, then dz read again by the column sum.
    let bytes = 4.0 * (4 * rows * cols + cols) as f64;
    // Validated on db, which depends on every dz.
    bench.row(
        "bias_act_backward",
        "fused",
        shape,
        true,
        &plan,
        &dbt,
        &db,
        (1e-3, 1e-4),
        Work::Bytes(bytes),
        cpu_s,
        None,
    );
}

fn bench_column_sum(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    if !bench.wants(&format!("column_sum chunked {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let x = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (xt, out) = (Tensor::from_slice(&gpu, &[rows, cols], &x).unwrap(), Tensor::zeros(&gpu, &[cols]).unwrap());
    let plan = column_sum(&gpu, &xt, &out, false).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::column_sum(&x, rows, cols));
    bench.row(
        "column_sum",
        "chunked",
        shape,
        true,
        &plan,
        &out,
        &want,
        (1e-3, 1e-4),
        Work::Bytes(4.0 * (rows * cols) as f64),
        cpu_s,
        None,
    );
}

/// "YYYY-MM-DD" (UTC) of the run.
/// Uploads an f32 slice with the given shape (bench inputs are always valid).
fn up(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
}

fn bench_softmax_xent(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols} +totals");
    if !bench.wants(&format!("softmax_xent fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let logits = rng.vec_uniform(rows * cols, -5.0, 5.0);
    let labels: Vec<u32> = (0..rows).map(|_| rng.below(cols) as u32).collect();
    let (lt, yt) = (up(&gpu, &[rows, cols], &logits), Tensor::from_u32(&gpu, &[rows], &labels).unwrap());
    let (loss, dlogits, correct, totals) = (
        Tensor::zeros(&gpu, &[rows]).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
        Tensor::zeros(&gpu, &[rows]).unwrap(),
        Tensor::zeros(&gpu, &[2]).unwrap(),
    );
    let out =
        SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dlogits), correct_rows: &correct, totals: Some(&totals) };
    let plan = softmax_xent(&gpu, &lt, &yt, 1.0 / rows as f32, &out).unwrap();
    let (cpu_s, (_, want, _)) = time_cpu(|| cpu::softmax_xent(&logits, &labels, rows, cols, 1.0 / rows as f32));
    let bytes = 4.0 * (2 * rows * cols + 4 * rows) as f64;
    bench.row(
        "softmax_xent",
        "fused",
        shape,
        true,
        &plan,
        &dlogits,
        &want,
        (1e-6, 1e-4),
        Work::Bytes(bytes),
        cpu_s,
        None,
    );
}

/// The output layer of a training step (K inputs through relu, C classes): fused into one
/// dispatch, and as the three it replaces (the forward product, softmax_xent, dX = dZ·Wᵀ ⊙ relu′),
/// both validated on dX and timed in the same run.
fn bench_dense_softmax_xent(bench: &mut Bench, rng: &mut Rng, rows: usize, k: usize, c: usize) {
    let shape = format!("{rows}x{k}·{k}x{c}");
    let (want_fused, want_unfused) = (
        bench.wants(&format!("dense_softmax_xent fused {shape}")),
        bench.wants(&format!("dense_softmax_xent unfused {shape}")),
    );
    if !want_fused && !want_unfused {
        return;
    }
    let gpu = bench.gpu.clone();
    let act = Activation::Relu;
    let h = cpu::bias_act_forward(&rng.vec_uniform(rows * k, -2.0, 2.0), None, rows, k, act);
    let (w, b) = (rng.vec_uniform(k * c, -0.5, 0.5), rng.vec_uniform(c, -0.5, 0.5));
    let labels: Vec<u32> = (0..rows).map(|_| rng.below(c) as u32).collect();
    let (ht, wt, bt) = (up(&gpu, &[rows, k], &h), up(&gpu, &[k, c], &w), up(&gpu, &[c], &b));
    let yt = Tensor::from_u32(&gpu, &[rows], &labels).unwrap();
    let zeros = |shape: &[usize]| Tensor::zeros(&gpu, shape).unwrap();
    let (dz, dh, totals) = (zeros(&[rows, c]), zeros(&[rows, k]), zeros(&[2]));
    let scale = 1.0 / rows as f32;
    let (cpu_s, (_, want, _, _)) = time_cpu(|| cpu::dense_softmax_xent(&h, &w, &b, &labels, rows, k, c, scale, act));
    let flops = Work::Flops(4.0 * (rows * k * c) as f64);
    // What a training step on this adapter runs.
    let fused_picked = dense_softmax_xent_preferred(&gpu, rows, k, c);
    if want_fused {
        // W and b in one buffer with the room after them that the model gives its parameters:
        // the kernel reads them through a uniform window. Then apart: from storage.
        let b_at = (k * c).next_multiple_of(64);
        let mut flat = vec![0.0; b_at + UNIFORM_WINDOW_FLOATS];
        flat[..k * c].copy_from_slice(&w);
        flat[b_at..b_at + c].copy_from_slice(&b);
        let both = up(&gpu, &[flat.len()], &flat);
        let (w_view, b_view) = (both.view(0, &[k, c]).unwrap(), both.view(b_at, &[c]).unwrap());
        let out = DenseSoftmaxXentOut { dz: &dz, dh: &dh, totals: &totals };
        for (variant, (w_src, b_src)) in [("fused", (&w_view, &b_view)), ("fused (W in storage)", (&wt, &bt))] {
            let plan = dense_softmax_xent(&gpu, &ht, w_src, b_src, &yt, act, scale, &out).unwrap();
            let picked = fused_picked && variant == "fused";
            bench.row(
                "dense_softmax_xent",
                variant,
                shape.clone(),
                picked,
                &plan,
                &dh,
                &want,
                (1e-6, 1e-4),
                flops,
                cpu_s,
                None,
            );
        }
    }
    if want_unfused {
        let (logits, loss, correct) = (zeros(&[rows, c]), zeros(&[rows]), zeros(&[rows]));
        let forward = MatmulOptions {
            epilogue: Epilogue::BiasAct { bias: Some(&bt), act: Activation::Identity },
            ..Default::default()
        };
        let mut plan = matmul(&gpu, &ht, &wt, &logits, &forward).unwrap();
        let out =
            SoftmaxXentOut { loss_rows: &loss, dlogits: Some(&dz), correct_rows: &correct, totals: Some(&totals) };
        plan.extend(softmax_xent(&gpu, &logits, &yt, scale, &out).unwrap());
        let backward =
            MatmulOptions { trans_b: true, epilogue: Epilogue::ActGrad { y: &ht, act }, ..Default::default() };
        plan.extend(matmul(&gpu, &dz, &wt, &dh, &backward).unwrap());
        bench.row(
            "dense_softmax_xent",
            "unfused",
            shape,
            !fused_picked,
            &plan,
            &dh,
            &want,
            (1e-6, 1e-4),
            flops,
            cpu_s,
            None,
        );
    }
}

/// A training step's first layer on u8 data: its forward product (ReLU epilogue) and its weight
/// gradient with the bias gradient, reading the batch from the data set in place (`gathered`, one
/// dispatch) against gathering it first (`gather+matmul`, two).
fn bench_matmul_gathered(bench: &mut Bench, rng: &mut Rng, rows: usize, dim: usize, n: usize) {
    let gpu = bench.gpu.clone();
    let total = 4 * rows;
    let bytes: Vec<u8> = (0..total * dim).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u32> = (0..total).map(|_| rng.below(10) as u32).collect();
    let mut idx: Vec<u32> = (0..total as u32).collect();
    rng.shuffle(&mut idx);
    let as_f32: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
    let (scale, shift) = (1.0 / 255.0, 0.0);
    let src = GpuRows { scale, shift, ..GpuRows::upload(&gpu, &Features::U8(bytes), &labels, dim).unwrap() };
    let idx_t = Tensor::from_u32(&gpu, &[total], &idx).unwrap();
    let at = rows;
    let x_host = cpu::matmul_gathered_a(&as_f32, dim, &idx, at, rows, rows, scale, shift);
    let (x, y) = (Tensor::zeros(&gpu, &[rows, dim]).unwrap(), Tensor::zeros_u32(&gpu, &[rows]).unwrap());
    let gather = || gather_rows(&gpu, &src, &idx_t, BatchStart::At(at), &x, &y).unwrap();
    let forward =
        GatheredA { src: &src, idx: &idx_t, start: BatchStart::At(at), rows, stored_rows: rows, labels: Some(&y) };
    if !matmul_gathered_supported(&gpu, &forward, n, false, false) {
        return;
    }
    let (w, bias) = (rng.vec_uniform(dim * n, -0.1, 0.1), rng.vec_uniform(n, -0.1, 0.1));
    let (wt, bt) = (up(&gpu, &[dim, n], &w), up(&gpu, &[n], &bias));
    let h = Tensor::zeros(&gpu, &[rows, n]).unwrap();
    let flops = Work::Flops(2.0 * (rows * dim * n) as f64);
    let options =
        MatmulOptions { epilogue: Epilogue::BiasAct { bias: Some(&bt), act: Activation::Relu }, ..Default::default() };
    let (cpu_s, want) = time_cpu(|| {
        cpu::bias_act_forward(
            &cpu::matmul(&x_host, &w, rows, dim, n, false, false),
            Some(&bias),
            rows,
            n,
            Activation::Relu,
        )
    });
    let shape = format!("{rows}x{dim}·{dim}x{n} (u8 rows)");
    if bench.wants(&format!("matmul_gathered forward {shape}")) {
        let plan = matmul_gathered(&gpu, &forward, &wt, &h, None, &options).unwrap();
        bench.row(
            "matmul_gathered",
            "forward",
            shape.clone(),
            true,
            &plan,
            &h,
            &want,
            (1e-5, 1e-4),
            flops,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("matmul_gathered gather+matmul {shape}")) {
        let mut plan = gather();
        plan.extend(matmul(&gpu, &x, &wt, &h, &options).unwrap());
        bench.row("matmul_gathered", "gather+matmul", shape, false, &plan, &h, &want, (1e-5, 1e-4), flops, cpu_s, None);
    }

    // dW = Xᵀ·dZ with db, over rows padded to a multiple of 4 (dZ's extra rows zero).
    let padded = rows.next_multiple_of(4);
    let mut dz = rng.vec_uniform(padded * n, -1.0, 1.0);
    dz[rows * n..].fill(0.0);
    let dzt = up(&gpu, &[padded, n], &dz);
    let (dw, db) = (Tensor::zeros(&gpu, &[dim, n]).unwrap(), Tensor::zeros(&gpu, &[n]).unwrap());
    let a_padded = cpu::matmul_gathered_a(&as_f32, dim, &idx, at, rows, padded, scale, shift);
    let (cpu_s, want) = time_cpu(|| cpu::matmul(&a_padded, &dz, dim, padded, n, true, false));
    let transposed = MatmulOptions { trans_a: true, ..Default::default() };
    let shape = format!("{dim}x{padded}·{padded}x{n} (u8 rows)");
    if bench.wants(&format!("matmul_gathered weight_grad {shape}")) {
        let weight_grad = GatheredA { stored_rows: padded, labels: None, ..forward };
        let plan = matmul_gathered(&gpu, &weight_grad, &dzt, &dw, Some(&db), &transposed).unwrap();
        bench.row(
            "matmul_gathered",
            "weight_grad",
            shape.clone(),
            true,
            &plan,
            &dw,
            &want,
            (1e-5, 1e-4),
            flops,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("matmul_gathered gather+matmul_column_sum {shape}")) {
        // The gather writes `rows` rows of a padded x whose extra rows stay zero.
        let x_padded = Tensor::zeros(&gpu, &[padded, dim]).unwrap();
        let x_rows = x_padded.view(0, &[rows, dim]).unwrap();
        let mut plan = gather_rows(&gpu, &src, &idx_t, BatchStart::At(at), &x_rows, &y).unwrap();
        plan.extend(matmul_column_sum(&gpu, &x_padded, &dzt, &dw, &db, &transposed).unwrap());
        bench.row(
            "matmul_gathered",
            "gather+matmul_column_sum",
            shape,
            false,
            &plan,
            &dw,
            &want,
            (1e-5, 1e-4),
            flops,
            cpu_s,
            None,
        );
    }
}

fn bench_softmax(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    if !bench.wants(&format!("softmax rows {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let logits = rng.vec_uniform(rows * cols, -5.0, 5.0);
    let (lt, probs) = (up(&gpu, &[rows, cols], &logits), Tensor::zeros(&gpu, &[rows, cols]).unwrap());
    let plan = softmax(&gpu, &lt, &probs).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::softmax(&logits, rows, cols));
    let bytes = 4.0 * (2 * rows * cols) as f64;
    bench.row("softmax", "rows", shape, true, &plan, &probs, &want, (1e-6, 1e-4), Work::Bytes(bytes), cpu_s, None);
}

fn bench_softmax_backward(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    if !bench.wants(&format!("softmax_backward rows {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let y = cpu::softmax(&rng.vec_uniform(rows * cols, -5.0, 5.0), rows, cols);
    let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (dyt, yt) = (up(&gpu, &[rows, cols], &dy), up(&gpu, &[rows, cols], &y));
    let dz = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
    let plan = softmax_backward(&gpu, &dyt, &yt, &dz).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::softmax_backward(&dy, &y, rows, cols));
    let bytes = 4.0 * (3 * rows * cols) as f64;
    bench.row(
        "softmax_backward",
        "rows",
        shape,
        true,
        &plan,
        &dz,
        &want,
        (1e-6, 1e-4),
        Work::Bytes(bytes),
        cpu_s,
        None,
    );
}

/// guard_step: one invocation per training step (when non-finite batches are skipped), validated
/// on the totals after one finite batch.
fn bench_guard_step(bench: &mut Bench) {
    if !bench.wants("guard_step single 1") {
        return;
    }
    let gpu = bench.gpu.clone();
    let counters = Tensor::zeros_u32(&gpu, &[2]).unwrap();
    let batch_totals = up(&gpu, &[2], &[1.5, 20.0]);
    let totals = Tensor::zeros(&gpu, &[4]).unwrap();
    let plan = guard_step(&gpu, &counters, &batch_totals, &totals, 32).unwrap();
    let (cpu_s, want) = time_cpu(|| {
        let (mut c, mut b, mut t) = ([0u32; 2], [1.5f32, 20.0], [0.0f32; 4]);
        cpu::guard_step(&mut c, &mut b, &mut t, 32);
        t
    });
    bench.row(
        "guard_step",
        "single",
        "1".into(),
        true,
        &plan,
        &totals,
        &want,
        (0.0, 0.0),
        Work::Bytes(40.0),
        cpu_s,
        None,
    );
}

/// sigmoid_bce and hinge: single-output losses over n rows, validated on the gradient.
fn bench_single_output_loss(bench: &mut Bench, rng: &mut Rng, kernel: &str, n: usize) {
    let shape = format!("{n}x1");
    if !bench.wants(&format!("{kernel} fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let logits = rng.vec_uniform(n, -5.0, 5.0);
    let targets: Vec<f32> = (0..n).map(|_| rng.below(2) as f32).collect();
    let (lt, tt) = (up(&gpu, &[n, 1], &logits), up(&gpu, &[n], &targets));
    let outs: Vec<Tensor> = (0..3).map(|_| Tensor::zeros(&gpu, &[n]).unwrap()).collect();
    let out = SigmoidBceOut { loss_rows: &outs[0], dlogits: Some(&outs[1]), correct_rows: &outs[2], totals: None };
    let scale = 1.0 / n as f32;
    let (plan, (cpu_s, (_, want, _))) = if kernel == "hinge" {
        let out: &HingeOut = &out;
        (hinge(&gpu, &lt, &tt, scale, out).unwrap(), time_cpu(|| cpu::hinge(&logits, &targets, scale)))
    } else {
        (sigmoid_bce(&gpu, &lt, &tt, scale, &out).unwrap(), time_cpu(|| cpu::sigmoid_bce(&logits, &targets, scale)))
    };
    let bytes = 4.0 * (5 * n) as f64;
    bench.row(kernel, "fused", shape, true, &plan, &outs[1], &want, (1e-7, 1e-4), Work::Bytes(bytes), cpu_s, None);
}

fn bench_mse(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    if !bench.wants(&format!("mse fused {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let pred = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let targets = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let (pt, tt) = (up(&gpu, &[rows, cols], &pred), up(&gpu, &[rows, cols], &targets));
    let (loss, dpred, abs) = (
        Tensor::zeros(&gpu, &[rows]).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
        Tensor::zeros(&gpu, &[rows]).unwrap(),
    );
    let out = MseOut { loss_rows: &loss, dpred: Some(&dpred), abs_rows: &abs, totals: None };
    let scale = 1.0 / rows as f32;
    let plan = mse(&gpu, &pt, &tt, scale, &out).unwrap();
    let (cpu_s, (_, want, _)) = time_cpu(|| cpu::mse(&pred, &targets, rows, cols, scale));
    let bytes = 4.0 * (3 * rows * cols + 2 * rows) as f64;
    bench.row("mse", "fused", shape, true, &plan, &dpred, &want, (1e-7, 1e-4), Work::Bytes(bytes), cpu_s, None);
}

/// A training batch gathered from a resident u8 data set (MNIST-like), scaled by 1/255.
fn bench_gather(bench: &mut Bench, rng: &mut Rng, total: usize, dim: usize, rows: usize) {
    let shape = format!("{rows}x{dim} of {total}");
    if !bench.wants(&format!("gather_rows u8 {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let bytes: Vec<u8> = (0..total * dim).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u32> = (0..total).map(|_| rng.below(10) as u32).collect();
    let mut order: Vec<u32> = (0..total as u32).collect();
    rng.shuffle(&mut order);
    let src = GpuRows {
        scale: 1.0 / 255.0,
        ..GpuRows::upload(&gpu, &wgnn::data::Features::U8(bytes.clone()), &labels, dim).unwrap()
    };
    let idx = Tensor::from_u32(&gpu, &[total], &order).unwrap();
    let step = Tensor::zeros_u32(&gpu, &[2]).unwrap();
    let (x, y) = (Tensor::zeros(&gpu, &[rows, dim]).unwrap(), Tensor::zeros_u32(&gpu, &[rows]).unwrap());
    let start = BatchStart::Counter { epoch_step: &step, stride: rows, parity: 0, t: None };
    let plan = gather_rows(&gpu, &src, &idx, start, &x, &y).unwrap();
    let as_f32: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
    let (cpu_s, (want, _)) =
        time_cpu(|| cpu::gather_rows(&as_f32, &labels, dim, &order, 0, rows, 1.0 / 255.0, 0.0, None));
    let moved = (rows * dim) as f64 * 5.0 + 8.0 * rows as f64;
    bench.row("gather_rows", "u8", shape, true, &plan, &x, &want, (1e-6, 1e-6), Work::Bytes(moved), cpu_s, None);
}

/// Clipping's factor and norm over `len` gradients (two dispatches), validated against the CPU.
fn bench_clip_factor(bench: &mut Bench, rng: &mut Rng, len: usize) {
    let variant = if len.is_multiple_of(4) { "vec4" } else { "f32" };
    let shape = format!("{len}");
    if !bench.wants(&format!("clip_factor {variant} {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let g = rng.vec_uniform(len, -1.0, 1.0);
    let grad = up(&gpu, &[len], &g);
    let out = Tensor::zeros(&gpu, &[2]).unwrap();
    let plan = clip_factor(&gpu, &grad, &out, 1.0).unwrap();
    let (cpu_s, want) = time_cpu(|| cpu::clip_factor(&g, 1.0));
    let work = Work::Bytes(len as f64 * 4.0);
    bench.row("clip_factor", variant, shape, true, &plan, &out, &want, (0.0, 2e-6), work, cpu_s, None);
}

/// One in-place update of `len` parameters, validated on the parameters after the first run.
fn bench_optimizer(bench: &mut Bench, rng: &mut Rng, kernel: &str, len: usize) {
    let shape = format!("{len}");
    // Whole tensors (offset 0): the vec4 module takes every length that is a multiple of 4.
    let variant = if len.is_multiple_of(4) { "vec4" } else { "scalar" };
    if !bench.wants(&format!("{kernel} {variant} {shape}")) {
        return;
    }
    let gpu = bench.gpu.clone();
    let param = rng.vec_uniform(len, -1.0, 1.0);
    let grad = rng.vec_uniform(len, -1.0, 1.0);
    let (pt, gt) = (up(&gpu, &[len], &param), up(&gpu, &[len], &grad));
    let states: Vec<Tensor> = (0..2).map(|_| Tensor::zeros(&gpu, &[len]).unwrap()).collect();
    let step = Tensor::from_u32(&gpu, &[1], &[1]).unwrap();
    // time_cpu repeats its closure: each call starts from fresh copies (the copy is timed too).
    let fresh = || (param.clone(), vec![0.0f32; len], vec![0.0f32; len]);
    let schedule = LrSchedule::Constant;
    let adam = AdamConfig {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-7,
        weight_decay: 0.01,
        schedule,
        eps_placement: EpsPlacement::Torch,
        decay: wgnn::config::DecayMask::All,
    };
    let (plan, (cpu_s, want), state_tensors) = match kernel {
        "sgd_update" => {
            let cfg = SgdConfig { lr: 0.01, momentum: 0.9, nesterov: true, weight_decay: 0.0, schedule };
            let plan = sgd_update(&gpu, &pt, &gt, Some(&states[0]), &cfg).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, _) = fresh();
                    cpu::sgd_update(&mut p, &grad, Some(&mut s1), &cfg);
                    p
                }),
                1,
            )
        }
        "adam_update" => {
            let plan = adam_update(&gpu, &pt, &gt, &states[0], &states[1], &step, &adam).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, mut s2) = fresh();
                    cpu::adam_update(&mut p, &grad, &mut s1, &mut s2, 1, &adam);
                    p
                }),
                2,
            )
        }
        "adamw_update" => {
            let plan = adamw_update(&gpu, &pt, &gt, &states[0], &states[1], &step, &adam).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, mut s2) = fresh();
                    cpu::adamw_update(&mut p, &grad, &mut s1, &mut s2, 1, &adam);
                    p
                }),
                2,
            )
        }
        "rmsprop_update" => {
            let cfg = RmsPropConfig {
                lr: 1e-3,
                rho: 0.9,
                eps: 1e-7,
                momentum: 0.0,
                weight_decay: 0.0,
                schedule,
                eps_placement: EpsPlacement::Torch,
            };
            let plan = rmsprop_update(&gpu, &pt, &gt, &states[0], None, Some(&step), &cfg).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, _) = fresh();
                    cpu::rmsprop_update(&mut p, &grad, &mut s1, None, 1, &cfg);
                    p
                }),
                1,
            )
        }
        "adagrad_update" => {
            let cfg = AdagradConfig {
                lr: 0.01,
                initial_accumulator: 0.1,
                eps: 1e-7,
                weight_decay: 0.0,
                schedule,
                eps_placement: EpsPlacement::Torch,
            };
            let plan = adagrad_update(&gpu, &pt, &gt, &states[0], &step, &cfg).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, _) = fresh();
                    cpu::adagrad_update(&mut p, &grad, &mut s1, 1, &cfg);
                    p
                }),
                1,
            )
        }
        "adadelta_update" => {
            let cfg = AdadeltaConfig { lr: 1.0, rho: 0.95, eps: 1e-7, weight_decay: 0.0, schedule };
            let plan = adadelta_update(&gpu, &pt, &gt, &states[0], &states[1], Some(&step), &cfg).unwrap();
            (
                plan,
                time_cpu(|| {
                    let (mut p, mut s1, mut s2) = fresh();
                    cpu::adadelta_update(&mut p, &grad, &mut s1, &mut s2, 1, &cfg);
                    p
                }),
                2,
            )
        }
        other => panic!("no optimizer bench for {other}"),
    };
    // param read and written, grad read, each state read and written.
    let bytes = 4.0 * len as f64 * (3 + 2 * state_tensors) as f64;
    let family = if variant == "vec4" { "optimizer_vec4" } else { "optimizer" };
    assert_eq!(plan.dispatches[0].label, format!("{family}::{kernel}"), "{kernel} {shape}");
    bench.row(kernel, variant, shape, true, &plan, &pt, &want, (1e-6, 1e-5), Work::Bytes(bytes), cpu_s, None);
}

fn bench_dropout(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols} p=0.5");
    let gpu = bench.gpu.clone();
    let x = rng.vec_uniform(rows * cols, -1.0, 1.0);
    let xt = up(&gpu, &[rows, cols], &x);
    let (yt, mt, dxt) = (
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
        Tensor::zeros(&gpu, &[rows, cols]).unwrap(),
    );
    let step = Tensor::from_u32(&gpu, &[1], &[3]).unwrap();
    let bytes = 4.0 * (3 * rows * cols) as f64;
    if bench.wants(&format!("dropout_forward hash {shape}")) {
        let plan = dropout_forward(&gpu, &xt, &yt, &mt, 0.5, 7, &step, 0).unwrap();
        let (cpu_s, (want, _)) = time_cpu(|| cpu::dropout_forward(&x, 0.5, 7, 3));
        bench.row(
            "dropout_forward",
            "hash",
            shape.clone(),
            true,
            &plan,
            &yt,
            &want,
            (0.0, 0.0),
            Work::Bytes(bytes),
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("dropout_backward mask {shape}")) {
        let (_, mask) = cpu::dropout_forward(&x, 0.5, 7, 3);
        let mt = up(&gpu, &[rows, cols], &mask);
        let plan = dropout_backward(&gpu, &xt, &mt, &dxt).unwrap();
        let (cpu_s, want) = time_cpu(|| cpu::dropout_backward(&x, &mask));
        bench.row(
            "dropout_backward",
            "mask",
            shape,
            true,
            &plan,
            &dxt,
            &want,
            (0.0, 0.0),
            Work::Bytes(bytes),
            cpu_s,
            None,
        );
    }
}

fn bench_batch_norm(bench: &mut Bench, rng: &mut Rng, rows: usize, cols: usize) {
    let shape = format!("{rows}x{cols}");
    let gpu = bench.gpu.clone();
    let cfg = BatchNormConfig::default();
    let x = rng.vec_uniform(rows * cols, -2.0, 2.0);
    let gamma = rng.vec_uniform(cols, 0.5, 1.5);
    let beta = rng.vec_uniform(cols, -0.5, 0.5);
    let (xt, gt, bt) = (up(&gpu, &[rows, cols], &x), up(&gpu, &[cols], &gamma), up(&gpu, &[cols], &beta));
    let feature = || Tensor::zeros(&gpu, &[cols]).unwrap();
    let (mean_t, inv_t, run_mean_t) = (feature(), feature(), feature());
    let run_var_t = up(&gpu, &[cols], &vec![1.0; cols]);
    let yt = Tensor::zeros(&gpu, &[rows, cols]).unwrap();
    let (mut run_mean, mut run_var) = (vec![0.0f32; cols], vec![1.0f32; cols]);
    let (y_want, mean, inv_std) = cpu::batch_norm_forward_train(
        &x,
        &gamma,
        &beta,
        &mut run_mean,
        &mut run_var,
        rows,
        cols,
        &cfg,
        Activation::Identity,
    );
    let bytes = 4.0 * (2 * rows * cols) as f64;
    if bench.wants(&format!("batch_norm_forward_train chunked {shape}")) {
        let plan = batch_norm_forward_train(
            &gpu,
            &xt,
            &gt,
            &bt,
            &yt,
            &mean_t,
            &inv_t,
            &run_mean_t,
            &run_var_t,
            &cfg,
            Activation::Identity,
        )
        .unwrap();
        let (cpu_s, _) = time_cpu(|| {
            let (mut m, mut v) = (vec![0.0f32; cols], vec![1.0f32; cols]);
            cpu::batch_norm_forward_train(&x, &gamma, &beta, &mut m, &mut v, rows, cols, &cfg, Activation::Identity)
        });
        let work = Work::Bytes(bytes + 4.0 * (rows * cols) as f64);
        bench.row(
            "batch_norm_forward_train",
            "chunked",
            shape.clone(),
            true,
            &plan,
            &yt,
            &y_want,
            (1e-4, 1e-4),
            work,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("batch_norm_forward_train deferred {shape}")) {
        let pending_t = feature();
        let plan = batch_norm_forward_train_deferred(
            &gpu,
            &xt,
            &gt,
            &bt,
            &yt,
            &mean_t,
            &inv_t,
            &pending_t,
            &cfg,
            Activation::Identity,
        )
        .unwrap();
        let (cpu_s, _) = time_cpu(|| {
            cpu::batch_norm_forward_train_deferred(&x, &gamma, &beta, rows, cols, &cfg, Activation::Identity)
        });
        let work = Work::Bytes(bytes + 4.0 * (rows * cols) as f64);
        bench.row(
            "batch_norm_forward_train",
            "deferred",
            shape.clone(),
            true,
            &plan,
            &yt,
            &y_want,
            (1e-4, 1e-4),
            work,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("batch_norm_commit_running cols {shape}")) {
        // One commit of the batch's statistics into running ones at (0, 1), as the first step's.
        let (_, batch_mean, _, pending) =
            cpu::batch_norm_forward_train_deferred(&x, &gamma, &beta, rows, cols, &cfg, Activation::Identity);
        let (bm, pv) = (up(&gpu, &[cols], &batch_mean), up(&gpu, &[cols], &pending));
        let (rm, rv) = (feature(), up(&gpu, &[cols], &vec![1.0; cols]));
        let plan = batch_norm_commit_running(&gpu, &bm, &pv, &rm, &rv, None, &cfg).unwrap();
        let (cpu_s, want) = time_cpu(|| {
            let (mut m, mut v) = (vec![0.0f32; cols], vec![1.0f32; cols]);
            cpu::batch_norm_commit_running(&batch_mean, &pending, &mut m, &mut v, false, &cfg);
            m
        });
        let work = Work::Bytes(4.0 * (6 * cols) as f64);
        bench.row(
            "batch_norm_commit_running",
            "cols",
            shape.clone(),
            true,
            &plan,
            &rm,
            &want,
            (1e-5, 1e-5),
            work,
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("batch_norm_forward_inference rows {shape}")) {
        let rm = up(&gpu, &[cols], &mean);
        let var: Vec<f32> = inv_std.iter().map(|s| 1.0 / (s * s) - cfg.eps).collect();
        let rv = up(&gpu, &[cols], &var);
        let plan =
            batch_norm_forward_inference(&gpu, &xt, &gt, &bt, &rm, &rv, &yt, &cfg, Activation::Identity).unwrap();
        let (cpu_s, want) = time_cpu(|| {
            cpu::batch_norm_forward_inference(&x, &gamma, &beta, &mean, &var, rows, cols, &cfg, Activation::Identity)
        });
        bench.row(
            "batch_norm_forward_inference",
            "rows",
            shape.clone(),
            true,
            &plan,
            &yt,
            &want,
            (1e-4, 1e-4),
            Work::Bytes(bytes),
            cpu_s,
            None,
        );
    }
    if bench.wants(&format!("batch_norm_backward chunked {shape}")) {
        let dy = rng.vec_uniform(rows * cols, -1.0, 1.0);
        let dyt = up(&gpu, &[rows, cols], &dy);
        let (mt, it) = (up(&gpu, &[cols], &mean), up(&gpu, &[cols], &inv_std));
        let (dxt, dgt, dbt) = (Tensor::zeros(&gpu, &[rows, cols]).unwrap(), feature(), feature());
        let plan = batch_norm_backward(&gpu, &dyt, &xt, &gt, &mt, &it, &dxt, &dgt, &dbt, false).unwrap();
        let (cpu_s, (want, _, _)) = time_cpu(|| cpu::batch_norm_backward(&dy, &x, &gamma, &mean, &inv_std, rows, cols));
        let work = Work::Bytes(4.0 * (5 * rows * cols) as f64);
        bench.row("batch_norm_backward", "chunked", shape, true, &plan, &dxt, &want, (1e-4, 1e-3), work, cpu_s, None);
    }
}

/// The GPU-class matmul (`matmul_register`, workgroup tiles in workgroup memory, register blocks)
/// at one shape and form, a row per preset tile. Products past 2³¹ multiply-adds are validated
/// against sgemm (the f64 reference would take minutes) and, on a CPU adapter, run only when the
/// filter names their shape (`cargo bench --bench kernels -- "matmul_register 64x64x16/4x4 4096x4096"`).
fn bench_matmul_register(bench: &mut Bench, rng: &mut Rng, (m, k, n): (usize, usize, usize), (ta, tb): (bool, bool)) {
    let form = match (ta, tb) {
        (false, false) => "",
        (true, false) => "Aᵀ",
        (false, true) => "Bᵀ",
        (true, true) => "AᵀBᵀ",
    };
    let shape = format!("{m}x{k}·{k}x{n} {form}");
    let labels: Vec<String> =
        RegisterTile::PRESETS.iter().map(|t| format!("matmul_register {} {shape}", t.name())).collect();
    if !labels.iter().any(|l| bench.wants(l)) {
        return;
    }
    let gpu = bench.gpu.clone();
    let huge = m * n * k > 1 << 31;
    let named = bench.filter.as_ref().is_some_and(|f| f.contains(&format!("{m}x{k}")));
    if huge && gpu.is_cpu_adapter() && !named {
        println!(
            "{:<18} {:<14} {shape:<24} skipped (minutes on a CPU adapter; a filter naming it runs it)",
            "matmul_register", "all tiles"
        );
        return;
    }
    let a = rng.vec_uniform(m * k, -1.0, 1.0);
    let b = rng.vec_uniform(k * n, -1.0, 1.0);
    let at = Tensor::from_slice(&gpu, &if ta { [k, m] } else { [m, k] }, &a).unwrap();
    let bt = Tensor::from_slice(&gpu, &if tb { [n, k] } else { [k, n] }, &b).unwrap();
    let ct = Tensor::zeros(&gpu, &[m, n]).unwrap();
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let (sgemm_s, c) = time_cpu(|| host_sgemm(m, k, n, &a, (rsa, csa), &b, (rsb, csb)));
    let (want, cpu_ref_s) = if huge {
        (c, sgemm_s)
    } else {
        let t = Instant::now();
        let want = cpu::matmul(&a, &b, m, k, n, ta, tb);
        (want, t.elapsed().as_secs_f64())
    };
    let tol = (2e-5 * (k as f32).sqrt(), 1e-4);
    for (tile, label) in RegisterTile::PRESETS.into_iter().zip(&labels) {
        if !bench.wants(label) || !matmul_register_supported(&gpu, tile) {
            continue;
        }
        let opts = MatmulOptions { trans_a: ta, trans_b: tb, ..Default::default() };
        let plan = matmul_register(&gpu, &at, &bt, &ct, &opts, tile).unwrap();
        let work = Work::Flops(2.0 * (m * n * k) as f64);
        let name = tile.name();
        bench.row(
            "matmul_register",
            &name,
            shape.clone(),
            false,
            &plan,
            &ct,
            &want,
            tol,
            work,
            cpu_ref_s,
            Some(sgemm_s),
        );
    }
}

fn today() -> String {
    let days = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0) as i64;
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

fn write_outputs(bench: &Bench, adapter: &str, date: &str) {
    // Relative to where it runs, as the training bench: a binary carried to another machine
    // (bench/gpu_bundle.sh) writes beside itself.
    let dir = std::path::Path::new("target/bench");
    std::fs::create_dir_all(dir).unwrap();
    let mut csv = String::from(
        "kernel,variant,shape,picked,max_err,passed,dispatches,median_s,min_s,rate,unit,cpu_ref_s,sgemm_s\n",
    );
    let mut json = format!("{{\n  \"adapter\": {adapter:?},\n  \"date\": {date:?},\n  \"rows\": [\n");
    for (i, r) in bench.rows.iter().enumerate() {
        let rate = r.rate(r.median_s);
        let sgemm = r.sgemm_s.map_or(String::new(), |s| format!("{s:e}"));
        writeln!(
            csv,
            "{},{},{},{},{:e},{},{},{:e},{:e},{:.4},{},{:e},{sgemm}",
            r.kernel,
            r.variant,
            r.shape,
            r.picked,
            r.max_err,
            r.passed,
            r.dispatches,
            r.median_s,
            r.min_s,
            rate,
            r.unit(),
            r.cpu_ref_s
        )
        .unwrap();
        let num = |v: f64| if v.is_finite() { format!("{v:e}") } else { "null".into() };
        writeln!(
            json,
            "    {{\"kernel\": {:?}, \"variant\": {:?}, \"shape\": {:?}, \"picked\": {}, \"max_err\": {}, \"passed\": {}, \
             \"dispatches\": {}, \"median_s\": {}, \"min_s\": {}, \"rate\": {}, \"unit\": {:?}, \"cpu_ref_s\": {}, \"sgemm_s\": {}}}{}",
            r.kernel,
            r.variant,
            r.shape,
            r.picked,
            num(r.max_err as f64),
            r.passed,
            r.dispatches,
            num(r.median_s),
            num(r.min_s),
            num(rate),
            r.unit(),
            num(r.cpu_ref_s),
            r.sgemm_s.map_or("null".into(), num),
            if i + 1 < bench.rows.len() { "," } else { "" }
        )
        .unwrap();
    }
    json.push_str("  ]\n}\n");
    std::fs::write(dir.join("kernels.csv"), csv).unwrap();
    std::fs::write(dir.join("kernels.json"), json).unwrap();
    println!("\nwrote {} and {}", dir.join("kernels.csv").display(), dir.join("kernels.json").display());
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument filters rows by substring of
    // "kernel variant shape".
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let gpu = Gpu::new().unwrap();
    let timestamps = gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let adapter = gpu.describe();
    let date = today();
    println!("adapter: {adapter}");
    println!(
        "date: {date}   timing: {}",
        if timestamps { "GPU timestamp queries" } else { "wall clock (no TIMESTAMP_QUERY)" }
    );
    println!("* = the engine's choose_variant pick; nd = dispatches per call; ratios > 1: the GPU is faster\n");
    header();
    let tune_dir = std::env::temp_dir().join(format!("wgnn-bench-tune-{}", std::process::id()));
    let profile = std::env::var(wgnn::device::PROFILE_ENV).ok().and_then(|p| wgnn::ProfileOverride::parse(&p));
    let tuned = Gpu::with_options(&wgnn::GpuOptions {
        profile: profile.unwrap_or_default(),
        tune_cache_dir: Some(&tune_dir),
        tune_budget: Some(Duration::from_secs(3600)),
        ..Default::default()
    })
    .unwrap();
    let mut bench = Bench { gpu, tuned, filter, timestamps, rows: Vec::new() };
    let mut rng = Rng::new(5);
    let start = Instant::now();

    const NN: (bool, bool) = (false, false);
    const TN: (bool, bool) = (true, false);
    const NT: (bool, bool) = (false, true);
    // (M, K, N): the MNIST MLP's forward shapes and the square ones, in every form.
    for shape in [(32, 784, 64), (256, 784, 64), (256, 64, 64), (512, 512, 512), (1024, 1024, 1024)] {
        for form in [NN, TN, NT] {
            bench_matmul(&mut bench, &mut rng, shape, form);
        }
    }
    // The training step's transposed shapes: dW = Xᵀ·dZ, dX = dZ·Wᵀ; the last layer; evaluation.
    for (shape, form) in [
        ((784, 32, 64), TN),
        ((784, 256, 64), TN),
        ((64, 256, 64), TN),
        ((32, 64, 784), NT),
        ((256, 64, 784), NT),
        ((256, 64, 10), NN),
        ((256, 10, 64), NT),
        ((10_000, 784, 64), NN),
    ] {
        bench_matmul(&mut bench, &mut rng, shape, form);
    }
    // char_gpt's step (batch 12 × block 64 = 768 tokens, width 128, 4C = 512, vocabulary 65):
    // the forward's q/k/v, attention output, MLP and tied head products; the input gradients
    // dX = dZ·Wᵀ (the head's dZ·table); the weight gradients dW = Xᵀ·dZ (the head's dZᵀ·X).
    for (shape, form) in [
        ((768, 128, 384), NN),
        ((768, 128, 128), NN),
        ((768, 128, 512), NN),
        ((768, 512, 128), NN),
        ((768, 128, 65), NT),
        ((768, 384, 128), NT),
        ((768, 128, 128), NT),
        ((768, 512, 128), NT),
        ((768, 128, 512), NT),
        ((768, 65, 128), NN),
        ((128, 768, 384), TN),
        ((128, 768, 128), TN),
        ((128, 768, 512), TN),
        ((512, 768, 128), TN),
        ((65, 768, 128), TN),
    ] {
        bench_matmul(&mut bench, &mut rng, shape, form);
    }
    // The training step's weight gradients with their bias gradients, at batch 32 and 256.
    for shape in [(784, 32, 64), (784, 256, 64), (64, 32, 64), (64, 256, 64), (64, 32, 10), (64, 256, 10)] {
        bench_matmul_column_sum(&mut bench, &mut rng, shape);
    }
    for (rows, cols) in [(256, 64), (10_000, 64)] {
        bench_bias_act_forward(&mut bench, &mut rng, rows, cols);
        bench_bias_act_backward(&mut bench, &mut rng, rows, cols);
    }
    for (rows, cols) in [(256, 64), (60_000, 10)] {
        bench_column_sum(&mut bench, &mut rng, rows, cols);
    }
    for (rows, cols) in [(256, 10), (10_000, 10)] {
        bench_softmax_xent(&mut bench, &mut rng, rows, cols);
        bench_softmax(&mut bench, &mut rng, rows, cols);
        bench_softmax_backward(&mut bench, &mut rng, rows, cols);
    }
    for rows in [32, 64, 128, 256] {
        bench_dense_softmax_xent(&mut bench, &mut rng, rows, 64, 10);
    }
    for rows in [32, 256] {
        bench_matmul_gathered(&mut bench, &mut rng, rows, 784, 64);
    }
    bench_guard_step(&mut bench);
    for kernel in ["sigmoid_bce", "hinge"] {
        bench_single_output_loss(&mut bench, &mut rng, kernel, 10_000);
    }
    bench_mse(&mut bench, &mut rng, 10_000, 10);
    for rows in [32, 256] {
        bench_gather(&mut bench, &mut rng, 10_000, 784, rows);
    }
    // 55,050 = the MNIST MLP's parameter count (scalar kernels); 55,104 its flat buffer as the
    // model lays it out, padded (vec4); 1M a larger model.
    for len in [55_050, 55_104, 1_000_000] {
        for kernel in
            ["sgd_update", "adam_update", "adamw_update", "rmsprop_update", "adagrad_update", "adadelta_update"]
        {
            bench_optimizer(&mut bench, &mut rng, kernel, len);
        }
        bench_clip_factor(&mut bench, &mut rng, len);
    }
    for (rows, cols) in [(256, 64), (10_000, 64)] {
        bench_dropout(&mut bench, &mut rng, rows, cols);
        bench_batch_norm(&mut bench, &mut rng, rows, cols);
    }
    // cnn_mnist's batch norms at batch 64 (after its 3×3 convolutions: 64·26·26 rows of 16
    // channels, 64·11·11 of 32) and its dropout (64 × 128).
    for (rows, cols) in [(43_264, 16), (7_744, 32)] {
        bench_batch_norm(&mut bench, &mut rng, rows, cols);
    }
    bench_dropout(&mut bench, &mut rng, 64, 128);
    // The GPU-class matmul at the MLP's shapes (forward, dW, dX) and the large squares.
    for (shape, form) in [
        ((32, 784, 64), NN),
        ((256, 784, 64), NN),
        ((256, 64, 64), NN),
        ((784, 256, 64), TN),
        ((256, 64, 784), NT),
        ((1024, 1024, 1024), NN),
        ((4096, 4096, 4096), NN),
    ] {
        bench_matmul_register(&mut bench, &mut rng, shape, form);
    }
    // The Keras mnist_convnet at batch 128: 28×28×1 → conv 3×3×32 → 26×26×32 → pool 2 →
    // 13×13×32 → conv 3×3×64 → 11×11×64 → pool 2 → 5×5×64.
    bench_conv2d(&mut bench, &mut rng, [128, 28, 28, 1], 32);
    bench_conv2d(&mut bench, &mut rng, [128, 13, 13, 32], 64);
    // cnn_mnist's default model at batch 64: 28×28×1 → 3×3×16, then 13×13×16 → 3×3×32.
    bench_conv2d(&mut bench, &mut rng, [64, 28, 28, 1], 16);
    bench_conv2d(&mut bench, &mut rng, [64, 13, 13, 16], 32);
    // ... and cnn_mnist's pools at batch 64.
    for shape in [[128, 26, 26, 32], [128, 11, 11, 64], [64, 26, 26, 16], [64, 11, 11, 32]] {
        bench_pool2d(&mut bench, &mut rng, shape);
    }
    bench_global_avg_pool2d(&mut bench, &mut rng, [128, 11, 11, 64]);
    // char_gpt's attention (nanoGPT's small CPU recipe: batch 12, 4 heads, width 128) at its block
    // of 64 and at 256.
    for t in [64, 256] {
        attention::bench_attention(&mut bench, &mut rng, 12, t, 128, 4);
    }
    // char_gpt's layer norms (768 tokens of width 128) and a width that is not a multiple of 4.
    for (rows, cols) in [(768, 128), (768, 129)] {
        layer_norm::bench_layer_norm(&mut bench, &mut rng, rows, cols);
    }
    println!("\n{} rows in {:.0} s", bench.rows.len(), start.elapsed().as_secs_f64());
    write_outputs(&bench, &adapter, &date);
}

/// The patch matrix of x, `[rows·Ho·Wo, kh·kw·C_in]` (for the im2col + sgemm baseline).
fn host_im2col(x: &[f32], d: &Conv2dDims) -> Vec<f32> {
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
fn host_col2im(dcol: &[f32], d: &Conv2dDims) -> Vec<f32> {
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

/// C[m, n] = A·B with A and B given by their strides (row, column), through matrixmultiply.
fn host_sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (isize, isize),
    b: &[f32],
    (rsb, csb): (isize, isize),
) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    c
}

/// One 3×3 valid convolution of the mnist_convnet: forward (bias + relu), kernel + bias gradient
/// and input gradient. The `sgemm` column is the same work on the CPU as im2col + sgemm (+ col2im).
fn bench_conv2d(bench: &mut Bench, rng: &mut Rng, x_shape: [usize; 4], c_out: usize) {
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
fn bench_pool2d(bench: &mut Bench, rng: &mut Rng, x_shape: [usize; 4]) {
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

fn bench_global_avg_pool2d(bench: &mut Bench, rng: &mut Rng, x_shape: [usize; 4]) {
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
