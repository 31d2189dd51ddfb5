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
use crate::collective::{Collective, SingleProcess};
use crate::cpu;
use crate::data::{Dataset, Targets};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::history::{EpochRecord, History};
use crate::init::Initializer;
use crate::kernels::batch_norm::BatchNormConfig;
use crate::kernels::bias_act::bias_act_forward;
use crate::kernels::dense_softmax_xent::{
    dense_softmax_xent, dense_softmax_xent_preferred, DenseSoftmaxXentOut, UNIFORM_WINDOW_FLOATS,
};
use crate::kernels::gather::{gather_rows, BatchStart, GpuRows, MAX_FEATURE_CHUNKS};
use crate::kernels::grad_norm::clip_factor;
use crate::kernels::hinge::hinge;
use crate::kernels::matmul::{matmul_gathered_supported, GatheredA};
use crate::kernels::mse::{mse, MseOut};
use crate::kernels::optimizer::{
    update_with, AdadeltaConfig, AdagradConfig, AdamConfig, RmsPropConfig, SgdConfig, UpdateExtras,
};
use crate::kernels::sigmoid_bce::{sigmoid_bce, SigmoidBceOut};
use crate::kernels::softmax_xent::{softmax, softmax_xent, softmax_xent_dense, SoftmaxXentOut};
use crate::kernels::step_guard::guard_step;
use crate::kernels::Plan;
use crate::layers::{features, Layer};
use crate::predictions::Predictions;
use crate::rng::Rng;
use crate::tensor::Tensor;

mod batch_buffers;
mod builder;
mod checkpoint_dir;
mod console_progress;
mod data_checks;
mod data_parallel;
mod decay_mask;
mod fit;
mod fit_tokens;
mod fusion;
mod generate;
mod gpu;
mod gpu_block;
mod gpu_eval;
mod gpu_steps;
mod gpu_tokens;
mod io;
mod layout;
mod loss;
mod multi_adapter;
mod optimizer;
mod options;
mod predict;
mod reference;
mod saved;
mod stream;
mod token_data_parallel;
mod token_profile;
mod weights;

use builder::binding_bytes;
pub use builder::{InputShape, SequentialBuilder};
use console_progress::Both;
pub use console_progress::ConsoleProgress;
use data_parallel::DataParallelSteps;
pub use fit_tokens::{TokenFitOptions, VALIDATION_WINDOW_SEED};
use fusion::Block;
use layout::ParamLayout;
pub use loss::Loss;
pub use multi_adapter::{fit_on_adapters, fit_on_adapters_with};
pub use optimizer::Optimizer;
use options::Silent;
pub use options::{Checkpointing, EarlyStopping, FitOptions, FitRecord, Monitor, Observer, Progress, Validation};
use stream::StreamSteps;
pub use stream::{ChunkPlan, DATA_BUDGET_SHARE};
pub use weights::{BatchNormState, Parameter};

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

/// A sequential stack of layers, as Keras' `Sequential`: built with [`Sequential::new`] and the
/// builder's layer methods, compiled with a loss and an optimizer, trained with
/// [`Sequential::fit`], used with [`Sequential::evaluate`], [`Sequential::predict_dataset`] and
/// [`Sequential::predict_classes`], kept with [`Sequential::save`] and [`Sequential::load`].
///
/// ```
/// use wgnn::model::{Backend, Loss, Optimizer, Sequential};
/// use wgnn::Activation;
/// // 28×28 images, flattened; `Backend::Gpu(Gpu::new()?)` trains on the GPU, `Backend::Cpu` runs
/// // the plain-Rust reference.
/// let mut model = Sequential::new([28, 28, 1], 42)
///     .flatten()
///     .dense(64, Activation::Relu)
///     .dense(10, Activation::Softmax)
///     .build(&Backend::Cpu)?;
/// model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(1e-3))?;
/// assert_eq!(model.parameter_count(), 784 * 64 + 64 + 64 * 10 + 10);
/// println!("{}", model.summary());
/// # Ok::<(), wgnn::WgnnError>(())
/// ```
pub struct Sequential {
    input_shape: Vec<usize>,
    layers: Vec<Layer>,
    /// `shapes[i]`: layer i's input shape; the last, the model's output shape.
    shapes: Vec<Vec<usize>>,
    /// What a step runs: the layers after the fusion pass.
    blocks: Vec<Block>,
    /// Whether `blocks` are fused (see `model/fusion.rs`) and the step's fused kernels used.
    fused: bool,
    seed: u64,
    layout: ParamLayout,
    compiled: Option<(Loss, Optimizer)>,
    state: State,
    /// Set by [`Sequential::resume`], taken by the next `fit`.
    resume_point: Option<ResumePoint>,
    /// The settings of the `fit` under way or last run, for the checkpoints it writes.
    fit_record: Option<FitRecord>,
}

/// Where a resumed model's training stopped: the epochs completed and their history.
struct ResumePoint {
    epoch: usize,
    history: History,
    /// The data settings of the run that wrote the checkpoint, where it recorded them.
    fit: Option<FitRecord>,
}

enum State {
    Gpu(Box<GpuState>),
    Cpu(CpuState),
}

impl Sequential {
    /// An empty model whose samples have `input_shape`: a width (`784`) or a shape
    /// (`[28, 28, 1]`, channels last); `seed` fixes the initial weights.
    // Keras' and PyTorch's shape: `Sequential::new(..)` then the layers; the builder checks them
    // all at `build`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(input_shape: impl Into<InputShape>, seed: u64) -> SequentialBuilder {
        SequentialBuilder::new(input_shape.into().0, seed)
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    /// One sample's shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }
    /// Features per sample (the input shape's product).
    pub fn input_dim(&self) -> usize {
        features(&self.input_shape)
    }
    /// The shape of one sample after layer `i` (`i` from 0), or None past the last layer.
    pub fn output_shape_of(&self, i: usize) -> Option<&[usize]> {
        self.shapes.get(i + 1).map(Vec::as_slice)
    }
    pub fn output_dim(&self) -> usize {
        self.shapes.last().map_or(0, |s| features(s))
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Trained parameters: the weights and biases of every layer, and γ and β of batch norms.
    pub fn parameter_count(&self) -> usize {
        self.layout.slots.iter().filter(|s| s.spec.trainable).map(|s| s.spec.len()).sum()
    }
    /// One line per layer, Keras' `summary()`: the layer, its output shape, its parameters. A
    /// residual block's branch is marked `│` down to its sum, marked `└`.
    pub fn summary(&self) -> String {
        let sums: Vec<(usize, usize)> =
            self.layers.iter().enumerate().filter_map(|(j, l)| l.residual().map(|r| (r.from, j))).collect();
        let names: Vec<String> = (self.layers.iter().enumerate())
            .map(|(i, l)| {
                let depth = sums.iter().filter(|&&(from, j)| from <= i && i < j).count();
                let end = if l.residual().is_some() { "└ " } else { "" };
                format!("{}{end}{}", "│ ".repeat(depth), l.describe())
            })
            .collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) + 2;
        let mut out = format!("input {:?}\n", self.input_shape);
        for (i, name) in names.iter().enumerate() {
            let params: usize = self.layout.layer_slots(i).filter(|s| s.spec.trainable).map(|s| s.spec.len()).sum();
            let shape = format!("{:?}", self.shapes[i + 1]);
            out.push_str(&format!("{i:>3} {name:<width$}{shape:<16} {params} parameters\n"));
        }
        out.push_str(&format!("{} trained parameters", self.parameter_count()));
        out
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

    /// The activation block `i`'s own kernels apply: the identity where the last block's
    /// softmax (cross-entropies) or sigmoid (binary cross-entropy) is the one the fused loss
    /// applies; every block's own on an uncompiled model.
    fn applied_activation(&self, i: usize) -> Activation {
        let act = self.blocks[i].act;
        let fused = i + 1 == self.blocks.len()
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

    /// Labels per sample the loss reads: T for sparse cross-entropy on a `[T, V]` output (a token
    /// model's next-token loss, per position, as PyTorch's `F.cross_entropy` on `[B·T, V]`
    /// logits), else 1.
    pub(super) fn loss_positions(&self) -> usize {
        match (self.loss(), self.shapes.last().map(Vec::as_slice)) {
            (Loss::SparseCategoricalCrossentropy, Some(&[t, _])) => t,
            _ => 1,
        }
    }

    /// The classes (or values) of one label's row of logits: V per position, else every output.
    pub(super) fn output_classes(&self) -> usize {
        self.output_dim() / self.loss_positions()
    }

    /// The model's token embedding, when it reads token ids (its first layer is one).
    pub(super) fn token_embedding(&self) -> Option<&crate::layers::Embedding> {
        match self.layers.first() {
            Some(Layer::Embedding(e)) => Some(e),
            _ => None,
        }
    }

    /// The activation the model's output goes through (the last block's).
    fn output_activation(&self) -> Activation {
        self.blocks.last().map_or(Activation::Identity, |b| b.act)
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
        let (last_act, last_units) = (self.output_activation(), self.output_dim());
        // The fused losses apply their own output function: the last layer is linear, or names
        // that very function (Keras' Dense(10, activation="softmax") + cross-entropy), which the
        // loss then applies.
        let fused = match loss {
            Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy => Some(Activation::Softmax),
            Loss::BinaryCrossentropy => Some(Activation::Sigmoid),
            Loss::Hinge => Some(Activation::Identity),
            Loss::MeanSquaredError => None,
        };
        if let Some(fused) = fused.filter(|&f| last_act != Activation::Identity && last_act != f) {
            return Err(WgnnError::invalid(
                "compile",
                format!(
                    "{} applies the {} itself: the last layer must be linear (Activation::Identity) or {}, got {}",
                    loss.name(),
                    if fused == Activation::Identity { "sign" } else { fused.name() },
                    fused.name(),
                    last_act.name()
                ),
            ));
        }
        match loss {
            Loss::SparseCategoricalCrossentropy | Loss::CategoricalCrossentropy if last_units < 2 => {
                return Err(WgnnError::invalid("compile", "softmax cross-entropy needs at least 2 output units"));
            }
            Loss::BinaryCrossentropy | Loss::Hinge if last_units != 1 => {
                return Err(WgnnError::invalid(
                    "compile",
                    format!("{} needs exactly 1 output unit, got {last_units}", loss.name()),
                ));
            }
            _ => {}
        }
        let slots = optimizer.state_slots();
        if let State::Cpu(_) = self.state {
            let bytes = crate::host_memory::checked_bytes(self.layout.total, 4)
                .and_then(|b| b.checked_mul(slots as u64))
                .unwrap_or(u64::MAX);
            let what = || format!("the optimizer's {slots} state slots of {} floats", self.layout.total);
            crate::host_memory::check("compile", what, bytes)?;
        }
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
    ///
    /// ```
    /// use wgnn::model::{Backend, EarlyStopping, FitOptions, Loss, Optimizer, Sequential, Validation};
    /// use wgnn::{Activation, Dataset};
    /// let data = Dataset::from_rows(&[[0.0f32], [1.0], [2.0], [3.0]], &[0, 0, 1, 1])?;
    /// let mut model = Sequential::new(1, 1).dense(2, Activation::Softmax).build(&Backend::Cpu)?;
    /// model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(0.1))?;
    /// let options = FitOptions {
    ///     epochs: 20,
    ///     batch_size: 4,
    ///     validation: Validation::Data(&data),
    ///     early_stopping: Some(EarlyStopping::val_loss(3)),
    ///     ..Default::default()
    /// };
    /// let history = model.fit(&data, &options)?;
    /// let last = history.last().expect("at least one epoch");
    /// assert!(last.train_loss.is_finite() && last.val_accuracy.is_some());
    /// # Ok::<(), wgnn::WgnnError>(())
    /// ```
    pub fn fit(&mut self, data: &Dataset, opts: &FitOptions) -> Result<History> {
        self.fit_with(data, opts, &mut Silent)
    }

    /// [`Sequential::fit`] that reports progress and epoch ends to `observer` (and, with
    /// [`FitOptions::verbose`], to the console as well).
    pub fn fit_with(&mut self, data: &Dataset, opts: &FitOptions, observer: &mut dyn Observer) -> Result<History> {
        self.fit_dispatch(data, opts, observer, None)
    }

    /// `fit_with`, on one process or (`parallel`) data-parallel over a collective's ranks.
    fn fit_dispatch(
        &mut self,
        data: &Dataset,
        opts: &FitOptions,
        observer: &mut dyn Observer,
        parallel: Option<&dyn Collective>,
    ) -> Result<History> {
        match opts.verbose {
            true => {
                let mut console = ConsoleProgress::for_loss(self.loss());
                self.fit_observed(data, opts, &mut Both { first: observer, second: &mut console }, parallel)
            }
            false => self.fit_observed(data, opts, observer, parallel),
        }
    }

    fn fit_observed(
        &mut self,
        data: &Dataset,
        opts: &FitOptions,
        observer: &mut dyn Observer,
        parallel: Option<&dyn Collective>,
    ) -> Result<History> {
        const OP: &str = "fit";
        let (loss, optimizer) = self.compiled.ok_or_else(|| WgnnError::invalid(OP, "call compile() before fit()"))?;
        if opts.batch_size == 0 {
            return Err(WgnnError::invalid(OP, "batch size must be at least 1"));
        }
        if opts.epochs == 0 {
            return Err(WgnnError::invalid(OP, "epochs must be at least 1"));
        }
        if let Some(max_norm) = opts.clip_norm {
            crate::config::hyper(OP, "clip_norm", max_norm, "> 0", max_norm > 0.0)?;
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
        // Data-parallel fit checks each rank's share of its batches instead.
        let normed = self.blocks.iter().any(|b| b.norm.is_some()) && parallel.is_none();
        if normed && (batch < 2 || train.rows % batch == 1) {
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
        // Data-parallel fit checks the world size at start-up, on every rank alike.
        if parallel.is_none() {
            self.check_resumed_world_size(OP, 1)?;
        }
        if let Some(c) = &opts.checkpoint {
            if c.every_epochs == 0 && !c.on_best {
                return Err(WgnnError::invalid(OP, "checkpointing needs every_epochs ≥ 1 or on_best"));
            }
        }
        // Held until fit returns: one run at a time writes into a checkpoint folder.
        let _lock = opts.checkpoint.map(|c| CheckpointDirLock::acquire(c.dir)).transpose()?;
        let history = self.resume_point.take().map(|r| r.history).unwrap_or_default();
        let validation_fraction = match opts.validation {
            Validation::Fraction(f) => Some(f),
            _ => None,
        };
        let world_size = parallel.map_or(1, |c| c.size());
        self.fit_record =
            Some(FitRecord { batch_size: opts.batch_size, rows: data.rows, validation_fraction, world_size });
        let run = Run { first_epoch, history, validation, optimizer };
        match &self.state {
            State::Gpu(g) => match self.chunk_plan(&g.gpu.clone(), train, opts.batch_size)? {
                None if parallel.is_some() => {
                    let c = parallel.unwrap_or(&SingleProcess);
                    // Set alike on every rank once any rank's `cancel` is: what the epoch loop watches.
                    let stop = std::sync::atomic::AtomicBool::new(false);
                    let mut steps =
                        DataParallelSteps::new(self, train, run.validation, opts, &run.optimizer, c, &stop)?;
                    // The epoch loop counts global batches.
                    let batch_size = opts.batch_size.saturating_mul(c.size());
                    let global = FitOptions { batch_size, cancel: Some(&stop), ..*opts };
                    self.fit_loop(train.rows, run, &global, observer, &mut steps)
                }
                Some(_) if parallel.is_some() => Err(WgnnError::invalid(
                    "fit_data_parallel",
                    "a training set that must stream (larger than the memory budget's share for data) is not \
                     supported in data-parallel fit yet",
                )),
                None => {
                    let mut steps = GpuSteps::new(self, train, run.validation, opts, &run.optimizer)?;
                    self.fit_loop(train.rows, run, opts, observer, &mut steps)
                }
                // Larger than the memory budget's share for data: streamed in chunks.
                Some(chunks) => {
                    let mut steps = StreamSteps::new(self, train, run.validation, opts, &run.optimizer, chunks)?;
                    self.fit_loop(train.rows, run, opts, observer, &mut steps)
                }
            },
            State::Cpu(_) => {
                let mut steps = CpuSteps::new(self, train, run.validation, opts, run.optimizer)?;
                self.fit_loop(train.rows, run, opts, observer, &mut steps)
            }
        }
        .map_err(|e| io::with_checkpoint_hint(e, opts.checkpoint.as_ref()))
    }

    /// Mean loss and accuracy over `data`. It reads the model only (on the GPU it builds buffers of
    /// its own), hence `&self`; so do the predictions.
    pub fn evaluate(&self, data: &Dataset) -> Result<(f32, f32)> {
        if self.compiled.is_none() {
            return Err(WgnnError::invalid("evaluate", "the model has no loss to evaluate: call compile() first"));
        }
        self.check_data("evaluate", data)?;
        data.check_finite("evaluate")?;
        match &self.state {
            State::Gpu(g) => {
                let gpu = g.gpu.clone();
                let gpu_data = self.upload_data(&gpu, data)?;
                self.evaluate_gpu(&gpu_data)
            }
            State::Cpu(_) => {
                let x = data.to_f32();
                self.check_cpu_pass("evaluate", data.rows, false)?;
                let last = self.forward_cpu_pass(&x, data.rows, None)?.pop().unwrap_or_default();
                let targets = self.loss().float_targets(data, self.output_dim())?;
                let targets = targets.as_ref().map(|t| t.values.as_slice());
                let (loss_rows, _, correct) = self.loss_cpu(&last.h, last.act_saved(), &data.labels, targets, 1.0)?;
                Ok((mean(&loss_rows), mean(&correct)))
            }
        }
    }
}

fn mean(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}
