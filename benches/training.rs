//! Training benchmark: the mnist_gpu model (784→64→64→10, Adam 1e-3) on the full MNIST training set,
//! epoch time and samples/s at batch 32 and 256, the first epoch (pipeline creation and shader
//! compilation included) reported apart from the steady ones.
//!
//!     cargo bench --bench training [-- --epochs 3 --batch 32,256]
//!
//! Writes target/bench/training.csv as well as the table.

use std::io::Write;
use std::time::Instant;

use wgnn::data::load_mnist;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential, Validation};
use wgnn::{Activation, Gpu};

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
    let (train, _test) = load_mnist("assets/mnist.npz")?;
    println!("adapter: {}", gpu.describe());
    println!("date: {}", date());
    println!("device creation {device_seconds:.3} s; {} training rows; {epochs} epochs per batch size\n", train.rows);
    println!("{:>6} {:>6} {:>10} {:>12} {:>10}", "batch", "epoch", "seconds", "samples/s", "loss");

    std::fs::create_dir_all("target/bench")?;
    let mut csv = std::fs::File::create("target/bench/training.csv")?;
    writeln!(csv, "adapter,batch,epoch,seconds,samples_per_second,train_loss,model_build_seconds")?;
    for &batch in &batches {
        let built = Instant::now();
        let mut model = Sequential::new(784, 42)
            .dense(64, Activation::Relu)
            .dense(64, Activation::Relu)
            .dense(10, Activation::Identity)
            .build(&Backend::Gpu(gpu.clone()))?;
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3))?;
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
        };
        let history = model.fit(&train, &options)?;
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
        }
    }
    // Where one step's device time goes (timestamp queries around each dispatch alone).
    for &batch in &batches {
        let mut model = Sequential::new(784, 42)
            .dense(64, Activation::Relu)
            .dense(64, Activation::Relu)
            .dense(10, Activation::Identity)
            .build(&Backend::Gpu(gpu.clone()))?;
        model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3))?;
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
    }
    println!("wrote target/bench/training.csv");
    Ok(())
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
