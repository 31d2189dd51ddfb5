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
use crate::data::{Dataset, Targets};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::history::{EpochRecord, History};
use crate::init::Initializer;
use crate::kernels::batch_norm::{
    batch_norm_backward, batch_norm_forward_inference, batch_norm_forward_train, BatchNormConfig,
};
use crate::kernels::bias_act::{bias_act_backward, bias_act_forward};
use crate::kernels::dropout::{dropout_backward, dropout_forward};
use crate::kernels::gather::{advance_counters, gather_rows, BatchStart, GpuRows};
use crate::kernels::hinge::hinge;
use crate::kernels::matmul::{matmul, matmul_column_sum, Epilogue, MatmulOptions};
use crate::kernels::mse::{mse, MseOut};
use crate::kernels::optimizer::{
    adadelta_update, adagrad_update, adam_update, adamw_update, rmsprop_update, sgd_update_with_step, AdadeltaConfig,
    AdagradConfig, AdamConfig, RmsPropConfig, SgdConfig,
};
use crate::kernels::sigmoid_bce::{sigmoid_bce, SigmoidBceOut};
use crate::kernels::softmax_grad::softmax_backward;
use crate::kernels::softmax_xent::{softmax, softmax_xent, softmax_xent_dense, SoftmaxXentOut};
use crate::kernels::step_guard::guard_step;
use crate::kernels::Plan;
use crate::rng::Rng;
use crate::tensor::Tensor;

mod io;

/// A fully connected layer: y = act(x·W + b), W: [inputs, units], b: [units]; with `dropout` > 0,
/// inverted dropout of that rate on y while training (Keras' `Dropout` layer after it), the
/// identity in `evaluate` and `predict`.
///
/// With `batch_norm`, y = act(BN(x·W)): batch normalisation of the pre-activation (Keras'
/// `Dense(use_bias=False)` → `BatchNormalization` → `Activation`). BN's shift β takes the place of
/// b (a bias before BN would be subtracted out again), its scale γ [units] is a further trained
/// parameter, and its running mean and variance [units] are kept beside the parameters. Training
/// normalises with the batch's statistics, `evaluate` and `predict` with the running ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dense {
    pub inputs: usize,
    pub units: usize,
    pub activation: Activation,
    pub dropout: f32,
    pub batch_norm: Option<BatchNormConfig>,
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
    /// The same fused softmax cross-entropy against one-hot (or soft) target rows (Keras'
    /// `categorical_crossentropy(from_logits=True)`): the data set's float targets
    /// `[rows, outputs]`, or one-hot rows made from its labels when it has none. Accuracy counts
    /// rows whose argmax matches the target's argmax.
    CategoricalCrossentropy,
    /// Sigmoid fused with binary cross-entropy against labels 0/1 (PyTorch's `BCEWithLogitsLoss`,
    /// Keras' `binary_crossentropy(from_logits=True)`), for a model with one linear output unit.
    /// Accuracy counts σ(z) > 0.5 against the label; `predict` returns σ(z), [rows, 1].
    BinaryCrossentropy,
    /// Binary hinge loss max(0, 1 − y·z) for one linear output unit, y = ±1 from labels 0/1 (or
    /// from float targets [rows, 1]: y = +1 where t > 0). Accuracy counts sign(z) against y;
    /// `predict` returns the raw scores z, [rows, 1].
    Hinge,
    /// Mean squared error against the data set's float targets `[rows, outputs]` (regression;
    /// without targets, a one-output model reads the labels as numbers). Any last activation.
    /// The history's `accuracy` columns hold the **mean absolute error** for this loss (Keras'
    /// `mae` metric); `predict` returns the last layer's outputs.
    MeanSquaredError,
}

impl Loss {
    /// How many distinct labels the loss takes from a model with `outputs` output units; `None`
    /// when it does not read labels as classes.
    fn classes(self, outputs: usize) -> Option<usize> {
        match self {
            Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy => Some(outputs),
            Loss::BinaryCrossentropy | Loss::Hinge => Some(2),
            Loss::MeanSquaredError => None,
        }
    }

    /// The snake-case name (Keras' string for the loss), used in files and on command lines.
    pub fn name(self) -> &'static str {
        match self {
            Loss::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
            Loss::CategoricalCrossentropy => "categorical_crossentropy",
            Loss::BinaryCrossentropy => "binary_crossentropy",
            Loss::Hinge => "hinge",
            Loss::MeanSquaredError => "mean_squared_error",
        }
    }

    /// Parses a Keras loss name: `sparse_categorical_crossentropy`, `categorical_crossentropy`,
    /// `binary_crossentropy`, `hinge`, `mean_squared_error` (or `mse`).
    pub fn parse(name: &str) -> Result<Loss> {
        let all = [
            Loss::SparseCategoricalCrossentropy,
            Loss::CategoricalCrossentropy,
            Loss::BinaryCrossentropy,
            Loss::Hinge,
            Loss::MeanSquaredError,
        ];
        let lower = name.trim().to_lowercase();
        if lower == "mse" {
            return Ok(Loss::MeanSquaredError);
        }
        all.into_iter().find(|l| l.name() == lower).ok_or_else(|| {
            let known: Vec<&str> = all.iter().map(|l| l.name()).collect();
            WgnnError::invalid("loss", format!("unknown loss {name:?}; known: {}, mse", known.join(", ")))
        })
    }

    /// The float targets this loss trains `data` against, `[rows, dim]` (None: it reads the
    /// labels directly). An error when the data's targets do not fit a model of `outputs` units.
    fn float_targets(self, data: &Dataset, outputs: usize) -> Result<Option<Targets>> {
        let labels_as_values = || Targets { values: data.labels.iter().map(|&l| l as f32).collect(), dim: 1 };
        let (want, derived) = match self {
            Loss::SparseCategoricalCrossentropy | Loss::BinaryCrossentropy => return Ok(None),
            Loss::CategoricalCrossentropy => (outputs, Some(Targets { values: data.one_hot(outputs), dim: outputs })),
            Loss::Hinge => (1, Some(labels_as_values())),
            Loss::MeanSquaredError => (outputs, (outputs == 1).then(labels_as_values)),
        };
        match (&data.targets, derived) {
            (Some(t), _) if t.dim == want => Ok(Some(t.clone())),
            (Some(t), _) => Err(WgnnError::shape(
                self.name(),
                format!("{} has targets of width {} but the loss needs {want} per row", data.source, t.dim),
            )),
            (None, Some(d)) => Ok(Some(d)),
            (None, None) => Err(WgnnError::invalid(
                self.name(),
                format!(
                    "{} has no float targets: a {outputs}-output regression needs Dataset::with_targets / \
                     Dataset::regression",
                    data.source
                ),
            )),
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
    /// The optimizer named `name` (Keras' names: `sgd`, `adam`, `adamw`, `rmsprop`, `adagrad`,
    /// `adadelta`; any case) with learning rate `lr` and the constructors' defaults (SGD without
    /// momentum, AdamW's weight decay 0.004 as in Keras).
    pub fn by_name(name: &str, lr: f32) -> Result<Optimizer> {
        match name.trim().to_lowercase().as_str() {
            "sgd" => Ok(Optimizer::sgd(lr, 0.0)),
            "adam" => Ok(Optimizer::adam(lr)),
            "adamw" => Ok(Optimizer::adamw(lr, 0.004)),
            "rmsprop" => Ok(Optimizer::rmsprop(lr)),
            "adagrad" => Ok(Optimizer::adagrad(lr)),
            "adadelta" => Ok(Optimizer::adadelta(lr)),
            _ => Err(WgnnError::invalid(
                "optimizer",
                format!("unknown optimizer {name:?}; known: sgd, adam, adamw, rmsprop, adagrad, adadelta"),
            )),
        }
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
    /// Skip a batch whose loss is not finite — no update, its loss left out of the epoch's — and
    /// count it in [`EpochRecord::skipped_batches`], instead of stopping the run (the default).
    /// The check is on the GPU, inside the step: no readback. Batch-norm running statistics
    /// still see the skipped batch (as with PyTorch's skipped steps).
    pub skip_nonfinite_batches: bool,
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
            skip_nonfinite_batches: false,
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

/// Where each layer's slices sit in the flat parameter buffer (and the gradient and optimizer
/// state buffers, which share its layout): the trained parameters first (`..trainable`), then
/// the batch-norm running statistics, which the optimizer never touches but which are saved,
/// restored and copied with the weights.
#[derive(Clone, Debug)]
struct ParamLayout {
    /// (offset of W, offset of b) per layer, in floats; b is BN's β on a batch-normalised layer.
    offsets: Vec<(usize, usize)>,
    /// Per batch-normalised layer: (offset of γ, offset of running_mean, offset of running_var).
    norm: Vec<Option<(usize, usize, usize)>>,
    /// Floats of trained parameters at the start of the buffer (a multiple of PARAM_ALIGN).
    trainable: usize,
    total: usize,
}

impl ParamLayout {
    fn new(layers: &[Dense]) -> ParamLayout {
        // Each slice starts aligned, so it is bindable as a view.
        fn take(at: &mut usize, n: usize) -> usize {
            let start = *at;
            *at = (*at + n).next_multiple_of(PARAM_ALIGN);
            start
        }
        let mut at = 0;
        let mut offsets = Vec::new();
        let mut gammas = Vec::new();
        for l in layers {
            let w = take(&mut at, l.inputs * l.units);
            offsets.push((w, take(&mut at, l.units)));
            gammas.push(l.batch_norm.map(|_| take(&mut at, l.units)));
        }
        let trainable = at.max(PARAM_ALIGN);
        at = trainable;
        let norm = layers
            .iter()
            .zip(gammas)
            .map(|(l, gamma)| gamma.map(|g| (g, take(&mut at, l.units), take(&mut at, l.units))))
            .collect();
        ParamLayout { offsets, norm, trainable, total: at }
    }
}

/// A batch-normalised layer's state beside W and b (b holds β), each [units].
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormState {
    pub gamma: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
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
    /// u32 [2]: the global step t (Adam's bias correction), carried across epochs, and the skip
    /// flag of the current step (set by step_guard when the batch's loss is not finite).
    global_step: Tensor,
    /// f32 [4]: Σ loss, Σ correct, skipped batches, skipped rows since the last reset.
    totals: Tensor,
    /// f32 [2]: the current batch's Σ loss and Σ correct, when non-finite batches are skipped
    /// (step_guard adds them to `totals` if finite).
    batch_totals: Tensor,
}

impl GpuState {
    /// t alone, u32 [1].
    fn step_t(&self) -> Result<Tensor> {
        self.global_step.view(0, &[1])
    }
}

/// What a CPU forward pass leaves for the backward.
struct CpuPass {
    /// Each layer's output, [rows, units].
    h: Vec<Vec<f32>>,
    /// Per dropout layer when training: (dropped output, mask).
    dropped: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    /// Per batch-normalised layer when training: what its backward needs.
    norm: Vec<Option<CpuNormSaved>>,
    /// The running statistics the pass moved: (offset in the flat parameters, new values).
    running: Vec<(usize, Vec<f32>)>,
}

/// A batch-normalised layer's forward, saved for its backward: x·W [rows, units], and the
/// batch's mean and 1/√(σ² + eps) [units].
struct CpuNormSaved {
    linear: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
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
    /// Trained parameters: W and b (or β) of every layer, and γ of the batch-normalised ones.
    pub fn parameter_count(&self) -> usize {
        self.layers.iter().map(|l| l.inputs * l.units + l.units + l.batch_norm.map_or(0, |_| l.units)).sum()
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

    /// The activation layer `i`'s own kernels apply: the identity where the last layer's softmax
    /// (cross-entropies) or sigmoid (binary cross-entropy) is the one the fused loss applies.
    fn applied_activation(&self, i: usize) -> Activation {
        let act = self.layers[i].activation;
        let fused = i + 1 == self.layers.len()
            && matches!(
                (self.loss(), act),
                (Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy, Activation::Softmax)
                    | (Loss::BinaryCrossentropy, Activation::Sigmoid)
            );
        if fused {
            Activation::Identity
        } else {
            act
        }
    }

    /// Sets the loss and optimizer, and resets the optimizer state.
    pub fn compile(&mut self, loss: Loss, optimizer: Optimizer) -> Result<()> {
        let lr = optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(WgnnError::invalid("compile", format!("learning rate must be finite and > 0, got {lr}")));
        }
        optimizer.validate()?;
        let last = self.layers.last().ok_or_else(|| WgnnError::invalid("compile", "the model has no layers"))?;
        // The fused losses apply their own output function: the last layer is linear, or names
        // that very function (Keras' Dense(10, activation="softmax") + cross-entropy), which the
        // loss then applies.
        let fused = match loss {
            Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy => Some(Activation::Softmax),
            Loss::BinaryCrossentropy => Some(Activation::Sigmoid),
            Loss::Hinge => Some(Activation::Identity),
            Loss::MeanSquaredError => None,
        };
        if let Some(fused) = fused.filter(|&f| last.activation != Activation::Identity && last.activation != f) {
            return Err(WgnnError::invalid(
                "compile",
                format!(
                    "{} applies the {} itself: the last layer must be linear (Activation::Identity) or {}, got {}",
                    loss.name(),
                    if fused == Activation::Identity { "sign" } else { fused.name() },
                    fused.name(),
                    last.activation.name()
                ),
            ));
        }
        match loss {
            Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy if last.units < 2 => {
                return Err(WgnnError::invalid("compile", "softmax cross-entropy needs at least 2 output units"));
            }
            Loss::BinaryCrossentropy | Loss::Hinge if last.units != 1 => {
                return Err(WgnnError::invalid(
                    "compile",
                    format!("{} needs exactly 1 output unit, got {}", loss.name(), last.units),
                ));
            }
            _ => {}
        }
        let slots = optimizer.state_slots();
        match &mut self.state {
            State::Gpu(g) => {
                g.opt_state = (0..slots).map(|_| Tensor::zeros(&g.gpu, &[self.layout.total])).collect::<Result<_>>()?;
                g.epoch_step.write_u32(&[0])?;
                g.global_step.write_u32(&[0, 0])?;
            }
            State::Cpu(c) => {
                c.opt_state = vec![vec![0.0; self.layout.total]; slots];
                c.step = 0;
            }
        }
        self.compiled = Some((loss, optimizer));
        Ok(())
    }

    /// The flat parameter buffer, read back from wherever it lives.
    fn flat_params(&self) -> Result<Vec<f32>> {
        match &self.state {
            State::Gpu(g) => g.params.to_vec(),
            State::Cpu(c) => Ok(c.params.clone()),
        }
    }

    /// Per-layer (W [inputs·units], b [units]), read back from wherever they live (b is BN's β
    /// on a batch-normalised layer; see [`Sequential::batch_norm_state`] for the rest).
    pub fn weights(&self) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        Ok(self.unflatten(&self.flat_params()?))
    }

    /// Layer `i`'s batch-norm γ and running statistics; `None` when the layer is not
    /// batch-normalised.
    pub fn batch_norm_state(&self, i: usize) -> Result<Option<BatchNormState>> {
        let Some(&Some((gamma, mean, var))) = self.layout.norm.get(i) else { return Ok(None) };
        let units = self.layers[i].units;
        let flat = self.flat_params()?;
        let slice = |o: usize| flat[o..o + units].to_vec();
        Ok(Some(BatchNormState { gamma: slice(gamma), running_mean: slice(mean), running_var: slice(var) }))
    }

    /// Replaces every layer's W and b (shapes must match the layers); batch-norm state is kept.
    pub fn set_weights(&mut self, weights: &[(Vec<f32>, Vec<f32>)]) -> Result<()> {
        if weights.len() != self.layers.len() {
            return Err(WgnnError::shape(
                "set_weights",
                format!("{} layers given for a model of {}", weights.len(), self.layers.len()),
            ));
        }
        let mut flat = self.flat_params()?;
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
        let loss = self.loss();
        if let Some(classes) = loss.classes(self.output_dim()) {
            if let Some((row, &label)) = data.labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
                return Err(WgnnError::invalid(
                    op,
                    format!(
                        "{} row {row} has label {label}, out of range for a model with {classes} outputs",
                        data.source
                    ),
                ));
            }
        }
        loss.float_targets(data, self.output_dim())?;
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
        let batch = opts.batch_size.min(train.rows);
        if self.layers.iter().any(|l| l.batch_norm.is_some()) && (batch < 2 || train.rows % batch == 1) {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "batch norm needs at least 2 rows per training batch, but {} rows in batches of {} leave one of \
                     1 row: choose another batch size",
                    train.rows, opts.batch_size
                ),
            ));
        }
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
            State::Gpu(_) => {
                let mut steps = GpuSteps::new(self, train, run.validation, opts, &run.optimizer)?;
                self.fit_loop(train.rows, run, opts, observer, &mut steps)
            }
            State::Cpu(_) => {
                let mut steps = CpuSteps::new(self, train, run.validation, opts, run.optimizer)?;
                self.fit_loop(train.rows, run, opts, observer, &mut steps)
            }
        }
        .map_err(|e| io::with_checkpoint_hint(e, opts.checkpoint.as_ref()))
    }

    /// Mean loss and accuracy over `data`.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<(f32, f32)> {
        self.check_data("evaluate", data)?;
        match &self.state {
            State::Gpu(g) => {
                let gpu = g.gpu.clone();
                let gpu_data = self.upload_data(&gpu, data)?;
                self.evaluate_gpu(&gpu_data)
            }
            State::Cpu(_) => {
                let x = data.to_f32();
                let outputs = self.forward_cpu(&x, data.rows);
                let targets = self.loss().float_targets(data, self.output_dim())?;
                let (loss_rows, _, correct) =
                    self.loss_cpu(&outputs, &data.labels, targets.as_ref().map(|t| t.values.as_slice()), 1.0)?;
                Ok((mean(&loss_rows), mean(&correct)))
            }
        }
    }

    /// The model's predictions for `rows` rows of `x` ([rows, input_dim], already normalised):
    /// class probabilities — softmax [rows, classes] for the cross-entropies (and before
    /// `compile`), σ(z) [rows, 1] for [`Loss::BinaryCrossentropy`] — or the last layer's outputs
    /// for [`Loss::Hinge`] (scores) and [`Loss::MeanSquaredError`] (values).
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
                let gpu_data = GpuData { rows: upload_rows(&gpu, &data)?, targets: None };
                self.predict_gpu(&gpu_data)
            }
            State::Cpu(_) => {
                let outputs = self.forward_cpu(x, rows);
                Ok(match self.loss() {
                    Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy => {
                        cpu::softmax(&outputs, rows, self.output_dim())
                    }
                    Loss::BinaryCrossentropy => outputs.iter().map(|&z| cpu::sigmoid(z)).collect(),
                    Loss::Hinge | Loss::MeanSquaredError => outputs,
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
        self.layers.push(Dense { inputs, units, activation, dropout: 0.0, batch_norm: None });
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

    /// Batch normalisation of the last added layer's pre-activation, with PyTorch's defaults
    /// (eps 1e-5, momentum 0.1): that layer becomes act(BN(x·W)); see [`Dense`]. Not allowed on
    /// the output layer.
    pub fn batch_norm(self) -> SequentialBuilder {
        self.batch_norm_with(BatchNormConfig::default())
    }

    /// [`SequentialBuilder::batch_norm`] with its hyper-parameters (Keras' momentum 0.99 is
    /// momentum 0.01 here).
    pub fn batch_norm_with(mut self, cfg: BatchNormConfig) -> SequentialBuilder {
        if self.error.is_none() {
            match self.layers.last_mut() {
                None => self.error = Some(WgnnError::invalid("batch_norm", "add a dense layer before its batch norm")),
                Some(l) => match cfg.validate("batch_norm") {
                    Ok(()) => l.batch_norm = Some(cfg),
                    Err(e) => self.error = Some(e),
                },
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
        if self.layers.last().is_some_and(|l| l.batch_norm.is_some()) {
            return Err(WgnnError::invalid(
                "build",
                "batch norm on the output layer would normalise the logits: put it on a hidden layer",
            ));
        }
        let layout = ParamLayout::new(&self.layers);
        let mut flat = vec![0.0f32; layout.total];
        let mut rng = Rng::new(self.seed);
        for ((l, &(wo, _)), init) in self.layers.iter().zip(&layout.offsets).zip(&self.inits) {
            let n = l.inputs * l.units;
            flat[wo..wo + n].copy_from_slice(&init.fill(l.inputs, l.units, n, &mut rng));
        }
        // BN starts as the identity map: γ = 1, β = 0, running mean 0 and variance 1.
        for (l, norm) in self.layers.iter().zip(&layout.norm) {
            if let Some((gamma, _, running_var)) = *norm {
                flat[gamma..gamma + l.units].fill(1.0);
                flat[running_var..running_var + l.units].fill(1.0);
            }
        }
        let state = match backend {
            Backend::Gpu(gpu) => State::Gpu(Box::new(GpuState {
                gpu: gpu.clone(),
                params: Tensor::from_slice(gpu, &[layout.total], &flat)?,
                grads: Tensor::zeros(gpu, &[layout.total])?,
                opt_state: Vec::new(),
                epoch_step: Tensor::zeros_u32(gpu, &[1])?,
                global_step: Tensor::zeros_u32(gpu, &[2])?,
                totals: Tensor::zeros(gpu, &[4])?,
                batch_totals: Tensor::zeros(gpu, &[2])?,
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

/// Rows per evaluation batch at most: large, to keep the dispatch count low (fewer where the
/// device's buffers cannot hold that many rows of the widest layer; see `eval_batch`).
const EVAL_BATCH: usize = 2048;

// ---------------------------------------------------------------------------------------------
// GPU path

/// Uploads a data set once: u8 features stay u8 (packed 4 per word), f32 as bits; split into
/// chunks of whole rows where one binding cannot hold it.
fn upload_rows(gpu: &Gpu, data: &Dataset) -> Result<GpuRows> {
    let mean_std = match &data.standardize {
        Some((m, s)) => Some(Tensor::from_slice(gpu, &[2, data.feature_dim], &[m.as_slice(), s.as_slice()].concat())?),
        None => None,
    };
    Ok(GpuRows {
        scale: data.scale,
        shift: data.shift,
        mean_std,
        ..GpuRows::upload(gpu, &data.features, &data.labels, data.feature_dim)?
    })
}

/// A data set on the GPU for a loss: its rows, and the float targets the loss reads, if any
/// (gathered by the same index list as the rows).
struct GpuData {
    rows: GpuRows,
    targets: Option<GpuRows>,
}

impl Sequential {
    fn upload_data(&self, gpu: &Gpu, data: &Dataset) -> Result<GpuData> {
        let targets = match self.loss().float_targets(data, self.output_dim())? {
            Some(t) => {
                let rows = t.values.len() / t.dim;
                let as_rows =
                    Dataset::from_f32(t.values, vec![0; rows], t.dim, 1, &format!("{} targets", data.source))?;
                Some(upload_rows(gpu, &as_rows)?)
            }
            None => None,
        };
        Ok(GpuData { rows: upload_rows(gpu, data)?, targets })
    }
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
    /// The batch's float targets [rows, dim] and the gather's scratch labels [rows], for losses
    /// that read targets.
    targets: Option<(Tensor, Tensor)>,
    /// Per batch-normalised layer, its intermediates.
    norm: Vec<Option<NormBuffers>>,
    /// Per softmax layer: (the softmax's input [rows, units], and when training the gradient
    /// w.r.t. its output [rows, units]).
    softmax: Vec<Option<(Tensor, Tensor)>>,
    training: bool,
    /// Mean squared error's gradient w.r.t. the last layer's output [rows, outputs], when training
    /// through a non-linear last activation (the loss writes it, a backward dispatch turns it
    /// into dz).
    dpred: Option<Tensor>,
}

/// A batch-normalised layer's intermediates for one batch.
struct NormBuffers {
    /// x·W, [rows, units].
    linear: Tensor,
    /// BN(x·W), the activation's input, [rows, units].
    normed: Tensor,
    /// The gradient w.r.t. `linear`, [rows, units] (training only, else unused).
    dlinear: Tensor,
    /// The batch's mean and 1/√(σ² + eps), [units], saved by the forward for the backward.
    mean: Tensor,
    inv_std: Tensor,
}

impl BatchBuffers {
    /// What layer `i + 1` reads: layer i's output after dropout, if any.
    fn layer_input<'b>(&'b self, x_or_h: &'b Tensor, i: usize) -> &'b Tensor {
        self.dropout.get(i).and_then(Option::as_ref).map_or(x_or_h, |(dropped, _, _)| dropped)
    }

    /// `target_dim`: the width of the loss's float targets, if it reads any; `dpred`: allocate
    /// [`BatchBuffers::dpred`].
    /// `acts`: each layer's applied activation.
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        layers: &[Dense],
        acts: &[Activation],
        input_dim: usize,
        rows: usize,
        training: bool,
        target_dim: Option<usize>,
        dpred: bool,
    ) -> Result<BatchBuffers> {
        let outputs = layers.last().map_or(input_dim, |l| l.units);
        Ok(BatchBuffers {
            softmax: layers
                .iter()
                .zip(acts)
                .map(|(l, &act)| match act {
                    Activation::Softmax => {
                        let grad =
                            if training { Tensor::zeros(gpu, &[rows, l.units])? } else { Tensor::zeros(gpu, &[1])? };
                        Ok(Some((Tensor::zeros(gpu, &[rows, l.units])?, grad)))
                    }
                    _ => Ok(None),
                })
                .collect::<Result<_>>()?,
            targets: match target_dim {
                Some(d) => Some((Tensor::zeros(gpu, &[rows, d])?, Tensor::zeros_u32(gpu, &[rows])?)),
                None => None,
            },
            dpred: if training && dpred { Some(Tensor::zeros(gpu, &[rows, outputs])?) } else { None },
            norm: layers
                .iter()
                .map(|l| match l.batch_norm {
                    Some(_) => {
                        let t = || Tensor::zeros(gpu, &[rows, l.units]);
                        let dlinear = if training { t()? } else { Tensor::zeros(gpu, &[1])? };
                        let (mean, inv_std) = (Tensor::zeros(gpu, &[l.units])?, Tensor::zeros(gpu, &[l.units])?);
                        Ok(Some(NormBuffers { linear: t()?, normed: t()?, dlinear, mean, inv_std }))
                    }
                    None => Ok(None),
                })
                .collect::<Result<_>>()?,
            training,
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

    /// The buffers of one batch of `rows` rows of `data`.
    fn batch_buffers(&self, gpu: &Gpu, data: &GpuData, rows: usize, training: bool) -> Result<BatchBuffers> {
        let acts: Vec<Activation> = (0..self.layers.len()).map(|i| self.applied_activation(i)).collect();
        let last = acts.last().copied().unwrap_or(Activation::Identity);
        let dpred = self.loss() == Loss::MeanSquaredError && last != Activation::Identity;
        let target_dim = data.targets.as_ref().map(|t| t.dim);
        BatchBuffers::new(gpu, &self.layers, &acts, self.input_dim, rows, training, target_dim, dpred)
    }

    /// γ, running mean and running variance of batch-normalised layer `i` as views into `flat`
    /// (params, or grads for dγ).
    fn norm_views(&self, flat: &Tensor, i: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let units = self.layers[i].units;
        let (gamma, mean, var) = self.layout.norm[i]
            .ok_or_else(|| WgnnError::invalid("batch_norm", format!("layer {i} is not batch-normalised")))?;
        Ok((flat.view(gamma, &[units])?, flat.view(mean, &[units])?, flat.view(var, &[units])?))
    }

    /// gather → forward: the first half of every plan. The gathered labels' range is marked so the
    /// loss kernel can check it without a readback.
    fn forward_plan(
        &self,
        data: &GpuData,
        order: &Tensor,
        epoch_step: &Tensor,
        start: BatchStart,
        buf: &mut BatchBuffers,
    ) -> Result<Plan> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        buf.y.set_max_u32(data.rows.labels.max_u32());
        let mut plan = gather_rows(gpu, &data.rows, order, epoch_step, start, &buf.x, &buf.y)?;
        if let (Some(rows), Some((t, scratch))) = (&data.targets, &buf.targets) {
            plan.extend(gather_rows(gpu, rows, order, epoch_step, start, t, scratch)?);
        }
        for i in 0..self.layers.len() {
            let (w, b) = self.layer_views(&g.params, i)?;
            let input = if i == 0 { &buf.x } else { buf.layer_input(&buf.h[i - 1], i - 1) };
            let act = self.applied_activation(i);
            let softmax_input = buf.softmax[i].as_ref().map(|(pre, _)| pre);
            match (&buf.norm[i], self.layers[i].batch_norm) {
                (Some(nb), Some(cfg)) => {
                    // x·W → BN (batch statistics when training, running ones otherwise) → act.
                    let (gamma, running_mean, running_var) = self.norm_views(&g.params, i)?;
                    plan.extend(matmul(gpu, input, &w, &nb.linear, &MatmulOptions::default())?);
                    plan.extend(if buf.training {
                        let (mean, inv_std) = (&nb.mean, &nb.inv_std);
                        let (lin, normed) = (&nb.linear, &nb.normed);
                        batch_norm_forward_train(
                            gpu,
                            lin,
                            &gamma,
                            &b,
                            normed,
                            mean,
                            inv_std,
                            &running_mean,
                            &running_var,
                            &cfg,
                        )?
                    } else {
                        batch_norm_forward_inference(
                            gpu,
                            &nb.linear,
                            &gamma,
                            &b,
                            &running_mean,
                            &running_var,
                            &nb.normed,
                            &cfg,
                        )?
                    });
                    plan.extend(match softmax_input {
                        Some(_) => softmax(gpu, &nb.normed, &buf.h[i])?,
                        None => bias_act_forward(gpu, &nb.normed, None, &buf.h[i], act)?,
                    });
                }
                _ => {
                    // act(x·W + b) in the matmul's epilogue; softmax, being row-wise, after it.
                    let (epilogue, out) = match softmax_input {
                        Some(pre) => (Epilogue::BiasAct { bias: Some(&b), act: Activation::Identity }, pre),
                        None => (Epilogue::BiasAct { bias: Some(&b), act }, &buf.h[i]),
                    };
                    plan.extend(matmul(gpu, input, &w, out, &MatmulOptions { epilogue, ..Default::default() })?);
                    if let Some(pre) = softmax_input {
                        plan.extend(softmax(gpu, pre, &buf.h[i])?);
                    }
                }
            }
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
                    &g.step_t()?,
                )?);
            }
        }
        Ok(plan)
    }

    /// The compiled loss on the last layer's outputs in `buf` (labels `buf.y` or targets
    /// `buf.targets`), adding its sums to `totals`; `dlogits` — the gradient w.r.t. the last
    /// layer's pre-activation, scaled by `grad_scale` — when training.
    fn loss_plan(
        &self,
        buf: &BatchBuffers,
        dlogits: Option<&Tensor>,
        totals: &Tensor,
        grad_scale: f32,
    ) -> Result<Plan> {
        let gpu = &self.gpu_state()?.gpu;
        let logits = &buf.h[self.layers.len() - 1];
        let targets = || {
            buf.targets.as_ref().map(|(t, _)| t).ok_or_else(|| {
                WgnnError::invalid(self.loss().name(), "the batch has no float targets (an internal plan error)")
            })
        };
        let xent_out = SoftmaxXentOut {
            loss_rows: &buf.loss_rows,
            dlogits,
            correct_rows: &buf.correct_rows,
            totals: Some(totals),
        };
        let single_out =
            SigmoidBceOut { loss_rows: &buf.loss_rows, dlogits, correct_rows: &buf.correct_rows, totals: Some(totals) };
        match self.loss() {
            Loss::SparseCategoricalCrossentropy => softmax_xent(gpu, logits, &buf.y, grad_scale, &xent_out),
            Loss::CategoricalCrossentropy => softmax_xent_dense(gpu, logits, targets()?, grad_scale, &xent_out),
            Loss::BinaryCrossentropy => sigmoid_bce(gpu, logits, &buf.y, grad_scale, &single_out),
            Loss::Hinge => hinge(gpu, logits, targets()?, grad_scale, &single_out),
            Loss::MeanSquaredError => {
                // Through a non-linear last activation the loss's gradient w.r.t. the output goes
                // to `dpred` first, then dz = dpred ⊙ act′(output).
                let via_dpred = dlogits.and(buf.dpred.as_ref());
                let out = MseOut {
                    loss_rows: &buf.loss_rows,
                    dpred: via_dpred.or(dlogits),
                    abs_rows: &buf.correct_rows,
                    totals: Some(totals),
                };
                let mut plan = mse(gpu, logits, targets()?, grad_scale, &out)?;
                if let (Some(dpred), Some(dz)) = (via_dpred, dlogits) {
                    plan.extend(match self.applied_activation(self.layers.len() - 1) {
                        Activation::Softmax => softmax_backward(gpu, dpred, logits, dz)?,
                        act => bias_act_backward(gpu, dpred, logits, dz, None, act, false)?,
                    });
                }
                Ok(plan)
            }
        }
    }

    /// One training step for `batch` rows taken at `epoch_step * stride` of `order`. `guarded`:
    /// a batch whose loss is not finite leaves the weights, optimizer state and t unchanged and is
    /// counted in `totals` (step_guard) instead of stopping the run at the next tick.
    fn train_step_plan(
        &self,
        data: &GpuData,
        order: &Tensor,
        batch: usize,
        stride: usize,
        optimizer: &Optimizer,
        guarded: bool,
    ) -> Result<(Plan, BatchBuffers)> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let mut buf = self.batch_buffers(gpu, data, batch, true)?;
        let start = BatchStart::Counter { stride };
        let mut plan = self.forward_plan(data, order, &g.epoch_step, start, &mut buf)?;
        let last = self.layers.len() - 1;
        // Guarded, the loss sums go to the batch's own totals, which step_guard checks.
        let totals = if guarded { g.batch_totals.clone() } else { g.totals.view(0, &[2])? };
        plan.extend(self.loss_plan(&buf, Some(&buf.dz[last]), &totals, 1.0 / batch as f32)?);
        for i in (0..self.layers.len()).rev() {
            let (dw, db) = self.layer_views(&g.grads, i)?;
            let input = if i == 0 { &buf.x } else { buf.layer_input(&buf.h[i - 1], i - 1) };
            // dlinear: the gradient w.r.t. x·W — dZ itself, or through BN's backward, which
            // also writes dγ and dβ (β sits in b's slot).
            let dlinear = match &buf.norm[i] {
                Some(nb) => {
                    let (gamma, _, _) = self.norm_views(&g.params, i)?;
                    let (dgamma, _, _) = self.norm_views(&g.grads, i)?;
                    let (mean, inv_std) = (&nb.mean, &nb.inv_std);
                    plan.extend(batch_norm_backward(
                        gpu,
                        &buf.dz[i],
                        &nb.linear,
                        &gamma,
                        mean,
                        inv_std,
                        &nb.dlinear,
                        &dgamma,
                        &db,
                        false,
                    )?);
                    &nb.dlinear
                }
                None => &buf.dz[i],
            };
            // dW = inputᵀ · dlinear, with db = Σ_rows dZ in the same dispatch where the kernel
            // allows (without BN; BN's backward wrote dβ into b's slot).
            let options = MatmulOptions { trans_a: true, ..Default::default() };
            match &buf.norm[i] {
                Some(_) => plan.extend(matmul(gpu, input, dlinear, &dw, &options)?),
                None => plan.extend(matmul_column_sum(gpu, input, dlinear, &dw, &db, &options)?),
            }
            if i > 0 {
                let (w, _) = self.layer_views(&g.params, i)?;
                let dropout = buf.dropout[i - 1].as_ref();
                match &buf.softmax[i - 1] {
                    None => {
                        // dZ_prev = (dlinear · Wᵀ) ⊙ act′(h_prev), then ⊙ the dropout mask if any
                        let act = self.applied_activation(i - 1);
                        let epilogue = Epilogue::ActGrad { y: &buf.h[i - 1], act };
                        let out = dropout.map_or(&buf.dz[i - 1], |(_, _, before_mask)| before_mask);
                        let options = MatmulOptions { trans_b: true, epilogue, ..Default::default() };
                        plan.extend(matmul(gpu, dlinear, &w, out, &options)?);
                        if let Some((_, mask, before_mask)) = dropout {
                            plan.extend(dropout_backward(gpu, before_mask, mask, &buf.dz[i - 1])?);
                        }
                    }
                    Some((_, dh)) => {
                        // A softmax layer: dh = dlinear · Wᵀ (⊙ the dropout mask), then the
                        // row-wise softmax backward into dZ_prev.
                        let options = MatmulOptions { trans_b: true, ..Default::default() };
                        plan.extend(matmul(gpu, dlinear, &w, dh, &options)?);
                        let dh = match dropout {
                            Some((_, mask, after_mask)) => {
                                plan.extend(dropout_backward(gpu, dh, mask, after_mask)?);
                                after_mask
                            }
                            None => dh,
                        };
                        plan.extend(softmax_backward(gpu, dh, &buf.h[i - 1], &buf.dz[i - 1])?);
                    }
                }
            }
        }
        // The step tensor t drives bias corrections and learning-rate schedules on the GPU; guarded,
        // it is [t, skip] and the update does nothing for a skipped batch. The update covers the
        // trained parameters only, not the running statistics after them.
        let t = if guarded {
            plan.extend(guard_step(gpu, &g.epoch_step, &g.global_step, &g.batch_totals, &g.totals, batch)?);
            g.global_step.clone()
        } else {
            let t = g.step_t()?;
            plan.extend(advance_counters(gpu, &g.epoch_step, &t)?);
            t
        };
        let t = &t;
        let trained = |flat: &Tensor| flat.view(0, &[self.layout.trainable]);
        let (p, gr) = (&trained(&g.params)?, &trained(&g.grads)?);
        let s = &g.opt_state.iter().map(trained).collect::<Result<Vec<_>>>()?;
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
        let gpu_data = self.upload_data(&gpu, data)?;
        let batch = batch_size.clamp(1, data.rows);
        let order = Tensor::from_u32(&gpu, &[data.rows], &epoch_order(data.rows, false, 0, 0))?;
        let (plan, _buffers) = self.train_step_plan(&gpu_data, &order, batch, batch, &optimizer, false)?;
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

    fn read_totals(&self) -> Result<RunningSums> {
        let t = self.gpu_state()?.totals.to_vec()?;
        Ok(RunningSums {
            loss: t[0] as f64,
            correct: t[1] as f64,
            skipped_batches: t[2] as usize,
            skipped_rows: t[3] as usize,
        })
    }

    fn reset_epoch(&self) -> Result<()> {
        let g = self.gpu_state()?;
        g.totals.write(&[0.0; 4])?;
        g.batch_totals.write(&[0.0; 2])?;
        // Only the in-epoch step: the global step t carries across epochs.
        g.epoch_step.write_u32(&[0])
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

    /// Rows per evaluation batch: `EVAL_BATCH`, or fewer so that a batch of the widest row (input,
    /// layer outputs, targets) fits one storage binding and one buffer.
    fn eval_batch(&self, gpu: &Gpu, data: &GpuData) -> usize {
        let limits = gpu.limits();
        let bytes = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let widest =
            self.layers.iter().map(|l| l.units).chain([self.input_dim, data.targets.as_ref().map_or(1, |t| t.dim)]);
        let row_bytes = 4 * widest.max().unwrap_or(1) as u64;
        (bytes / row_bytes).clamp(1, EVAL_BATCH as u64) as usize
    }

    /// Forward passes over `rows` in batches of up to `EVAL_BATCH`, then (loss, accuracy).
    fn evaluate_gpu(&self, data: &GpuData) -> Result<(f32, f32)> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let n = data.rows.total_rows;
        let order: Vec<u32> = (0..n as u32).collect();
        let order = Tensor::from_u32(gpu, &[n], &order)?;
        let totals = Tensor::zeros(gpu, &[2])?;
        let epoch_step = Tensor::zeros_u32(gpu, &[1])?;
        let mut plans = Vec::new();
        let mut start = 0;
        while start < n {
            let batch = self.eval_batch(gpu, data).min(n - start);
            let mut buf = self.batch_buffers(gpu, data, batch, false)?;
            let mut plan = self.forward_plan(data, &order, &epoch_step, BatchStart::At(start), &mut buf)?;
            plan.extend(self.loss_plan(&buf, None, &totals, 1.0)?);
            plans.push(plan);
            start += batch;
        }
        gpu.run(&plans.iter().collect::<Vec<_>>())?;
        let t = totals.to_vec()?;
        Ok(((t[0] as f64 / n as f64) as f32, (t[1] as f64 / n as f64) as f32))
    }

    fn predict_gpu(&self, data: &GpuData) -> Result<Vec<f32>> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let n = data.rows.total_rows;
        let order: Vec<u32> = (0..n as u32).collect();
        let order = Tensor::from_u32(gpu, &[n], &order)?;
        let epoch_step = Tensor::zeros_u32(gpu, &[1])?;
        let classes = self.output_dim();
        let probs = Tensor::zeros(gpu, &[n, classes])?;
        let last = self.layers.len() - 1;
        let mut start = 0;
        let mut plans = Vec::new();
        while start < n {
            let batch = self.eval_batch(gpu, data).min(n - start);
            let mut buf = self.batch_buffers(gpu, data, batch, false)?;
            let mut plan = self.forward_plan(data, &order, &epoch_step, BatchStart::At(start), &mut buf)?;
            let out = probs.view(start * classes, &[batch, classes])?;
            plan.extend(match self.loss() {
                Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy => {
                    softmax(gpu, &buf.h[last], &out)?
                }
                Loss::BinaryCrossentropy => bias_act_forward(gpu, &buf.h[last], None, &out, Activation::Sigmoid)?,
                // The last layer's outputs as they are (a copy through the identity).
                Loss::Hinge | Loss::MeanSquaredError => {
                    bias_act_forward(gpu, &buf.h[last], None, &out, Activation::Identity)?
                }
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
        self.forward_cpu_pass(x, rows, None).h
    }

    /// A forward pass; with `step` (training) dropout draws the masks of that step and batch
    /// norm uses the batch's statistics (and reports the running averages it moves).
    fn forward_cpu_pass(&self, x: &[f32], rows: usize, step: Option<u32>) -> CpuPass {
        let params = self.cpu_params();
        let n = self.layers.len();
        let mut pass = CpuPass {
            h: Vec::with_capacity(n),
            dropped: Vec::with_capacity(n),
            norm: Vec::with_capacity(n),
            running: Vec::new(),
        };
        for (i, l) in self.layers.iter().enumerate() {
            let (wo, bo) = self.layout.offsets[i];
            let input = match i {
                0 => x,
                _ => pass.dropped[i - 1].as_ref().map_or(&pass.h[i - 1], |(d, _)| d),
            };
            let linear =
                cpu::matmul(input, &params[wo..wo + l.inputs * l.units], rows, l.inputs, l.units, false, false);
            let bias = &params[bo..bo + l.units];
            let act = self.applied_activation(i);
            let (h, norm) = match (l.batch_norm, self.layout.norm[i]) {
                (Some(cfg), Some((go, mo, vo))) => {
                    let gamma = &params[go..go + l.units];
                    let (mut mean, mut var) = (params[mo..mo + l.units].to_vec(), params[vo..vo + l.units].to_vec());
                    let (normed, saved) = match step {
                        Some(_) => {
                            let (normed, batch_mean, inv_std) = cpu::batch_norm_forward_train(
                                &linear, gamma, bias, &mut mean, &mut var, rows, l.units, &cfg,
                            );
                            pass.running.push((mo, mean));
                            pass.running.push((vo, var));
                            (normed, Some((batch_mean, inv_std)))
                        }
                        None => (
                            cpu::batch_norm_forward_inference(&linear, gamma, bias, &mean, &var, rows, l.units, &cfg),
                            None,
                        ),
                    };
                    let h = match act {
                        Activation::Softmax => cpu::softmax(&normed, rows, l.units),
                        _ => cpu::bias_act_forward(&normed, None, rows, l.units, act),
                    };
                    (h, saved.map(|(mean, inv_std)| CpuNormSaved { linear, mean, inv_std }))
                }
                _ => match act {
                    Activation::Softmax => {
                        let pre = cpu::bias_act_forward(&linear, Some(bias), rows, l.units, Activation::Identity);
                        (cpu::softmax(&pre, rows, l.units), None)
                    }
                    _ => (cpu::bias_act_forward(&linear, Some(bias), rows, l.units, act), None),
                },
            };
            pass.dropped.push(match step {
                Some(t) if l.dropout > 0.0 => {
                    Some(cpu::dropout_forward(&h, l.dropout, Dense::dropout_seed(self.seed, i), t))
                }
                _ => None,
            });
            pass.norm.push(norm);
            pass.h.push(h);
        }
        pass
    }

    /// The compiled loss on the last layer's outputs `[rows, outputs]`, against `labels` or the
    /// float `targets` (`[rows, dim]`, for the losses that read them): (loss_rows, dz of the last
    /// layer, correct_rows — or absolute-error rows for mean squared error).
    fn loss_cpu(
        &self,
        outputs: &[f32],
        labels: &[u32],
        targets: Option<&[f32]>,
        grad_scale: f32,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let rows = labels.len();
        let loss = self.loss();
        let targets = || targets.ok_or_else(|| WgnnError::invalid(loss.name(), "no float targets (an internal error)"));
        Ok(match loss {
            Loss::SparseCategoricalCrossentropy => {
                cpu::softmax_xent(outputs, labels, rows, self.output_dim(), grad_scale)
            }
            Loss::CategoricalCrossentropy => {
                cpu::softmax_xent_dense(outputs, targets()?, rows, self.output_dim(), grad_scale)
            }
            Loss::BinaryCrossentropy => cpu::sigmoid_bce_labels(outputs, labels, grad_scale),
            Loss::Hinge => cpu::hinge(outputs, targets()?, grad_scale),
            Loss::MeanSquaredError => {
                let (loss_rows, dpred, abs_rows) = cpu::mse(outputs, targets()?, rows, self.output_dim(), grad_scale);
                let dz = match self.applied_activation(self.layers.len() - 1) {
                    Activation::Softmax => cpu::softmax_backward(&dpred, outputs, rows, self.output_dim()),
                    act => dpred.iter().zip(outputs).map(|(&g, &o)| g * act.derivative_from_output(o)).collect(),
                };
                (loss_rows, dz, abs_rows)
            }
        })
    }

    fn forward_cpu(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_cpu_all(x, rows).pop().unwrap_or_default()
    }

    /// One step on a gathered batch (labels `y`, float targets `t` when the loss reads them);
    /// returns (Σ loss, Σ correct) over its rows, or None when `skip_nonfinite` and the loss is
    /// not finite: then only the batch-norm running statistics move (as step_guard on the GPU).
    fn train_step_cpu(
        &mut self,
        x: &[f32],
        y: &[u32],
        t: Option<&[f32]>,
        optimizer: &Optimizer,
        skip_nonfinite: bool,
    ) -> Result<Option<(f64, f64)>> {
        let rows = y.len();
        let step = match &self.state {
            State::Cpu(c) => c.step,
            State::Gpu(_) => 0,
        };
        let CpuPass { h, dropped, norm, running } = self.forward_cpu_pass(x, rows, Some(step));
        let last = self.layers.len() - 1;
        let (loss_rows, dlogits, correct) = self.loss_cpu(&h[last], y, t, 1.0 / rows as f32)?;
        // The GPU checks its f32 batch sum; so does this.
        let skip = skip_nonfinite && !loss_rows.iter().sum::<f32>().is_finite();
        if skip {
            if let State::Cpu(c) = &mut self.state {
                for (offset, values) in running {
                    c.params[offset..offset + values.len()].copy_from_slice(&values);
                }
            }
            return Ok(None);
        }
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
            // dz is the gradient w.r.t. the pre-activation; through BN's backward it becomes the
            // gradient w.r.t. x·W, with dγ and dβ (in b's slot) on the way.
            let dlinear = match (&norm[i], self.layout.norm[i]) {
                (Some(saved), Some((go, _, _))) => {
                    let gamma = &params[go..go + l.units];
                    let (dlinear, dgamma, dbeta) =
                        cpu::batch_norm_backward(&dz, &saved.linear, gamma, &saved.mean, &saved.inv_std, rows, l.units);
                    grads[go..go + l.units].copy_from_slice(&dgamma);
                    grads[bo..bo + l.units].copy_from_slice(&dbeta);
                    dlinear
                }
                _ => {
                    grads[bo..bo + l.units].copy_from_slice(&cpu::column_sum(&dz, rows, l.units));
                    std::mem::take(&mut dz)
                }
            };
            let dw = cpu::matmul(input, &dlinear, l.inputs, rows, l.units, true, false);
            grads[wo..wo + dw.len()].copy_from_slice(&dw);
            if i > 0 {
                let w = &params[wo..wo + l.inputs * l.units];
                let dh = cpu::matmul(&dlinear, w, rows, l.units, l.inputs, false, true);
                let units = self.layers[i - 1].units;
                dz = match self.applied_activation(i - 1) {
                    // Row-wise: the dropout mask first, then the softmax backward (as on the GPU).
                    Activation::Softmax => {
                        let dh = match &dropped[i - 1] {
                            Some((_, mask)) => cpu::dropout_backward(&dh, mask),
                            None => dh,
                        };
                        cpu::softmax_backward(&dh, &h[i - 1], rows, units)
                    }
                    act => {
                        let dz: Vec<f32> =
                            dh.iter().zip(&h[i - 1]).map(|(&g, &o)| g * act.derivative_from_output(o)).collect();
                        match &dropped[i - 1] {
                            Some((_, mask)) => cpu::dropout_backward(&dz, mask),
                            None => dz,
                        }
                    }
                };
            }
        }
        let trainable = self.layout.trainable;
        if let State::Cpu(c) = &mut self.state {
            for (offset, values) in running {
                c.params[offset..offset + values.len()].copy_from_slice(&values);
            }
            c.grads = grads;
            c.step += 1;
            // As on the GPU, the update covers the trained parameters, not the running statistics.
            let (p, g, t) = (&mut c.params[..trainable], &c.grads[..trainable], c.step);
            let mut slots = c.opt_state.iter_mut().map(|s| &mut s[..trainable]);
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
        Ok(Some((loss_rows.iter().map(|&v| v as f64).sum(), correct.iter().map(|&v| v as f64).sum())))
    }
}

// ---------------------------------------------------------------------------------------------
// The epoch loop of `fit`, shared by both backends.

/// What the epoch loop asks of a backend.
trait Steps {
    /// Starts `epoch`: its row order, and zeroed running sums.
    fn start_epoch(&mut self, model: &mut Sequential, epoch: usize) -> Result<()>;
    /// Runs steps `first..first + count` of the epoch; returns the running sums since the epoch
    /// began.
    fn run(&mut self, model: &mut Sequential, first: usize, count: usize) -> Result<RunningSums>;
    /// (loss, accuracy) on the validation data, if there is any.
    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>>;
}

/// An epoch's running sums over the batches trained on (skipped ones are only counted).
#[derive(Clone, Copy, Debug, Default)]
struct RunningSums {
    loss: f64,
    correct: f64,
    skipped_batches: usize,
    skipped_rows: usize,
}

/// A copy of the flat parameters (and running statistics): device-side on the GPU backend.
enum Snapshot {
    Gpu(Tensor),
    Cpu(Vec<f32>),
}

impl Sequential {
    fn snapshot(&self) -> Result<Snapshot> {
        Ok(match &self.state {
            State::Gpu(g) => {
                let copy = Tensor::zeros(&g.gpu, &[self.layout.total])?;
                copy.copy_from(&g.params)?;
                Snapshot::Gpu(copy)
            }
            State::Cpu(c) => Snapshot::Cpu(c.params.clone()),
        })
    }

    fn save_snapshot(&self, snapshot: &mut Snapshot) -> Result<()> {
        match (&self.state, snapshot) {
            (State::Gpu(g), Snapshot::Gpu(copy)) => copy.copy_from(&g.params),
            (State::Cpu(c), Snapshot::Cpu(copy)) => {
                copy.copy_from_slice(&c.params);
                Ok(())
            }
            _ => Err(WgnnError::invalid("fit", "a weight snapshot from the other backend (an internal error)")),
        }
    }

    fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        match (&mut self.state, snapshot) {
            (State::Gpu(g), Snapshot::Gpu(copy)) => g.params.copy_from(copy),
            (State::Cpu(c), Snapshot::Cpu(copy)) => {
                c.params.copy_from_slice(copy);
                Ok(())
            }
            _ => Err(WgnnError::invalid("fit", "a weight snapshot from the other backend (an internal error)")),
        }
    }

    /// Epochs `run.first_epoch..=opts.epochs` over `rows` training rows: progress ticks with the
    /// non-finite check, validation, the history, checkpoints and early stopping.
    fn fit_loop(
        &mut self,
        rows: usize,
        run: Run,
        opts: &FitOptions,
        observer: &mut dyn Observer,
        backend: &mut dyn Steps,
    ) -> Result<History> {
        let Run { first_epoch, mut history, .. } = run;
        let batch = opts.batch_size.min(rows);
        let steps = rows.div_ceil(batch);
        let every = if opts.progress_every > 0 { opts.progress_every } else { steps.div_ceil(DEFAULT_TICKS).max(1) };
        let mut best = best_monitored(&history);
        let mut early = opts.early_stopping.map(EarlyStopState::new);
        // The weights at the last tick whose running loss was finite (`latest`) and at the one
        // before (`checked`: the steps since used them and their loss was finite).
        let (mut latest, mut checked) = (self.snapshot()?, self.snapshot()?);
        // The best epoch's weights, when early stopping restores them.
        let mut best_weights = match opts.early_stopping {
            Some(es) if es.restore_best_weights => Some(self.snapshot()?),
            _ => None,
        };
        let mut have_best = false;

        for epoch in first_epoch..=opts.epochs {
            let started = Instant::now();
            backend.start_epoch(self, epoch)?;
            self.save_snapshot(&mut latest)?;
            self.save_snapshot(&mut checked)?;
            let (mut good, mut kept, mut done) = (0, 0, 0);
            let mut sums = RunningSums::default();
            // Means over the rows trained on (skipped batches' rows left out; all of them skipped
            // is a NaN mean).
            let mean = |sum: f64, samples: usize, skipped: usize| (sum / (samples - skipped) as f64) as f32;
            while done < steps {
                let count = every.min(steps - done);
                sums = backend.run(self, done, count)?;
                done += count;
                if !sums.loss.is_finite() {
                    self.restore_snapshot(&checked)?;
                    return Err(nonfinite_loss(sums.loss, epoch, good, done, kept));
                }
                std::mem::swap(&mut latest, &mut checked);
                self.save_snapshot(&mut latest)?;
                (kept, good) = (good, done);
                let samples = (done * batch).min(rows);
                observer.on_progress(&Progress {
                    epoch,
                    epochs: opts.epochs,
                    step: done,
                    steps,
                    samples,
                    loss: mean(sums.loss, samples, sums.skipped_rows),
                    accuracy: mean(sums.correct, samples, sums.skipped_rows),
                    seconds: started.elapsed().as_secs_f64(),
                });
            }
            let seconds = started.elapsed().as_secs_f64();
            let (val_loss, val_accuracy) = backend.validate(self)?.unzip();
            let record = EpochRecord {
                epoch,
                train_loss: mean(sums.loss, rows, sums.skipped_rows),
                train_accuracy: mean(sums.correct, rows, sums.skipped_rows),
                val_loss,
                val_accuracy,
                seconds,
                samples_per_second: rows as f64 / seconds,
                skipped_batches: sums.skipped_batches,
            };
            observer.on_epoch_end(&record);
            history.push(record);
            self.checkpoint_after_epoch(opts, epoch, &history, &mut best)?;
            if let Some(es) = &mut early {
                let decision = history.last().map(|r| es.observe(r));
                if let (Some(d), Some(copy)) = (&decision, &mut best_weights) {
                    if d.improved {
                        self.save_snapshot(copy)?;
                        have_best = true;
                    }
                }
                if decision.is_some_and(|d| d.stop) {
                    history.stopped_early_at = Some(epoch);
                    break;
                }
            }
        }
        if let (Some(copy), true) = (&best_weights, have_best) {
            self.restore_snapshot(copy)?;
        }
        Ok(history)
    }
}

/// The GPU backend's steps: the data uploaded once, one plan for a full batch and one for the
/// partial last batch, built once per `fit`.
struct GpuSteps {
    gpu: Gpu,
    rows: usize,
    shuffle: bool,
    /// The epoch's row order, [rows] u32, written at each epoch's start.
    order: Tensor,
    full_steps: usize,
    full_plan: Plan,
    tail_plan: Option<Plan>,
    validation: Option<GpuData>,
    /// The plans' buffers (the plans' bind groups keep them alive too; held for clarity).
    _buffers: Vec<BatchBuffers>,
}

impl GpuSteps {
    fn new(
        model: &Sequential,
        train: &Dataset,
        validation: Option<&Dataset>,
        opts: &FitOptions,
        optimizer: &Optimizer,
    ) -> Result<GpuSteps> {
        let gpu = model.gpu_state()?.gpu.clone();
        let data = model.upload_data(&gpu, train)?;
        let validation = validation.map(|v| model.upload_data(&gpu, v)).transpose()?;
        let n = train.rows;
        let batch = opts.batch_size.min(n);
        let tail = n % batch;
        let order = Tensor::zeros_u32(&gpu, &[n])?;
        let guarded = opts.skip_nonfinite_batches;
        let (full_plan, full_buf) = model.train_step_plan(&data, &order, batch, batch, optimizer, guarded)?;
        let mut buffers = vec![full_buf];
        let tail_plan = match tail {
            0 => None,
            _ => {
                let (plan, buf) = model.train_step_plan(&data, &order, tail, batch, optimizer, guarded)?;
                buffers.push(buf);
                Some(plan)
            }
        };
        Ok(GpuSteps {
            gpu,
            rows: n,
            shuffle: opts.shuffle,
            order,
            full_steps: n / batch,
            full_plan,
            tail_plan,
            validation,
            _buffers: buffers,
        })
    }
}

impl Steps for GpuSteps {
    fn start_epoch(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        self.order.write_u32(&epoch_order(self.rows, self.shuffle, model.seed, epoch))?;
        model.reset_epoch()
    }

    fn run(&mut self, model: &mut Sequential, first: usize, count: usize) -> Result<RunningSums> {
        // Many steps in one submit; the partial batch, if any, is the epoch's last step.
        let full = count.min(self.full_steps.saturating_sub(first));
        if full > 0 {
            self.gpu.run_repeated(&[&self.full_plan], full)?;
        }
        if let Some(tail) = self.tail_plan.as_ref().filter(|_| first + count > self.full_steps) {
            self.gpu.run(&[tail])?;
        }
        model.read_totals()
    }

    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>> {
        self.validation.as_ref().map(|v| model.evaluate_gpu(v)).transpose()
    }
}

/// The CPU reference backend's steps: gather, forward, backward, update, batch by batch.
struct CpuSteps<'d> {
    train: &'d Dataset,
    validation: Option<&'d Dataset>,
    /// The training features after scaling, [rows, feature_dim].
    features: Vec<f32>,
    targets: Option<Targets>,
    order: Vec<u32>,
    batch: usize,
    shuffle: bool,
    optimizer: Optimizer,
    skip_nonfinite: bool,
    sums: RunningSums,
}

impl<'d> CpuSteps<'d> {
    fn new(
        model: &Sequential,
        train: &'d Dataset,
        validation: Option<&'d Dataset>,
        opts: &FitOptions,
        optimizer: Optimizer,
    ) -> Result<CpuSteps<'d>> {
        Ok(CpuSteps {
            train,
            validation,
            features: train.to_f32(),
            targets: model.loss().float_targets(train, model.output_dim())?,
            order: Vec::new(),
            batch: opts.batch_size.min(train.rows),
            shuffle: opts.shuffle,
            optimizer,
            skip_nonfinite: opts.skip_nonfinite_batches,
            sums: RunningSums::default(),
        })
    }
}

impl Steps for CpuSteps<'_> {
    fn start_epoch(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        self.order = epoch_order(self.train.rows, self.shuffle, model.seed, epoch);
        self.sums = RunningSums::default();
        Ok(())
    }

    fn run(&mut self, model: &mut Sequential, first: usize, count: usize) -> Result<RunningSums> {
        let (train, n) = (self.train, self.train.rows);
        for step in first..first + count {
            let start = step * self.batch;
            let rows = self.batch.min(n - start);
            let gather = |values: &[f32], dim: usize| {
                cpu::gather_rows(values, &train.labels, dim, &self.order, start, rows, 1.0, 0.0, None)
            };
            let (x, y) = gather(&self.features, train.feature_dim);
            let t = self.targets.as_ref().map(|t| gather(&t.values, t.dim).0);
            match model.train_step_cpu(&x, &y, t.as_deref(), &self.optimizer, self.skip_nonfinite)? {
                Some((loss, correct)) => {
                    self.sums.loss += loss;
                    self.sums.correct += correct;
                }
                None => {
                    self.sums.skipped_batches += 1;
                    self.sums.skipped_rows += rows;
                }
            }
        }
        Ok(self.sums)
    }

    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>> {
        self.validation.map(|v| model.evaluate(v)).transpose()
    }
}
