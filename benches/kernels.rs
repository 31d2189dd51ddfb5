//! Kernel benchmark (issue 5): `cargo bench --bench kernels [filter]`.
//!
//! For every kernel, variant and shape: validate against the CPU reference first (a failing row is
//! reported FAILED and not timed), then time on the device with timestamp queries (wall clock
//! around many dispatches in one submit where the adapter has none), and time the CPU reference
//! and, for matmul, `matrixmultiply::sgemm` at the same shape. Prints a table and writes
//! target/bench/kernels.{csv,json}.
//!
//! To add a kernel: write one `bench_<kernel>` function that builds its inputs and plan, computes
//! the CPU reference and calls `Bench::row`, in its family's module under benches/kernels/ (matmul,
//! losses, elementwise, batch_norm, conv, attention, layer_norm); call it from `main`.

#[path = "kernels/attention.rs"]
mod attention;
#[path = "kernels/batch_norm.rs"]
mod batch_norm;
#[path = "kernels/conv.rs"]
mod conv;
#[path = "kernels/elementwise.rs"]
mod elementwise;
#[path = "kernels/layer_norm.rs"]
mod layer_norm;
#[path = "kernels/losses.rs"]
mod losses;
#[path = "kernels/matmul.rs"]
mod matmul;

use batch_norm::bench_batch_norm;
use conv::{bench_conv2d, bench_global_avg_pool2d, bench_pool2d};
use elementwise::{
    bench_bias_act_backward, bench_bias_act_forward, bench_clip_factor, bench_column_sum, bench_dropout, bench_gather,
    bench_optimizer,
};
use losses::{
    bench_dense_softmax_xent, bench_guard_step, bench_mse, bench_single_output_loss, bench_softmax,
    bench_softmax_backward, bench_softmax_xent,
};
use matmul::{bench_matmul, bench_matmul_column_sum, bench_matmul_gathered, bench_matmul_register};

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wgnn::internals::rng::Rng;
use wgnn::{Gpu, Plan, Tensor};

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

/// "YYYY-MM-DD" (UTC) of the run.
/// Uploads an f32 slice with the given shape (bench inputs are always valid).
fn up(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_slice(gpu, shape, data).unwrap()
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
