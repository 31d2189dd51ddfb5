//! What the MNIST examples (mnist_gpu, cnn_mnist) share: their data, device, validation and output
//! flags, and the steps around `fit` those drive.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use wgnn::data::load_mnist;
use wgnn::display::{format_top_k, render_image};
use wgnn::model::{Checkpointing, Sequential, Validation};
use wgnn::{Dataset, Gpu, History};

/// Flattened into each example's own flags (`#[command(flatten)]`).
#[derive(clap::Args, Debug)]
pub struct MnistFlags {
    /// The MNIST archive (Keras layout: x_train, y_train, x_test, y_test); the default is the
    /// crate's copy, wherever the example is run from.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/mnist.npz"))]
    pub data: PathBuf,
    /// Train on the first N training rows only (0 = all, at most the 60,000 there are): quick runs.
    #[arg(long, default_value_t = 0)]
    pub train_rows: usize,
    /// Seeds the initial weights, the shuffles and the validation split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of the training rows held out for validation; 0 trains on all of them and
    /// validates on the test set.
    #[arg(long, default_value_t = 0.0, value_parser = super::fraction, allow_negative_numbers = true)]
    pub validation_split: f32,
    /// Use the adapter whose name contains this (also: $WGNN_ADAPTER).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Refuse a software adapter (llvmpipe and the like, which train on the CPU) instead of
    /// training on it (also: $WGNN_REQUIRE_GPU=1).
    #[arg(long)]
    pub require_gpu: bool,
    /// Write a checkpoint into this folder (created if missing) after every epoch
    /// (last.safetensors) and, with --validation-split, on the best validation loss
    /// (best.safetensors; without it the validation data is the test set, on which nothing is
    /// chosen, so there is no best.safetensors).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Save the trained model (weights and architecture) to this safetensors file (its folder is
    /// created if missing); also after a diverging loss stops the run, with the weights put back.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// After training, print the matmul kernels the autotuner picked: one line per product shape.
    #[arg(long)]
    pub verbose: bool,
    /// Train on every process `mpirun -np N` (or `srun`) started, as one model on MPI (needs a
    /// binary built with `--features mpi`): each step takes N × --batch-size rows, --batch-size
    /// on each process; rank 0 alone prints and writes the outputs and checkpoints.
    #[arg(long)]
    pub data_parallel: bool,
    /// Train on several adapters of this machine at once, a replica and a thread each: "all"
    /// (every GPU), or a list of indices or parts of names ("0,1"; "0,0": two devices on one
    /// adapter). Each step takes (adapters) × --batch-size rows; the first adapter's replica
    /// prints and writes the outputs. `Gpu::adapter_names` orders the indices.
    #[arg(long, conflicts_with_all = ["data_parallel", "adapter"])]
    pub adapters: Option<String>,
}

impl MnistFlags {
    /// The training rows (the first `--train-rows` of them; more than there are is a usage error of
    /// `Flags`) and the test rows, with a warning where the pixels are not 0–255 bytes.
    pub fn load<Flags: CommandFactory>(&self) -> anyhow::Result<(Dataset, Dataset)> {
        let (train, test) = load_mnist(&self.data).map_err(|e| super::hint_data_flag(e, &self.data))?;
        if let Some(warning) = train.pixel_range_warning() {
            say_err!("warning: {warning}");
        }
        if self.train_rows > train.rows {
            super::usage_error::<Flags>(format!(
                "--train-rows {}: {} has {} training rows",
                self.train_rows,
                self.data.display(),
                train.rows
            ));
        }
        let train = match self.train_rows {
            0 => train,
            n => train.subset(&(0..n).collect::<Vec<_>>())?,
        };
        Ok((train, test))
    }

    /// On `--resume`: the data flags must be those the checkpoint was trained with (a usage error
    /// naming the flag and both values otherwise), so the run continues as the one never stopped —
    /// as the model flags are taken from the checkpoint. `train_rows`: the rows `fit` is given.
    pub fn check_resumed_data<Flags: CommandFactory>(&self, model: &Sequential, batch_size: usize, train_rows: usize) {
        let Some(record) = model.resumed_fit() else { return };
        let split = record.validation_fraction.unwrap_or(0.0);
        let differs = [
            ("--batch-size", batch_size.to_string(), record.batch_size.to_string(), batch_size != record.batch_size),
            ("--train-rows", train_rows.to_string(), record.rows.to_string(), train_rows != record.rows),
            (
                "--validation-split",
                self.validation_split.to_string(),
                split.to_string(),
                self.validation_split != split,
            ),
        ];
        if let Some((flag, given, theirs, _)) = differs.into_iter().find(|d| d.3) {
            super::usage_error::<Flags>(format!(
                "{flag} {given}: the checkpoint was trained with {flag} {theirs}; resume with the data flags it \
                 was trained with (--train-rows, --validation-split, --batch-size), so the run continues as \
                 the one that was never stopped"
            ));
        }
    }

    /// The ranks `--data-parallel` trains on (MPI, initialized here), or `None` without it.
    pub fn ranks(&self, example: &str) -> anyhow::Result<Option<Box<dyn wgnn::collective::Collective>>> {
        super::data_parallel::ranks(self.data_parallel, example)
    }

    /// The devices `--adapters` names, or `None` without it.
    pub fn adapters(&self) -> anyhow::Result<Option<Vec<Gpu>>> {
        super::adapters::open(self.adapters.as_deref(), self.require_gpu)
    }

    /// The device `--adapter` and `--require-gpu` ask for.
    pub fn gpu(&self) -> anyhow::Result<Gpu> {
        super::gpu(self.adapter.as_deref(), self.require_gpu)
    }

    /// Held-out training rows with `--validation-split`, else the test set (on which nothing is
    /// chosen: no best-epoch checkpoint, no early stopping).
    pub fn validation<'a>(&self, test: &'a Dataset) -> Validation<'a> {
        match self.holds_out() {
            true => Validation::Fraction(self.validation_split),
            false => Validation::Data(test),
        }
    }

    /// Whether validation rows are held out of the training rows (`--validation-split`).
    pub fn holds_out(&self) -> bool {
        self.validation_split > 0.0
    }

    /// `--checkpoint-dir`: every epoch, and on the best validation loss where rows are held out.
    pub fn checkpointing(&self) -> Option<Checkpointing<'_>> {
        let on_best = self.holds_out();
        self.checkpoint_dir.as_deref().map(|dir| Checkpointing { dir, every_epochs: 1, on_best })
    }

    /// The most device memory the engine's tensors held in this run (its own accounting, which
    /// on a software adapter is host memory as well), beside the budget in effect.
    pub fn print_device_memory(&self, gpu: &Gpu) {
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        say!(
            "device memory: {:.1} MiB at most (the engine's tensors); budget {:.0} MiB ($WGNN_MEMORY_BUDGET sets it)",
            mib(gpu.peak_allocated_bytes()),
            mib(gpu.memory_budget())
        );
    }

    /// `--verbose`: the autotuner's picks, and where they are kept.
    pub fn print_tuned_picks(&self, gpu: &Gpu) {
        if !self.verbose {
            return;
        }
        if !gpu.autotune() {
            say!("autotune: off (the device profile's static kernel choices)");
            return;
        }
        let picks = gpu.tuned_picks();
        let cache = gpu.tune_cache_path().map_or_else(|| "none".into(), |p| p.display().to_string());
        say!("autotune: {} product shapes (cache: {cache})", picks.len());
        for pick in picks {
            say!("  {pick}");
        }
        if let Some(e) = gpu.tune_cache_error() {
            say!("  the cache was not written: {e}");
        }
    }
}

/// On `--resume`: a checkpoint of the other example's network is an error naming both (`fits`:
/// whether `model` is this example's kind of network, `ours` what that is, `other` the example
/// that trains the other kind).
pub fn refuse_other_network(
    path: &Path,
    model: &Sequential,
    fits: bool,
    ours: &str,
    other: &str,
) -> anyhow::Result<()> {
    if fits {
        return Ok(());
    }
    let layers: Vec<String> = model.layers().iter().map(|l| l.describe()).collect();
    anyhow::bail!(
        "--resume {}: a checkpoint of a {:?} → {} network; this example trains {ours}: resume it with {other}",
        path.display(),
        model.input_shape(),
        layers.join(" → ")
    )
}

/// Draws test image `row` with the model's prediction and its top three classes (`regression`:
/// the outputs are regression values on one-hot rows, not probabilities).
pub fn show_prediction(model: &Sequential, test: &Dataset, row: usize, regression: bool) -> anyhow::Result<()> {
    let pixels = test.row_f32(row)?;
    let outputs = model.predict(&pixels, 1)?;
    let predicted = outputs.argmax()[0];
    say!("\ntest image {row} (label {}):", test.labels[row]);
    say!("{}", render_image(&pixels, 28, 28));
    if regression {
        let top: Vec<String> = outputs.top_k(3)[0].iter().map(|(i, v)| format!("{i}: {v:.3}")).collect();
        say!("predicted {predicted}   top outputs: {}", top.join("  "));
    } else {
        say!("predicted {predicted}   top: {}", format_top_k(&outputs, 3));
    }
    Ok(())
}

/// The line after training: the epochs this run trained (those after `resumed_epochs`), the wall
/// time `seconds` of the whole `fit`, and what it is made of: the training steps, validation, and
/// the rest (uploading the data, building and tuning the kernels, writing checkpoints).
pub fn trained_line(history: &History, resumed_epochs: usize, seconds: f64) -> String {
    let ran = &history.epochs[resumed_epochs.min(history.epochs.len())..];
    let train: f64 = ran.iter().map(|r| r.seconds).sum();
    let validation: f64 = ran.iter().map(|r| r.val_seconds).sum();
    let rest = (seconds - train - validation).max(0.0);
    format!(
        "trained {} in {seconds:.1} s: {train:.1} s of training steps, {validation:.1} s of validation, \
         {rest:.1} s for the rest (uploading the data, building and tuning the kernels, checkpoints)",
        super::count(ran.len(), "epoch")
    )
}
