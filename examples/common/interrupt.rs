//! Ctrl-C (SIGINT) and SIGTERM during training: the first sets the flag `fit` watches
//! (`FitOptions::cancel`) and prints [`NOTICE`], so the run stops after the steps under way and
//! the example writes what was asked — the history of the epochs completed, its curves, the model
//! — prints one line saying what it wrote and exits 130; the checkpoint folder keeps the last
//! completed epoch's checkpoint. A second signal exits at once (130), without the writing, for a
//! user who will not wait for it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The exit status of a run stopped by a signal (the shell's 128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The line on stderr when the first signal arrives.
pub const NOTICE: &str =
    "stopping after the steps under way, then writing the outputs; Ctrl-C again to exit at once without them";

/// The error an example returns once it has written its outputs after a signal: `exit_on_error`
/// exits [`EXIT_INTERRUPTED`] on it, without an `error:` line (the run said what it did).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// A flag set by the first SIGINT or SIGTERM, which also prints [`NOTICE`]; a second one ends the
/// process at once.
pub fn cancel_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it: set means
        // this is the second signal.
        signal_hook::flag::register_conditional_shutdown(signal, EXIT_INTERRUPTED as i32, Arc::clone(&flag))?;
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    // The notice comes from a thread (a signal handler may not take stderr's lock), on stderr, so
    // it shows while the training thread waits on a stdout nobody reads.
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            say_err!("{NOTICE}");
        }
    });
    Ok(flag)
}
