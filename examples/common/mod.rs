//! What the examples share: their command-line handling.

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
