//! What `fit` is told: epochs, batches, validation, checkpoints, early stopping, progress.

use super::*;
use std::sync::atomic::AtomicBool;

/// Validation during `fit`.
#[derive(Clone, Copy, Debug)]
pub enum Validation<'a> {
    None,
    /// Evaluate on this data set after every epoch.
    Data(&'a Dataset),
    /// Hold out this fraction of the training rows (a seeded split) and evaluate on it.
    Fraction(f32),
}

/// Options of [`Sequential::fit`]; start from `..Default::default()` (1 epoch, batches of 32,
/// shuffled, no validation, quiet).
///
/// ```
/// use wgnn::model::{FitOptions, Validation};
/// let options = FitOptions {
///     epochs: 10,
///     batch_size: 64,
///     validation: Validation::Fraction(0.1), // hold out 10% of the training rows
///     verbose: true,                         // a bar and a line per epoch, as Keras shows
///     ..Default::default()
/// };
/// assert!(options.shuffle);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FitOptions<'a> {
    pub epochs: usize,
    pub batch_size: usize,
    pub shuffle: bool,
    pub validation: Validation<'a>,
    /// Steps between progress ticks (the only readbacks inside an epoch); 0 = about 20 per epoch.
    /// At each tick a non-finite running loss stops training (see [`Sequential::fit`]).
    pub progress_every: usize,
    /// Checkpoints written during training, if any.
    pub checkpoint: Option<Checkpointing<'a>>,
    /// Stop when a validation metric stops improving (needs validation), if set.
    pub early_stopping: Option<EarlyStopping>,
    /// Skip a batch whose loss is not finite — no update of the weights, the optimizer state, t
    /// or the batch-norm running statistics, its loss left out of the epoch's — and count it in
    /// [`EpochRecord::skipped_batches`], instead of stopping the run (the default). The check is
    /// on the GPU, inside the step: no readback. It looks at the loss only: a finite loss whose
    /// gradients overflow still updates. The step after a skipped one draws the same dropout
    /// masks (they are keyed by t, which did not advance).
    pub skip_nonfinite_batches: bool,
    /// Clip the gradients by their global norm before each update (Keras' `global_clipnorm`,
    /// PyTorch's `clip_grad_norm_(params, max_norm)`): every gradient is multiplied by
    /// min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ over all the trained parameters together. Computed
    /// on the GPU inside the step (no readback); the update reads the factor. Finite, > 0.
    pub clip_norm: Option<f32>,
    /// A flag the caller sets to stop training early (from a Ctrl-C handler, another thread, a
    /// GUI's stop button). `fit` looks at it between progress ticks — every `progress_every`
    /// steps (1 looks between every two steps); the steps already submitted finish — at each
    /// epoch's start and before each validation, and then returns `Ok` with the epochs completed
    /// and [`History::cancelled_in`] set: the weights keep every step run (early stopping's
    /// `restore_best_weights` does not put the best epoch's back), the checkpoints written after
    /// completed epochs stay, and the unfinished epoch is neither recorded nor checkpointed (a
    /// resume would repeat it from its start).
    pub cancel: Option<&'a AtomicBool>,
    /// Show progress as Keras' `verbose=1` does: a bar per epoch on stderr when it is a terminal,
    /// and a line per epoch on stdout ([`ConsoleProgress`]). Off by default: a library prints
    /// nothing unless asked.
    pub verbose: bool,
}

/// The data settings of a `fit`, recorded in the checkpoints it writes, so that a resumed run
/// can tell whether it is given the same data ([`Sequential::resumed_fit`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitRecord {
    pub batch_size: usize,
    /// The rows given to `fit`, before a validation fraction is held out of them.
    pub rows: usize,
    /// [`Validation::Fraction`]'s fraction; `None` for other validation data or none.
    pub validation_fraction: Option<f32>,
    /// The ranks that trained together ([`Sequential::fit_data_parallel`]; 1 for plain `fit`,
    /// and in checkpoints from before wgnn recorded it): `batch_size` is each rank's.
    pub world_size: usize,
}

/// What [`EarlyStopping`] watches, after every epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    /// The validation loss: lower is better.
    ValLoss,
    /// The validation accuracy: higher is better (not with [`Loss::MeanSquaredError`], whose
    /// accuracy column holds the mean absolute error).
    ValAccuracy,
}

/// Keras' `EarlyStopping`: training stops after `patience` epochs in a row without an
/// improvement of more than `min_delta` in the monitored metric over the best epoch so far
/// ([`History::stopped_early_at`] records the epoch it stopped after). With
/// `restore_best_weights`, `fit` ends (stopped early or not; not when cancelled, see
/// [`FitOptions::cancel`]) with the weights of the best epoch, kept on the device meanwhile (no
/// readback); the optimizer state is not restored. The state starts afresh with every `fit` call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EarlyStopping {
    pub monitor: Monitor,
    /// Epochs in a row without improvement that stop training (0 acts as 1, as in Keras).
    pub patience: usize,
    /// The smallest change that counts as an improvement (≥ 0).
    pub min_delta: f32,
    pub restore_best_weights: bool,
}

impl EarlyStopping {
    /// Stop on the validation loss after `patience` epochs without improvement, restoring the
    /// best weights.
    pub fn val_loss(patience: usize) -> EarlyStopping {
        EarlyStopping { monitor: Monitor::ValLoss, patience, min_delta: 0.0, restore_best_weights: true }
    }
}

impl Default for FitOptions<'_> {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            validation: Validation::None,
            progress_every: 0,
            checkpoint: None,
            early_stopping: None,
            skip_nonfinite_batches: false,
            clip_norm: None,
            cancel: None,
            verbose: false,
        }
    }
}

/// Checkpoints during `fit` (Keras' `ModelCheckpoint`), each a file [`Sequential::resume`] reads:
/// `dir/last.safetensors` after every `every_epochs` epochs (0 = never), and
/// `dir/best.safetensors` whenever the monitored loss improves (`on_best`): the validation loss,
/// or the training loss when `fit` has no validation. Both are written atomically.
#[derive(Clone, Copy, Debug)]
pub struct Checkpointing<'a> {
    pub dir: &'a Path,
    pub every_epochs: usize,
    pub on_best: bool,
}

impl Checkpointing<'_> {
    /// Checkpoints after every epoch into `dir`.
    pub fn every_epoch(dir: &Path) -> Checkpointing<'_> {
        Checkpointing { dir, every_epochs: 1, on_best: false }
    }
    pub fn last_path(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }
    pub fn best_path(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }
}

/// What a progress tick reports.
#[derive(Clone, Debug)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub steps: usize,
    pub samples: usize,
    /// Mean loss and accuracy over the epoch's samples so far.
    pub loss: f32,
    pub accuracy: f32,
    pub seconds: f64,
}

/// Receives progress during `fit` ([`Sequential::fit_with`]). Both methods default to doing
/// nothing; [`ConsoleProgress`] is the ready-made one.
///
/// ```
/// use wgnn::model::{Backend, FitOptions, Loss, Observer, Optimizer, Sequential};
/// use wgnn::{Activation, Dataset, EpochRecord};
/// /// Keeps each epoch's training loss.
/// struct Losses(Vec<f32>);
/// impl Observer for Losses {
///     fn on_epoch_end(&mut self, record: &EpochRecord) {
///         self.0.push(record.train_loss);
///     }
/// }
/// let data = Dataset::from_rows(&[[0.0f32], [1.0]], &[0, 1])?;
/// let mut model = Sequential::new(1, 1).dense(2, Activation::Softmax).build(&Backend::Cpu)?;
/// model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(0.1))?;
/// let mut losses = Losses(Vec::new());
/// model.fit_with(&data, &FitOptions { epochs: 3, ..Default::default() }, &mut losses)?;
/// assert_eq!(losses.0.len(), 3);
/// # Ok::<(), wgnn::WgnnError>(())
/// ```
pub trait Observer {
    fn on_progress(&mut self, _progress: &Progress) {}
    fn on_epoch_end(&mut self, _record: &EpochRecord) {}
}

pub(super) struct Silent;
impl Observer for Silent {}
