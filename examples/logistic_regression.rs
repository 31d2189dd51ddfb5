//! Logistic regression from scratch, the classic two-digit exercise of the Kaggle tutorials on
//! Sign Language Digits, reproduced step for step: digits 0 and 1 (410 grey 64×64 hand photos, 205
//! of each, pixels scaled to [0, 1] and flattened to 4,096 features), the tutorial's split
//! (`train_test_split(X, Y, test_size=0.15, random_state=42)`, reproduced exactly by
//! `wgnn::train_test_split`: 348 training and 62 test rows), one sigmoid unit (`dense(1)` +
//! `Loss::BinaryCrossentropy`) with every weight 0.01 and bias 0, full-batch gradient descent
//! (`Optimizer::sgd(lr, 0.0)`, batch = every training row, one iteration = one epoch), lr 0.01,
//! 150 iterations.
//!
//!     cargo run --release --example logistic_regression [-- --iterations 1500 --lr 0.01 --adam]
//!     cargo run --release --example logistic_regression -- --ten-class
//!
//! What to expect (measured on lavapipe; one test image is 1.6 points). The defaults print the
//! tutorial's figures beside wgnn's; `--seed` is the split's `random_state` in every mode:
//! - defaults (gradient descent, lr 0.01, 150 iterations, seed 42): 91.67% train / 93.55% test,
//!   the tutorial's figures, which its recipe in NumPy (float64) gives on this split
//!   (tests/fixtures/tutorial_logistic_regression.py); the cost lines (13.210988 at iteration 0,
//!   1.917825 at 10, …, 0.225595 at 140, 0.220408 at 149) agree with NumPy's to 1e-6. Seeds 1–3:
//!   93.10 / 93.55%, 92.53 / 95.16%, 91.67 / 96.77%, NumPy's figures too;
//! - `--iterations 1500`: 97.70% train / 100% test (cost 0.085), as NumPy;
//! - `--adam` (Adam, lr 0.01, 150 iterations): 97.41% train / 100% test; `--adam --iterations
//!   600`: 100% train / 100% test, the training fit of a tuned solver (scikit-learn's
//!   `LogisticRegression` reaches 100% train), which plain full-batch descent approaches only
//!   slowly;
//! - `--ten-class`: all 2,062 images, split the same way (1,752 training / 310 test rows), 4096 →
//!   128 relu → 10 softmax, Adam 1e-3, batch 32, 30 epochs: 77.6% train / 65.2% test (`--epochs
//!   60`: 85.3% / 71.6%); raw pixels, no convolution: a weak model for this set.
//!
//! Writes the cost curve (`cost.png`, via `History::plot_png`) and `history.csv` to `--out`
//! (default `out/logistic_regression`).

#[macro_use]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use wgnn::history::EpochRecord;
use wgnn::model::{Backend, FitOptions, Loss, Observer, Optimizer, Sequential, Validation};
use wgnn::train_test_split::train_test_split_indices;
use wgnn::{Activation, Dataset, Initializer};

#[derive(Parser, Debug)]
#[command(name = "logistic_regression", about = "Logistic regression on Sign Language Digits 0/1 (wgnn)")]
struct Args {
    /// The Sign Language Digits archive (`x` uint8 (2062, 64, 64), `y` uint8, sorted by digit);
    /// the default is the crate's copy, wherever the example is run from.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/sign_digits.npz"))]
    data: PathBuf,
    /// Gradient-descent iterations (full-batch epochs).
    #[arg(long, default_value_t = 150, value_parser = common::at_least_one)]
    iterations: usize,
    /// Learning rate (0.01 by default; 1e-3 with --ten-class unless given).
    #[arg(long, value_parser = common::positive)]
    lr: Option<f32>,
    /// The split's `random_state` (scikit-learn's `train_test_split`; NumPy takes 0 to 2^32 − 1),
    /// and with --ten-class the hidden layer's weights too.
    #[arg(long, default_value_t = 42)]
    seed: u32,
    /// Adam instead of plain gradient descent.
    #[arg(long)]
    adam: bool,
    /// Folder for cost.png and history.csv.
    #[arg(long, default_value = "out/logistic_regression")]
    out: PathBuf,
    /// All ten digits: a hidden layer and a softmax output, trained with Adam in mini-batches.
    #[arg(long)]
    ten_class: bool,
    /// Epochs of --ten-class.
    #[arg(long, default_value_t = 30, value_parser = common::at_least_one)]
    epochs: usize,
    /// Run on the plain-Rust CPU reference instead of the GPU.
    #[arg(long)]
    cpu: bool,
    /// Use the adapter whose name contains this (also: $WGNN_ADAPTER).
    #[arg(long)]
    adapter: Option<String>,
    /// Refuse a software adapter (llvmpipe and the like, which train on the CPU) instead of
    /// training on it (also: $WGNN_REQUIRE_GPU=1).
    #[arg(long)]
    require_gpu: bool,
}

/// Prints the cost every `every` iterations (epochs), as the NumPy tutorial does, and the last.
/// Each line's cost and accuracy are those of the weights the iteration started from (what
/// `fit` measures while it trains, and what the tutorial prints): the last update's effect shows
/// only in the accuracies printed after training.
struct CostPrinter {
    every: usize,
    unit: &'static str,
    /// What the first epoch is called: 0 for the tutorial's iterations (`for i in
    /// range(150)`, its cost before the i-th update, which is what epoch i + 1 records), 1 for
    /// epochs.
    first: usize,
    last: usize,
}

impl Observer for CostPrinter {
    fn on_epoch_end(&mut self, r: &EpochRecord) {
        let n = r.epoch - 1 + self.first;
        if r.epoch == 1 || n.is_multiple_of(self.every) || r.epoch == self.last {
            let val = r.val_accuracy.map(|a| format!("  test accuracy {:.2}%", a * 100.0)).unwrap_or_default();
            say!(
                "{} {n:>5}  cost {:.6}  train accuracy {:.2}%{val}",
                self.unit,
                r.train_loss,
                r.train_accuracy * 100.0
            );
        }
    }
}

fn main() -> ExitCode {
    let args: Args = common::parse_args();
    common::exit_on_error(|| {
        let backend =
            if args.cpu { Backend::Cpu } else { Backend::Gpu(common::gpu(args.adapter.as_deref(), args.require_gpu)?) };
        let all = match Dataset::from_npz(&args.data, "x", "y") {
            Ok(all) => all.scaled(1.0 / 255.0),
            Err(e) if !args.data.exists() => return Err(common::hint_data_flag(e, &args.data)),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", args.data.display()))),
        };
        let png = args.out.join("cost.png");
        let csv = args.out.join("history.csv");
        // Checked before training, so a bad --out fails in seconds.
        common::outputs::prepare_folder("--out", &args.out)?;
        for file in [&png, &csv] {
            common::outputs::prepare_file("--out", file)?;
        }
        let history =
            if args.ten_class { ten_class(&args, &backend, &all)? } else { two_digits(&args, &backend, &all)? };
        history.plot_png(&png)?;
        history.write_csv(&csv)?;
        say!("wrote {} and {}", png.display(), csv.display());
        Ok(())
    })
}

/// The tutorial's test fraction: `train_test_split(X, Y, test_size=0.15, random_state=42)`.
const TEST_SIZE: f64 = 0.15;
/// Images of each digit in the tutorial's data set.
const TUTORIAL_ROWS_PER_DIGIT: usize = 205;
/// What the tutorial reports, and its recipe in NumPy (float64) recomputes on this split
/// (tests/fixtures/tutorial_logistic_regression.py): 319 of 348 training images and 58 of 62 test
/// images.
const TUTORIAL_TRAIN_ACCURACY: f64 = 319.0 / 348.0;
const TUTORIAL_TEST_ACCURACY: f64 = 58.0 / 62.0;

/// `data.subset(train), data.subset(test)` with scikit-learn's `train_test_split` rows.
fn sklearn_split(data: &Dataset, seed: u32) -> Result<(Dataset, Dataset)> {
    let (train, test) = train_test_split_indices(data.rows, TEST_SIZE, seed)?;
    Ok((data.subset(&train)?, data.subset(&test)?))
}

/// The tutorial's 410 images, `np.concatenate((x_l[204:409], x_l[822:1027]))` on Kaggle's X.npy.
/// That copy stores the digits in the order 9, 0, 7, 6, 1, … (204 nines, 205 zeros, 206 sevens,
/// 207 sixes, 206 ones), so the slices are every zero and the first 205 of the 206 ones. Our copy
/// is sorted by digit; the same images are the first 205 rows of each of digits 0 and 1 (rows
/// 0–409 of assets/sign_digits.npz, without row 410), zeros first, labelled 0 and 1; on them the
/// tutorial's split and recipe give its 91.67% / 93.55% exactly.
fn tutorial_images(all: &Dataset) -> Result<Dataset> {
    let two = all.select_classes(&[0, 1])?;
    let mut rows = Vec::with_capacity(2 * TUTORIAL_ROWS_PER_DIGIT);
    for digit in 0..2 {
        let of_digit: Vec<usize> = (0..two.rows).filter(|&r| two.labels[r] == digit).collect();
        if of_digit.len() < TUTORIAL_ROWS_PER_DIGIT {
            bail!(
                "{}: {} images of digit {digit}, the tutorial takes {TUTORIAL_ROWS_PER_DIGIT}",
                two.source,
                of_digit.len()
            );
        }
        rows.extend_from_slice(&of_digit[..TUTORIAL_ROWS_PER_DIGIT]);
    }
    Ok(two.subset(&rows)?)
}

fn two_digits(args: &Args, backend: &Backend, all: &Dataset) -> Result<wgnn::History> {
    let data = tutorial_images(all)?;
    let (train, test) = sklearn_split(&data, args.seed)?;
    say!(
        "data: digits 0 and 1, {} images; train_test_split(test_size={TEST_SIZE}, random_state={}): \
         {} training rows, {} test rows, {} features",
        data.rows,
        args.seed,
        train.rows,
        test.rows,
        train.feature_dim
    );
    let lr = args.lr.unwrap_or(0.01);
    let mut model = Sequential::new(train.feature_dim, u64::from(args.seed))
        .dense_init(1, Activation::Identity, Initializer::Constant(0.01))
        .build(backend)?;
    let optimizer = if args.adam { Optimizer::adam(lr) } else { Optimizer::sgd(lr, 0.0) };
    model.compile(Loss::BinaryCrossentropy, optimizer)?;
    say!(
        "model: one sigmoid unit, {} parameters, {} lr {lr}, full batch, {} iterations",
        model.parameter_count(),
        if args.adam { "Adam" } else { "gradient descent" },
        args.iterations
    );
    let options = FitOptions {
        epochs: args.iterations,
        batch_size: train.rows,
        shuffle: false,
        validation: Validation::None,
        ..Default::default()
    };
    say!("each line: the cost and train accuracy of the weights iteration n starts from (the tutorial's way)");
    let history = model.fit_with(
        &train,
        &options,
        &mut CostPrinter { every: 10, unit: "iteration", first: 0, last: args.iterations },
    )?;
    let (_, train_accuracy) = model.evaluate(&train)?;
    let (test_loss, test_accuracy) = model.evaluate(&test)?;
    say!("after the last iteration's update:");
    if !args.adam && args.iterations == 150 && lr == 0.01 && args.seed == 42 {
        say!("                 wgnn      the tutorial (NumPy, float64), same recipe and split");
        say!("train accuracy  {:>6.2}%    {:>6.2}%", train_accuracy * 100.0, TUTORIAL_TRAIN_ACCURACY * 100.0);
        say!("test accuracy   {:>6.2}%    {:>6.2}%", test_accuracy * 100.0, TUTORIAL_TEST_ACCURACY * 100.0);
    } else {
        say!("train accuracy  {:>6.2}%", train_accuracy * 100.0);
        say!("test accuracy   {:>6.2}%", test_accuracy * 100.0);
        say!(
            "(the tutorial's {:.2}% train / {:.2}% test are for gradient descent, lr 0.01, 150 iterations, \
             random_state 42)",
            TUTORIAL_TRAIN_ACCURACY * 100.0,
            TUTORIAL_TEST_ACCURACY * 100.0
        );
    }
    say!("test cost       {test_loss:.4}");
    Ok(history)
}

fn ten_class(args: &Args, backend: &Backend, all: &Dataset) -> Result<wgnn::History> {
    let (train, test) = sklearn_split(all, args.seed)?;
    say!(
        "data: all ten digits, train_test_split(test_size={TEST_SIZE}, random_state={}): {} training rows, {} test rows",
        args.seed, train.rows, test.rows
    );
    let mut model = Sequential::new(train.feature_dim, u64::from(args.seed))
        .dense(128, Activation::Relu)
        .dense(10, Activation::Identity)
        .build(backend)?;
    let lr = args.lr.unwrap_or(1e-3);
    model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(lr))?;
    say!("model: 4096 → 128 relu → 10 softmax, Adam lr {lr}, batch 32, {}", common::count(args.epochs, "epoch"));
    let options =
        FitOptions { epochs: args.epochs, batch_size: 32, validation: Validation::Data(&test), ..Default::default() };
    let history =
        model.fit_with(&train, &options, &mut CostPrinter { every: 5, unit: "epoch", first: 1, last: args.epochs })?;
    let (test_loss, test_accuracy) = model.evaluate(&test)?;
    say!("test accuracy {:.2}%  (test loss {test_loss:.4})", test_accuracy * 100.0);
    Ok(history)
}
