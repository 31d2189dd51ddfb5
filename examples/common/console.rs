//! What the MNIST examples print while training: a progress bar per epoch, a line per epoch.

use indicatif::{ProgressBar, ProgressStyle};
use wgnn::history::EpochRecord;
use wgnn::model::{Observer, Progress};

/// The index of the largest value (the first, on ties).
pub fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// A progress bar per epoch, and one summary line at each epoch's end.
pub struct Console {
    bar: Option<ProgressBar>,
    /// The name of the history's second figure: "acc", or "mae" under mean squared error.
    metric: &'static str,
    /// The epochs completed, for the history of a run that `fit` stops with an error.
    pub records: Vec<EpochRecord>,
}

impl Console {
    /// `metric`: the history's second figure, "acc" or "mae".
    pub fn new(metric: &'static str) -> Console {
        Console { bar: None, metric, records: Vec::new() }
    }

    /// Removes the bar of an epoch that did not end.
    pub fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Console {
    fn on_progress(&mut self, p: &Progress) {
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(p.steps as u64);
            bar.set_style(
                ProgressStyle::with_template("epoch {prefix:>5} [{bar:30}] {pos:>5}/{len} {msg}")
                    .expect("valid progress template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("{}/{}", p.epoch, p.epochs));
            bar
        });
        bar.set_position(p.step as u64);
        bar.set_message(format!(
            "loss {:.4}  {} {:.4}  {:.0} samples/s",
            p.loss,
            self.metric,
            p.accuracy,
            p.samples as f64 / p.seconds.max(1e-9)
        ));
    }

    fn on_epoch_end(&mut self, r: &EpochRecord) {
        self.clear_bar();
        self.records.push(r.clone());
        let val = match (r.val_loss, r.val_accuracy) {
            (Some(l), Some(a)) => format!("  val loss {l:.4}  val {} {a:.4}", self.metric),
            _ => String::new(),
        };
        let skipped = match r.skipped_batches {
            0 => String::new(),
            n => format!("  ({n} non-finite batches skipped)"),
        };
        println!(
            "epoch {:>3}  loss {:.4}  {} {:.4}{val}  {:.2} s  {:.0} samples/s{skipped}",
            r.epoch, r.train_loss, self.metric, r.train_accuracy, r.seconds, r.samples_per_second
        );
    }
}
