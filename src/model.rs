//! The training library: a sequential model of dense layers, compiled with a loss and an
//! optimizer, trained with `fit`, measured with `evaluate`, used with `predict`.
//!
//! On the GPU backend the parameters, gradients and optimizer state live in three or four large
//! buffers (one slice per weight matrix and bias, aligned so each is bindable), the data set is
//! uploaded once per `fit`, and a training step — gather, forward, loss, backward, counters,
//! update — is a [`Plan`] built once per batch size and recorded many times into one compute pass.
//! The host reads back only the running loss/accuracy sums, at a progress tick or an epoch's end.
//!
//! The CPU backend runs the same steps through [`crate::cpu`]: it is the reference the GPU path is
//! tested against, step for step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::activation::Activation;
use crate::cpu;
use crate::data::{Dataset, Features};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::history::{EpochRecord, History};
use crate::init::Initializer;
use crate::kernels::bias_act::bias_act_forward;
use crate::kernels::dropout::{dropout_backward, dropout_forward};
use crate::kernels::gather::{advance_counters, gather_rows, BatchStart, GpuRows};
use crate::kernels::matmul::{matmul, matmul_column_sum, Epilogue, MatmulOptions};
use crate::kernels::optimizer::{
    adadelta_update, adagrad_update, adam_update, adamw_update, rmsprop_update, sgd_update_with_step, AdadeltaConfig,
    AdagradConfig, AdamConfig, RmsPropConfig, SgdConfig,
};
use crate::kernels::sigmoid_bce::{sigmoid_bce, SigmoidBceOut};
use crate::kernels::softmax_xent::{softmax, softmax_xent, SoftmaxXentOut};
use crate::kernels::Plan;
use crate::rng::Rng;
use crate::tensor::Tensor;

mod io;

/// A fully connected layer: y = act(x·W + b), W: [inputs, units], b: [units]; with `dropout` > 0,
/// inverted dropout of that rate on y while training (Keras' `Dropout` layer after it), the
/// identity in `evaluate` and `predict`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dense {
    pub inputs: usize,
    pub units: usize,
    pub activation: Activation,
    pub dropout: f32,
}

impl Dense {
    /// The seed of this layer's dropout masks (`layer`: its index), on the GPU and the CPU alike;
    /// the mask of step t is a hash of (seed, t, element).
    fn dropout_seed(model_seed: u64, layer: usize) -> u32 {
        let mixed = model_seed ^ (layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed ^ (mixed >> 32)) as u32
    }
}

/// The loss a model is compiled with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// Softmax over the last layer's outputs fused with cross-entropy against integer labels
    /// (PyTorch's `CrossEntropyLoss`, Keras' softmax + `sparse_categorical_crossentropy`). The last
    /// layer is linear (its outputs are logits); `predict` returns the softmax probabilities.
    SparseCategoricalCrossentropy,
    /// Sigmoid fused with binary cross-entropy against labels 0/1 (PyTorch's `BCEWithLogitsLoss`,
    /// Keras' `binary_crossentropy(from_logits=True)`), for a model with one linear output unit.
    /// Accuracy counts σ(z) > 0.5 against the label; `predict` returns σ(z), [rows, 1].
    BinaryCrossentropy,
}

impl Loss {
    /// How many distinct labels the loss takes from a model with `outputs` output units.
    fn classes(self, outputs: usize) -> usize {
        match self {
            Loss::SparseCategoricalCrossentropy => outputs,
            Loss::BinaryCrossentropy => 2,
        }
    }
}

/// The update rule, with its hyper-parameters (the update formulas are PyTorch's; see
/// [`crate::kernels::optimizer`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    Sgd(SgdConfig),
    /// Adam; `weight_decay` is an L2 penalty added to the gradient.
    Adam(AdamConfig),
    /// Adam with decoupled weight decay (p ← p·(1 − lr·wd) before the Adam step).
    AdamW(AdamConfig),
    RmsProp(RmsPropConfig),
    Adagrad(AdagradConfig),
    Adadelta(AdadeltaConfig),
}

impl Optimizer {
    /// Adam with the Keras/PyTorch defaults (β1 0.9, β2 0.999) and Keras' ε 1e-7.
    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::Adam(AdamConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            weight_decay: 0.0,
            schedule: Default::default(),
        })
    }
    /// AdamW with decoupled weight decay `weight_decay` (Keras' default 0.004, PyTorch's 0.01),
    /// β1 0.9, β2 0.999, ε 1e-7.
    pub fn adamw(lr: f32, weight_decay: f32) -> Optimizer {
        match Optimizer::adam(lr) {
            Optimizer::Adam(c) => Optimizer::AdamW(AdamConfig { weight_decay, ..c }),
            other => other,
        }
    }
    /// RMSprop with Keras' ρ 0.9 and ε 1e-7, no momentum.
    pub fn rmsprop(lr: f32) -> Optimizer {
        Optimizer::RmsProp(RmsPropConfig {
            lr,
            rho: 0.9,
            eps: 1e-7,
            momentum: 0.0,
            weight_decay: 0.0,
            schedule: Default::default(),
        })
    }
    /// Adagrad with Keras' initial accumulator 0.1 and ε 1e-7.
    pub fn adagrad(lr: f32) -> Optimizer {
        Optimizer::Adagrad(AdagradConfig {
            lr,
            initial_accumulator: 0.1,
            eps: 1e-7,
            weight_decay: 0.0,
            schedule: Default::default(),
        })
    }
    /// Adadelta with Keras' ρ 0.95 and ε 1e-7 (`lr` scales the step: PyTorch's default is 1.0).
    pub fn adadelta(lr: f32) -> Optimizer {
        Optimizer::Adadelta(AdadeltaConfig {
            lr,
            rho: 0.95,
            eps: 1e-7,
            weight_decay: 0.0,
            schedule: Default::default(),
        })
    }
    /// Plain SGD with optional momentum.
    pub fn sgd(lr: f32, momentum: f32) -> Optimizer {
        Optimizer::Sgd(SgdConfig { lr, momentum, nesterov: false, weight_decay: 0.0, schedule: Default::default() })
    }
    fn lr(&self) -> f32 {
        match self {
            Optimizer::Sgd(c) => c.lr,
            Optimizer::Adam(c) | Optimizer::AdamW(c) => c.lr,
            Optimizer::RmsProp(c) => c.lr,
            Optimizer::Adagrad(c) => c.lr,
            Optimizer::Adadelta(c) => c.lr,
        }
    }
    /// An error naming the update kernel unless every hyper-parameter is in range.
    fn validate(&self) -> Result<()> {
        match self {
            Optimizer::Sgd(c) => c.validate(),
            Optimizer::Adam(c) => c.validate(),
            Optimizer::AdamW(c) => c.validate_for("adamw_update"),
            Optimizer::RmsProp(c) => c.validate(),
            Optimizer::Adagrad(c) => c.validate(),
            Optimizer::Adadelta(c) => c.validate(),
        }
    }
    /// How many state tensors of the parameters' size the rule keeps: SGD's velocity, Adam's m
    /// and v, RMSprop's square average (and momentum buffer), Adagrad's sum, Adadelta's square
    /// average and accumulated delta.
    pub(crate) fn state_slots(&self) -> usize {
        match self {
            Optimizer::Sgd(c) => (c.momentum != 0.0) as usize,
            Optimizer::Adam(_) | Optimizer::AdamW(_) => 2,
            Optimizer::RmsProp(c) => 1 + (c.momentum != 0.0) as usize,
            Optimizer::Adagrad(_) => 1,
            Optimizer::Adadelta(_) => 2,
        }
    }
}

/// Where a model computes.
#[derive(Clone, Debug)]
pub enum Backend {
    Gpu(Gpu),
    /// The plain-Rust reference path (slow; for tests and comparison).
    Cpu,
}

/// Validation during `fit`.
#[derive(Clone, Copy, Debug)]
pub enum Validation<'a> {
    None,
    /// Evaluate on this data set after every epoch.
    Data(&'a Dataset),
    /// Hold out this fraction of the training rows (a seeded split) and evaluate on it.
    Fraction(f32),
}

/// Options of [`Sequential::fit`].
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
}

/// What [`EarlyStopping`] watches, after every epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    /// The validation loss: lower is better.
    ValLoss,
    /// The validation accuracy: higher is better.
    ValAccuracy,
}

/// Keras' `EarlyStopping`: training stops after `patience` epochs in a row without an
/// improvement of more than `min_delta` in the monitored metric over the best epoch so far
/// ([`History::stopped_early_at`] records the epoch it stopped after). With
/// `restore_best_weights`, `fit` ends (stopped early or not) with the weights of the best epoch,
/// kept on the device meanwhile (no readback); the optimizer state is not restored. The state
/// starts afresh with every `fit` call.
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

/// Early stopping's running state within one `fit`.
struct EarlyStopState {
    cfg: EarlyStopping,
    best: Option<f32>,
    wait: usize,
}

/// What an epoch's record means to [`EarlyStopState`].
struct EarlyStopDecision {
    improved: bool,
    stop: bool,
}

impl EarlyStopState {
    fn new(cfg: EarlyStopping) -> EarlyStopState {
        EarlyStopState { cfg, best: None, wait: 0 }
    }

    fn observe(&mut self, r: &EpochRecord) -> EarlyStopDecision {
        let current = match self.cfg.monitor {
            Monitor::ValLoss => r.val_loss,
            Monitor::ValAccuracy => r.val_accuracy,
        };
        let improved = match (current, self.best) {
            (Some(c), _) if !c.is_finite() => false,
            (Some(_), None) => true,
            (Some(c), Some(b)) => match self.cfg.monitor {
                Monitor::ValLoss => c < b - self.cfg.min_delta,
                Monitor::ValAccuracy => c > b + self.cfg.min_delta,
            },
            (None, _) => false,
        };
        if improved {
            self.best = current;
            self.wait = 0;
        } else {
            self.wait += 1;
        }
        EarlyStopDecision { improved, stop: !improved && self.wait >= self.cfg.patience.max(1) }
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

/// Receives progress during `fit`. Both methods default to doing nothing.
pub trait Observer {
    fn on_progress(&mut self, _progress: &Progress) {}
    fn on_epoch_end(&mut self, _record: &EpochRecord) {}
}

struct Silent;
impl Observer for Silent {}

/// Floats between parameter slices: 64 floats = 256 bytes, the largest storage offset alignment
/// wgpu allows a device to ask for, so every slice is bindable on every adapter.
const PARAM_ALIGN: usize = 64;

/// Where each layer's W and b sit in the flat parameter (and gradient, and state) buffer.
#[derive(Clone, Debug)]
struct ParamLayout {
    /// (offset of W, offset of b) per layer, in floats.
    offsets: Vec<(usize, usize)>,
    total: usize,
}

impl ParamLayout {
    fn new(layers: &[Dense]) -> ParamLayout {
        let mut at = 0;
        let mut offsets = Vec::new();
        for l in layers {
            let w = at;
            at = (at + l.inputs * l.units).next_multiple_of(PARAM_ALIGN);
            let b = at;
            at = (at + l.units).next_multiple_of(PARAM_ALIGN);
            offsets.push((w, b));
        }
        ParamLayout { offsets, total: at.max(PARAM_ALIGN) }
    }
}

/// A sequential stack of dense layers.
pub struct Sequential {
    input_dim: usize,
    layers: Vec<Dense>,
    seed: u64,
    layout: ParamLayout,
    compiled: Option<(Loss, Optimizer)>,
    state: State,
    /// Set by [`Sequential::resume`], taken by the next `fit`.
    resume_point: Option<ResumePoint>,
}

/// Where a resumed model's training stopped: the epochs completed and their history.
struct ResumePoint {
    epoch: usize,
    history: History,
}

enum State {
    Gpu(Box<GpuState>),
    Cpu(CpuState),
}

/// Everything a GPU model keeps resident.
struct GpuState {
    gpu: Gpu,
    params: Tensor,
    grads: Tensor,
    /// Optimizer state: Adam's m and v, or SGD's velocity.
    opt_state: Vec<Tensor>,
    /// u32 [1]: the step within the epoch (the gather's batch position).
    epoch_step: Tensor,
    /// u32 [1]: the global step t (Adam's bias correction), carried across epochs.
    global_step: Tensor,
    /// f32 [2]: Σ loss, Σ correct since the last reset.
    totals: Tensor,
}

struct CpuState {
    params: Vec<f32>,
    grads: Vec<f32>,
    opt_state: Vec<Vec<f32>>,
    step: u32,
}

impl Sequential {
    /// An empty model taking `input_dim` features; `seed` fixes the initial weights.
    pub fn new(input_dim: usize, seed: u64) -> SequentialBuilder {
        SequentialBuilder { input_dim, layers: Vec::new(), inits: Vec::new(), seed, error: None }
    }

    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }
    pub fn output_dim(&self) -> usize {
        self.layers.last().map_or(self.input_dim, |l| l.units)
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn parameter_count(&self) -> usize {
        self.layers.iter().map(|l| l.inputs * l.units + l.units).sum()
    }
    pub fn backend_name(&self) -> String {
        match &self.state {
            State::Gpu(g) => format!("gpu: {}", g.gpu.describe()),
            State::Cpu(_) => "cpu reference".to_string(),
        }
    }

    /// The compiled loss (softmax cross-entropy before `compile`).
    pub fn loss(&self) -> Loss {
        self.compiled.map_or(Loss::SparseCategoricalCrossentropy, |(loss, _)| loss)
    }

    /// Sets the loss and optimizer, and resets the optimizer state.
    pub fn compile(&mut self, loss: Loss, optimizer: Optimizer) -> Result<()> {
        let lr = optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(WgnnError::invalid("compile", format!("learning rate must be finite and > 0, got {lr}")));
        }
        optimizer.validate()?;
        let last = self.layers.last().ok_or_else(|| WgnnError::invalid("compile", "the model has no layers"))?;
        let (name, fused) = match loss {
            Loss::SparseCategoricalCrossentropy => ("sparse categorical cross-entropy", "softmax"),
            Loss::BinaryCrossentropy => ("binary cross-entropy", "sigmoid"),
        };
        if last.activation != Activation::Identity {
            return Err(WgnnError::invalid(
                "compile",
                format!(
                    "{name} applies the {fused} itself: the last layer must be linear (Activation::Identity), got {}",
                    last.activation.name()
                ),
            ));
        }
        match loss {
            Loss::SparseCategoricalCrossentropy if last.units < 2 => {
                return Err(WgnnError::invalid("compile", "softmax cross-entropy needs at least 2 output units"));
            }
            Loss::BinaryCrossentropy if last.units != 1 => {
                return Err(WgnnError::invalid(
                    "compile",
                    format!("binary cross-entropy needs exactly 1 output unit, got {}", last.units),
                ));
            }
            _ => {}
        }
        let slots = optimizer.state_slots();
        match &mut self.state {
            State::Gpu(g) => {
                g.opt_state = (0..slots).map(|_| Tensor::zeros(&g.gpu, &[self.layout.total])).collect::<Result<_>>()?;
                g.epoch_step.write_u32(&[0])?;
                g.global_step.write_u32(&[0])?;
            }
            State::Cpu(c) => {
                c.opt_state = vec![vec![0.0; self.layout.total]; slots];
                c.step = 0;
            }
        }
        self.compiled = Some((loss, optimizer));
        Ok(())
    }

    /// Per-layer (W [inputs·units], b [units]), read back from wherever they live.
    pub fn weights(&self) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let flat = match &self.state {
            State::Gpu(g) => g.params.to_vec()?,
            State::Cpu(c) => c.params.clone(),
        };
        Ok(self.unflatten(&flat))
    }

    /// Replaces the weights (shapes must match the layers).
    pub fn set_weights(&mut self, weights: &[(Vec<f32>, Vec<f32>)]) -> Result<()> {
        if weights.len() != self.layers.len() {
            return Err(WgnnError::shape(
                "set_weights",
                format!("{} layers given for a model of {}", weights.len(), self.layers.len()),
            ));
        }
        let mut flat = vec![0.0f32; self.layout.total];
        for (i, ((w, b), l)) in weights.iter().zip(&self.layers).enumerate() {
            if w.len() != l.inputs * l.units || b.len() != l.units {
                return Err(WgnnError::shape(
                    "set_weights",
                    format!(
                        "layer {i} needs W [{}, {}] and b [{}], got {} and {} values",
                        l.inputs,
                        l.units,
                        l.units,
                        w.len(),
                        b.len()
                    ),
                ));
            }
            let (wo, bo) = self.layout.offsets[i];
            flat[wo..wo + w.len()].copy_from_slice(w);
            flat[bo..bo + b.len()].copy_from_slice(b);
        }
        match &mut self.state {
            State::Gpu(g) => g.params.write(&flat),
            State::Cpu(c) => {
                c.params = flat;
                Ok(())
            }
        }
    }

    fn unflatten(&self, flat: &[f32]) -> Vec<(Vec<f32>, Vec<f32>)> {
        self.layers
            .iter()
            .zip(&self.layout.offsets)
            .map(|(l, &(wo, bo))| (flat[wo..wo + l.inputs * l.units].to_vec(), flat[bo..bo + l.units].to_vec()))
            .collect()
    }

    fn check_data(&self, op: &str, data: &Dataset) -> Result<()> {
        if data.feature_dim != self.input_dim {
            return Err(WgnnError::shape(
                op,
                format!(
                    "{} has {} features per row but the model's first layer takes {}",
                    data.source, data.feature_dim, self.input_dim
                ),
            ));
        }
        if data.rows == 0 {
            return Err(WgnnError::invalid(op, format!("{} has no rows", data.source)));
        }
        let classes = self.compiled.map_or(self.output_dim(), |(loss, _)| loss.classes(self.output_dim()));
        if let Some((row, &label)) = data.labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(WgnnError::invalid(
                op,
                format!("{} row {row} has label {label}, out of range for a model with {classes} outputs", data.source),
            ));
        }
        Ok(())
    }

    /// Trains on `data`; returns the per-epoch history.
    ///
    /// A model made by [`Sequential::resume`] continues after its checkpoint's epoch up to
    /// `opts.epochs`, and the history returned starts with the checkpoint's epochs.
    ///
    /// At every progress tick the running loss is checked: once it is NaN or infinite, training
    /// stops with [`WgnnError::Training`] naming the epoch and the steps since the last good tick,
    /// and the weights are put back to the last ones seen to give a finite loss: those of the tick
    /// before the last good one (the weights at the last good tick come out of an update whose
    /// effect on the loss nobody has seen yet). Device-side copies are taken at each good
    /// tick; the optimizer state is not restored).
    pub fn fit(&mut self, data: &Dataset, opts: &FitOptions) -> Result<History> {
        self.fit_with(data, opts, &mut Silent)
    }

    /// [`Sequential::fit`] that reports progress and epoch ends to `observer`.
    pub fn fit_with(&mut self, data: &Dataset, opts: &FitOptions, observer: &mut dyn Observer) -> Result<History> {
        const OP: &str = "fit";
        let (loss, optimizer) = self.compiled.ok_or_else(|| WgnnError::invalid(OP, "call compile() before fit()"))?;
        if opts.batch_size == 0 {
            return Err(WgnnError::invalid(OP, "batch size must be at least 1"));
        }
        if opts.epochs == 0 {
            return Err(WgnnError::invalid(OP, "epochs must be at least 1"));
        }
        self.check_data(OP, data)?;
        let held_out;
        let (train, validation) = match opts.validation {
            Validation::None => (data, None),
            Validation::Data(v) => {
                self.check_data("fit (validation data)", v)?;
                (data, Some(v))
            }
            Validation::Fraction(f) => {
                if !(f > 0.0 && f < 1.0) {
                    return Err(WgnnError::invalid(OP, format!("validation fraction must be in (0, 1), got {f}")));
                }
                held_out = data.split(f, self.seed ^ 0x5EED)?;
                (&held_out.0, Some(&held_out.1))
            }
        };
        let _ = loss;
        if let Some(es) = &opts.early_stopping {
            if validation.is_none() {
                return Err(WgnnError::invalid(
                    OP,
                    format!("early stopping monitors {:?}: fit needs validation data", es.monitor),
                ));
            }
            if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
                return Err(WgnnError::invalid(
                    OP,
                    format!("early stopping's min_delta must be finite and ≥ 0, got {}", es.min_delta),
                ));
            }
        }
        let first_epoch = self.resume_point.as_ref().map_or(1, |r| r.epoch + 1);
        if opts.epochs < first_epoch {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "the model resumed after epoch {}: epochs ({}) must be larger to train further",
                    first_epoch - 1,
                    opts.epochs
                ),
            ));
        }
        if let Some(c) = &opts.checkpoint {
            if c.every_epochs == 0 && !c.on_best {
                return Err(WgnnError::invalid(OP, "checkpointing needs every_epochs ≥ 1 or on_best"));
            }
            std::fs::create_dir_all(c.dir).map_err(|source| WgnnError::Io { path: c.dir.to_path_buf(), source })?;
        }
        let history = self.resume_point.take().map(|r| r.history).unwrap_or_default();
        let run = Run { first_epoch, history, validation, optimizer };
        match &self.state {
            State::Gpu(_) => self.fit_gpu(train, run, opts, observer),
            State::Cpu(_) => self.fit_cpu(train, run, opts, observer),
        }
    }

    /// Mean loss and accuracy over `data`.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<(f32, f32)> {
        self.check_data("evaluate", data)?;
        match &self.state {
            State::Gpu(g) => {
                let gpu = g.gpu.clone();
                let rows = upload_rows(&gpu, data)?;
                self.evaluate_gpu(&rows)
            }
            State::Cpu(_) => {
                let x = data.to_f32();
                let logits = self.forward_cpu(&x, data.rows);
                let (loss_rows, _, correct) = self.loss_cpu(&logits, &data.labels, 1.0);
                Ok((mean(&loss_rows), mean(&correct)))
            }
        }
    }

    /// Class probabilities for `rows` rows of `x` ([rows, input_dim], already normalised):
    /// softmax [rows, classes], or σ(z) [rows, 1] for [`Loss::BinaryCrossentropy`] (softmax when
    /// the model is not compiled).
    pub fn predict(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        const OP: &str = "predict";
        if rows == 0 || x.len() != rows * self.input_dim {
            return Err(WgnnError::shape(
                OP,
                format!("x has {} values; expected rows ({rows}) × {} features with rows ≥ 1", x.len(), self.input_dim),
            ));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(WgnnError::NonFinite { op: OP.into(), index: i, value: x[i] });
        }
        match &self.state {
            State::Gpu(g) => {
                let gpu = g.gpu.clone();
                let data =
                    Dataset::from_f32(x.to_vec(), vec![0; rows], self.input_dim, self.output_dim(), "predict input")?;
                let gpu_rows = upload_rows(&gpu, &data)?;
                self.predict_gpu(&gpu_rows)
            }
            State::Cpu(_) => {
                let logits = self.forward_cpu(x, rows);
                Ok(match self.loss() {
                    Loss::SparseCategoricalCrossentropy => cpu::softmax(&logits, rows, self.output_dim()),
                    Loss::BinaryCrossentropy => logits.iter().map(|&z| cpu::sigmoid(z)).collect(),
                })
            }
        }
    }

    /// Probabilities for every row of a data set (its scaling applied).
    pub fn predict_dataset(&mut self, data: &Dataset) -> Result<Vec<f32>> {
        self.check_data("predict", data)?;
        self.predict(&data.to_f32(), data.rows)
    }
}

/// Builds a [`Sequential`] layer by layer.
pub struct SequentialBuilder {
    input_dim: usize,
    layers: Vec<Dense>,
    /// Each layer's W initialiser (b starts at zero).
    inits: Vec<Initializer>,
    seed: u64,
    error: Option<WgnnError>,
}

impl SequentialBuilder {
    /// Adds a dense layer of `units` outputs with `activation`, W drawn Glorot-uniform.
    pub fn dense(self, units: usize, activation: Activation) -> SequentialBuilder {
        self.dense_init(units, activation, Initializer::GlorotUniform)
    }

    /// Adds a dense layer whose W is drawn by `init` (b starts at zero), e.g.
    /// `Initializer::Constant(0.01)` for logistic regression.
    pub fn dense_init(mut self, units: usize, activation: Activation, init: Initializer) -> SequentialBuilder {
        let inputs = self.layers.last().map_or(self.input_dim, |l| l.units);
        if self.error.is_none() {
            if units == 0 || inputs == 0 {
                self.error = Some(WgnnError::invalid(
                    "dense",
                    format!("layer {} would be [{inputs}, {units}]: widths must be at least 1", self.layers.len()),
                ));
            } else if let Err(e) = activation.validate() {
                self.error = Some(e);
            }
        }
        self.layers.push(Dense { inputs, units, activation, dropout: 0.0 });
        self.inits.push(init);
        self
    }

    /// Inverted dropout of `rate` (in [0, 1)) on the last added layer's outputs while training
    /// (Keras' `Dropout(rate)` after that layer); not allowed on the output layer.
    pub fn dropout(mut self, rate: f32) -> SequentialBuilder {
        if self.error.is_none() {
            match self.layers.last_mut() {
                None => self.error = Some(WgnnError::invalid("dropout", "add a dense layer before its dropout")),
                Some(_) if !(0.0..1.0).contains(&rate) => {
                    self.error = Some(WgnnError::invalid("dropout", format!("rate must be in [0, 1), got {rate}")))
                }
                Some(l) => l.dropout = rate,
            }
        }
        self
    }

    /// Allocates the model on `backend` and draws the initial weights from the seed: each layer's
    /// initialiser for W (Glorot-uniform unless [`SequentialBuilder::dense_init`] said otherwise)
    /// and zero b (the Keras defaults).
    pub fn build(self, backend: &Backend) -> Result<Sequential> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.layers.is_empty() {
            return Err(WgnnError::invalid("build", "the model has no layers"));
        }
        if self.layers.last().is_some_and(|l| l.dropout > 0.0) {
            return Err(WgnnError::invalid(
                "build",
                "dropout on the output layer would drop logits: put it on a hidden layer",
            ));
        }
        let layout = ParamLayout::new(&self.layers);
        let mut flat = vec![0.0f32; layout.total];
        let mut rng = Rng::new(self.seed);
        for ((l, &(wo, _)), init) in self.layers.iter().zip(&layout.offsets).zip(&self.inits) {
            let n = l.inputs * l.units;
            flat[wo..wo + n].copy_from_slice(&init.fill(l.inputs, l.units, n, &mut rng));
        }
        let state = match backend {
            Backend::Gpu(gpu) => State::Gpu(Box::new(GpuState {
                gpu: gpu.clone(),
                params: Tensor::from_slice(gpu, &[layout.total], &flat)?,
                grads: Tensor::zeros(gpu, &[layout.total])?,
                opt_state: Vec::new(),
                epoch_step: Tensor::zeros_u32(gpu, &[1])?,
                global_step: Tensor::zeros_u32(gpu, &[1])?,
                totals: Tensor::zeros(gpu, &[2])?,
            })),
            Backend::Cpu => {
                State::Cpu(CpuState { grads: vec![0.0; layout.total], params: flat, opt_state: Vec::new(), step: 0 })
            }
        };
        Ok(Sequential {
            input_dim: self.input_dim,
            layers: self.layers,
            seed: self.seed,
            layout,
            compiled: None,
            state,
            resume_point: None,
        })
    }
}

/// What `fit` hands the GPU or CPU loop.
struct Run<'d> {
    first_epoch: usize,
    /// The epochs before `first_epoch` (a resumed run's), to be continued.
    history: History,
    validation: Option<&'d Dataset>,
    optimizer: Optimizer,
}

/// The loss checkpointing on the best epoch watches: validation if there is one, else training.
fn monitored(r: &EpochRecord) -> f32 {
    r.val_loss.unwrap_or(r.train_loss)
}

fn best_monitored(history: &History) -> f32 {
    history.epochs.iter().map(monitored).fold(f32::INFINITY, f32::min)
}

/// The error of a non-finite running loss seen at step `done`, the last finite one at step
/// `good`, the weights put back to those after step `kept`.
fn nonfinite_loss(loss_sum: f64, epoch: usize, good: usize, done: usize, kept: usize) -> WgnnError {
    let kept =
        if kept == 0 { "at the start of that epoch".to_string() } else { format!("after step {kept} of that epoch") };
    WgnnError::Training {
        detail: format!(
            "the training loss became {loss_sum} in epoch {epoch}, steps {}..={done}; the weights are put back to those {kept}, the last ones seen to give a finite loss",
            good + 1
        ),
    }
}

fn mean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}

/// The order of an epoch's rows: shuffled from (seed, epoch) or in order.
fn epoch_order(rows: usize, shuffle: bool, seed: u64, epoch: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..rows as u32).collect();
    if shuffle {
        Rng::new(seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch as u64 + 1)).shuffle(&mut order);
    }
    order
}

/// Ticks per epoch when `progress_every` is 0.
const DEFAULT_TICKS: usize = 20;

/// Rows per evaluation batch: large, to keep the dispatch count low.
const EVAL_BATCH: usize = 2048;

// ---------------------------------------------------------------------------------------------
// GPU path

/// Uploads a data set once: u8 features stay u8 (packed 4 per word), f32 as bits.
fn upload_rows(gpu: &Gpu, data: &Dataset) -> Result<GpuRows> {
    let words: Vec<u32> = match &data.features {
        Features::U8(bytes) => {
            bytes.chunks(4).map(|c| c.iter().enumerate().fold(0u32, |w, (i, &b)| w | (b as u32) << (8 * i))).collect()
        }
        Features::F32(values) => values.iter().map(|v| v.to_bits()).collect(),
    };
    let features = Tensor::from_u32(gpu, &[words.len()], &words)?;
    let labels = Tensor::from_u32(gpu, &[data.rows], &data.labels)?;
    let mean_std = match &data.standardize {
        Some((m, s)) => Some(Tensor::from_slice(gpu, &[2, data.feature_dim], &[m.as_slice(), s.as_slice()].concat())?),
        None => None,
    };
    Ok(GpuRows {
        features,
        labels,
        total_rows: data.rows,
        dim: data.feature_dim,
        source_u8: matches!(data.features, Features::U8(_)),
        scale: data.scale,
        shift: data.shift,
        mean_std,
    })
}

/// Activations and per-row outputs for one batch size.
struct BatchBuffers {
    x: Tensor,
    y: Tensor,
    /// Output of each layer, [rows, units].
    h: Vec<Tensor>,
    /// Gradient w.r.t. each layer's pre-activation, [rows, units].
    dz: Vec<Tensor>,
    loss_rows: Tensor,
    correct_rows: Tensor,
    /// Per layer with dropout, when training: (dropped output, mask, the gradient before the
    /// mask), each [rows, units].
    dropout: Vec<Option<(Tensor, Tensor, Tensor)>>,
}

impl BatchBuffers {
    /// What layer `i + 1` reads: layer i's output after dropout, if any.
    fn layer_input<'b>(&'b self, x_or_h: &'b Tensor, i: usize) -> &'b Tensor {
        self.dropout.get(i).and_then(Option::as_ref).map_or(x_or_h, |(dropped, _, _)| dropped)
    }

    fn new(gpu: &Gpu, layers: &[Dense], input_dim: usize, rows: usize, training: bool) -> Result<BatchBuffers> {
        Ok(BatchBuffers {
            x: Tensor::zeros(gpu, &[rows, input_dim])?,
            y: Tensor::zeros_u32(gpu, &[rows])?,
            h: layers.iter().map(|l| Tensor::zeros(gpu, &[rows, l.units])).collect::<Result<_>>()?,
            dz: if training {
                layers.iter().map(|l| Tensor::zeros(gpu, &[rows, l.units])).collect::<Result<_>>()?
            } else {
                Vec::new()
            },
            loss_rows: Tensor::zeros(gpu, &[rows])?,
            correct_rows: Tensor::zeros(gpu, &[rows])?,
            dropout: layers
                .iter()
                .map(|l| {
                    if training && l.dropout > 0.0 {
                        let t = || Tensor::zeros(gpu, &[rows, l.units]);
                        Ok(Some((t()?, t()?, t()?)))
                    } else {
                        Ok(None)
                    }
                })
                .collect::<Result<_>>()?,
        })
    }
}

impl Sequential {
    fn gpu_state(&self) -> Result<&GpuState> {
        match &self.state {
            State::Gpu(g) => Ok(g),
            State::Cpu(_) => Err(WgnnError::invalid("gpu", "this model runs on the CPU backend")),
        }
    }

    /// W and b of layer `i` as views into `flat` (params or grads).
    fn layer_views(&self, flat: &Tensor, i: usize) -> Result<(Tensor, Tensor)> {
        let l = &self.layers[i];
        let (wo, bo) = self.layout.offsets[i];
        Ok((flat.view(wo, &[l.inputs, l.units])?, flat.view(bo, &[l.units])?))
    }

    /// gather → forward: the first half of every plan. `labels_max` marks the gathered labels'
    /// range so the loss kernel can check it without a readback.
    fn forward_plan(
        &self,
        rows: &GpuRows,
        order: &Tensor,
        epoch_step: &Tensor,
        start: BatchStart,
        buf: &mut BatchBuffers,
    ) -> Result<Plan> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        buf.y.set_max_u32(rows.labels.max_u32());
        let mut plan = gather_rows(gpu, rows, order, epoch_step, start, &buf.x, &buf.y)?;
        for i in 0..self.layers.len() {
            let (w, b) = self.layer_views(&g.params, i)?;
            let input = if i == 0 { &buf.x } else { buf.layer_input(&buf.h[i - 1], i - 1) };
            let epilogue = Epilogue::BiasAct { bias: Some(&b), act: self.layers[i].activation };
            plan.extend(matmul(gpu, input, &w, &buf.h[i], &MatmulOptions { epilogue, ..Default::default() })?);
            if let Some((dropped, mask, _)) = &buf.dropout[i] {
                // The mask of step t: the global step before this step's counter advance.
                let seed = Dense::dropout_seed(self.seed, i);
                plan.extend(dropout_forward(
                    gpu,
                    &buf.h[i],
                    dropped,
                    mask,
                    self.layers[i].dropout,
                    seed,
                    &g.global_step,
                )?);
            }
        }
        Ok(plan)
    }

    /// The compiled loss on the last layer's outputs in `buf` (labels `buf.y`), adding its sums
    /// to `totals`; `dlogits` (scaled by `grad_scale`) when training.
    fn loss_plan(
        &self,
        buf: &BatchBuffers,
        dlogits: Option<&Tensor>,
        totals: &Tensor,
        grad_scale: f32,
    ) -> Result<Plan> {
        let gpu = &self.gpu_state()?.gpu;
        let logits = &buf.h[self.layers.len() - 1];
        match self.loss() {
            Loss::SparseCategoricalCrossentropy => {
                let out = SoftmaxXentOut {
                    loss_rows: &buf.loss_rows,
                    dlogits,
                    correct_rows: &buf.correct_rows,
                    totals: Some(totals),
                };
                softmax_xent(gpu, logits, &buf.y, grad_scale, &out)
            }
            Loss::BinaryCrossentropy => {
                let out = SigmoidBceOut {
                    loss_rows: &buf.loss_rows,
                    dlogits,
                    correct_rows: &buf.correct_rows,
                    totals: Some(totals),
                };
                sigmoid_bce(gpu, logits, &buf.y, grad_scale, &out)
            }
        }
    }

    /// One training step for `batch` rows taken at `epoch_step * stride` of `order`.
    fn train_step_plan(
        &self,
        rows: &GpuRows,
        order: &Tensor,
        batch: usize,
        stride: usize,
        optimizer: &Optimizer,
    ) -> Result<(Plan, BatchBuffers)> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let mut buf = BatchBuffers::new(gpu, &self.layers, self.input_dim, batch, true)?;
        let start = BatchStart::Counter { stride };
        let mut plan = self.forward_plan(rows, order, &g.epoch_step, start, &mut buf)?;
        let last = self.layers.len() - 1;
        plan.extend(self.loss_plan(&buf, Some(&buf.dz[last]), &g.totals, 1.0 / batch as f32)?);
        for i in (0..self.layers.len()).rev() {
            let (dw, db) = self.layer_views(&g.grads, i)?;
            let input = if i == 0 { &buf.x } else { buf.layer_input(&buf.h[i - 1], i - 1) };
            // dW = inputᵀ · dZ ; db = Σ_rows dZ (one dispatch where the kernel allows)
            let options = MatmulOptions { trans_a: true, ..Default::default() };
            plan.extend(matmul_column_sum(gpu, input, &buf.dz[i], &dw, &db, &options)?);
            if i > 0 {
                // dZ_prev = (dZ · Wᵀ) ⊙ act′(h_prev), then ⊙ the dropout mask if any
                let (w, _) = self.layer_views(&g.params, i)?;
                let epilogue = Epilogue::ActGrad { y: &buf.h[i - 1], act: self.layers[i - 1].activation };
                let dropout = buf.dropout[i - 1].as_ref();
                let out = dropout.map_or(&buf.dz[i - 1], |(_, _, before_mask)| before_mask);
                let options = MatmulOptions { trans_b: true, epilogue, ..Default::default() };
                plan.extend(matmul(gpu, &buf.dz[i], &w, out, &options)?);
                if let Some((_, mask, before_mask)) = dropout {
                    plan.extend(dropout_backward(gpu, before_mask, mask, &buf.dz[i - 1])?);
                }
            }
        }
        plan.extend(advance_counters(gpu, &g.epoch_step, &g.global_step)?);
        // The step tensor t drives bias corrections and learning-rate schedules on the GPU.
        let (p, gr, s, t) = (&g.params, &g.grads, &g.opt_state, &g.global_step);
        plan.extend(match optimizer {
            Optimizer::Adam(cfg) => adam_update(gpu, p, gr, &s[0], &s[1], t, cfg)?,
            Optimizer::AdamW(cfg) => adamw_update(gpu, p, gr, &s[0], &s[1], t, cfg)?,
            Optimizer::Sgd(cfg) => sgd_update_with_step(gpu, p, gr, s.first(), Some(t), cfg)?,
            Optimizer::RmsProp(cfg) => rmsprop_update(gpu, p, gr, &s[0], s.get(1), Some(t), cfg)?,
            Optimizer::Adagrad(cfg) => adagrad_update(gpu, p, gr, &s[0], t, cfg)?,
            Optimizer::Adadelta(cfg) => adadelta_update(gpu, p, gr, &s[0], &s[1], Some(t), cfg)?,
        });
        Ok((plan, buf))
    }

    /// Device seconds of each dispatch of one training step at `batch_size` (median of `reps`
    /// timings each), labelled by kernel: where a step's time goes. Needs timestamp queries. The
    /// timed dispatches really run, so the weights change.
    pub fn profile_step(&mut self, data: &Dataset, batch_size: usize, reps: usize) -> Result<Vec<(String, f64)>> {
        const OP: &str = "profile_step";
        let (_, optimizer) = self.compiled.ok_or_else(|| WgnnError::invalid(OP, "call compile() first"))?;
        self.check_data(OP, data)?;
        let gpu = self.gpu_state()?.gpu.clone();
        let rows = upload_rows(&gpu, data)?;
        let batch = batch_size.clamp(1, data.rows);
        let order = Tensor::from_u32(&gpu, &[data.rows], &epoch_order(data.rows, false, 0, 0))?;
        let (plan, _buffers) = self.train_step_plan(&rows, &order, batch, batch, &optimizer)?;
        let mut timings = Vec::new();
        for d in &plan.dispatches {
            let mut times = gpu.time_plan(&Plan::from(d.clone()), reps.max(1))?;
            times.sort_by(f64::total_cmp);
            timings.push((d.label.clone(), times[times.len() / 2]));
        }
        // The repeated counter dispatch moved the step position: put it back.
        self.reset_epoch()?;
        Ok(timings)
    }

    fn read_totals(&self) -> Result<(f64, f64)> {
        let t = self.gpu_state()?.totals.to_vec()?;
        Ok((t[0] as f64, t[1] as f64))
    }

    fn reset_epoch(&self) -> Result<()> {
        let g = self.gpu_state()?;
        g.totals.write(&[0.0, 0.0])?;
        // Only the in-epoch step: the global step t carries across epochs.
        g.epoch_step.write_u32(&[0])
    }

    fn fit_gpu(
        &mut self,
        train: &Dataset,
        run: Run,
        opts: &FitOptions,
        observer: &mut dyn Observer,
    ) -> Result<History> {
        let Run { first_epoch, mut history, validation, optimizer } = run;
        let gpu = self.gpu_state()?.gpu.clone();
        let params = self.gpu_state()?.params.clone();
        // The weights at the last tick whose running loss was finite.
        // Copies of the weights at the last good tick (`latest`) and at the one before (`checked`:
        // the steps since used them and their loss was finite).
        let mut latest = Tensor::zeros(&gpu, &[self.layout.total])?;
        let mut checked = Tensor::zeros(&gpu, &[self.layout.total])?;
        let mut best = best_monitored(&history);
        let rows = upload_rows(&gpu, train)?;
        let val_rows = validation.map(|v| upload_rows(&gpu, v)).transpose()?;
        let n = train.rows;
        let batch = opts.batch_size.min(n);
        let full_steps = n / batch;
        let tail = n % batch;
        let steps = full_steps + (tail > 0) as usize;
        let order = Tensor::zeros_u32(&gpu, &[n])?;
        let (full_plan, _full_buf) = self.train_step_plan(&rows, &order, batch, batch, &optimizer)?;
        let tail_plan =
            if tail > 0 { Some(self.train_step_plan(&rows, &order, tail, batch, &optimizer)?) } else { None };
        let every = if opts.progress_every > 0 { opts.progress_every } else { steps.div_ceil(DEFAULT_TICKS).max(1) };
        let mut early = opts.early_stopping.map(EarlyStopState::new);
        // The best epoch's weights, when early stopping restores them.
        let best_params = match opts.early_stopping {
            Some(es) if es.restore_best_weights => Some(Tensor::zeros(&gpu, &[self.layout.total])?),
            _ => None,
        };
        let mut have_best = false;

        for epoch in first_epoch..=opts.epochs {
            let started = Instant::now();
            order.write_u32(&epoch_order(n, opts.shuffle, self.seed, epoch))?;
            self.reset_epoch()?;
            latest.copy_from(&params)?;
            checked.copy_from(&params)?;
            let (mut good, mut kept) = (0, 0);
            let mut done = 0;
            while done < full_steps {
                let chunk = every.min(full_steps - done);
                gpu.run_repeated(&[&full_plan], chunk)?;
                done += chunk;
                if done < steps {
                    let (loss_sum, correct) = self.read_totals()?;
                    if !loss_sum.is_finite() {
                        params.copy_from(&checked)?;
                        return Err(nonfinite_loss(loss_sum, epoch, good, done, kept));
                    }
                    std::mem::swap(&mut latest, &mut checked);
                    latest.copy_from(&params)?;
                    (kept, good) = (good, done);
                    let samples = done * batch;
                    observer.on_progress(&Progress {
                        epoch,
                        epochs: opts.epochs,
                        step: done,
                        steps,
                        samples,
                        loss: (loss_sum / samples as f64) as f32,
                        accuracy: (correct / samples as f64) as f32,
                        seconds: started.elapsed().as_secs_f64(),
                    });
                }
            }
            if let Some((plan, _)) = &tail_plan {
                gpu.run(&[plan])?;
            }
            let (loss_sum, correct) = self.read_totals()?;
            if !loss_sum.is_finite() {
                params.copy_from(&checked)?;
                return Err(nonfinite_loss(loss_sum, epoch, good, steps, kept));
            }
            let seconds = started.elapsed().as_secs_f64();
            let train_loss = (loss_sum / n as f64) as f32;
            let train_accuracy = (correct / n as f64) as f32;
            observer.on_progress(&Progress {
                epoch,
                epochs: opts.epochs,
                step: steps,
                steps,
                samples: n,
                loss: train_loss,
                accuracy: train_accuracy,
                seconds,
            });
            let (val_loss, val_accuracy) = match &val_rows {
                Some(v) => {
                    let (l, a) = self.evaluate_gpu(v)?;
                    (Some(l), Some(a))
                }
                None => (None, None),
            };
            let record = EpochRecord {
                epoch,
                train_loss,
                train_accuracy,
                val_loss,
                val_accuracy,
                seconds,
                samples_per_second: n as f64 / seconds,
            };
            observer.on_epoch_end(&record);
            history.push(record);
            self.checkpoint_after_epoch(opts, epoch, &history, &mut best)?;
            if let Some(es) = &mut early {
                let decision = history.last().map(|r| es.observe(r));
                if let (Some(d), Some(copy)) = (&decision, &best_params) {
                    if d.improved {
                        copy.copy_from(&params)?;
                        have_best = true;
                    }
                }
                if decision.is_some_and(|d| d.stop) {
                    history.stopped_early_at = Some(epoch);
                    break;
                }
            }
        }
        if let (Some(copy), true) = (&best_params, have_best) {
            params.copy_from(copy)?;
        }
        Ok(history)
    }

    /// Writes the checkpoints `opts` asks for after `epoch` (the last entry of `history`).
    fn checkpoint_after_epoch(&self, opts: &FitOptions, epoch: usize, history: &History, best: &mut f32) -> Result<()> {
        let Some(c) = &opts.checkpoint else { return Ok(()) };
        if c.every_epochs > 0 && epoch.is_multiple_of(c.every_epochs) {
            self.save_checkpoint(c.last_path(), epoch, history)?;
        }
        if c.on_best {
            if let Some(m) = history.last().map(monitored) {
                if m < *best {
                    *best = m;
                    self.save_checkpoint(c.best_path(), epoch, history)?;
                }
            }
        }
        Ok(())
    }

    /// Forward passes over `rows` in batches of up to `EVAL_BATCH`, then (loss, accuracy).
    fn evaluate_gpu(&self, rows: &GpuRows) -> Result<(f32, f32)> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let n = rows.total_rows;
        let order: Vec<u32> = (0..n as u32).collect();
        let order = Tensor::from_u32(gpu, &[n], &order)?;
        let totals = Tensor::zeros(gpu, &[2])?;
        let epoch_step = Tensor::zeros_u32(gpu, &[1])?;
        let mut plans = Vec::new();
        let mut start = 0;
        while start < n {
            let batch = EVAL_BATCH.min(n - start);
            let mut buf = BatchBuffers::new(gpu, &self.layers, self.input_dim, batch, false)?;
            let mut plan = self.forward_plan(rows, &order, &epoch_step, BatchStart::At(start), &mut buf)?;
            plan.extend(self.loss_plan(&buf, None, &totals, 1.0)?);
            plans.push(plan);
            start += batch;
        }
        gpu.run(&plans.iter().collect::<Vec<_>>())?;
        let t = totals.to_vec()?;
        Ok(((t[0] as f64 / n as f64) as f32, (t[1] as f64 / n as f64) as f32))
    }

    fn predict_gpu(&self, rows: &GpuRows) -> Result<Vec<f32>> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let n = rows.total_rows;
        let order: Vec<u32> = (0..n as u32).collect();
        let order = Tensor::from_u32(gpu, &[n], &order)?;
        let epoch_step = Tensor::zeros_u32(gpu, &[1])?;
        let classes = self.output_dim();
        let probs = Tensor::zeros(gpu, &[n, classes])?;
        let last = self.layers.len() - 1;
        let mut start = 0;
        let mut plans = Vec::new();
        while start < n {
            let batch = EVAL_BATCH.min(n - start);
            let mut buf = BatchBuffers::new(gpu, &self.layers, self.input_dim, batch, false)?;
            let mut plan = self.forward_plan(rows, &order, &epoch_step, BatchStart::At(start), &mut buf)?;
            let out = probs.view(start * classes, &[batch, classes])?;
            plan.extend(match self.loss() {
                Loss::SparseCategoricalCrossentropy => softmax(gpu, &buf.h[last], &out)?,
                Loss::BinaryCrossentropy => bias_act_forward(gpu, &buf.h[last], None, &out, Activation::Sigmoid)?,
            });
            plans.push(plan);
            start += batch;
        }
        gpu.run(&plans.iter().collect::<Vec<_>>())?;
        probs.to_vec()
    }
}

// ---------------------------------------------------------------------------------------------
// CPU reference path: the same step, kernel by kernel, through crate::cpu.

impl Sequential {
    fn cpu_params(&self) -> &[f32] {
        match &self.state {
            State::Cpu(c) => &c.params,
            State::Gpu(_) => &[],
        }
    }

    /// Layer outputs for `rows` rows of x: [h_0, h_1, …], each [rows, units].
    fn forward_cpu_all(&self, x: &[f32], rows: usize) -> Vec<Vec<f32>> {
        self.forward_cpu_dropout(x, rows, None).0
    }

    /// Layer outputs, and with `step` (training) each dropout layer's (dropped output, mask)
    /// for that step; layer i + 1 reads the dropped output.
    #[allow(clippy::type_complexity)]
    fn forward_cpu_dropout(
        &self,
        x: &[f32],
        rows: usize,
        step: Option<u32>,
    ) -> (Vec<Vec<f32>>, Vec<Option<(Vec<f32>, Vec<f32>)>>) {
        let params = self.cpu_params();
        let mut outs: Vec<Vec<f32>> = Vec::with_capacity(self.layers.len());
        let mut dropped: Vec<Option<(Vec<f32>, Vec<f32>)>> = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let (wo, bo) = self.layout.offsets[i];
            let input = match i {
                0 => x,
                _ => dropped[i - 1].as_ref().map_or(&outs[i - 1], |(d, _)| d),
            };
            let z = cpu::matmul(input, &params[wo..wo + l.inputs * l.units], rows, l.inputs, l.units, false, false);
            let h = cpu::bias_act_forward(&z, Some(&params[bo..bo + l.units]), rows, l.units, l.activation);
            dropped.push(match step {
                Some(t) if l.dropout > 0.0 => {
                    Some(cpu::dropout_forward(&h, l.dropout, Dense::dropout_seed(self.seed, i), t))
                }
                _ => None,
            });
            outs.push(h);
        }
        (outs, dropped)
    }

    /// The compiled loss on the last layer's outputs: (loss_rows, dlogits, correct_rows).
    fn loss_cpu(&self, logits: &[f32], labels: &[u32], grad_scale: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let rows = labels.len();
        match self.loss() {
            Loss::SparseCategoricalCrossentropy => {
                cpu::softmax_xent(logits, labels, rows, self.output_dim(), grad_scale)
            }
            Loss::BinaryCrossentropy => cpu::sigmoid_bce_labels(logits, labels, grad_scale),
        }
    }

    fn forward_cpu(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_cpu_all(x, rows).pop().unwrap_or_default()
    }

    /// One step on a gathered batch; returns (Σ loss, Σ correct) over its rows.
    fn train_step_cpu(&mut self, x: &[f32], y: &[u32], optimizer: &Optimizer) -> Result<(f64, f64)> {
        let rows = y.len();
        let step = match &self.state {
            State::Cpu(c) => c.step,
            State::Gpu(_) => 0,
        };
        let (h, dropped) = self.forward_cpu_dropout(x, rows, Some(step));
        let last = self.layers.len() - 1;
        let (loss_rows, dlogits, correct) = self.loss_cpu(&h[last], y, 1.0 / rows as f32);
        let mut grads = vec![0.0f32; self.layout.total];
        let params = self.cpu_params().to_vec();
        let mut dz = dlogits;
        for i in (0..self.layers.len()).rev() {
            let l = self.layers[i];
            let (wo, bo) = self.layout.offsets[i];
            let input = match i {
                0 => x,
                _ => dropped[i - 1].as_ref().map_or(&h[i - 1], |(d, _)| d),
            };
            let dw = cpu::matmul(input, &dz, l.inputs, rows, l.units, true, false);
            grads[wo..wo + dw.len()].copy_from_slice(&dw);
            grads[bo..bo + l.units].copy_from_slice(&cpu::column_sum(&dz, rows, l.units));
            if i > 0 {
                let dh = cpu::matmul(&dz, &params[wo..wo + l.inputs * l.units], rows, l.units, l.inputs, false, true);
                let act = self.layers[i - 1].activation;
                dz = dh.iter().zip(&h[i - 1]).map(|(&g, &o)| g * act.derivative_from_output(o)).collect();
                if let Some((_, mask)) = &dropped[i - 1] {
                    dz = cpu::dropout_backward(&dz, mask);
                }
            }
        }
        if let State::Cpu(c) = &mut self.state {
            c.grads = grads;
            c.step += 1;
            let (p, g, t) = (&mut c.params, &c.grads, c.step);
            let mut slots = c.opt_state.iter_mut().map(Vec::as_mut_slice);
            let (s0, s1) = (slots.next(), slots.next());
            // compile() allocated the slots each rule needs.
            let missing = || WgnnError::invalid("fit", "the optimizer state is missing: compile() the model");
            match optimizer {
                Optimizer::Adam(cfg) => {
                    cpu::adam_update(p, g, s0.ok_or_else(missing)?, s1.ok_or_else(missing)?, t, cfg)
                }
                Optimizer::AdamW(cfg) => {
                    cpu::adamw_update(p, g, s0.ok_or_else(missing)?, s1.ok_or_else(missing)?, t, cfg)
                }
                Optimizer::Sgd(cfg) => cpu::sgd_update_with_step(p, g, s0, t, cfg),
                Optimizer::RmsProp(cfg) => cpu::rmsprop_update(p, g, s0.ok_or_else(missing)?, s1, t, cfg),
                Optimizer::Adagrad(cfg) => cpu::adagrad_update(p, g, s0.ok_or_else(missing)?, t, cfg),
                Optimizer::Adadelta(cfg) => {
                    cpu::adadelta_update(p, g, s0.ok_or_else(missing)?, s1.ok_or_else(missing)?, t, cfg)
                }
            }
        }
        Ok((loss_rows.iter().map(|&v| v as f64).sum(), correct.iter().map(|&v| v as f64).sum()))
    }

    fn fit_cpu(
        &mut self,
        train: &Dataset,
        run: Run,
        opts: &FitOptions,
        observer: &mut dyn Observer,
    ) -> Result<History> {
        let Run { first_epoch, mut history, validation, optimizer } = run;
        let mut best = best_monitored(&history);
        let n = train.rows;
        let batch = opts.batch_size.min(n);
        let steps = n.div_ceil(batch);
        let every = if opts.progress_every > 0 { opts.progress_every } else { steps.div_ceil(DEFAULT_TICKS).max(1) };
        let features = train.to_f32();
        let mut early = opts.early_stopping.map(EarlyStopState::new);
        let mut best_params: Option<Vec<f32>> = None;
        for epoch in first_epoch..=opts.epochs {
            let started = Instant::now();
            let order = epoch_order(n, opts.shuffle, self.seed, epoch);
            let (mut loss_sum, mut correct) = (0.0, 0.0);
            // As on the GPU: the weights at the last good tick and at the one before.
            let mut latest = self.cpu_params().to_vec();
            let mut checked = latest.clone();
            let (mut good, mut kept) = (0, 0);
            for step in 0..steps {
                let start = step * batch;
                let rows = batch.min(n - start);
                let (x, y) =
                    cpu::gather_rows(&features, &train.labels, train.feature_dim, &order, start, rows, 1.0, 0.0, None);
                let (l, c) = self.train_step_cpu(&x, &y, &optimizer)?;
                loss_sum += l;
                correct += c;
                let samples = start + rows;
                if (step + 1) % every == 0 || step + 1 == steps {
                    if !loss_sum.is_finite() {
                        if let State::Cpu(c) = &mut self.state {
                            c.params = checked;
                        }
                        return Err(nonfinite_loss(loss_sum, epoch, good, step + 1, kept));
                    }
                    std::mem::swap(&mut latest, &mut checked);
                    latest.copy_from_slice(self.cpu_params());
                    (kept, good) = (good, step + 1);
                    observer.on_progress(&Progress {
                        epoch,
                        epochs: opts.epochs,
                        step: step + 1,
                        steps,
                        samples,
                        loss: (loss_sum / samples as f64) as f32,
                        accuracy: (correct / samples as f64) as f32,
                        seconds: started.elapsed().as_secs_f64(),
                    });
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let (val_loss, val_accuracy) = match validation {
                Some(v) => {
                    let (l, a) = self.evaluate(v)?;
                    (Some(l), Some(a))
                }
                None => (None, None),
            };
            let train_loss = (loss_sum / n as f64) as f32;
            let record = EpochRecord {
                epoch,
                train_loss,
                train_accuracy: (correct / n as f64) as f32,
                val_loss,
                val_accuracy,
                seconds,
                samples_per_second: n as f64 / seconds,
            };
            observer.on_epoch_end(&record);
            history.push(record);
            self.checkpoint_after_epoch(opts, epoch, &history, &mut best)?;
            if let Some(es) = &mut early {
                let decision = history.last().map(|r| es.observe(r));
                if decision.as_ref().is_some_and(|d| d.improved) && es.cfg.restore_best_weights {
                    best_params = Some(self.cpu_params().to_vec());
                }
                if decision.is_some_and(|d| d.stop) {
                    history.stopped_early_at = Some(epoch);
                    break;
                }
            }
        }
        if let (Some(p), State::Cpu(c)) = (best_params, &mut self.state) {
            c.params = p;
        }
        Ok(history)
    }
}
