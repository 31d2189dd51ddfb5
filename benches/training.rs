//! Training benchmark: the mnist_gpu model (784→64→64→10, Adam 1e-3) on the full MNIST training set,
//! epoch time and samples/s at batch 32 and 256, the first epoch (pipeline creation and shader
//! compilation included) reported apart from the steady ones.
//!
//! Two baselines measured in the same run, before and after the training, so that runs taken at
//! different times compare (the CI-class machine's speed drifts by half within an hour): the
//! per-dispatch cost of the adapter (1,000 one-invocation dispatches in one pass; times the step's
//! dispatch count and the epoch's steps it is the floor no kernel work can go below), and a
//! single-threaded CPU sgemm (`matrixmultiply`) of the first layer's forward product, as a probe of
//! the machine's speed at the moment.
//!
//! Then cnn_mnist's default model (Conv2D(16) → BatchNorm → relu → MaxPool → Conv2D(32) →
//! BatchNorm → relu → MaxPool → Flatten → Dense(128, relu) → Dropout → Dense(10), batch 64) on the
//! first `--cnn-rows` training rows (default 6,000; 0 skips it): its
//! steady s/epoch scaled to the 60,000 rows, samples/s, and the device memory one step binds
//! (`Sequential::step_memory_bytes`), and where one step's device time goes, dispatch by dispatch.
//!
//! Then char_gpt's default model (examples/common/gpt.rs: 4 layers, 4 heads, width 128, block 64,
//! nanoGPT's AdamW, clipping at 1.0) at batch 12 on Tiny Shakespeare's training split,
//! `--gpt-iters` steps (default 100; 0 skips it) in two halves, the first paying for pipelines:
//! the second's ms per iteration and tokens/s, the device memory one step binds, its dispatches,
//! and where one step's device time goes (by kernel, then dispatch by dispatch).
//!
//! With `--memory-budget SIZE` (e.g. `11M`, a quarter of MNIST's 47 MB upload), each MLP batch
//! size is then trained again on a device with that budget, where the training set streams in
//! chunks (`Sequential::training_chunks`), and the CNN row on one with the budget scaled to its
//! rows (the same ratio of data to budget), alternating resident and streamed runs (R S R S) so
//! that both see the machine in the same state: streamed over resident samples/s.
//!
//!     cargo bench --bench training [-- --epochs 3 --batch 32,256 --cnn-rows 6000 --gpt-iters 100 --memory-budget 12M]
//!
//! Writes target/bench/training.csv as well as the table.

#[path = "../examples/common/gpt.rs"]
mod gpt;

use std::io::Write;
use std::time::Instant;

use gpt::{gpt, nanogpt_adamw, GptConfig};

use wgnn::data::load_mnist;
use wgnn::device::memory_budget::parse_bytes;
use wgnn::internals::kernels::step_guard::guard_step;
use wgnn::layers::Conv2D;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential, TokenFitOptions, Validation};
use wgnn::{Activation, Dataset, Gpu, GpuOptions, Layer, Tensor, TokenDataset};

const MIB: f64 = (1 << 20) as f64;

/// mnist_gpu's model.
fn mlp(gpu: &Gpu) -> Result<Sequential, Box<dyn std::error::Error>> {
    let mut model = Sequential::new(784, 42)
        .dense(64, Activation::Relu)
        .dense(64, Activation::Relu)
        .dense(10, Activation::Identity)
        .build(&Backend::Gpu(gpu.clone()))?;
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3))?;
    Ok(model)
}

/// cnn_mnist's default model.
fn cnn(gpu: &Gpu) -> Result<Sequential, Box<dyn std::error::Error>> {
    let mut builder = Sequential::new([28, 28, 1], 42);
    for filters in [16, 32] {
        let conv = Conv2D { use_bias: false, ..Conv2D::new(filters, (3, 3), Activation::Identity) };
        builder = builder.add(Layer::Conv2D(conv)).batch_norm().activation(Activation::Relu).max_pool2d((2, 2));
    }
    let mut model = builder
        .flatten()
        .dense(128, Activation::Relu)
        .dropout(0.25)
        .dense(10, Activation::Softmax)
        .build(&Backend::Gpu(gpu.clone()))?;
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(2e-3))?;
    Ok(model)
}

/// Steady seconds per epoch (the median after the first) of a fresh `build` model trained on
/// `data` at `batch` for `epochs` epochs on `gpu`.
fn steady_epoch(
    gpu: &Gpu,
    build: fn(&Gpu) -> Result<Sequential, Box<dyn std::error::Error>>,
    data: &Dataset,
    batch: usize,
    epochs: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut model = build(gpu)?;
    let options = FitOptions { epochs, batch_size: batch, validation: Validation::None, ..Default::default() };
    let history = model.fit(data, &options)?;
    // The first epoch pays for pipelines and shaders: left out where there are others.
    let first = usize::from(history.epochs.len() > 1);
    let mut steady: Vec<f64> = history.epochs.iter().skip(first).map(|r| r.seconds).collect();
    steady.sort_by(f64::total_cmp);
    Ok(steady[steady.len() / 2])
}

/// Resident (on `gpu`) against streamed (on `small`, whose budget the data set passes), runs
/// alternated R S R S: the steady epochs of each, and streamed over resident speed.
#[allow(clippy::too_many_arguments)]
fn streamed_vs_resident(
    name: &str,
    gpu: &Gpu,
    small: &Gpu,
    build: fn(&Gpu) -> Result<Sequential, Box<dyn std::error::Error>>,
    data: &Dataset,
    batch: usize,
    epochs: usize,
    csv: &mut std::fs::File,
) -> Result<(), Box<dyn std::error::Error>> {
    let plan = build(small)?.training_chunks(data, batch)?;
    let Some(plan) = plan else {
        println!("{name}, batch {batch}: {} rows stay resident under the budget: nothing streams", data.rows);
        return Ok(());
    };
    let (mut resident, mut streamed) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        resident.push(steady_epoch(gpu, build, data, batch, epochs)?);
        streamed.push(steady_epoch(small, build, data, batch, epochs)?);
    }
    let samples = |s: &[f64]| s.iter().map(|t| data.rows as f64 / t).collect::<Vec<_>>();
    let (r, s) = (samples(&resident), samples(&streamed));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "{name}, batch {batch}, {} rows: upload {:.1} MiB = {:.1}× the {:.1} MiB budget, {} chunks of {} batches \
         ({:.1} MiB of chunk buffers); resident {:.0} samples/s (runs {:.0?}), streamed {:.0} ({:.0?}): {:.0}%",
        data.rows,
        plan.resident_bytes as f64 / MIB,
        plan.resident_bytes as f64 / small.memory_budget() as f64,
        small.memory_budget() as f64 / MIB,
        plan.chunks,
        plan.batches,
        plan.buffer_bytes as f64 / MIB,
        mean(&r),
        r,
        mean(&s),
        s,
        100.0 * mean(&s) / mean(&r)
    );
    writeln!(csv, "\"{} ({name}, resident)\",{batch},steady,,{:.1},,", gpu.adapter_info().name, mean(&r))?;
    writeln!(csv, "\"{} ({name}, streamed)\",{batch},steady,,{:.1},,", small.adapter_info().name, mean(&s))?;
    Ok(())
}

/// The process's peak resident set (VmHWM), bytes; `None` where /proc does not say.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// The first `rows` training rows as 28×28×1 images.
fn cnn_data(train: &Dataset, rows: usize) -> Result<Dataset, Box<dyn std::error::Error>> {
    Ok(train.subset(&(0..rows).collect::<Vec<_>>())?.with_sample_shape(&[28, 28, 1])?)
}

/// cnn_mnist's default model at batch 64 on the first `rows` rows, 3 epochs: the steady median
/// scaled to a 60,000-row epoch, samples/s, and one step's device memory.
fn cnn_row(gpu: &Gpu, train: &Dataset, rows: usize, csv: &mut std::fs::File) -> Result<(), Box<dyn std::error::Error>> {
    let data = cnn_data(train, rows)?;
    let mut model = cnn(gpu)?;
    let batch = 64;
    let memory = model.step_memory_bytes(&data, batch)?;
    let eval_memory = model.eval_memory_bytes(&data)?;
    let options = FitOptions { epochs: 3, batch_size: batch, validation: Validation::None, ..Default::default() };
    gpu.reset_peak_allocated_bytes();
    let before = gpu.allocated_bytes();
    let history = model.fit(&data, &options)?;
    let fit_peak = gpu.peak_allocated_bytes() - before;
    let mut steady: Vec<f64> = history.epochs.iter().skip(1).map(|r| r.seconds).collect();
    steady.sort_by(f64::total_cmp);
    let median = steady[steady.len() / 2];
    let per_full_epoch = median * 60_000.0 / rows as f64;
    println!(
        "\ncnn (cnn_mnist's model), batch {batch}, {rows} rows: first epoch {:.2} s, steady median {median:.2} s \
         ({:.0} samples/s; {per_full_epoch:.0} s per 60,000-row epoch); one step binds {:.1} MiB, evaluating the \
         rows {:.1} MiB, fit held {:.1} MiB at most (data included; engine accounting)",
        history.epochs[0].seconds,
        rows as f64 / median,
        memory as f64 / MIB,
        eval_memory as f64 / MIB,
        fit_peak as f64 / MIB
    );
    writeln!(csv, "\"{} (cnn)\",{batch},steady,{median:.4},{:.1},,", gpu.adapter_info().name, rows as f64 / median)?;
    // Where one step's device time goes, each dispatch timed alone.
    let timings = model.profile_step(&data, batch, 10)?;
    let total: f64 = timings.iter().map(|t| t.1).sum();
    println!(
        "one cnn step at batch {batch}: {} dispatches, {:.1} ms of device time in all",
        timings.len(),
        total * 1e3
    );
    for (label, seconds) in &timings {
        println!("  {label:<40} {:>9.1} µs", seconds * 1e6);
    }
    let (device, wall) = model.time_step(&data, batch, 10)?;
    print_step_split("cnn", total, &device, wall, median / rows.div_ceil(batch) as f64);
    Ok(())
}

/// Where a step's wall time goes beyond its dispatches' own device time: the dispatches timed
/// alone (`alone`, summed), the step timed whole on the device (`device`, one pass per step:
/// the dispatches in sequence), a step's wall time with 10 in one submission (`wall`), and the
/// training loop's (`fit`: a steady epoch over its steps, with its progress ticks' readbacks).
fn print_step_split(name: &str, alone: f64, device: &[f64], wall: f64, fit: f64) {
    let mut sorted = device.to_vec();
    sorted.sort_by(f64::total_cmp);
    let whole = sorted[sorted.len() / 2];
    println!(
        "one {name} step, ms: dispatches alone {:.1}; whole step on the device {:.1} (median of {}, min {:.1}); wall \
         {:.1} with {} steps in one submission; fit {:.1} (steady epoch ÷ steps)",
        alone * 1e3,
        whole * 1e3,
        sorted.len(),
        sorted[0] * 1e3,
        wall * 1e3,
        sorted.len(),
        fit * 1e3
    );
}

/// char_gpt's default model at batch 12, block 64, `iters` steps in two halves (see the module
/// comment): the second half's ms/iter and tokens/s, one step's memory and dispatches, and its
/// device time by kernel and by dispatch.
fn gpt_row(gpu: &Gpu, iters: usize, csv: &mut std::fs::File) -> Result<(), Box<dyn std::error::Error>> {
    let text = TokenDataset::from_text_file("assets/tinyshakespeare/input.txt")?;
    let (train, _) = text.split(0.9)?;
    let cfg = GptConfig { vocab: text.vocab_size(), block: 64, n_layer: 4, n_head: 4, n_embd: 128 };
    let build = || -> Result<Sequential, Box<dyn std::error::Error>> {
        let mut model = gpt(cfg, 1337).build(&Backend::Gpu(gpu.clone()))?;
        model.compile(Loss::SparseCategoricalCrossentropy, nanogpt_adamw(1e-3, 1e-4, 100, 2000, 0.1))?;
        Ok(model)
    };
    let half = iters.div_ceil(2);
    let batch = 12;
    let opts = TokenFitOptions {
        batch_size: batch,
        steps: 2 * half,
        eval_every: half,
        clip_norm: Some(1.0),
        ..Default::default()
    };
    let mut model = build()?;
    let memory = model.token_step_memory_bytes(&train, &opts)?;
    let dispatches = model.token_step_kernels(&train, &opts)?.len();
    let history = model.fit_tokens(&train, None, &opts)?;
    let (first, steady) = (history.epochs[0].seconds, history.epochs[1].seconds);
    let per_iter = steady / half as f64;
    let tokens_per_second = (batch * cfg.block) as f64 / per_iter;
    println!(
        "\ngpt (char_gpt's model, {} parameters), batch {batch}, block {}: {:.1} ms/iter steady ({half} iterations; \
         the first {half} {:.1} ms/iter with pipeline creation), {tokens_per_second:.0} tokens/s; one step binds \
         {:.1} MiB in {dispatches} dispatches; loss {:.3} after {} iterations",
        model.parameter_count(),
        cfg.block,
        per_iter * 1e3,
        first / half as f64 * 1e3,
        memory as f64 / MIB,
        history.epochs[1].train_loss,
        2 * half
    );
    writeln!(csv, "\"{} (gpt)\",{batch},steady,{per_iter:.4},{tokens_per_second:.1},,", gpu.adapter_info().name)?;
    // Where one step's device time goes, each dispatch timed alone.
    let timings = build()?.profile_token_step(&train, &opts, 5)?;
    // And each where it runs in the step: its data written by others, the caches theirs.
    let in_order = build()?.profile_token_step_in_order(&train, &opts, 5)?;
    let total: f64 = timings.iter().map(|t| t.1).sum();
    let total_in_order: f64 = in_order.iter().map(|t| t.1).sum();
    println!(
        "one gpt step at batch {batch}: {} dispatches, {:.1} ms of device time in all",
        timings.len(),
        total * 1e3
    );
    println!("  each dispatch in the step, in order: {:.1} ms in all", total_in_order * 1e3);
    let mut by_kernel: Vec<(String, usize, f64, f64)> = Vec::new();
    for ((label, seconds), (_, in_step)) in timings.iter().zip(&in_order) {
        let kernel = label.split_whitespace().next().unwrap_or("").to_string();
        match by_kernel.iter_mut().find(|k| k.0 == kernel) {
            Some(k) => (k.1, k.2, k.3) = (k.1 + 1, k.2 + seconds, k.3 + in_step),
            None => by_kernel.push((kernel, 1, *seconds, *in_step)),
        }
    }
    by_kernel.sort_by(|a, b| b.3.total_cmp(&a.3));
    println!("  by kernel (alone; in the step):");
    for (kernel, count, seconds, in_step) in &by_kernel {
        println!(
            "  {kernel:<52} {count:>4} × {:>9.1} µs = {:>6.1}%;  {:>9.1} µs = {:>6.1}%",
            seconds / *count as f64 * 1e6,
            100.0 * seconds / total,
            in_step / *count as f64 * 1e6,
            100.0 * in_step / total_in_order
        );
    }
    println!("  by dispatch (alone; in the step):");
    for ((label, seconds), (_, in_step)) in timings.iter().zip(&in_order) {
        println!("  {label:<52} {:>9.1} µs {:>9.1} µs", seconds * 1e6, in_step * 1e6);
    }
    let (device, wall) = build()?.time_token_step(&train, &opts, 10)?;
    print_step_split("gpt", total, &device, wall, per_iter);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let epochs: usize = flag("--epochs").map_or(Ok(3), |s| s.parse())?;
    let batches: Vec<usize> = flag("--batch")
        .unwrap_or_else(|| "32,256".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;

    let created = Instant::now();
    let gpu = Gpu::new()?;
    let device_seconds = created.elapsed().as_secs_f64();
    let (train, test) = load_mnist("assets/mnist.npz")?;
    println!("adapter: {}", gpu.describe());
    println!("date: {}", date());
    println!("device creation {device_seconds:.3} s; {} training rows; {epochs} epochs per batch size", train.rows);
    let before = Baselines::measure(&gpu)?;
    println!("baselines before: {before}\n");
    println!("{:>6} {:>6} {:>10} {:>12} {:>10}", "batch", "epoch", "seconds", "samples/s", "loss");

    std::fs::create_dir_all("target/bench")?;
    let mut csv = std::fs::File::create("target/bench/training.csv")?;
    let mut medians = Vec::new();
    writeln!(csv, "adapter,batch,epoch,seconds,samples_per_second,train_loss,model_build_seconds")?;
    for &batch in &batches {
        let built = Instant::now();
        let mut model = mlp(&gpu)?;
        let build_seconds = built.elapsed().as_secs_f64();
        let options = FitOptions {
            epochs,
            batch_size: batch,
            shuffle: true,
            validation: Validation::None,
            progress_every: 0,
            checkpoint: None,
            early_stopping: None,
            skip_nonfinite_batches: false,
            clip_norm: None,
            cancel: None,
            verbose: false,
        };
        gpu.reset_peak_allocated_bytes();
        let before = gpu.allocated_bytes();
        let history = model.fit(&train, &options)?;
        let fit_peak = gpu.peak_allocated_bytes() - before;
        let (step, eval) = (model.step_memory_bytes(&train, batch)?, model.eval_memory_bytes(&test)?);
        println!(
            "{batch:>6}  device memory (engine accounting): fit held {:.1} MiB at most (the data set's {:.1} MiB \
             upload included), one step binds {:.2} MiB, evaluating the {} test rows {:.2} MiB",
            fit_peak as f64 / MIB,
            (train.rows * train.feature_dim) as f64 / MIB,
            step as f64 / MIB,
            test.rows,
            eval as f64 / MIB
        );
        let mut steady = Vec::new();
        for r in &history.epochs {
            println!(
                "{batch:>6} {:>6} {:>10.3} {:>12.0} {:>10.4}",
                r.epoch, r.seconds, r.samples_per_second, r.train_loss
            );
            writeln!(
                csv,
                "\"{}\",{batch},{},{:.4},{:.1},{:.5},{build_seconds:.4}",
                gpu.adapter_info().name,
                r.epoch,
                r.seconds,
                r.samples_per_second,
                r.train_loss
            )?;
            if r.epoch > 1 {
                steady.push(r.seconds);
            }
        }
        if !steady.is_empty() {
            steady.sort_by(f64::total_cmp);
            let median = steady[steady.len() / 2];
            let first = history.epochs[0].seconds;
            println!("{batch:>6}  steady median {median:.3} s/epoch ({:.0} samples/s); first epoch {:.3} s ({:+.3} s vs steady)\n", train.rows as f64 / median, first, first - median);
            medians.push((batch, median));
        }
    }
    let cnn_rows: usize = flag("--cnn-rows").map_or(Ok(6000), |s| s.parse())?;
    if cnn_rows > 0 {
        cnn_row(&gpu, &train, cnn_rows.min(train.rows), &mut csv)?;
    }
    let gpt_iters: usize = flag("--gpt-iters").map_or(Ok(100), |s| s.parse())?;
    if gpt_iters > 0 {
        gpt_row(&gpu, gpt_iters, &mut csv)?;
    }
    if let Some(text) = flag("--memory-budget") {
        let budget = parse_bytes(&text).ok_or(format!("--memory-budget {text:?}: expected bytes, e.g. 12M"))?;
        let small = Gpu::with_options(&GpuOptions { memory_budget: Some(budget), ..Default::default() })?;
        println!("\nstreamed against resident, runs alternated (R S R S), {epochs} epochs each:");
        for &batch in &batches {
            streamed_vs_resident("mlp", &gpu, &small, mlp, &train, batch, epochs, &mut csv)?;
        }
        if cnn_rows > 0 {
            // The same ratio of data to budget on the CNN row's fewer rows.
            let data = cnn_data(&train, cnn_rows.min(train.rows))?;
            let scaled = (budget as f64 * data.rows as f64 / train.rows as f64) as u64;
            let small = Gpu::with_options(&GpuOptions { memory_budget: Some(scaled.max(1)), ..Default::default() })?;
            streamed_vs_resident("cnn", &gpu, &small, cnn, &data, 64, 3, &mut csv)?;
        }
    }
    let after = Baselines::measure(&gpu)?;
    println!("baselines after:  {after}");
    // Where one step's device time goes (timestamp queries around each dispatch alone).
    let mut dispatches_per_step = Vec::new();
    for &batch in &batches {
        let mut model = mlp(&gpu)?;
        let timings = model.profile_step(&train, batch, 30)?;
        let total: f64 = timings.iter().map(|t| t.1).sum();
        println!(
            "\none training step at batch {batch}: {} dispatches, {:.1} µs of device time in all",
            timings.len(),
            total * 1e6
        );
        for (label, seconds) in &timings {
            println!("  {label:<40} {:>9.1} µs", seconds * 1e6);
        }
        let fit = medians.iter().find(|m| m.0 == batch).map_or(f64::NAN, |m| m.1 / train.rows.div_ceil(batch) as f64);
        let (device, wall) = model.time_step(&train, batch, 10)?;
        print_step_split(&format!("mlp (batch {batch})"), total, &device, wall, fit);
        dispatches_per_step.push(timings.len());
    }
    // The part of a steady epoch that is dispatch cost alone, at the mean of the two baselines.
    let per_dispatch = (before.dispatch_seconds + after.dispatch_seconds) / 2.0;
    println!();
    for ((batch, median), n) in medians.iter().zip(&dispatches_per_step) {
        let floor = (train.rows.div_ceil(*batch) * n) as f64 * per_dispatch;
        println!(
            "batch {batch:>4}: {n} dispatches × {} steps × {:.1} µs = {floor:.2} s of the {median:.3} s epoch is the dispatch floor",
            train.rows.div_ceil(*batch),
            per_dispatch * 1e6
        );
    }
    if let Some(rss) = peak_rss() {
        println!("peak RSS of this benchmark: {:.0} MiB", rss as f64 / MIB);
    }
    println!("wrote target/bench/training.csv");
    Ok(())
}

/// The same-run baselines (see the module comment).
struct Baselines {
    /// Seconds per one-invocation dispatch, 1,000 in one compute pass.
    dispatch_seconds: f64,
    /// Single-threaded CPU sgemm of 256×784·784×64, GFLOP/s (best of 5).
    cpu_gflops: f64,
}

impl Baselines {
    fn measure(gpu: &Gpu) -> Result<Baselines, Box<dyn std::error::Error>> {
        const DISPATCHES: usize = 1000;
        let counters = Tensor::zeros_u32(gpu, &[2])?;
        let (batch_totals, totals) = (Tensor::zeros(gpu, &[2])?, Tensor::zeros(gpu, &[4])?);
        let plan = guard_step(gpu, &counters, &batch_totals, &totals, 1)?;
        gpu.run_repeated(&[&plan], 10)?; // pipeline and shader compiled before timing
        gpu.wait()?;
        let started = Instant::now();
        gpu.run_repeated(&[&plan], DISPATCHES)?;
        gpu.wait()?;
        let dispatch_seconds = started.elapsed().as_secs_f64() / DISPATCHES as f64;

        let (m, k, n) = (256, 784, 64);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let started = Instant::now();
            // SAFETY: a, b and c are row-major [m, k], [k, n] and [m, n] with the strides given.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
            best = best.min(started.elapsed().as_secs_f64());
        }
        std::hint::black_box(&c);
        Ok(Baselines { dispatch_seconds, cpu_gflops: 2.0 * (m * k * n) as f64 / best / 1e9 })
    }
}

impl std::fmt::Display for Baselines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} µs per dispatch (1,000 one-invocation dispatches in one pass); CPU sgemm 256×784·784×64 \
             {:.1} GFLOP/s (1 thread)",
            self.dispatch_seconds * 1e6,
            self.cpu_gflops
        )
    }
}

fn date() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
