//! A character-level GPT on Tiny Shakespeare, trained on the GPU: nanoGPT's `train_shakespeare_char`
//! in its small CPU configuration — 4 layers, 4 heads, width 128, block 64, batch 12, 2,000
//! iterations, AdamW lr 1e-3 (betas 0.9/0.99, weight decay 0.1 on matrices) warmed up over 100
//! iterations then down a cosine to 1e-4, gradients clipped at global norm 1.0, dropout 0 (`--dropout p` as nanoGPT places it) — the
//! model of `bench/torch_gpt.py` (pre-norm blocks, exact GELU, no biases, a final layer norm,
//! the head tied to the embedding; `examples/common/gpt.rs`).
//!
//!     cargo run --release --example char_gpt [-- --iters 500 --n-layer 6 --out out/gpt]
//!
//! The vocabulary is the text's sorted characters (65); the first 90% trains, the last 10%
//! validates. Each iteration draws `--batch` random windows of `--block` + 1 characters; every
//! `--eval-every` iterations it prints the mean training loss since the last evaluation and the
//! validation loss over a fixed set of `--eval-batches` batches (the same windows every time).
//! Writes `history.csv` (a row per evaluation; its `epoch` column counts them) and `curves.png`
//! to `--out`, then samples `--sample-chars` characters after `--prompt`.
//!
//! Interrupted runs: `--checkpoint-dir ckpt` writes `ckpt/last.safetensors` at every evaluation;
//! `--resume ckpt/last.safetensors` continues from one (the model, optimizer, schedule and seed
//! are the checkpoint's; give the same --batch and --eval-every; --iters counts every iteration,
//! and past the first run's the rate stays at its --min-lr). `--save` writes the trained model. Errors print as `error: …` (exit 1), usage errors exit 2, Ctrl-C writes the
//! outputs and exits 130.
//!
//! Data-parallel, each iteration on ranks × `--batch` windows (`--batch` on each; as one process
//! at that batch): `mpirun -np 2 target/release/examples/char_gpt --data-parallel` on MPI (built
//! with `--features mpi`; rank 0 alone prints and writes), or `--adapters all|LIST` on several
//! adapters of one process.

#[macro_use]
mod common;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use common::gpt::{gpt_with_dropout, nanogpt_adamw, GptConfig};
use common::outputs::{write_after_fit, NoProgress, Outputs};
use wgnn::collective::Collective;
use wgnn::model::{Backend, Checkpointing, Loss, Observer, Progress, Sequential, TokenFitOptions};
use wgnn::{EpochRecord, Gpu, History, Layer, TokenDataset, WgnnError};

#[derive(Parser, Debug)]
#[command(name = "char_gpt", about = "Train a character-level GPT on Tiny Shakespeare on the GPU (wgnn)")]
struct Args {
    /// The text to train on (UTF-8 bytes; each distinct byte a token); the default is the crate's
    /// copy of Tiny Shakespeare, wherever the example is run from.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/tinyshakespeare/input.txt"))]
    data: PathBuf,
    /// Transformer blocks.
    #[arg(long, default_value_t = 4, value_parser = common::at_least_one)]
    n_layer: usize,
    /// Attention heads per block (they must divide --n-embd).
    #[arg(long, default_value_t = 4, value_parser = common::at_least_one)]
    n_head: usize,
    /// The width of the residual stream (the embedding's).
    #[arg(long, default_value_t = 128, value_parser = common::at_least_one)]
    n_embd: usize,
    /// Characters of context (each window's length).
    #[arg(long, default_value_t = 64, value_parser = common::at_least_one)]
    block: usize,
    /// Windows per iteration.
    #[arg(long, default_value_t = 12, value_parser = common::at_least_one)]
    batch: usize,
    /// Training iterations in all (with --resume: counting those already done); a multiple of
    /// --eval-every.
    #[arg(long, default_value_t = 2000, value_parser = common::at_least_one)]
    iters: usize,
    /// AdamW's peak learning rate (reached after the warmup).
    #[arg(long, default_value_t = 1e-3, value_parser = common::positive)]
    lr: f32,
    /// The learning rate at the last iteration, the cosine's floor.
    #[arg(long, default_value_t = 1e-4, value_parser = non_negative)]
    min_lr: f32,
    /// Iterations of linear warmup before the cosine (fewer than --iters).
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// AdamW's decoupled weight decay, on the matrices and tables only.
    #[arg(long, default_value_t = 0.1, value_parser = non_negative)]
    weight_decay: f32,
    /// Clip the gradients to this global norm (0: no clipping).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    clip: f32,
    /// Dropout rate while training, where nanoGPT has it: after the embeddings, on the attention's
    /// probabilities, after its output projection and after the MLP (nanoGPT's
    /// train_shakespeare_char: 0.2). Not in the validation or the sample.
    #[arg(long, default_value_t = 0.0, value_parser = common::fraction)]
    dropout: f32,
    /// Iterations between evaluations (train and validation loss printed, a history row, a
    /// checkpoint).
    #[arg(long, default_value_t = 250, value_parser = common::at_least_one)]
    eval_every: usize,
    /// Validation batches per evaluation, the same fixed windows every time.
    #[arg(long, default_value_t = 200, value_parser = common::at_least_one)]
    eval_batches: usize,
    /// Seeds the initial weights and the training windows.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Folder for history.csv and curves.png (created if missing).
    #[arg(long, default_value = "out/char_gpt")]
    out: PathBuf,
    /// Save the trained model (weights and architecture) to this safetensors file.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Write a checkpoint into this folder (created if missing) at every evaluation
    /// (last.safetensors).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Continue from this checkpoint (the model, optimizer, schedule and seed come from it;
    /// --iters is the total, and past the first run's --iters the rate stays at its --min-lr).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Sampling temperature (below 1: more likely characters).
    #[arg(long, default_value_t = 0.8, value_parser = common::positive)]
    temperature: f32,
    /// Sample among the k likeliest characters only (0: all).
    #[arg(long, default_value_t = 200)]
    top_k: usize,
    /// Characters to sample after training (0: none).
    #[arg(long, default_value_t = 500)]
    sample_chars: usize,
    /// The text the sample continues.
    #[arg(long, default_value = "\n")]
    prompt: String,
    /// Seeds the sampling.
    #[arg(long, default_value_t = 1)]
    sample_seed: u64,
    /// Use the adapter whose name contains this (also: $WGNN_ADAPTER).
    #[arg(long)]
    adapter: Option<String>,
    /// Refuse a software adapter (llvmpipe and the like, which train on the CPU) instead of
    /// training on it (also: $WGNN_REQUIRE_GPU=1).
    #[arg(long)]
    require_gpu: bool,
    /// Train on every process `mpirun -np N` (or `srun`) started, as one model on MPI (needs a
    /// binary built with `--features mpi`): each iteration draws N × --batch windows, --batch on
    /// each process; rank 0 alone prints and writes the outputs and checkpoints.
    #[arg(long)]
    data_parallel: bool,
    /// Train on several adapters of this machine at once, a replica and a thread each: "all"
    /// (every GPU), or a list of indices or parts of names ("0,1"; "0,0": two devices on one
    /// adapter). Each iteration draws (adapters) × --batch windows; the first adapter's replica
    /// prints and writes the outputs.
    #[arg(long, conflicts_with_all = ["data_parallel", "adapter"])]
    adapters: Option<String>,
}

/// A finite number ≥ 0 (a floor, a decay, a norm where 0 turns it off).
fn non_negative(text: &str) -> std::result::Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a finite number ≥ 0, got {text:?}")),
    }
}

fn main() -> ExitCode {
    let args = common::parse_args::<Args>();
    common::exit_on_error(|| run(&args))
}

/// The flags that only turn out wrong together: usage errors naming them.
fn check_flags(args: &Args) {
    if !args.iters.is_multiple_of(args.eval_every) {
        common::usage_error::<Args>(format!(
            "--iters {} must be a multiple of --eval-every {}",
            args.iters, args.eval_every
        ));
    }
    if args.warmup >= args.iters {
        common::usage_error::<Args>(format!("--warmup {} must be fewer than --iters {}", args.warmup, args.iters));
    }
    if args.min_lr > args.lr {
        common::usage_error::<Args>(format!("--min-lr {} must be at most --lr {}", args.min_lr, args.lr));
    }
    if !args.n_embd.is_multiple_of(args.n_head) {
        common::usage_error::<Args>(format!("--n-head {} must divide --n-embd {}", args.n_head, args.n_embd));
    }
}

fn run(args: &Args) -> Result<()> {
    check_flags(args);
    // First: on ranks other than 0, this silences what follows.
    let ranks = common::data_parallel::ranks(args.data_parallel, "char_gpt")?;
    let text = TokenDataset::from_text_file(&args.data).map_err(|e| common::hint_data_flag(e, &args.data))?;
    let (train, val) = text.split(0.9)?;
    let outputs = Outputs::prepare(&args.out, args.save.as_deref(), args.checkpoint_dir.as_deref())?;
    let replicas = common::adapters::open(args.adapters.as_deref(), args.require_gpu)?;
    let gpu = match &replicas {
        Some(gpus) => gpus[0].clone(),
        None => common::gpu(args.adapter.as_deref(), args.require_gpu)?,
    };
    let backend = Backend::Gpu(gpu.clone());
    say!(
        "data: {} characters ({} distinct) in {}: {} training, {} validation",
        text.len(),
        text.vocab_size(),
        args.data.display(),
        train.len(),
        val.len()
    );

    let (mut model, resumed) = match &args.resume {
        Some(path) => {
            let model = Sequential::resume(path, &backend)?;
            if !matches!(model.layers().first(), Some(Layer::Embedding(_))) {
                bail!("--resume {}: not a token model (its first layer is no embedding)", path.display());
            }
            if let Some(record) = model.resumed_fit() {
                if record.batch_size != args.batch {
                    common::usage_error::<Args>(format!(
                        "--batch {}: the checkpoint was trained with --batch {}; resume with it, so the run \
                         continues as the one that was never stopped",
                        args.batch, record.batch_size
                    ));
                }
            }
            // The model keeps its rates: a run resumed at another --dropout would not be the same run.
            let saved_dropout = model.layers().iter().find_map(|l| match l {
                Layer::MultiHeadAttention(a) => Some(a.dropout),
                _ => None,
            });
            if saved_dropout.is_some_and(|rate| rate != args.dropout) {
                common::usage_error::<Args>(format!(
                    "--dropout {}: the checkpoint was trained with --dropout {}; resume with it",
                    args.dropout,
                    saved_dropout.unwrap_or(0.0)
                ));
            }
            let done = model.resumed_epoch().unwrap_or(0);
            say!("resumed from {} after iteration {}", path.display(), done * args.eval_every);
            let history = model.resumed_history().cloned().unwrap_or_default();
            (model, history)
        }
        None => (new_model(args, text.vocab_size(), &backend)?, History::default()),
    };
    say!("model ({} parameters):\n{}", model.parameter_count(), model.summary());

    let periods = args.iters / args.eval_every;
    let history = match model.resumed_epoch() {
        Some(done) if done == periods => {
            say!("nothing left to train: the checkpoint completed all {} iterations; writing the outputs", args.iters);
            resumed
        }
        Some(done) if done > periods => bail!(
            "--iters {}: the checkpoint has completed {} iterations (--iters counts them all): give --iters {} to \
             write its outputs, or more to train further",
            args.iters,
            done * args.eval_every,
            done * args.eval_every
        ),
        _ => {
            let parallel =
                Parallel { ranks: ranks.as_deref(), replicas: replicas.as_deref(), vocab: text.vocab_size() };
            train_writing_outputs(&mut model, args, (&train, &val), resumed, &outputs, parallel)?
        }
    };
    // The other ranks are done: rank 0 reports, writes and samples.
    if !common::data_parallel::is_rank0() {
        return Ok(());
    }
    say!(
        "device memory: {:.1} MiB at most (the engine's tensors)",
        gpu.peak_allocated_bytes() as f64 / (1 << 20) as f64
    );
    outputs.write(&history, &model)?;

    if args.sample_chars > 0 {
        let prompt = text.encode(&args.prompt)?;
        let top_k = (args.top_k > 0).then_some(args.top_k);
        let started = Instant::now();
        let ids = model.generate(&prompt, args.sample_chars, args.temperature, top_k, args.sample_seed)?;
        let seconds = started.elapsed().as_secs_f64();
        say!(
            "\n{} characters sampled after {:?} (temperature {}, top k {}) in {seconds:.1} s:\n{}{}",
            args.sample_chars,
            args.prompt,
            args.temperature,
            args.top_k,
            args.prompt,
            text.decode(&ids)?
        );
    }
    Ok(())
}

/// The GPT the flags describe for a vocabulary of `vocab`, compiled, on `backend`.
fn new_model(args: &Args, vocab: usize, backend: &Backend) -> Result<Sequential> {
    let cfg = GptConfig { vocab, block: args.block, n_layer: args.n_layer, n_head: args.n_head, n_embd: args.n_embd };
    let mut model = gpt_with_dropout(cfg, args.dropout, args.seed).build(backend)?;
    let optimizer = nanogpt_adamw(args.lr, args.min_lr, args.warmup, args.iters, args.weight_decay);
    model.compile(Loss::SparseCategoricalCrossentropy, optimizer)?;
    Ok(model)
}

/// Where the run trains besides this process's model: the ranks of `--data-parallel`, or the
/// other adapters of `--adapters` (a replica each, of a GPT over `vocab` characters).
struct Parallel<'a> {
    ranks: Option<&'a dyn Collective>,
    replicas: Option<&'a [Gpu]>,
    vocab: usize,
}

/// `fit_tokens` with [`TokenConsole`] (data-parallel over `parallel`'s ranks or adapters), then
/// the outputs written as `fit_writing_outputs` does (also after a diverging loss or a signal);
/// a device limit names --batch and --block.
fn train_writing_outputs(
    model: &mut Sequential,
    args: &Args,
    (train, val): (&TokenDataset, &TokenDataset),
    resumed: History,
    outputs: &Outputs,
    parallel: Parallel,
) -> Result<History> {
    let cancel = common::interrupt::cancel_on_signals()?;
    let checkpoint = args.checkpoint_dir.as_deref().map(Checkpointing::every_epoch);
    let options = TokenFitOptions {
        batch_size: args.batch,
        steps: args.iters,
        eval_every: args.eval_every,
        eval_batches: args.eval_batches,
        seed: None,
        progress_every: args.eval_every.div_ceil(10),
        checkpoint,
        early_stopping: None,
        skip_nonfinite_batches: false,
        clip_norm: (args.clip > 0.0).then_some(args.clip),
        cancel: Some(&cancel),
        verbose: false,
    };
    let mut console = TokenConsole::new(args.eval_every, args.iters);
    let started = Instant::now();
    let fitted = match (parallel.ranks, parallel.replicas) {
        (Some(c), _) => {
            say!(
                "data-parallel: {} ranks, each step {} windows ({} on each rank)",
                c.size(),
                c.size() * args.batch,
                args.batch
            );
            match c.rank() {
                0 => model.fit_tokens_data_parallel_with(train, Some(val), &options, c, &mut console),
                _ => model.fit_tokens_data_parallel_with(train, Some(val), &options, c, &mut NoProgress),
            }
        }
        (None, Some(gpus)) => {
            // Each other adapter's replica starts from the checkpoint or the same new model.
            let build = |backend: &Backend| -> Result<Sequential> {
                match &args.resume {
                    Some(path) => Ok(Sequential::resume(path, backend)?),
                    None => new_model(args, parallel.vocab, backend),
                }
            };
            let replica_options = TokenFitOptions { checkpoint: None, cancel: None, ..options };
            let fit = |replica: &mut Sequential, rank: &dyn Collective| {
                replica.fit_tokens_data_parallel(train, Some(val), &replica_options, rank).map(drop)
            };
            common::adapters::train_with_replicas(gpus, &build, (args.batch, "windows"), &fit, |c| {
                Ok(model.fit_tokens_data_parallel_with(train, Some(val), &options, c, &mut console))
            })?
        }
        (None, None) => model.fit_tokens_with(train, Some(val), &options, &mut console),
    };
    console.clear_bar();
    let seconds = started.elapsed().as_secs_f64();
    let resumed_rows = resumed.epochs.len();
    let last = checkpoint.map(|c| c.last_path());
    let history = write_after_fit(model, fitted, console.records, resumed, outputs, last.as_deref(), |e| match e {
        WgnnError::DeviceLimit { .. } => anyhow::Error::new(e).context(format!(
            "training with --batch {} and --block {} exceeds a device limit: try a smaller --batch or --block",
            args.batch, args.block
        )),
        _ => e.into(),
    })?;
    let ran = &history.epochs[resumed_rows.min(history.epochs.len())..];
    let steps: f64 = ran.iter().map(|r| r.seconds).sum();
    let validation: f64 = ran.iter().map(|r| r.val_seconds).sum();
    let iterations = ran.len() * args.eval_every;
    say!(
        "trained {iterations} iterations in {seconds:.1} s: {steps:.1} s of training steps ({:.1} ms/iter), \
         {validation:.1} s of validation",
        1e3 * steps / iterations.max(1) as f64
    );
    Ok(history)
}

/// What the run shows: a bar on stderr (when it is a terminal) with the iteration, the running
/// loss and ms per iteration; a line on stdout at every evaluation. Keeps the records, which a
/// run stopped by a diverging loss writes.
struct TokenConsole {
    every: usize,
    iters: usize,
    draw_bar: bool,
    records: Vec<EpochRecord>,
}

impl TokenConsole {
    fn new(every: usize, iters: usize) -> TokenConsole {
        TokenConsole { every, iters, draw_bar: std::io::stderr().is_terminal(), records: Vec::new() }
    }

    fn clear_bar(&self) {
        if self.draw_bar {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), b"\r\x1b[2K");
        }
    }
}

impl Observer for TokenConsole {
    fn on_progress(&mut self, p: &Progress) {
        if self.draw_bar {
            let iteration = (p.epoch - 1) * self.every + p.step;
            let ms = 1e3 * p.seconds / p.step.max(1) as f64;
            use std::io::Write as _;
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2Kiteration {iteration}/{}  loss {:.4}  {ms:.1} ms/iter",
                self.iters,
                p.loss
            );
        }
    }

    fn on_epoch_end(&mut self, r: &EpochRecord) {
        if self.draw_bar {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), b"\r\x1b[2K");
        }
        let val = r.val_loss.map_or(String::new(), |v| format!("  val loss {v:.4}"));
        say!(
            "iteration {:>5}  train loss {:.4}{val}  {:.1} ms/iter  {:.0} tokens/s  ({:.1} s validation)",
            r.epoch * self.every,
            r.train_loss,
            1e3 * r.seconds / self.every as f64,
            r.samples_per_second,
            r.val_seconds
        );
        self.records.push(r.clone());
    }
}
