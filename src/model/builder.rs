//! Building a model: the layers one by one, then `build` allocates the parameters on a backend
//! (checked against the device's limits) and draws the initial weights.

use super::*;

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
pub(super) fn binding_bytes(gpu: &Gpu) -> u64 {
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
    /// An empty model of `input_dim` features, initial weights drawn from `seed` (see
    /// [`Sequential::new`]).
    pub(super) fn new(input_dim: usize, seed: u64) -> SequentialBuilder {
        SequentialBuilder { input_dim, layers: Vec::new(), inits: Vec::new(), seed, error: None }
    }

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
