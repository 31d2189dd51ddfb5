//! A model's parameters as a person reads and writes them: per dense layer (W, b), every tensor by
//! its saved name, a batch norm's state.

use super::*;

/// A batch-normalised layer's state, each `[channels]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormState {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub running_mean: Vec<f32>,
    pub running_var: Vec<f32>,
}

/// One parameter tensor of a model, named as in saved files.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    /// `layers.{i}.{slot}`: `weight`, `bias`, `gamma`, `beta`, `running_mean`, `running_var`.
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Sequential {
    /// The flat parameter buffer, read back from wherever it lives.
    fn flat_params(&self) -> Result<Vec<f32>> {
        match &self.state {
            State::Gpu(g) => g.params.to_vec(),
            State::Cpu(c) => Ok(c.params.clone()),
        }
    }

    /// Per dense layer, (W `[inputs·units]`, b `[units]`; empty without a bias), read back from
    /// wherever they live. See [`Sequential::parameters`] for every tensor by name.
    pub fn weights(&self) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let flat = self.flat_params()?;
        Ok(self.weighted_layers().map(|i| self.layer_weights(&flat, i)).collect())
    }

    /// The layers that have a weight tensor, in order.
    fn weighted_layers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.layers.len()).filter(|&i| self.layout.slot(i, "weight").is_some())
    }

    fn layer_weights(&self, flat: &[f32], i: usize) -> (Vec<f32>, Vec<f32>) {
        let get = |name: &str| {
            self.layout.slot(i, name).map_or(Vec::new(), |s| flat[s.offset..s.offset + s.spec.len()].to_vec())
        };
        (get("weight"), get("bias"))
    }

    /// Every parameter tensor, in layout order (the trained ones first).
    pub fn parameters(&self) -> Result<Vec<Parameter>> {
        let flat = self.flat_params()?;
        Ok(self
            .layout
            .slots
            .iter()
            .map(|s| {
                let values = flat[s.offset..s.offset + s.spec.len()].to_vec();
                Parameter { name: format!("layers.{}.{}", s.layer, s.spec.name), shape: s.spec.shape.clone(), values }
            })
            .collect())
    }

    /// Layer `i`'s batch-norm γ, β and running statistics; `None` when it is not a batch norm.
    pub fn batch_norm_state(&self, i: usize) -> Result<Option<BatchNormState>> {
        if !matches!(self.layers.get(i), Some(Layer::BatchNorm(_))) {
            return Ok(None);
        }
        let flat = self.flat_params()?;
        let get = |name: &str| {
            self.layout.slot(i, name).map_or(Vec::new(), |s| flat[s.offset..s.offset + s.spec.len()].to_vec())
        };
        Ok(Some(BatchNormState {
            gamma: get("gamma"),
            beta: get("beta"),
            running_mean: get("running_mean"),
            running_var: get("running_var"),
        }))
    }

    /// Replaces every dense layer's W and b (as [`Sequential::weights`] gives them; shapes must
    /// match); batch-norm state is kept.
    pub fn set_weights(&mut self, weights: &[(Vec<f32>, Vec<f32>)]) -> Result<()> {
        let layers: Vec<usize> = self.weighted_layers().collect();
        if weights.len() != layers.len() {
            // A count of layers, not a tensor: no shapes.
            return Err(WgnnError::shape_of(
                "set_weights",
                &[],
                format!("{} layers of weights given for a model with {}", weights.len(), layers.len()),
            ));
        }
        let mut flat = self.flat_params()?;
        for ((w, b), &i) in weights.iter().zip(&layers) {
            for (name, values) in [("weight", w), ("bias", b)] {
                let slot = self.layout.slot(i, name);
                let expected = slot.map_or(0, |s| s.spec.len());
                if values.len() != expected {
                    let want = slot.map_or(vec![0], |s| s.spec.shape.clone());
                    return Err(WgnnError::shape_of(
                        "set_weights",
                        &[(name, &[values.len()]), ("layer", &want)],
                        format!(
                            "layer {i} ({}) needs {name} {want:?}, got {} values",
                            self.layers[i].describe(),
                            values.len()
                        ),
                    ));
                }
                if let Some(s) = slot {
                    flat[s.offset..s.offset + values.len()].copy_from_slice(values);
                }
            }
        }
        match &mut self.state {
            State::Gpu(g) => g.params.write(&flat),
            State::Cpu(c) => {
                c.params = flat;
                Ok(())
            }
        }
    }

    /// Replaces the parameter tensors given (as [`Sequential::parameters`] names and shapes
    /// them: `layers.{i}.{slot}`, an embedding's `table` say); the others are kept.
    pub fn set_parameters(&mut self, params: &[Parameter]) -> Result<()> {
        let mut flat = self.flat_params()?;
        for p in params {
            let slot = self.layout.slots.iter().find(|s| format!("layers.{}.{}", s.layer, s.spec.name) == p.name);
            let Some(s) = slot else {
                return Err(WgnnError::invalid("set_parameters", format!("the model has no parameter {:?}", p.name)));
            };
            if p.shape != s.spec.shape || p.values.len() != s.spec.len() {
                return Err(WgnnError::shape_of(
                    "set_parameters",
                    &[(&p.name, &p.shape), ("expected", &s.spec.shape)],
                    format!("{} is {:?}, got {:?} with {} values", p.name, s.spec.shape, p.shape, p.values.len()),
                ));
            }
            flat[s.offset..s.offset + p.values.len()].copy_from_slice(&p.values);
        }
        self.write_params(flat)
    }
}
