//! What the examples share: their command-line handling (a bad value is a usage error, exit 2),
//! how they report a failure (`error: …` and its causes, exit 1), how they print, and their
//! output files.

// Each example uses the parsers it needs.
#![allow(dead_code)]

/// `println!` for the examples, which keeps going when nobody reads stdout any more
/// (`mnist_gpu --save m.safetensors | head -5`): `println!` panics on the broken pipe (Rust ignores
/// SIGPIPE), which would end the run before it writes the outputs asked for. Here a failed write
/// is dropped, so the run trains, writes every output and exits as it would have.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// [`say!`] on stderr (`mnist_gpu 2>&1 | head -5` closes both).
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod adapters;
pub mod data_parallel;
pub mod gpt;
pub mod interrupt;
pub mod mnist_run;
pub mod outputs;

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, Parser};
use wgnn::WgnnError;

/// The flags, or exit 2 with the error and the usage line (clap prints the usage only for some
/// errors; a bad value such as `--epochs abc` gets it too). `--help` and `--version` exit 0.
pub fn parse_args<T: Parser + CommandFactory>() -> T {
    parse_args_and_matches().0
}

/// [`parse_args`], and clap's matches too: they tell which values the user gave
/// (`ArgMatches::value_source`) and which are defaults.
pub fn parse_args_and_matches<T: Parser + CommandFactory>() -> (T, ArgMatches) {
    // `--lr -1` is the value -1 (then refused by the flag's parser), not an unknown flag `-1`.
    T::command()
        .allow_negative_numbers(true)
        .try_get_matches()
        .and_then(|m| T::from_arg_matches(&m).map(|args| (args, m)))
        .unwrap_or_else(|e| {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            let message = e.render().to_string();
            say_err!("{}", message.trim_end());
            if !message.contains("Usage:") {
                say_err!("\n{}", T::command().render_usage());
            }
            std::process::exit(2)
        })
}

/// A flag value that only turns out wrong once the data is known (`--train-rows` past the rows
/// there are): clap's `error: …` with the usage line, exit 2.
pub fn usage_error<T: CommandFactory>(message: impl std::fmt::Display) -> ! {
    T::command().error(clap::error::ErrorKind::ValueValidation, message).exit()
}

/// Runs an example's body and reports its error itself — `error: …` and the causes on stderr,
/// exit 1 — rather than returning it to the runtime, which prints a backtrace under
/// `RUST_BACKTRACE`.
pub fn exit_on_error(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<interrupt::Interrupted>() => ExitCode::from(interrupt::EXIT_INTERRUPTED),
        Err(e) => {
            say_err!("{}", error_report(&e));
            ExitCode::FAILURE
        }
    }
}

/// `error: <message>`, then each cause on a line of its own, except a cause the line before
/// already quotes (an I/O error naming its path quotes the OS error it wraps).
pub fn error_report(err: &anyhow::Error) -> String {
    let mut report = format!("error: {err}");
    let mut previous = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !previous.contains(&text) {
            report.push_str(&format!("\n  caused by: {text}"));
        }
        previous = text;
    }
    report
}

/// A data file that is not there, with the flag that names another (`--data`); other errors as
/// they are.
pub fn hint_data_flag(err: WgnnError, path: &std::path::Path) -> anyhow::Error {
    if path.exists() {
        return err.into();
    }
    let hint = format!("no data file at {}: pass its path with --data PATH", path.display());
    anyhow::Error::new(err).context(hint)
}

/// A `fit` error, with the flag to change when a training batch does not fit the device (the
/// library's message names tensors and limits, not the example's flags). Other errors — a
/// shape mismatch between the data and the model among them — are the cause as it is.
pub fn naming_the_batch_size(err: WgnnError, batch_size: usize) -> anyhow::Error {
    let context = match &err {
        WgnnError::DeviceLimit { .. } => {
            format!("training with --batch-size {batch_size} exceeds a device limit: try a smaller --batch-size")
        }
        _ => return err.into(),
    };
    anyhow::Error::new(err).context(context)
}

/// `1 epoch`, `2 epochs`: a count and its noun, plural unless the count is 1.
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A whole number ≥ 1 (epochs, batch sizes, iterations).
pub fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number ≥ 1, got {text:?}")),
    }
}

/// A finite number > 0 (learning rates).
pub fn positive(text: &str) -> std::result::Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a finite number > 0, got {text:?}")),
    }
}

/// A rate or fraction in [0, 1) (dropout, validation split).
pub fn fraction(text: &str) -> std::result::Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number in [0, 1), got {text:?}")),
    }
}

/// The device a command line asks for (`--adapter`, else `$WGNN_ADAPTER`; `--require-gpu` or
/// `$WGNN_REQUIRE_GPU=1` refuse a software adapter), announced in a line, with one more line when
/// it is a software adapter: then training runs on the CPU, and the user should know.
pub fn gpu(adapter: Option<&str>, require_gpu: bool) -> anyhow::Result<wgnn::Gpu> {
    let gpu = wgnn::Gpu::from_command_line(adapter, require_gpu)?;
    say!("adapter: {}", gpu.describe());
    if let Some(notice) = gpu.software_notice() {
        say!("{notice}; here: --adapter NAME, --require-gpu");
    }
    Ok(gpu)
}
