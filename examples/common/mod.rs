//! What the examples share: their command-line handling (a bad value is a usage error, exit 2).

// Each example uses the parsers it needs.
#![allow(dead_code)]

use clap::{CommandFactory, Parser};

/// The flags, or exit 2 with the error and the usage line (clap prints the usage only for some
/// errors; a bad value such as `--epochs abc` gets it too). `--help` and `--version` exit 0.
pub fn parse_args<T: Parser + CommandFactory>() -> T {
    T::try_parse().unwrap_or_else(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            e.exit();
        }
        let message = e.render().to_string();
        eprint!("{message}");
        if !message.contains("Usage:") {
            eprintln!("\n{}", T::command().render_usage());
        }
        std::process::exit(2)
    })
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
