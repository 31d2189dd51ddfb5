//! The JSON a saved model and a checkpoint carry in their safetensors metadata, as serde types.
//!
//! These mirror the in-memory configs field for field but are their own types: the file's
//! schema is a promise to files already written, so it changes only here and on purpose.
//! Format 2 lists the layers Keras style (`{"type": "dense", …}`, `{"type": "batch_norm", …}`)
//! with a sample shape; format 1 (a list of dense layers, each with its dropout and batch norm,
//! and an input width) still loads, its tensors renamed on the way (see [`SavedModelV1`]).

use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use super::{Loss, Optimizer};
use crate::activation::Activation;
use crate::config::batch_norm::BatchNormConfig;
use crate::error::{Result, WgnnError};
use crate::init::Initializer;
use crate::kernels::optimizer::{
    AdadeltaConfig, AdagradConfig, AdamConfig, EpsPlacement, LrSchedule, RmsPropConfig, SgdConfig,
};
use crate::layers::{Conv2D, Dense, Layer, Padding, Pool2dConfig, Pooling};

/// The version of [`SavedModel`] this wgnn writes.
pub(super) const FORMAT: u64 = 2;

/// Just the format number, read first to pick the schema.
#[derive(Deserialize)]
pub(super) struct SavedFormat {
    pub(super) format: u64,
}

/// `wgnn.model`: enough to rebuild the model and, where it was compiled, to predict and evaluate
/// as it did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedModel {
    pub(super) format: u64,
    pub(super) input_shape: Vec<usize>,
    pub(super) seed: u64,
    pub(super) layers: Vec<SavedLayer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) compile: Option<SavedCompile>,
}

/// One layer of a format-2 file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum SavedLayer {
    Dense {
        units: usize,
        /// As [`Activation::parse`] reads it (`leaky_relu:0.01` with its slope).
        activation: String,
        use_bias: bool,
    },
    Activation {
        activation: String,
    },
    Dropout {
        rate: f32,
    },
    BatchNorm(SavedBatchNorm),
    Flatten,
    Reshape {
        shape: Vec<usize>,
    },
    Conv2d {
        filters: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        /// `valid` or `same`.
        padding: String,
        activation: String,
        use_bias: bool,
    },
    MaxPool2d(SavedPool),
    AveragePooling2d(SavedPool),
    GlobalAveragePooling2d,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedPool {
    pub(super) pool_size: [usize; 2],
    /// Absent: the pool size (Keras' default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) strides: Option<[usize; 2]>,
    pub(super) padding: String,
}

fn padding_tag(p: Padding) -> String {
    match p {
        Padding::Valid => "valid".into(),
        Padding::Same => "same".into(),
    }
}

fn parse_padding(tag: &str) -> Result<Padding> {
    match tag {
        "valid" => Ok(Padding::Valid),
        "same" => Ok(Padding::Same),
        other => Err(WgnnError::invalid("load", format!("unknown padding {other:?} (known: valid, same)"))),
    }
}

impl From<&Pool2dConfig> for SavedPool {
    fn from(c: &Pool2dConfig) -> Self {
        SavedPool {
            pool_size: [c.pool_size.0, c.pool_size.1],
            strides: c.strides.map(|s| [s.0, s.1]),
            padding: padding_tag(c.padding),
        }
    }
}

impl SavedPool {
    fn config(&self) -> Result<Pool2dConfig> {
        Ok(Pool2dConfig {
            pool_size: (self.pool_size[0], self.pool_size[1]),
            strides: self.strides.map(|s| (s[0], s[1])),
            padding: parse_padding(&self.padding)?,
        })
    }
}

impl From<&Layer> for SavedLayer {
    fn from(l: &Layer) -> Self {
        match *l {
            Layer::Dense(d) => {
                SavedLayer::Dense { units: d.units, activation: activation_tag(d.activation), use_bias: d.use_bias }
            }
            Layer::Activation(a) => SavedLayer::Activation { activation: activation_tag(a) },
            Layer::Dropout(rate) => SavedLayer::Dropout { rate },
            Layer::BatchNorm(c) => SavedLayer::BatchNorm(SavedBatchNorm { eps: c.eps, momentum: c.momentum }),
            Layer::Flatten => SavedLayer::Flatten,
            Layer::Reshape(ref shape) => SavedLayer::Reshape { shape: shape.clone() },
            Layer::Conv2D(c) => SavedLayer::Conv2d {
                filters: c.filters,
                kernel: [c.kernel.0, c.kernel.1],
                strides: [c.strides.0, c.strides.1],
                padding: padding_tag(c.padding),
                activation: activation_tag(c.activation),
                use_bias: c.use_bias,
            },
            Layer::Pool(Pooling::Max(c)) => SavedLayer::MaxPool2d((&c).into()),
            Layer::Pool(Pooling::Average(c)) => SavedLayer::AveragePooling2d((&c).into()),
            Layer::Pool(Pooling::GlobalAverage) => SavedLayer::GlobalAveragePooling2d,
        }
    }
}

impl SavedLayer {
    /// The layer (its weights' initialiser is not saved: the weights are).
    pub(super) fn layer(&self) -> Result<Layer> {
        Ok(match self {
            SavedLayer::Dense { units, activation, use_bias } => Layer::Dense(Dense {
                units: *units,
                activation: Activation::parse(activation)?,
                use_bias: *use_bias,
                init: Initializer::GlorotUniform,
            }),
            SavedLayer::Activation { activation } => Layer::Activation(Activation::parse(activation)?),
            SavedLayer::Dropout { rate } => Layer::Dropout(*rate),
            SavedLayer::BatchNorm(b) => Layer::BatchNorm(BatchNormConfig { eps: b.eps, momentum: b.momentum }),
            SavedLayer::Flatten => Layer::Flatten,
            SavedLayer::Reshape { shape } => Layer::Reshape(shape.clone()),
            SavedLayer::Conv2d { filters, kernel, strides, padding, activation, use_bias } => Layer::Conv2D(Conv2D {
                filters: *filters,
                kernel: (kernel[0], kernel[1]),
                strides: (strides[0], strides[1]),
                padding: parse_padding(padding)?,
                activation: Activation::parse(activation)?,
                use_bias: *use_bias,
                init: Initializer::GlorotUniform,
            }),
            SavedLayer::MaxPool2d(p) => Layer::Pool(Pooling::Max(p.config()?)),
            SavedLayer::AveragePooling2d(p) => Layer::Pool(Pooling::Average(p.config()?)),
            SavedLayer::GlobalAveragePooling2d => Layer::Pool(Pooling::GlobalAverage),
        })
    }
}

/// A model's architecture as read from either format: its layers, and where format 1 named a
/// layer's tensors otherwise, the old name of each (layer, slot).
pub(super) struct Architecture {
    pub(super) input_shape: Vec<usize>,
    pub(super) seed: u64,
    pub(super) layers: Vec<Layer>,
    pub(super) compile: Option<SavedCompile>,
    pub(super) renamed: HashMap<(usize, &'static str), String>,
}

impl Architecture {
    /// The name of layer `layer`'s tensor `slot` in the file (without a prefix).
    pub(super) fn tensor_name(&self, layer: usize, slot: &str) -> String {
        self.renamed
            .iter()
            .find(|((l, s), _)| *l == layer && *s == slot)
            .map_or_else(|| format!("layers.{layer}.{slot}"), |(_, n)| n.clone())
    }

    /// A format-2 file's architecture.
    pub(super) fn from_saved(m: &SavedModel) -> Result<Architecture> {
        Ok(Architecture {
            input_shape: m.input_shape.clone(),
            seed: m.seed,
            layers: m.layers.iter().map(SavedLayer::layer).collect::<Result<_>>()?,
            compile: m.compile.clone(),
            renamed: HashMap::new(),
        })
    }

    /// A format-1 file's: each dense layer k becomes `Dense` (→ `BatchNorm` → `Activation`, the
    /// builder's `batch_norm()` recipe) (→ `Dropout`), and its tensors `layers.{k}.*` are those
    /// layers' (`bias` is the batch norm's β where there is one).
    pub(super) fn from_v1(m: &SavedModelV1) -> Result<Architecture> {
        let mut layers = Vec::new();
        let mut renamed = HashMap::new();
        for (k, d) in m.layers.iter().enumerate() {
            let (activation, dropout, norm) = d.parts()?;
            let dense = layers.len();
            renamed.insert((dense, "weight"), format!("layers.{k}.weight"));
            let use_bias = norm.is_none();
            let act_in_dense = if use_bias { activation } else { Activation::Identity };
            layers.push(Layer::Dense(Dense {
                units: d.units,
                activation: act_in_dense,
                use_bias,
                init: Initializer::GlorotUniform,
            }));
            match norm {
                None => {
                    renamed.insert((dense, "bias"), format!("layers.{k}.bias"));
                }
                Some(cfg) => {
                    let bn = layers.len();
                    layers.push(Layer::BatchNorm(cfg));
                    renamed.insert((bn, "beta"), format!("layers.{k}.bias"));
                    for slot in ["gamma", "running_mean", "running_var"] {
                        renamed.insert((bn, slot), format!("layers.{k}.{slot}"));
                    }
                    if activation != Activation::Identity {
                        layers.push(Layer::Activation(activation));
                    }
                }
            }
            if dropout > 0.0 {
                layers.push(Layer::Dropout(dropout));
            }
        }
        Ok(Architecture { input_shape: vec![m.input_dim], seed: m.seed, layers, compile: m.compile.clone(), renamed })
    }
}

/// `wgnn.model` of format 1: an input width and dense layers, each with its dropout and batch
/// norm.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedModelV1 {
    pub(super) format: u64,
    pub(super) input_dim: usize,
    pub(super) seed: u64,
    pub(super) layers: Vec<SavedDense>,
    /// The loss and optimizer of a compiled model (absent in files of uncompiled models, and in
    /// files written before wgnn saved them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) compile: Option<SavedCompile>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedDense {
    pub(super) units: usize,
    /// As [`Activation::parse`] reads it (`leaky_relu:0.01` with its slope).
    pub(super) activation: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) dropout: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) batch_norm: Option<SavedBatchNorm>,
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub(super) struct SavedBatchNorm {
    pub(super) eps: f32,
    pub(super) momentum: f32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedCompile {
    /// [`Loss::name`].
    pub(super) loss: String,
    pub(super) optimizer: SavedOptimizer,
}

/// `wgnn.checkpoint`: where training stopped. `epoch`: the epochs completed; `step`: the global
/// step t.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct SavedCheckpoint {
    pub(super) epoch: usize,
    pub(super) step: u32,
    pub(super) loss: String,
    pub(super) optimizer: SavedOptimizer,
    /// The data settings of the `fit` that wrote it (absent in older checkpoints, and in those
    /// written outside `fit` by a model never fitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) fit: Option<SavedFit>,
}

/// [`super::FitRecord`] in a checkpoint.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub(super) struct SavedFit {
    pub(super) batch_size: usize,
    pub(super) rows: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) validation_fraction: Option<f32>,
}

impl From<super::FitRecord> for SavedFit {
    fn from(r: super::FitRecord) -> Self {
        SavedFit { batch_size: r.batch_size, rows: r.rows, validation_fraction: r.validation_fraction }
    }
}

impl From<SavedFit> for super::FitRecord {
    fn from(s: SavedFit) -> Self {
        super::FitRecord { batch_size: s.batch_size, rows: s.rows, validation_fraction: s.validation_fraction }
    }
}

/// An optimizer and its hyper-parameters, tagged by `kind`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum SavedOptimizer {
    Adam(SavedAdam),
    AdamW(SavedAdam),
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
        weight_decay: f32,
        #[serde(default)]
        schedule: SavedSchedule,
    },
    RmsProp {
        lr: f32,
        rho: f32,
        eps: f32,
        momentum: f32,
        weight_decay: f32,
        #[serde(default)]
        schedule: SavedSchedule,
        #[serde(default, skip_serializing_if = "SavedEpsPlacement::is_torch")]
        eps_placement: SavedEpsPlacement,
    },
    Adagrad {
        lr: f32,
        initial_accumulator: f32,
        eps: f32,
        weight_decay: f32,
        #[serde(default)]
        schedule: SavedSchedule,
        #[serde(default, skip_serializing_if = "SavedEpsPlacement::is_torch")]
        eps_placement: SavedEpsPlacement,
    },
    Adadelta {
        lr: f32,
        rho: f32,
        eps: f32,
        weight_decay: f32,
        #[serde(default)]
        schedule: SavedSchedule,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub(super) struct SavedAdam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    /// A checkpoint without one had a constant rate.
    #[serde(default)]
    schedule: SavedSchedule,
    /// Written only when Keras' (a file without one predates the choice: PyTorch's).
    #[serde(default, skip_serializing_if = "SavedEpsPlacement::is_torch")]
    eps_placement: SavedEpsPlacement,
}

/// [`EpsPlacement`] as saved: `"torch"` or `"keras"`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum SavedEpsPlacement {
    #[default]
    Torch,
    Keras,
}

impl SavedEpsPlacement {
    fn is_torch(&self) -> bool {
        *self == SavedEpsPlacement::Torch
    }
}

impl From<EpsPlacement> for SavedEpsPlacement {
    fn from(e: EpsPlacement) -> Self {
        match e {
            EpsPlacement::Torch => SavedEpsPlacement::Torch,
            EpsPlacement::Keras => SavedEpsPlacement::Keras,
        }
    }
}

impl From<SavedEpsPlacement> for EpsPlacement {
    fn from(e: SavedEpsPlacement) -> Self {
        match e {
            SavedEpsPlacement::Torch => EpsPlacement::Torch,
            SavedEpsPlacement::Keras => EpsPlacement::Keras,
        }
    }
}

/// The learning-rate schedule, so a resumed run keeps decaying where it stopped.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(super) enum SavedSchedule {
    #[default]
    Constant,
    Step {
        every: u32,
        gamma: f32,
    },
    Exponential {
        decay_steps: u32,
        decay_rate: f32,
    },
    Cosine {
        total_steps: u32,
        min_lr: f32,
    },
}

impl From<LrSchedule> for SavedSchedule {
    fn from(s: LrSchedule) -> Self {
        match s {
            LrSchedule::Constant => SavedSchedule::Constant,
            LrSchedule::Step { every, gamma } => SavedSchedule::Step { every, gamma },
            LrSchedule::Exponential { decay_steps, decay_rate } => {
                SavedSchedule::Exponential { decay_steps, decay_rate }
            }
            LrSchedule::Cosine { total_steps, min_lr } => SavedSchedule::Cosine { total_steps, min_lr },
        }
    }
}

impl From<SavedSchedule> for LrSchedule {
    fn from(s: SavedSchedule) -> Self {
        match s {
            SavedSchedule::Constant => LrSchedule::Constant,
            SavedSchedule::Step { every, gamma } => LrSchedule::Step { every, gamma },
            SavedSchedule::Exponential { decay_steps, decay_rate } => {
                LrSchedule::Exponential { decay_steps, decay_rate }
            }
            SavedSchedule::Cosine { total_steps, min_lr } => LrSchedule::Cosine { total_steps, min_lr },
        }
    }
}

impl From<AdamConfig> for SavedAdam {
    fn from(c: AdamConfig) -> Self {
        let AdamConfig { lr, beta1, beta2, eps, weight_decay, schedule, eps_placement } = c;
        SavedAdam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            schedule: schedule.into(),
            eps_placement: eps_placement.into(),
        }
    }
}

impl From<SavedAdam> for AdamConfig {
    fn from(c: SavedAdam) -> Self {
        let SavedAdam { lr, beta1, beta2, eps, weight_decay, schedule, eps_placement } = c;
        AdamConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            schedule: schedule.into(),
            eps_placement: eps_placement.into(),
        }
    }
}

impl From<Optimizer> for SavedOptimizer {
    fn from(o: Optimizer) -> Self {
        match o {
            Optimizer::Adam(c) => SavedOptimizer::Adam(c.into()),
            Optimizer::AdamW(c) => SavedOptimizer::AdamW(c.into()),
            Optimizer::Sgd(SgdConfig { lr, momentum, nesterov, weight_decay, schedule }) => {
                SavedOptimizer::Sgd { lr, momentum, nesterov, weight_decay, schedule: schedule.into() }
            }
            Optimizer::RmsProp(RmsPropConfig { lr, rho, eps, momentum, weight_decay, schedule, eps_placement }) => {
                let (schedule, eps_placement) = (schedule.into(), eps_placement.into());
                SavedOptimizer::RmsProp { lr, rho, eps, momentum, weight_decay, schedule, eps_placement }
            }
            Optimizer::Adagrad(AdagradConfig {
                lr,
                initial_accumulator,
                eps,
                weight_decay,
                schedule,
                eps_placement,
            }) => {
                let (schedule, eps_placement) = (schedule.into(), eps_placement.into());
                SavedOptimizer::Adagrad { lr, initial_accumulator, eps, weight_decay, schedule, eps_placement }
            }
            Optimizer::Adadelta(AdadeltaConfig { lr, rho, eps, weight_decay, schedule }) => {
                SavedOptimizer::Adadelta { lr, rho, eps, weight_decay, schedule: schedule.into() }
            }
        }
    }
}

impl From<SavedOptimizer> for Optimizer {
    fn from(o: SavedOptimizer) -> Self {
        match o {
            SavedOptimizer::Adam(c) => Optimizer::Adam(c.into()),
            SavedOptimizer::AdamW(c) => Optimizer::AdamW(c.into()),
            SavedOptimizer::Sgd { lr, momentum, nesterov, weight_decay, schedule } => {
                Optimizer::Sgd(SgdConfig { lr, momentum, nesterov, weight_decay, schedule: schedule.into() })
            }
            SavedOptimizer::RmsProp { lr, rho, eps, momentum, weight_decay, schedule, eps_placement } => {
                let (schedule, eps_placement) = (schedule.into(), eps_placement.into());
                Optimizer::RmsProp(RmsPropConfig { lr, rho, eps, momentum, weight_decay, schedule, eps_placement })
            }
            SavedOptimizer::Adagrad { lr, initial_accumulator, eps, weight_decay, schedule, eps_placement } => {
                let (schedule, eps_placement) = (schedule.into(), eps_placement.into());
                Optimizer::Adagrad(AdagradConfig {
                    lr,
                    initial_accumulator,
                    eps,
                    weight_decay,
                    schedule,
                    eps_placement,
                })
            }
            SavedOptimizer::Adadelta { lr, rho, eps, weight_decay, schedule } => {
                Optimizer::Adadelta(AdadeltaConfig { lr, rho, eps, weight_decay, schedule: schedule.into() })
            }
        }
    }
}

impl SavedDense {
    /// The layer's activation, dropout rate and batch norm, checked.
    pub(super) fn parts(&self) -> Result<(Activation, f32, Option<BatchNormConfig>)> {
        let activation = Activation::parse(&self.activation)?;
        let norm = self.batch_norm.map(|b| BatchNormConfig { eps: b.eps, momentum: b.momentum });
        Ok((activation, self.dropout, norm))
    }
}

impl SavedCompile {
    pub(super) fn new(loss: Loss, optimizer: Optimizer) -> SavedCompile {
        SavedCompile { loss: loss.name().to_string(), optimizer: optimizer.into() }
    }

    pub(super) fn parts(&self) -> Result<(Loss, Optimizer)> {
        Ok((Loss::parse(&self.loss)?, self.optimizer.into()))
    }
}

/// The activation as [`Activation::parse`] reads it back (with leaky relu's slope).
pub(super) fn activation_tag(a: Activation) -> String {
    match a {
        Activation::LeakyRelu(slope) => format!("leaky_relu:{slope}"),
        a => a.name().to_string(),
    }
}

/// Parses one of the metadata's JSON values, naming the key and the text on failure.
pub(super) fn from_json<T: for<'de> Deserialize<'de>>(key: &str, text: &str) -> std::result::Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("bad `{key}` metadata ({e}): {text}"))
}

/// The JSON text of a metadata value (these types always serialise).
pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| WgnnError::invalid("save", format!("could not write metadata: {e}")))
}
