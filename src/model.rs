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
//! Here: `Sequential`'s API. Beside it in `model/`: the layer (`dense.rs`), the losses (`loss.rs`),
//! optimizers (`optimizer.rs`), `fit`'s options (`options.rs`), the builder (`builder.rs`); the
//! GPU backend (`gpu.rs`, `batch_buffers.rs`, `gpu_eval.rs`, `gpu_steps.rs`), the CPU reference
//! (`reference.rs`), the epoch loop both share (`fit.rs`), save/load and checkpoints (`io.rs`,
//! `saved.rs`, `checkpoint_dir.rs`).

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

mod batch_buffers;
mod builder;
mod checkpoint_dir;
mod dense;
mod fit;
mod gpu;
mod gpu_eval;
mod gpu_steps;
mod io;
mod loss;
mod optimizer;
mod options;
mod reference;
mod saved;

use builder::binding_bytes;
pub use builder::SequentialBuilder;
pub use dense::{BatchNormState, Dense};
pub use loss::Loss;
pub use optimizer::Optimizer;
use options::Silent;
pub use options::{Checkpointing, EarlyStopping, FitOptions, Monitor, Observer, Progress, Validation};

use batch_buffers::BatchBuffers;
use checkpoint_dir::CheckpointDirLock;
pub use checkpoint_dir::LOCK_FILE;
use fit::{epoch_order, Run, RunningSums, Steps};
use gpu::{upload_rows, GpuData, GpuState};
use gpu_eval::EvalPlans;
use gpu_steps::GpuSteps;
use reference::{CpuState, CpuSteps};

/// Where a model computes.
#[derive(Clone, Debug)]
pub enum Backend {
    Gpu(Gpu),
    /// The plain-Rust reference path (slow; for tests and comparison).
    Cpu,
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
        SequentialBuilder::new(input_dim, seed)
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

fn mean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}
