//! The losses a model is compiled with: names, the labels and targets each reads.

use super::*;

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
    pub(super) fn classes(self, outputs: usize) -> Option<usize> {
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
    pub(super) fn target_dim(self, data: &Dataset, outputs: usize) -> Result<Option<usize>> {
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
            Some(t) if t.dim != want => Err(WgnnError::shape_of(
                self.name(),
                &[("targets", &[data.rows, t.dim]), ("expected targets", &[data.rows, want])],
                format!("{} has targets of width {} but the loss needs {want} per row", data.source, t.dim),
            )),
            Some(t) if Some(t.values.len()) != data.rows.checked_mul(t.dim) => Err(WgnnError::shape_of(
                self.name(),
                &[("target values", &[t.values.len()]), ("targets", &[data.rows, t.dim])],
                format!(
                    "{} has {} target values for {} rows of width {} (= {})",
                    data.source,
                    t.values.len(),
                    data.rows,
                    t.dim,
                    crate::host_memory::count_text(data.rows.checked_mul(t.dim))
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
    pub(super) fn float_targets(self, data: &Dataset, outputs: usize) -> Result<Option<Targets>> {
        let Some(dim) = self.target_dim(data, outputs)? else { return Ok(None) };
        Ok(Some(match (&data.targets, self) {
            (Some(t), _) => t.clone(),
            (None, Loss::CategoricalCrossentropy) => Targets { values: data.one_hot(dim)?, dim },
            // Hinge's ±1 from labels 0/1 (the kernel maps t > 0 to +1), or labels as values.
            (None, _) => Targets { values: data.labels.iter().map(|&l| l as f32).collect(), dim: 1 },
        }))
    }
}
