//! `predict` and its forms: outputs as rows ([`Predictions`]) for a flat slice, a data set or a
//! few rows, and the classes they mean.

use super::*;
use crate::host_memory::{self, checked_bytes};
use crate::predictions::argmax;

/// The outputs did not come out as `rows` rows of the model's width (an internal error).
fn width_error(rows: usize) -> WgnnError {
    WgnnError::invalid("predict", format!("the outputs of {rows} rows are not whole rows (an internal error)"))
}

impl Sequential {
    /// The model's predictions for `rows` rows of `x` ([rows, input_dim], already normalised):
    /// class probabilities — softmax [rows, classes] for the cross-entropies, σ(z) [rows, 1] for
    /// [`Loss::BinaryCrossentropy`] — or the last layer's outputs for [`Loss::Hinge`] (scores)
    /// and [`Loss::MeanSquaredError`] (values). Before `compile`, the last layer's outputs
    /// through its own activation (a `softmax` layer gives probabilities, a linear one logits).
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Predictions> {
        const OP: &str = "predict";
        if self.token_embedding().is_some() {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "{} reads token ids, not f32 rows: sample with generate, score with evaluate_tokens",
                    self.layers[0].op(0)
                ),
            ));
        }
        // Checked: a row count whose product wraps would pass with a short x, then overflow the
        // output's allocation.
        let output_len = rows.checked_mul(self.output_dim());
        if rows == 0 || rows.checked_mul(self.input_dim()) != Some(x.len()) || output_len.is_none() {
            return Err(WgnnError::shape_of(
                OP,
                &[("x", &[x.len()]), ("input", &self.input_shape)],
                format!(
                    "x has {} values; expected rows ({rows}) × {} features with rows ≥ 1",
                    x.len(),
                    self.input_dim()
                ),
            ));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(WgnnError::NonFinite { op: OP.into(), index: i, value: x[i] });
        }
        // The host holds the predictions twice while they are made (the outputs, then the
        // probabilities from them; on the GPU each group's outputs, then all of them together):
        // refused before any is allocated.
        let what = || {
            let (shape, last) = ([rows, self.output_dim()], self.layers.len().saturating_sub(1));
            let layer = self.layers.last().map_or(String::new(), |l| format!(" of layer {last} ({})", l.describe()));
            format!("the predictions {shape:?} f32{layer}, held twice while they are made,")
        };
        let bytes = output_len.and_then(|n| checked_bytes(n, 4)).and_then(|b| b.checked_mul(2));
        host_memory::check_counted(OP, what, bytes)?;
        match &self.state {
            State::Gpu(g) => {
                let gpu = g.gpu.clone();
                // In groups of rows the device can hold at once (a data set binds at most
                // MAX_FEATURE_CHUNKS buffers), so any number of rows can be predicted.
                let limits = gpu.limits();
                let binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
                let input_dim = self.input_dim();
                let rows_per_binding = (binding / (4 * input_dim as u64)).max(1) as usize;
                let group = rows_per_binding.saturating_mul(MAX_FEATURE_CHUNKS);
                let mut predictions = Vec::with_capacity(output_len.unwrap_or(0));
                for (i, part) in x.chunks(group * input_dim).enumerate() {
                    let n = part.len() / input_dim;
                    let source = format!("predict input (rows {}..{})", i * group, i * group + n);
                    // The labels are placeholders, of one class.
                    let data = Dataset::from_f32(part.to_vec(), vec![0; n], input_dim, 1, &source)?;
                    let gpu_data = GpuData { rows: upload_rows(&gpu, &data)?, targets: None };
                    predictions.extend(self.predict_gpu(&gpu_data)?);
                }
                Ok(Predictions::new(predictions, self.output_dim()).ok_or_else(|| width_error(rows))?)
            }
            State::Cpu(_) => {
                let outputs = self.forward_cpu(OP, x, rows)?;
                let values = match self.output_function() {
                    Activation::Softmax => cpu::softmax(&outputs, rows, self.output_dim()),
                    Activation::Sigmoid => outputs.iter().map(|&z| cpu::sigmoid(z)).collect(),
                    _ => outputs,
                };
                Ok(Predictions::new(values, self.output_dim()).ok_or_else(|| width_error(rows))?)
            }
        }
    }

    /// Probabilities for every row of a data set (its scaling applied); its labels and targets
    /// are not read.
    pub fn predict_dataset(&self, data: &Dataset) -> Result<Predictions> {
        self.check_features("predict", data)?;
        self.predict(&data.to_f32(), data.rows)
    }

    /// Predictions for a few rows given as rows (`&[[f32; 2]]`, `&[Vec<f32>]`, …), each of the
    /// model's input width, already normalised as the training data was.
    ///
    /// ```
    /// # use wgnn::model::{Backend, Sequential};
    /// # use wgnn::Activation;
    /// let model = Sequential::new(2, 7).dense(3, Activation::Softmax).build(&Backend::Cpu)?;
    /// let p = model.predict_rows(&[[0.5f32, -1.0], [0.0, 2.0]])?;
    /// assert_eq!((p.num_rows(), p.width()), (2, 3));
    /// assert!(p.iter_rows().all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-5));
    /// # Ok::<(), wgnn::WgnnError>(())
    /// ```
    pub fn predict_rows<R: AsRef<[f32]>>(&self, rows: &[R]) -> Result<Predictions> {
        let width = self.input_dim();
        let mut x = Vec::with_capacity(rows.len().saturating_mul(width));
        for (i, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != width {
                return Err(WgnnError::shape_of(
                    "predict",
                    &[("row", &[row.len()]), ("input", &self.input_shape)],
                    format!("row {i} has {} values; the model takes {width} ({:?})", row.len(), self.input_shape),
                ));
            }
            x.extend_from_slice(row);
        }
        self.predict(&x, rows.len())
    }

    /// The class each row of `data` is predicted to be: the likeliest class of a softmax
    /// classifier; for one output unit, 1 where σ(z) ≥ 0.5 (binary cross-entropy) or the score
    /// is ≥ 0 (hinge; an uncompiled model's one output is read as a probability). A regression
    /// model (mean squared error) has no classes: an error.
    pub fn predict_classes(&self, data: &Dataset) -> Result<Vec<u32>> {
        let loss = self.compiled_loss();
        if loss == Some(Loss::MeanSquaredError) {
            return Err(WgnnError::invalid(
                "predict_classes",
                "a model compiled with mean_squared_error predicts values, not classes: use predict_dataset",
            ));
        }
        let p = self.predict_dataset(data)?;
        if p.width() > 1 {
            return Ok(p.iter_rows().map(|row| argmax(row) as u32).collect());
        }
        let threshold = if loss == Some(Loss::Hinge) { 0.0 } else { 0.5 };
        Ok(p.iter().map(|&v| u32::from(v >= threshold)).collect())
    }
}
