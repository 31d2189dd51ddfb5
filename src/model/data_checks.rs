//! What `fit`, `evaluate` and `predict` check of a data set before anything is uploaded: rows of
//! the model's input shape, and labels and targets the compiled loss can read.

use super::*;

impl Sequential {
    /// Checks `data` has rows of the model's input width.
    pub(super) fn check_features(&self, op: &str, data: &Dataset) -> Result<()> {
        if let Some(e) = self.token_embedding() {
            return Err(WgnnError::invalid(
                op,
                format!(
                    "layer 0 ({}) reads token ids, not the rows of {}: train with fit_tokens on a TokenDataset, \
                     sample with generate",
                    e.describe(),
                    data.source
                ),
            ));
        }
        if self.loss_positions() > 1 {
            return Err(WgnnError::invalid(
                op,
                format!(
                    "the loss reads a label per position of the {:?} output, {} has one per row",
                    self.shapes.last().map(Vec::as_slice).unwrap_or_default(),
                    data.source
                ),
            ));
        }
        if data.feature_dim != self.input_dim() {
            return Err(WgnnError::shape_of(
                op,
                &[("data", &data.shape()), ("input", &self.input_shape)],
                format!(
                    "{} has {} features per row ({:?}) but the model takes {:?} ({})",
                    data.source,
                    data.feature_dim,
                    data.sample_shape,
                    self.input_shape,
                    self.input_dim()
                ),
            ));
        }
        // Same size, other axes (a 784-wide row given to a [28, 28, 1] model is fine; a
        // [28, 28, 1] sample given to a [14, 56, 1] model is not).
        if data.sample_shape.len() > 1 && self.input_shape.len() > 1 && data.sample_shape != self.input_shape {
            return Err(WgnnError::shape_of(
                op,
                &[("data", &data.shape()), ("input", &self.input_shape)],
                format!(
                    "{} has samples of {:?} but the model takes {:?}",
                    data.source, data.sample_shape, self.input_shape
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
    pub(super) fn check_data(&self, op: &str, data: &Dataset) -> Result<()> {
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
}
