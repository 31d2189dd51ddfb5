//! What a training run records per epoch, and the two ways a person looks at it afterwards: a CSV
//! for spreadsheets and scripts, and a PNG with loss and accuracy curves. Both files are written
//! atomically ([`crate::atomic_file`]): a crash or a full disk leaves the old file or the new one.
//!
//! Two runs with the same seed on the same adapter give the same history except for the timing
//! columns, `seconds`, `val_seconds` and `samples_per_second` (wall-clock measurements): compare
//! the others.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::atomic_file::{write_atomic, write_atomic_with};
use crate::error::{Result, WgnnError};

/// One epoch of a run. Accuracies are fractions in [0, 1].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochRecord {
    /// 1-based, as printed during training.
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    /// The training steps' wall time (the first epoch's includes building pipelines and any
    /// autotuning); validation is not in it.
    pub seconds: f64,
    /// The validation pass's wall time after the epoch's steps (0 without validation):
    /// `seconds + val_seconds` is what the epoch took.
    pub val_seconds: f64,
    /// Training rows over `seconds`.
    pub samples_per_second: f64,
    /// Batches left out because their loss was not finite (`FitOptions::skip_nonfinite_batches`);
    /// the epoch's loss and accuracy are over the other rows.
    pub skipped_batches: usize,
}

/// Every epoch of a run, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
    /// The epoch after which early stopping ended the run, if it did.
    pub stopped_early_at: Option<usize>,
    /// The epoch `fit` was in when its cancel flag ([`crate::model::FitOptions::cancel`])
    /// stopped it, if it did; that epoch is not in `epochs`. An `Ok` outcome rather than an
    /// error, like early stopping: what was trained is as usable as after a full run, and a
    /// caller writes its outputs the same way (an error would make `?` drop the history).
    pub cancelled_in: Option<usize>,
}

/// The header of [`History::to_csv`].
pub const CSV_HEADER: &str =
    "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds,val_seconds,samples_per_second,skipped_batches";

/// The header before `val_seconds` was recorded (still read, as 0 s of validation).
const CSV_HEADER_V2: &str =
    "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds,samples_per_second,skipped_batches";

/// The header before `skipped_batches` was recorded (still read, as 0 skipped).
const CSV_HEADER_V1: &str = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds,samples_per_second";

/// The font the plots use, shipped with the crate because a fresh machine may have none
/// (DejaVu Sans, Bitstream Vera licence: `assets/fonts/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const FONT_NAME: &str = "wgnn-dejavu-sans";

impl History {
    pub fn push(&mut self, r: EpochRecord) {
        self.epochs.push(r);
    }

    pub fn last(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }

    /// One line per epoch under [`CSV_HEADER`]; a missing validation value is an empty cell.
    /// Floats use Rust's shortest round-trip form, so parsing gives back the same numbers.
    pub fn to_csv(&self) -> String {
        let opt = |v: Option<f32>| v.map(|v| v.to_string()).unwrap_or_default();
        let mut s = String::from(CSV_HEADER);
        s.push('\n');
        for r in &self.epochs {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                r.epoch,
                r.train_loss,
                r.train_accuracy,
                opt(r.val_loss),
                opt(r.val_accuracy),
                r.seconds,
                r.val_seconds,
                r.samples_per_second,
                r.skipped_batches
            ));
        }
        s
    }

    /// Parses what [`History::to_csv`] wrote (the same numbers back, bit for bit), also without
    /// the `val_seconds` or `skipped_batches` columns of earlier versions (read as 0).
    pub fn from_csv(text: &str) -> Result<History> {
        const OP: &str = "History::from_csv";
        let mut lines = text.lines();
        // Each version's cell count, and where its `val_seconds`, `samples_per_second` and
        // `skipped_batches` cells are.
        let (columns, val_seconds_at, samples_at, skipped_at) = match lines.next() {
            Some(CSV_HEADER) => (9, Some(6), 7, Some(8)),
            Some(CSV_HEADER_V2) => (8, None, 6, Some(7)),
            Some(CSV_HEADER_V1) => (7, None, 6, None),
            _ => return Err(WgnnError::invalid(OP, format!("the first line must be the header {CSV_HEADER:?}"))),
        };
        let mut history = History::default();
        for (i, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
            let bad = |what: &str| WgnnError::invalid(OP, format!("line {}: bad {what} in {line:?}", i + 2));
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != columns {
                return Err(bad("cell count"));
            }
            let f32_cell = |j: usize, what: &str| cells[j].parse::<f32>().map_err(|_| bad(what));
            let opt_cell = |j: usize, what: &str| {
                if cells[j].is_empty() {
                    Ok(None)
                } else {
                    f32_cell(j, what).map(Some)
                }
            };
            history.push(EpochRecord {
                epoch: cells[0].parse().map_err(|_| bad("epoch"))?,
                train_loss: f32_cell(1, "train_loss")?,
                train_accuracy: f32_cell(2, "train_accuracy")?,
                val_loss: opt_cell(3, "val_loss")?,
                val_accuracy: opt_cell(4, "val_accuracy")?,
                seconds: cells[5].parse().map_err(|_| bad("seconds"))?,
                val_seconds: match val_seconds_at {
                    Some(j) => cells[j].parse().map_err(|_| bad("val_seconds"))?,
                    None => 0.0,
                },
                samples_per_second: cells[samples_at].parse().map_err(|_| bad("samples_per_second"))?,
                skipped_batches: match skipped_at {
                    Some(j) => cells[j].parse().map_err(|_| bad("skipped_batches"))?,
                    None => 0,
                },
            });
        }
        Ok(history)
    }

    /// [`History::to_csv`] into `path`, atomically.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_csv().as_bytes())
    }

    /// A 1200×500 PNG: loss (left) and accuracy (right) per epoch, training and validation;
    /// written atomically.
    pub fn plot_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if self.epochs.is_empty() {
            return Err(WgnnError::invalid("History::plot_png", "no epochs recorded, nothing to plot"));
        }
        register_font()?;
        write_atomic_with(path, |tmp| {
            // Fail with the real I/O error (permission, missing folder) rather than plotters' wrapper.
            std::fs::File::create(tmp).map_err(|source| WgnnError::Io { path: path.to_path_buf(), source })?;
            self.draw(tmp).map_err(|e| WgnnError::Data {
                path: path.to_path_buf(),
                detail: format!("could not draw the training plot: {e}"),
            })
        })
    }

    fn draw(&self, path: &Path) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let title = match self.stopped_early_at {
            Some(e) => format!("Training history (stopped early after epoch {e})"),
            None => "Training history".to_string(),
        };
        let root = root.titled(&title, (FONT_NAME, 26))?;
        let (left, right) = root.split_horizontally(600);
        let epochs = |f: fn(&EpochRecord) -> Option<f32>| -> Vec<(f32, f32)> {
            self.epochs.iter().filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as f32, v))).collect()
        };
        panel(&left, "Loss", "loss", &epochs(|r| Some(r.train_loss)), &epochs(|r| r.val_loss), false)?;
        panel(
            &right,
            "Accuracy",
            "accuracy (%)",
            &epochs(|r| Some(r.train_accuracy * 100.0)),
            &epochs(|r| r.val_accuracy.map(|a| a * 100.0)),
            true,
        )?;
        root.present()?;
        Ok(())
    }
}

/// plotters with `ab_glyph` only knows fonts registered by name; once per process is enough.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(WgnnError::invalid("History::plot_png", "the embedded font could not be loaded"))
    }
}

/// One chart: training (blue) and validation (orange) against the epoch.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    train: &[(f32, f32)],
    val: &[(f32, f32)],
    legend_lower_right: bool,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let all = train.iter().chain(val);
    let x_max = all.clone().map(|p| p.0).fold(1.0f32, f32::max);
    let (mut lo, mut hi) =
        all.map(|p| p.1).fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    // One epoch still needs a visible x range.
    let x_range = if x_max > 1.0 { 1.0..x_max } else { 0.5..1.5 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT_NAME, 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x_range, lo..hi)?;
    let whole_epochs = x_max.round() as usize;
    // Enough decimals to tell the y ticks apart.
    let digits = match hi - lo {
        s if s >= 20.0 => 0,
        s if s >= 2.0 => 1,
        s if s >= 0.2 => 2,
        _ => 3,
    };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(whole_epochs.clamp(2, 10))
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-3 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.digits$}"))
        .label_style((FONT_NAME, 14))
        .axis_desc_style((FONT_NAME, 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    for (points, color, name) in [(train, blue, "training"), (val, orange, "validation")] {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(if legend_lower_right { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight })
        .label_font((FONT_NAME, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
