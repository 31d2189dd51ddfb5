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
//!
//! Here: the public types (layers, losses, optimizers, options) and `Sequential`'s API. The GPU
//! backend is in `model/gpu.rs`, the CPU reference in `model/reference.rs`, the epoch loop both
//! share in `model/fit.rs`, save/load and checkpoints in `model/io.rs`.

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
    batch_norm_backward, batch_norm_commit_running, batch_norm_forward_inference, batch_norm_forward_train_deferred,
    BatchNormConfig,
};
use crate::kernels::bias_act::{bias_act_backward, bias_act_forward};
use crate::kernels::dense_softmax_xent::{
    dense_softmax_xent, dense_softmax_xent_preferred, DenseSoftmaxXentOut, UNIFORM_WINDOW_FLOATS,
};
use crate::kernels::dropout::{dropout_backward, dropout_forward};
use crate::kernels::gather::{gather_rows, BatchStart, GpuRows, MAX_FEATURE_CHUNKS};
use crate::kernels::hinge::hinge;
use crate::kernels::matmul::{
    matmul, matmul_column_sum, matmul_gathered, matmul_gathered_supported, Epilogue, GatheredA, MatmulOptions,
};
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

mod checkpoint_dir;
mod fit;
mod gpu;
mod io;
mod reference;
mod saved;

use checkpoint_dir::CheckpointDirLock;
pub use checkpoint_dir::LOCK_FILE;
use fit::{epoch_order, Run, RunningSums, Steps};
use gpu::{upload_rows, GpuData, GpuState, GpuSteps};
use reference::{CpuState, CpuSteps};

/// A fully connected layer: y = act(x·W + b), W: [inputs, units], b: `[units]`; with `dropout` > 0,
/// inverted dropout of that rate on y while training (Keras' `Dropout` layer after it), the
/// identity in `evaluate` and `predict`.
///
/// With `batch_norm`, y = act(BN(x·W)): batch normalisation of the pre-activation (Keras'
/// `Dense(use_bias=False)` → `BatchNormalization` → `Activation`). BN's shift β takes the place of
/// b (a bias before BN would be subtracted out again), its scale γ `[units]` is a further trained
/// parameter, and its running mean and variance `[units]` are kept beside the parameters. Training
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

    /// Checks `data` against this loss for a model of `outputs` units: `Some(width)` when the loss
    /// trains on float targets of that width — the data's own, or ones made from its labels —
    /// and `None` when it reads the labels themselves.
    fn target_dim(self, data: &Dataset, outputs: usize) -> Result<Option<usize>> {
        // A regression data set (Dataset::regression) has no class labels to fall back on.
        let labels = || match data.classes {
            0 => Err(WgnnError::invalid(
                self.name(),
                format!("{} has float targets and no class labels; {} needs labels", data.source, self.name()),
            )),
            _ => Ok(()),
        };
        let (want, from_labels) = match self {
            Loss::SparseCategoricalCrossentropy | Loss::BinaryCrossentropy => return labels().map(|_| None),
            Loss::CategoricalCrossentropy => (outputs, true),
            Loss::Hinge => (1, true),
            Loss::MeanSquaredError => (outputs, outputs == 1),
        };
        match &data.targets {
            Some(t) if t.dim != want => Err(WgnnError::shape(
                self.name(),
                format!("{} has targets of width {} but the loss needs {want} per row", data.source, t.dim),
            )),
            Some(t) if t.values.len() != data.rows * t.dim => Err(WgnnError::shape(
                self.name(),
                format!(
                    "{} has {} target values for {} rows of width {} (= {})",
                    data.source,
                    t.values.len(),
                    data.rows,
                    t.dim,
                    data.rows * t.dim
                ),
            )),
            Some(_) => Ok(Some(want)),
            None if from_labels => labels().map(|_| Some(want)),
            None => Err(WgnnError::invalid(
                self.name(),
                format!(
                    "{} has no float targets: a {outputs}-output regression needs Dataset::with_targets / \
                     Dataset::regression",
                    data.source
                ),
            )),
        }
    }

    /// The float targets this loss trains `data` against, `[rows, dim]` (None: it reads the
    /// labels directly), checked by [`Loss::target_dim`].
    fn float_targets(self, data: &Dataset, outputs: usize) -> Result<Option<Targets>> {
        let Some(dim) = self.target_dim(data, outputs)? else { return Ok(None) };
        Ok(Some(match (&data.targets, self) {
            (Some(t), _) => t.clone(),
            (None, Loss::CategoricalCrossentropy) => Targets { values: data.one_hot(dim), dim },
            // Hinge's ±1 from labels 0/1 (the kernel maps t > 0 to +1), or labels as values.
            (None, _) => Targets { values: data.labels.iter().map(|&l| l as f32).collect(), dim: 1 },
        }))
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
    /// Skip a batch whose loss is not finite — no update of the weights, the optimizer state, t
    /// or the batch-norm running statistics, its loss left out of the epoch's — and count it in
    /// [`EpochRecord::skipped_batches`], instead of stopping the run (the default). The check is
    /// on the GPU, inside the step: no readback. It looks at the loss only: a finite loss whose
    /// gradients overflow still updates. The step after a skipped one draws the same dropout
    /// masks (they are keyed by t, which did not advance).
    pub skip_nonfinite_batches: bool,
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

/// The flat parameters on the GPU: a view of a buffer with room after them for the uniform window
/// over the output layer's W and b that the fused output kernel reads
/// ([`dense_softmax_xent`]'s `UNIFORM_WINDOW_FLOATS` from W's start).
fn gpu_params(gpu: &Gpu, flat: &[f32]) -> Result<Tensor> {
    let mut room = flat.to_vec();
    room.resize(flat.len() + UNIFORM_WINDOW_FLOATS, 0.0);
    Tensor::from_slice(gpu, &[room.len()], &room)?.view(0, &[flat.len()])
}

/// The largest buffer the device binds whole: every parameter slice and the trained
/// parameters together are bound as one.
fn binding_bytes(gpu: &Gpu) -> u64 {
    let limits = gpu.limits();
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)
}

/// Each layer's W, and the trained parameters as a whole, must fit one binding: an error naming
/// the layer, not the flat buffer they would have been cut from.
fn check_parameters_fit(gpu: &Gpu, layers: &[Dense], layout: &ParamLayout) -> Result<()> {
    let limit = binding_bytes(gpu);
    let too_large = |what: String, floats: usize| WgnnError::DeviceLimit {
        op: "build".into(),
        what,
        bytes: 4 * floats as u64,
        limit,
        limit_name: "max_storage_buffer_binding_size",
    };
    for (i, l) in layers.iter().enumerate() {
        if 4 * (l.inputs * l.units) as u64 > limit {
            return Err(too_large(
                format!("dense layer {i}'s weights [{}, {}] f32", l.inputs, l.units),
                l.inputs * l.units,
            ));
        }
    }
    if 4 * (layout.total + UNIFORM_WINDOW_FLOATS) as u64 > limit {
        let what = format!("the model's parameters ({} layers, one buffer of {} floats)", layers.len(), layout.total);
        return Err(too_large(what, layout.total + UNIFORM_WINDOW_FLOATS));
    }
    Ok(())
}

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

/// A batch-normalised layer's state beside W and b (b holds β), each `[units]`.
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

impl Sequential {
    /// An empty model taking `input_dim` features; `seed` fixes the initial weights.
    // Keras' and PyTorch's shape: `Sequential::new(..)` then the layers; the builder checks them
    // all at `build`.
    #[allow(clippy::new_ret_no_self)]
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

    /// The compiled loss (softmax cross-entropy before `compile`: see
    /// [`Sequential::compiled_loss`] to tell the two apart).
    pub fn loss(&self) -> Loss {
        self.compiled_loss().unwrap_or(Loss::SparseCategoricalCrossentropy)
    }

    /// The loss the model is compiled with, if it is.
    pub fn compiled_loss(&self) -> Option<Loss> {
        self.compiled.map(|(loss, _)| loss)
    }

    /// The activation layer `i`'s own kernels apply: the identity where the last layer's softmax
    /// (cross-entropies) or sigmoid (binary cross-entropy) is the one the fused loss applies;
    /// every layer's own on an uncompiled model.
    fn applied_activation(&self, i: usize) -> Activation {
        let act = self.layers[i].activation;
        let fused = i + 1 == self.layers.len()
            && matches!(
                (self.compiled_loss(), act),
                (Some(Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy), Activation::Softmax)
                    | (Some(Loss::BinaryCrossentropy), Activation::Sigmoid)
            );
        if fused {
            Activation::Identity
        } else {
            act
        }
    }

    /// What `predict` applies to the last layer's outputs (after its applied activation): the
    /// function a fused loss leaves out, or nothing.
    fn output_function(&self) -> Activation {
        match self.compiled_loss() {
            Some(Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy) => Activation::Softmax,
            Some(Loss::BinaryCrossentropy) => Activation::Sigmoid,
            Some(Loss::Hinge | Loss::MeanSquaredError) | None => Activation::Identity,
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
                g.epoch_step.write_u32(&[0, 0])?;
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

    /// Per-layer (W [inputs·units], b `[units]`), read back from wherever they live (b is BN's β
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

    /// Checks `data` has rows of the model's input width.
    fn check_features(&self, op: &str, data: &Dataset) -> Result<()> {
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
        Ok(())
    }

    /// Checks `data` has rows of the model's input width, and labels and targets the compiled
    /// loss can read.
    fn check_data(&self, op: &str, data: &Dataset) -> Result<()> {
        self.check_features(op, data)?;
        // What the labels and targets must be depends on the loss; an uncompiled model reads
        // neither.
        let Some(loss) = self.compiled_loss() else { return Ok(()) };
        if let Some(classes) = loss.classes(self.output_dim()) {
            if let Some((row, &label)) = data.labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
                return Err(WgnnError::invalid(
                    op,
                    format!(
                        "{} row {row} has label {label}, out of range for a model with {classes} outputs",
                        data.label_source
                    ),
                ));
            }
        }
        loss.target_dim(data, self.output_dim())?;
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
    /// effect on the loss nobody has seen yet). Device-side copies are taken at each good tick;
    /// the optimizer state is not restored. With [`FitOptions::skip_nonfinite_batches`] such
    /// batches are skipped inside the step instead, and the tick's check never fires.
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
            if es.monitor == Monitor::ValAccuracy && loss == Loss::MeanSquaredError {
                return Err(WgnnError::invalid(
                    OP,
                    "under mean squared error the accuracy column holds the mean absolute error (lower is \
                     better): monitor Monitor::ValLoss",
                ));
            }
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
        }
        // Held until fit returns: one run at a time writes into a checkpoint folder.
        let _lock = opts.checkpoint.map(|c| CheckpointDirLock::acquire(c.dir)).transpose()?;
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
        if self.compiled.is_none() {
            return Err(WgnnError::invalid("evaluate", "the model has no loss to evaluate: call compile() first"));
        }
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
    /// class probabilities — softmax [rows, classes] for the cross-entropies, σ(z) [rows, 1] for
    /// [`Loss::BinaryCrossentropy`] — or the last layer's outputs for [`Loss::Hinge`] (scores)
    /// and [`Loss::MeanSquaredError`] (values). Before `compile`, the last layer's outputs
    /// through its own activation (a `softmax` layer gives probabilities, a linear one logits).
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
                // In groups of rows the device can hold at once (a data set binds at most
                // MAX_FEATURE_CHUNKS buffers), so any number of rows can be predicted.
                let limits = gpu.limits();
                let binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
                let rows_per_binding = (binding / (4 * self.input_dim as u64)).max(1) as usize;
                let group = rows_per_binding.saturating_mul(MAX_FEATURE_CHUNKS);
                let mut predictions = Vec::with_capacity(rows * self.output_dim());
                for (i, part) in x.chunks(group * self.input_dim).enumerate() {
                    let n = part.len() / self.input_dim;
                    let source = format!("predict input (rows {}..{})", i * group, i * group + n);
                    let data =
                        Dataset::from_f32(part.to_vec(), vec![0; n], self.input_dim, self.output_dim(), &source)?;
                    let gpu_data = GpuData { rows: upload_rows(&gpu, &data)?, targets: None };
                    predictions.extend(self.predict_gpu(&gpu_data)?);
                }
                Ok(predictions)
            }
            State::Cpu(_) => {
                let outputs = self.forward_cpu(x, rows);
                Ok(match self.output_function() {
                    Activation::Softmax => cpu::softmax(&outputs, rows, self.output_dim()),
                    Activation::Sigmoid => outputs.iter().map(|&z| cpu::sigmoid(z)).collect(),
                    _ => outputs,
                })
            }
        }
    }

    /// Probabilities for every row of a data set (its scaling applied); its labels and targets
    /// are not read.
    pub fn predict_dataset(&mut self, data: &Dataset) -> Result<Vec<f32>> {
        self.check_features("predict", data)?;
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
        if let Backend::Gpu(gpu) = backend {
            check_parameters_fit(gpu, &self.layers, &layout)?;
        }
        let state = match backend {
            Backend::Gpu(gpu) => State::Gpu(Box::new(GpuState {
                gpu: gpu.clone(),
                params: gpu_params(gpu, &flat)?,
                grads: Tensor::zeros(gpu, &[layout.total])?,
                opt_state: Vec::new(),
                epoch_step: Tensor::zeros_u32(gpu, &[2])?,
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

fn mean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}
