//! A convolutional network on MNIST, trained on the GPU: Conv2D(16, 3×3) → BatchNorm → relu →
//! MaxPool(2) → Conv2D(32, 3×3) → BatchNorm → relu → MaxPool(2) → Flatten → Dense(128, relu) →
//! Dropout(0.25) → Dense(10, softmax); Adam 2e-3 decayed to 0 along a cosine over the run, batch
//! 64, 5 epochs. 99.1–99.2% test accuracy (see README for the run and its time).
//!
//!     cargo run --release --example cnn_mnist [-- --epochs 3 --filters 32,64 --out out/cnn]
//!
//! Trains on all 60,000 training rows and reports the test set after every epoch as validation
//! data (nothing is chosen by it); `--validation-split 0.1` holds out training rows instead.
//! Writes `history.csv` and `curves.png` to the output folder (default `out/cnn_mnist`) and draws
//! one test digit with its prediction. Variations: `--filters 32,64`, `--no-batch-norm`,
//! `--hidden 0` (no hidden dense layer), `--dropout`, `--schedule constant`, `--lr`.
//!
//! Interrupted runs: `--checkpoint-dir ckpt` writes `ckpt/last.safetensors` after every epoch
//! (and `best.safetensors` with `--validation-split`); `--resume ckpt/last.safetensors` continues
//! from one. `--save model.safetensors` writes the trained model; `--verbose` prints the
//! autotuner's picks. The data, device, validation and output flags are mnist_gpu's
//! (`examples/common/mnist_run.rs`), `--data-parallel` included (`mpirun -np 2
//! target/release/examples/cnn_mnist --data-parallel`, built with `--features mpi`). Output places are checked before training; errors print as
//! `error: …` (exit 1), usage errors exit 2.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use common::mnist_run::{self, MnistFlags};
use common::outputs::Outputs;
use wgnn::config::optimizer::LrSchedule;
use wgnn::layers::Conv2D;
use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential};
use wgnn::{Activation, Dataset, History, Layer};

#[derive(Parser, Debug)]
#[command(name = "cnn_mnist", about = "Train a convolutional network on MNIST on the GPU (wgnn)")]
struct Args {
    /// Passes over the training rows (with --resume: the total, counting those already done).
    #[arg(long, default_value_t = 5, value_parser = common::at_least_one)]
    epochs: usize,
    /// Rows per training step.
    #[arg(long, default_value_t = 64, value_parser = common::at_least_one)]
    batch_size: usize,
    /// Adam's learning rate (at the start, with the cosine schedule).
    #[arg(long, default_value_t = 2e-3, value_parser = common::positive)]
    lr: f32,
    /// The two convolutions' filter counts.
    #[arg(long, default_value = "16,32", value_parser = parse_filters)]
    filters: (usize, usize),
    /// Dropout rate before the output layer while training.
    #[arg(long, default_value_t = 0.25, value_parser = common::fraction)]
    dropout: f32,
    /// Convolutions with a bias and relu, without batch norm (default: Conv2D without bias →
    /// BatchNorm → relu).
    #[arg(long)]
    no_batch_norm: bool,
    /// Units of a hidden dense layer (relu) before the output layer (0 = none).
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// The learning rate's schedule: cosine (from --lr down to 0 over the run) or constant.
    #[arg(long, default_value = "cosine", value_parser = ["cosine", "constant"])]
    schedule: String,
    /// Folder for history.csv and curves.png (created if missing).
    #[arg(long, default_value = "out/cnn_mnist")]
    out: PathBuf,
    /// Continue from this checkpoint (the model, optimizer and seed come from it; --epochs is
    /// the total, counting the epochs already done). The cosine schedule is the checkpoint's too,
    /// sized for the first run's --epochs: past them the rate stays 0 (train with --schedule
    /// constant a run you mean to extend).
    #[arg(long)]
    resume: Option<PathBuf>,
    #[command(flatten)]
    run: MnistFlags,
}

fn parse_filters(text: &str) -> std::result::Result<(usize, usize), String> {
    let parts: Vec<&str> = text.split(',').collect();
    match parts.as_slice() {
        [a, b] => Ok((common::at_least_one(a.trim())?, common::at_least_one(b.trim())?)),
        _ => Err(format!("expected two counts like 16,32, got {text:?}")),
    }
}

fn main() -> ExitCode {
    let args = common::parse_args::<Args>();
    common::exit_on_error(|| run(&args))
}

fn run(args: &Args) -> Result<()> {
    // First: on ranks other than 0, this silences what follows.
    let ranks = args.run.ranks("cnn_mnist")?;
    let (train, test) = args.run.load::<Args>()?;
    // Any 784 values would fit [28, 28, 1]; images of another shape are not MNIST's.
    for data in [&train, &test] {
        if !matches!(data.sample_shape.as_slice(), [28, 28] | [28, 28, 1]) {
            anyhow::bail!(
                "--data {}: {} holds images of {:?}; this network takes 28×28 images",
                args.run.data.display(),
                data.source,
                data.sample_shape
            );
        }
    }
    let (train, test) = (train.with_sample_shape(&[28, 28, 1])?, test.with_sample_shape(&[28, 28, 1])?);
    let outputs = Outputs::prepare(&args.out, args.run.save.as_deref(), args.run.checkpoint_dir.as_deref())?;
    let replicas = args.run.adapters()?;
    let gpu = match &replicas {
        Some(gpus) => gpus[0].clone(),
        None => args.run.gpu()?,
    };
    let backend = Backend::Gpu(gpu.clone());
    say!("data: {} training rows, {} test rows, images {:?}", train.rows, test.rows, train.sample_shape);

    // Data-parallel, a step takes every rank's batch.
    let world = ranks.as_ref().map_or(replicas.as_ref().map_or(1, Vec::len), |c| c.size());
    let (mut model, resumed_history) = match &args.resume {
        Some(path) => {
            let model = Sequential::resume(path, &backend)?;
            let cnn =
                model.input_shape() == [28, 28, 1] && model.layers().iter().any(|l| matches!(l, Layer::Conv2D(_)));
            mnist_run::refuse_other_network(path, &model, cnn, "a convolutional network on 28×28 images", "mnist_gpu")?;
            args.run.check_resumed_data::<Args>(&model, args.batch_size, train.rows);
            say!("resumed from {} after epoch {}", path.display(), model.resumed_epoch().unwrap_or(0));
            let history = model.resumed_history().cloned().unwrap_or_default();
            (model, history)
        }
        None => (new_model(args, &backend, &train, world)?, History::default()),
    };
    say!("model ({} parameters):\n{}", model.parameter_count(), model.summary());

    let options = FitOptions {
        epochs: args.epochs,
        batch_size: args.batch_size,
        shuffle: true,
        validation: args.run.validation(&test),
        progress_every: 0,
        checkpoint: args.run.checkpointing(),
        early_stopping: None,
        skip_nonfinite_batches: false,
        clip_norm: None,
        cancel: None,
        verbose: false,
    };
    let resumed_epochs = resumed_history.epochs.len();
    let started = Instant::now();
    if let Some(c) = &ranks {
        let global = args.batch_size * c.size();
        say!("data-parallel: {} ranks, each step {global} rows ({} on each rank)", c.size(), args.batch_size);
    }
    // With --adapters, each other adapter's replica starts from the checkpoint or the same new model.
    let replica = |backend: &Backend| -> Result<Sequential> {
        match &args.resume {
            Some(path) => Ok(Sequential::resume(path, backend)?),
            None => new_model(args, backend, &train, world),
        }
    };
    let history = match &replicas {
        Some(gpus) => common::adapters::fit_with_replicas(gpus, &replica, &train, &options, |rank0| {
            common::outputs::fit_writing_outputs(&mut model, &train, &options, resumed_history, &outputs, Some(rank0))
        })?,
        None => common::outputs::fit_writing_outputs(
            &mut model,
            &train,
            &options,
            resumed_history,
            &outputs,
            ranks.as_deref(),
        )?,
    };
    // The other ranks are done: rank 0 evaluates, reports and writes.
    if !common::data_parallel::is_rank0() {
        return Ok(());
    }
    // A finished checkpoint resumed trains nothing: fit_writing_outputs said so.
    if model.resumed_epoch().is_none() {
        say!("{}", mnist_run::trained_line(&history, resumed_epochs, started.elapsed().as_secs_f64()));
    }
    args.run.print_tuned_picks(&gpu);
    let (test_loss, test_accuracy) = model.evaluate(&test)?;
    say!("test loss {test_loss:.4}  test accuracy {:.2}%", test_accuracy * 100.0);
    args.run.print_device_memory(&gpu);
    outputs.write(&history, &model)?;

    mnist_run::show_prediction(&model, &test, 0, false)?;
    Ok(())
}

/// The network the flags describe, compiled, on `backend`; its cosine schedule counts the steps
/// of `world` ranks, each taking --batch-size rows of `train`.
fn new_model(args: &Args, backend: &Backend, train: &Dataset, world: usize) -> Result<Sequential> {
    let mut builder = Sequential::new([28, 28, 1], args.run.seed);
    for filters in [args.filters.0, args.filters.1] {
        builder = match !args.no_batch_norm {
            true => builder
                .add(Layer::Conv2D(Conv2D { use_bias: false, ..Conv2D::new(filters, (3, 3), Activation::Identity) }))
                .batch_norm()
                .activation(Activation::Relu),
            false => builder.conv2d(filters, (3, 3), Activation::Relu),
        };
        builder = builder.max_pool2d((2, 2));
    }
    builder = builder.add(Layer::Flatten);
    if args.hidden > 0 {
        builder = builder.dense(args.hidden, Activation::Relu);
    }
    let mut model = builder.dropout(args.dropout).dense(10, Activation::Softmax).build(backend)?;
    let rows = train.rows - (train.rows as f32 * args.run.validation_split) as usize;
    let total_steps = (args.epochs * rows.div_ceil(args.batch_size * world)) as u32;
    let optimizer = match args.schedule.as_str() {
        "cosine" => Optimizer::adam(args.lr).with_schedule(LrSchedule::Cosine { total_steps, min_lr: 0.0 }),
        _ => Optimizer::adam(args.lr),
    };
    model.compile(Loss::SparseCategoricalCrossentropy, optimizer)?;
    Ok(model)
}
