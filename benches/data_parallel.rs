//! Data-parallel training (issue 25; BENCHMARKS.md): samples/s of the MLP (mnist_gpu's
//! 784→64→64→10) and the CNN (cnn_mnist's, without batch norm, which data-parallel `fit` does not
//! support yet: Conv2D(16)+relu → MaxPool → Conv2D(32)+relu → MaxPool → Flatten → Dense(128) →
//! Dropout → Dense(10)) at 64 rows per rank, on random MNIST-shaped rows (the speed does not
//! depend on the values), the steady epoch (the second) timed:
//! - plain `fit` in one process, and `fit_data_parallel` on one rank (its readback and upload of
//!   the gradient every step included);
//! - two devices in one process (`ThreadRank`, what `fit_on_adapters` runs; on a machine with
//!   one adapter, two devices on it);
//! - with `--mpi` (cargo feature `mpi`), the ranks `mpirun` started, one device each.
//!
//! For each data-parallel row: the wall time per step, and inside it the time in the gradient's
//! all-reduce (the transfer, and the wait for the slower rank), with its share of the step. Then
//! the host round trip of a gradient-sized tensor alone (readback + upload), and the gradient
//! bytes per step of the MLP, the CNN and char_gpt's GPT with the all-reduce time they imply on
//! NVLink, PCIe 4 x16 and 100 GbE (on paper: see BENCHMARKS.md).
//!
//!     cargo bench --bench data_parallel [-- --mlp-rows 8192 --cnn-rows 2048]
//!     cargo bench --features mpi --bench data_parallel --no-run   # prints the binary's path
//!     mpirun -np 2 <that path> --mpi [--mlp-rows 8192 --cnn-rows 2048]   # and -np 1

#[path = "../examples/common/gpt.rs"]
#[allow(dead_code)] // its optimizer: only the model's parameter count is needed here
mod gpt;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use gpt::{gpt, GptConfig};
use wgnn::collective::{Collective, SingleProcess, ThreadRank};
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Dataset, Gpu, GpuOptions, History, Tensor};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const BATCH: usize = 64;

/// A collective that times every all-reduce of more than a handful of values (the gradient's;
/// the running sums at each progress tick are left out).
struct Timed<'a> {
    inner: &'a dyn Collective,
    gradient_calls: RefCell<Vec<Duration>>,
}

impl<'a> Timed<'a> {
    fn new(inner: &'a dyn Collective) -> Self {
        Timed { inner, gradient_calls: RefCell::new(Vec::new()) }
    }
    /// The last `count` gradient all-reduces: their count and total time.
    fn last(&self, count: usize) -> (usize, Duration) {
        let calls = self.gradient_calls.borrow();
        let late = &calls[calls.len().saturating_sub(count)..];
        (late.len(), late.iter().sum())
    }
}

impl Collective for Timed<'_> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> wgnn::Result<()> {
        let start = Instant::now();
        let result = self.inner.all_reduce_sum_f32(values);
        if values.len() > 16 {
            self.gradient_calls.borrow_mut().push(start.elapsed());
        }
        result
    }
    fn broadcast_f32(&self, values: &mut [f32], root: usize) -> wgnn::Result<()> {
        self.inner.broadcast_f32(values, root)
    }
    fn all_reduce_min_max_u64(&self, value: u64) -> wgnn::Result<(u64, u64)> {
        self.inner.all_reduce_min_max_u64(value)
    }
    fn barrier(&self) -> wgnn::Result<()> {
        self.inner.barrier()
    }
}

fn mlp(backend: &Backend) -> wgnn::Result<Sequential> {
    let mut model = Sequential::new(784, 42)
        .dense(64, Activation::Relu)
        .dense(64, Activation::Relu)
        .dense(10, Activation::Identity)
        .build(backend)?;
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3))?;
    Ok(model)
}

fn cnn(backend: &Backend) -> wgnn::Result<Sequential> {
    let mut builder = Sequential::new([28, 28, 1], 42);
    for filters in [16, 32] {
        builder = builder.conv2d(filters, (3, 3), Activation::Relu).max_pool2d((2, 2));
    }
    let mut model =
        builder.flatten().dense(128, Activation::Relu).dropout(0.25).dense(10, Activation::Softmax).build(backend)?;
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(2e-3))?;
    Ok(model)
}

type Build = fn(&Backend) -> wgnn::Result<Sequential>;

/// `rows` random MNIST-shaped rows.
fn mnist_shaped(rows: usize) -> wgnn::Result<Dataset> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let x: Vec<f32> = (0..rows * 784).map(|_| (next() % 256) as f32 / 255.0).collect();
    let y: Vec<u32> = (0..rows).map(|_| (next() % 10) as u32).collect();
    Dataset::new(x, 784, y)
}

fn device() -> wgnn::Result<Gpu> {
    Gpu::with_options(&GpuOptions { autotune: false, ..Default::default() })
}

/// Two epochs (the first pays for pipelines and shaders); the second's seconds.
fn opts() -> FitOptions<'static> {
    FitOptions { epochs: 2, batch_size: BATCH, ..Default::default() }
}

/// One rank's data-parallel fit on `collective`: the steady epoch's seconds, and its gradient
/// all-reduces (count, time).
fn rank_fit(
    gpu: &Gpu,
    build: Build,
    data: &Dataset,
    collective: &dyn Collective,
) -> wgnn::Result<(f64, usize, Duration)> {
    let mut model = build(&Backend::Gpu(gpu.clone()))?;
    let timed = Timed::new(collective);
    let history: History = model.fit_data_parallel(data, &opts(), &timed)?;
    // The second epoch's steps: the last all-reduces.
    let (calls, time) = timed.last(data.rows.div_ceil(BATCH * collective.size()));
    Ok((history.epochs[1].seconds, calls, time))
}

fn row(label: &str, name: &str, ranks: usize, rows: usize, seconds: f64, reduce: Option<(usize, Duration)>) {
    let steps = rows.div_ceil(BATCH * ranks);
    let step_ms = seconds * 1e3 / steps as f64;
    let reduce = match reduce {
        Some((calls, time)) if calls > 0 => {
            let ms = time.as_secs_f64() * 1e3 / calls as f64;
            format!("{ms:7.3} ms ({:4.1}% of a step)", 100.0 * ms / step_ms)
        }
        _ => "-".to_string(),
    };
    println!(
        "{name:4} {label:34} {ranks} × {BATCH:3} {:9.0} samples/s {step_ms:8.3} ms/step  all-reduce {reduce}",
        rows as f64 / seconds
    );
}

fn in_process(name: &str, build: Build, rows: usize) -> Result<()> {
    let data = mnist_shaped(rows)?;
    let gpu = device()?;
    let mut plain = build(&Backend::Gpu(gpu.clone()))?;
    let history = plain.fit(&data, &opts())?;
    row("plain fit, 1 process", name, 1, rows, history.epochs[1].seconds, None);
    let (seconds, calls, time) = rank_fit(&gpu, build, &data, &SingleProcess)?;
    row("fit_data_parallel, 1 rank", name, 1, rows, seconds, Some((calls, time)));
    let gpus = [device()?, device()?];
    let data = &data;
    let results: Vec<wgnn::Result<(f64, usize, Duration)>> = std::thread::scope(|s| {
        let threads: Vec<_> = ThreadRank::group(2)?
            .into_iter()
            .zip(&gpus)
            .map(|(rank, gpu)| s.spawn(move || rank_fit(gpu, build, data, &rank)))
            .collect();
        Ok::<_, wgnn::WgnnError>(threads.into_iter().map(|t| t.join().expect("a rank panicked")).collect())
    })?;
    for (rank, result) in results.into_iter().enumerate() {
        let (seconds, calls, time) = result?;
        row(&format!("2 devices in 1 process, rank {rank}"), name, 2, rows, seconds, Some((calls, time)));
    }
    Ok(())
}

#[cfg(feature = "mpi")]
fn under_mpi(models: &[(&str, Build, usize)]) -> Result<()> {
    let mpi = wgnn::collective::MpiCollective::init()?;
    let gpu = device()?;
    for &(name, build, rows) in models {
        let data = mnist_shaped(rows)?;
        let size = mpi.size();
        let (seconds, calls, time) = rank_fit(&gpu, build, &data, &mpi)?;
        // Every rank's figures, rank 0's first, one line each.
        let mine = [seconds as f32, calls as f32, time.as_secs_f32()];
        for rank in 0..size {
            let mut theirs = mine;
            mpi.broadcast_f32(&mut theirs, rank)?;
            if mpi.rank() == 0 {
                let reduce = (theirs[1] as usize, Duration::from_secs_f32(theirs[2]));
                row(&format!("mpirun -np {size}, rank {rank}"), name, size, rows, theirs[0] as f64, Some(reduce));
            }
        }
        let params = build(&Backend::Gpu(gpu.clone()))?.parameter_count();
        let alone = all_reduce_alone_ms(&mpi, params)?;
        if mpi.rank() == 0 {
            println!("{name:4} all-reduce of its {params} gradient values alone, {size} ranks: {alone:.3} ms (rank 0)");
        }
    }
    Ok(())
}

#[cfg(not(feature = "mpi"))]
fn under_mpi(_: &[(&str, Build, usize)]) -> Result<()> {
    Err("--mpi needs the cargo feature mpi: cargo bench --features mpi --bench data_parallel".into())
}

/// The gradient of `params` floats read back and uploaded again (what every data-parallel step
/// does around its all-reduce), alone: the median of 30.
fn round_trip_ms(gpu: &Gpu, params: usize) -> Result<f64> {
    let tensor = Tensor::zeros(gpu, &[params])?;
    let mut times: Vec<f64> = (0..31)
        .map(|_| -> Result<f64> {
            let start = Instant::now();
            let values = tensor.to_vec()?;
            tensor.write(&values)?;
            gpu.wait()?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// One all-reduce of `len` floats alone, every rank ready (a barrier first): this rank's median
/// over 31, in ms.
fn all_reduce_alone_ms(collective: &dyn Collective, len: usize) -> wgnn::Result<f64> {
    let mut values = vec![1.0f32; len];
    let mut times = Vec::new();
    for _ in 0..31 {
        collective.barrier()?;
        let start = Instant::now();
        collective.all_reduce_sum_f32(&mut values)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// [`all_reduce_alone_ms`] on two threads of this process: rank 0's figure.
fn threads_all_reduce_ms(len: usize) -> Result<f64> {
    let results: Vec<wgnn::Result<f64>> = std::thread::scope(|s| {
        let threads: Vec<_> =
            ThreadRank::group(2)?.into_iter().map(|rank| s.spawn(move || all_reduce_alone_ms(&rank, len))).collect();
        Ok::<_, wgnn::WgnnError>(threads.into_iter().map(|t| t.join().expect("a rank panicked")).collect())
    })?;
    Ok(results.into_iter().next().ok_or("no rank 0")??)
}

/// Interconnects, in GB/s one way: NVLink 4 (H100 SXM, 900 GB/s both ways), PCIe 4.0 x16
/// (theoretical), 100 Gb Ethernet.
const LINKS: [(&str, f64); 3] = [("NVLink 4", 450.0), ("PCIe 4 x16", 32.0), ("100 GbE", 12.5)];

/// Parameters, the gradient's bytes, the round trip here, and the all-reduce on paper.
fn on_paper(gpu: &Gpu) -> Result<()> {
    let backend = Backend::Gpu(gpu.clone());
    let char_gpt = GptConfig { vocab: 65, block: 64, n_layer: 4, n_head: 4, n_embd: 128 };
    let models = [
        ("MLP", mlp(&backend)?.parameter_count()),
        ("CNN", cnn(&backend)?.parameter_count()),
        ("GPT", gpt(char_gpt, 1337).build(&backend)?.parameter_count()),
    ];
    println!(
        "\nmodel  parameters  gradient  here: round trip, all-reduce of 2 threads  on paper: ring all-reduce per step, \
         2 ranks | 8 ranks (µs)"
    );
    for (name, params) in models {
        let bytes = params as f64 * 4.0;
        let here = round_trip_ms(gpu, params)?;
        let threads = threads_all_reduce_ms(params)?;
        // A ring all-reduce moves 2(N−1)/N of the buffer over each rank's link.
        let links: Vec<String> = LINKS
            .iter()
            .map(|(link, gb_s)| {
                let us = |n: f64| 2.0 * (n - 1.0) / n * bytes / (gb_s * 1e9) * 1e6;
                format!("{link} {:.1} | {:.1}", us(2.0), us(8.0))
            })
            .collect();
        println!("{name:5} {params:11} {:7.2} MB {here:9.3} ms {threads:9.3} ms     {}", bytes / 1e6, links.join("; "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str, default: usize| -> Result<usize> {
        match args.iter().position(|a| a == flag) {
            Some(i) => Ok(args.get(i + 1).ok_or(format!("{flag} needs a value"))?.parse()?),
            None => Ok(default),
        }
    };
    let models: [(&str, Build, usize); 2] =
        [("MLP", mlp, value("--mlp-rows", 8192)?), ("CNN", cnn, value("--cnn-rows", 2048)?)];
    if args.iter().any(|a| a == "--mpi") {
        return under_mpi(&models);
    }
    let gpu = device()?;
    println!("data-parallel training on {}, {BATCH} rows per rank per step, the second epoch timed\n", gpu.describe());
    for (name, build, rows) in models {
        in_process(name, build, rows)?;
    }
    on_paper(&gpu)
}
