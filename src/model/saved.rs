//! The JSON a saved model and a checkpoint carry in their safetensors metadata, as serde types.
//!
//! These mirror the in-memory configs field for field but are their own types: the file's
//! schema is a promise to files already written, so it changes only here and on purpose.
//! Format 2 lists the layers Keras style (`{"type": "dense", …}`, `{"type": "batch_norm", …}`)
//! with a sample shape; format 1 (a list of dense layers, each with its dropout and batch norm,
//! and an input width) still loads, its tensors renamed on the way (see [`SavedModelV1`]).
//! Format 3 is format 2 with residual sums (`{"type": "add", "from": 2}`, a projection as a
//! nested layer), scale layers and the GELU activations; format 4 adds the transformer's layers:
//! layer norms, multi-head attention and the token layers (`embedding`, `positional_embedding`,
//! `dense_tied`, whose table is saved once, with its embedding). A file is written in the lowest
//! format that holds its layers, so a model without them is still format 2.

use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use super::{Loss, Optimizer};
use crate::activation::Activation;
use crate::config::batch_norm::BatchNormConfig;
use crate::error::{Result, WgnnError};
use crate::init::Initializer;
use crate::layers::{
    attention, conv2d, dense, embedding, pool2d, Dense, Layer, LayerNormConfig, Pooling, PositionalEmbedding, Residual,
    Scale, TiedDense,
};

mod optimizer;

use optimizer::SavedOptimizer;

/// The version of [`SavedModel`] this wgnn writes.
pub(super) const FORMAT: u64 = 4;

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

/// One layer of a format-2 (to 4) file: the per-layer schema lives with the layer
/// (`dense::Saved`, `conv2d::Saved`, `pool2d::Saved`), this enum lists them under their tags.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum SavedLayer {
    Dense(dense::Saved),
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
    Conv2d(conv2d::Saved),
    MaxPool2d(pool2d::Saved),
    AveragePooling2d(pool2d::Saved),
    GlobalAveragePooling2d,
    /// Format 3: a scale layer.
    Scale {
        factor: f32,
    },
    /// Format 3: a layer norm (`bias`: whether it has β).
    LayerNorm {
        epsilon: f32,
        bias: bool,
    },
    /// Format 3: a residual sum.
    Add {
        from: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        projection: Option<Box<SavedLayer>>,
    },
    /// Format 3: multi-head self-attention.
    MultiHeadAttention(attention::Saved),
    /// Format 3: a token embedding.
    Embedding(embedding::Saved),
    /// Format 3: a learned positional embedding.
    PositionalEmbedding {
        block: usize,
    },
    /// Format 3: the output head tied to layer `embedding`'s table (saved once, there).
    DenseTied {
        embedding: usize,
        vocab: usize,
    },
}

impl From<&Layer> for SavedLayer {
    fn from(l: &Layer) -> Self {
        match *l {
            Layer::Dense(d) => SavedLayer::Dense(d.saved()),
            Layer::Activation(a) => SavedLayer::Activation { activation: a.tag() },
            Layer::Dropout(rate) => SavedLayer::Dropout { rate },
            Layer::BatchNorm(c) => SavedLayer::BatchNorm(SavedBatchNorm { eps: c.eps, momentum: c.momentum }),
            Layer::Flatten => SavedLayer::Flatten,
            Layer::Reshape(ref shape) => SavedLayer::Reshape { shape: shape.clone() },
            Layer::Conv2D(c) => SavedLayer::Conv2d(c.saved()),
            Layer::Pool(Pooling::Max(c)) => SavedLayer::MaxPool2d((&c).into()),
            Layer::Pool(Pooling::Average(c)) => SavedLayer::AveragePooling2d((&c).into()),
            Layer::Pool(Pooling::GlobalAverage) => SavedLayer::GlobalAveragePooling2d,
            Layer::Scale(s) => SavedLayer::Scale { factor: s.factor },
            Layer::MultiHeadAttention(a) => SavedLayer::MultiHeadAttention(a.saved()),
            Layer::LayerNorm(c) => SavedLayer::LayerNorm { epsilon: c.epsilon, bias: c.bias },
            Layer::Add(ref r) => SavedLayer::Add {
                from: r.from,
                projection: r.projection.as_deref().map(|p| Box::new(SavedLayer::from(p))),
            },
            Layer::Embedding(e) => SavedLayer::Embedding(e.saved()),
            Layer::PositionalEmbedding(p) => SavedLayer::PositionalEmbedding { block: p.block },
            Layer::TiedDense(t) => SavedLayer::DenseTied { embedding: t.embedding, vocab: t.vocab },
        }
    }
}

impl SavedLayer {
    /// The format a file needs to hold this layer: 3 for the residual sums, scale layers and
    /// activations (GELU) format 2 did not have, 4 for the transformer's layers, so a wgnn that
    /// reads an older format refuses the file by its number rather than by a layer's name.
    pub(super) fn format(&self) -> u64 {
        let new_activation =
            |tag: &str| Activation::parse(tag).is_ok_and(|a| matches!(a, Activation::Gelu | Activation::GeluErf));
        match self {
            SavedLayer::MultiHeadAttention(_)
            | SavedLayer::Embedding(_)
            | SavedLayer::PositionalEmbedding { .. }
            | SavedLayer::DenseTied { .. }
            | SavedLayer::LayerNorm { .. } => 4,
            SavedLayer::Add { .. } | SavedLayer::Scale { .. } => 3,
            SavedLayer::Activation { activation } if new_activation(activation) => 3,
            SavedLayer::Dense(d) if new_activation(d.activation_tag()) => 3,
            SavedLayer::Conv2d(c) if new_activation(c.activation_tag()) => 3,
            _ => 2,
        }
    }

    /// The layer (its weights' initialiser is not saved: the weights are).
    pub(super) fn layer(&self) -> Result<Layer> {
        Ok(match self {
            SavedLayer::Dense(d) => Layer::Dense(d.layer()?),
            SavedLayer::Activation { activation } => Layer::Activation(Activation::parse(activation)?),
            SavedLayer::Dropout { rate } => Layer::Dropout(*rate),
            SavedLayer::BatchNorm(b) => Layer::BatchNorm(BatchNormConfig { eps: b.eps, momentum: b.momentum }),
            SavedLayer::Flatten => Layer::Flatten,
            SavedLayer::Reshape { shape } => Layer::Reshape(shape.clone()),
            SavedLayer::Conv2d(c) => Layer::Conv2D(c.layer()?),
            SavedLayer::MaxPool2d(p) => Layer::Pool(Pooling::Max(p.config()?)),
            SavedLayer::AveragePooling2d(p) => Layer::Pool(Pooling::Average(p.config()?)),
            SavedLayer::GlobalAveragePooling2d => Layer::Pool(Pooling::GlobalAverage),
            SavedLayer::Scale { factor } => Layer::Scale(Scale { factor: *factor }),
            SavedLayer::MultiHeadAttention(a) => Layer::MultiHeadAttention(a.layer()?),
            &SavedLayer::LayerNorm { epsilon, bias } => Layer::LayerNorm(LayerNormConfig { epsilon, bias }),
            SavedLayer::Add { from, projection } => Layer::Add(Residual {
                from: *from,
                projection: projection.as_deref().map(SavedLayer::layer).transpose()?.map(Box::new),
            }),
            SavedLayer::Embedding(e) => Layer::Embedding(e.layer()),
            SavedLayer::PositionalEmbedding { block } => Layer::PositionalEmbedding(PositionalEmbedding::new(*block)),
            &SavedLayer::DenseTied { embedding, vocab } => Layer::TiedDense(TiedDense { embedding, vocab }),
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
    /// Absent for one process (and in checkpoints from before data-parallel fit), so that those
    /// are written as before.
    #[serde(default = "one_rank", skip_serializing_if = "is_one_rank")]
    pub(super) world_size: usize,
}

fn one_rank() -> usize {
    1
}

fn is_one_rank(ranks: &usize) -> bool {
    *ranks == 1
}

impl From<super::FitRecord> for SavedFit {
    fn from(r: super::FitRecord) -> Self {
        let (batch_size, rows, validation_fraction, world_size) =
            (r.batch_size, r.rows, r.validation_fraction, r.world_size);
        SavedFit { batch_size, rows, validation_fraction, world_size }
    }
}

impl From<SavedFit> for super::FitRecord {
    fn from(s: SavedFit) -> Self {
        let (batch_size, rows, validation_fraction, world_size) =
            (s.batch_size, s.rows, s.validation_fraction, s.world_size);
        super::FitRecord { batch_size, rows, validation_fraction, world_size }
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

/// Parses one of the metadata's JSON values, naming the key and the text on failure.
pub(super) fn from_json<T: for<'de> Deserialize<'de>>(key: &str, text: &str) -> std::result::Result<T, String> {
    serde_json::from_str(text).map_err(|e| format!("bad `{key}` metadata ({e}): {text}"))
}

/// The JSON text of a metadata value (these types always serialise).
pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| WgnnError::invalid("save", format!("could not write metadata: {e}")))
}

#[cfg(test)]
mod tests {
    use super::SavedFit;

    #[test]
    fn the_world_size_is_written_only_past_one_and_read_as_one_where_absent() {
        // A checkpoint from before data-parallel fit: one process.
        let old: SavedFit = serde_json::from_str(r#"{"batch_size":32,"rows":100}"#).unwrap();
        assert_eq!(old.world_size, 1);
        // One process writes what it always wrote; more ranks are recorded.
        let one = SavedFit { world_size: 1, ..old };
        assert_eq!(serde_json::to_string(&one).unwrap(), r#"{"batch_size":32,"rows":100}"#);
        let two = SavedFit { world_size: 2, ..old };
        let text = serde_json::to_string(&two).unwrap();
        assert_eq!(text, r#"{"batch_size":32,"rows":100,"world_size":2}"#);
        assert_eq!(serde_json::from_str::<SavedFit>(&text).unwrap(), two);
    }
}
