//! What `fit` shows a person, as Keras' `verbose` does: a progress bar per epoch (on stderr, and
//! only when stderr is a terminal: a log file or a pipe gets no bar) and one line per epoch on
//! stdout. [`FitOptions::verbose`] turns it on for [`Sequential::fit`]; a program that watches
//! training itself passes a [`ConsoleProgress`] to [`Sequential::fit_with`].

use std::io::{IsTerminal, Write};

use super::*;

/// Bar width in characters.
const BAR_WIDTH: usize = 30;

/// An [`Observer`] that draws a progress bar per epoch (running loss and metric, samples per
/// second) and prints one line per epoch: training loss and metric, validation's, the training
/// time and the validation time apart, samples per second. It keeps the records it saw
/// ([`ConsoleProgress::records`]: the epochs completed when `fit` stops with an error).
///
/// ```
/// use wgnn::model::{ConsoleProgress, Loss};
/// use wgnn::EpochRecord;
/// let console = ConsoleProgress::for_loss(Loss::SparseCategoricalCrossentropy);
/// let r = EpochRecord { epoch: 1, train_loss: 0.25, train_accuracy: 0.9, seconds: 2.0, ..Default::default() };
/// assert_eq!(console.epoch_line(&r), "epoch   1  loss 0.2500  acc 0.9000  2.00 s  0 samples/s");
/// ```
pub struct ConsoleProgress {
    /// The name of the history's second figure: "acc", or "mae" under mean squared error.
    metric: &'static str,
    /// Whether to draw the bar (stderr is a terminal).
    draw_bar: bool,
    /// Whether a bar is on screen now.
    bar_shown: bool,
    records: Vec<EpochRecord>,
}

impl Default for ConsoleProgress {
    fn default() -> Self {
        ConsoleProgress::for_loss(Loss::SparseCategoricalCrossentropy)
    }
}

impl ConsoleProgress {
    /// The console for a model compiled with `loss`: its second figure is "acc", or "mae" under
    /// mean squared error (whose accuracy column holds the mean absolute error). The bar is
    /// drawn when stderr is a terminal.
    pub fn for_loss(loss: Loss) -> ConsoleProgress {
        let metric = if loss == Loss::MeanSquaredError { "mae" } else { "acc" };
        ConsoleProgress { metric, draw_bar: std::io::stderr().is_terminal(), bar_shown: false, records: Vec::new() }
    }

    /// The same, with the bar on or off whatever stderr is.
    pub fn with_bar(mut self, draw: bool) -> ConsoleProgress {
        self.draw_bar = draw;
        self
    }

    /// The epochs completed so far, in order.
    pub fn records(&self) -> &[EpochRecord] {
        &self.records
    }

    /// Takes the records, leaving none.
    pub fn take_records(&mut self) -> Vec<EpochRecord> {
        std::mem::take(&mut self.records)
    }

    /// The bar's line for a tick: `epoch 2/5 [=====>      ]  120/1875  loss 0.2954  acc 0.9150  11515 samples/s`.
    pub fn bar_line(&self, p: &Progress) -> String {
        let done = (p.step * BAR_WIDTH).checked_div(p.steps).unwrap_or(0).min(BAR_WIDTH);
        let arrow = if done < BAR_WIDTH { ">" } else { "" };
        let rest = BAR_WIDTH - done - arrow.len();
        format!(
            "epoch {:>5} [{}{arrow}{}] {:>5}/{}  loss {:.4}  {} {:.4}  {:.0} samples/s",
            format!("{}/{}", p.epoch, p.epochs),
            "=".repeat(done),
            " ".repeat(rest),
            p.step,
            p.steps,
            p.loss,
            self.metric,
            p.accuracy,
            p.samples as f64 / p.seconds.max(1e-9)
        )
    }

    /// The line printed at an epoch's end.
    pub fn epoch_line(&self, r: &EpochRecord) -> String {
        let val = match (r.val_loss, r.val_accuracy) {
            (Some(l), Some(a)) => format!("  val loss {l:.4}  val {} {a:.4}", self.metric),
            _ => String::new(),
        };
        let val_time = match r.val_loss {
            Some(_) => format!(" + {:.2} s validation", r.val_seconds),
            None => String::new(),
        };
        let skipped = match r.skipped_batches {
            0 => String::new(),
            n => format!("  ({n} non-finite batches skipped)"),
        };
        format!(
            "epoch {:>3}  loss {:.4}  {} {:.4}{val}  {:.2} s{val_time}  {:.0} samples/s{skipped}",
            r.epoch, r.train_loss, self.metric, r.train_accuracy, r.seconds, r.samples_per_second
        )
    }

    /// Removes the bar of an epoch that did not end (`fit` stopped with an error); dropping the
    /// console does it too.
    pub fn clear_bar(&mut self) {
        if self.bar_shown {
            // Carriage return, then erase the line.
            eprint!("\r\x1b[2K");
            std::io::stderr().flush().ok();
            self.bar_shown = false;
        }
    }
}

impl Observer for ConsoleProgress {
    fn on_progress(&mut self, p: &Progress) {
        if self.draw_bar {
            eprint!("\r\x1b[2K{}", self.bar_line(p));
            std::io::stderr().flush().ok();
            self.bar_shown = true;
        }
    }

    fn on_epoch_end(&mut self, r: &EpochRecord) {
        self.clear_bar();
        // A closed stdout (`| head`) is no reason to stop training, nor to panic as println! does.
        writeln!(std::io::stdout(), "{}", self.epoch_line(r)).ok();
        self.records.push(r.clone());
    }
}

impl Drop for ConsoleProgress {
    fn drop(&mut self) {
        self.clear_bar();
    }
}

/// Passes every report to both observers: `fit_with`'s own and, with [`FitOptions::verbose`],
/// the console.
pub(super) struct Both<'a> {
    pub(super) first: &'a mut dyn Observer,
    pub(super) second: &'a mut dyn Observer,
}

impl Observer for Both<'_> {
    fn on_progress(&mut self, p: &Progress) {
        self.first.on_progress(p);
        self.second.on_progress(p);
    }
    fn on_epoch_end(&mut self, r: &EpochRecord) {
        self.first.on_epoch_end(r);
        self.second.on_epoch_end(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_steps() {
        let console = ConsoleProgress::for_loss(Loss::MeanSquaredError);
        let tick = |step| Progress {
            epoch: 2,
            epochs: 5,
            step,
            steps: 10,
            samples: step * 32,
            loss: 0.5,
            accuracy: 0.25,
            seconds: 1.0,
        };
        let half = console.bar_line(&tick(5));
        assert!(half.starts_with(&format!("epoch   2/5 [{}>{}]", "=".repeat(15), " ".repeat(14))), "{half}");
        assert!(half.contains("mae 0.2500") && half.ends_with("160 samples/s"), "{half}");
        let full = console.bar_line(&tick(10));
        assert!(full.contains(&format!("[{}]", "=".repeat(BAR_WIDTH))), "{full}");
    }

    #[test]
    fn the_epoch_line_says_validation_and_its_time() {
        let console = ConsoleProgress::default();
        let r = EpochRecord {
            epoch: 3,
            train_loss: 0.1,
            train_accuracy: 0.97,
            val_loss: Some(0.2),
            val_accuracy: Some(0.95),
            seconds: 4.0,
            val_seconds: 0.5,
            samples_per_second: 15000.0,
            skipped_batches: 2,
        };
        assert_eq!(
            console.epoch_line(&r),
            "epoch   3  loss 0.1000  acc 0.9700  val loss 0.2000  val acc 0.9500  4.00 s + 0.50 s validation  \
             15000 samples/s  (2 non-finite batches skipped)"
        );
    }
}
