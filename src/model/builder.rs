//! Building a model: the layers one by one, then `build` allocates the parameters on a backend
//! (checked against the device's limits) and draws the initial weights.

use super::*;
use crate::host_memory::{self, checked_bytes, checked_product};
use crate::layers::{
    Conv2D, Dense, Embedding, LayerNormConfig, MultiHeadAttention, Padding, PositionalEmbedding, Residual, Scale,
    TiedDense,
};

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

/// Each layer's weights, and the trained parameters as a whole, must fit one binding: an error
/// naming the layer, not the flat buffer they would have been cut from.
fn check_parameters_fit(gpu: &Gpu, layers: &[Layer], layout: &ParamLayout) -> Result<()> {
    let limit = binding_bytes(gpu);
    let too_large = |what: String, floats: usize| WgnnError::DeviceLimit {
        op: "build".into(),
        what,
        amount: 4 * floats as u64,
        unit: "bytes",
        limit,
        limit_name: "max_storage_buffer_binding_size",
    };
    for s in &layout.slots {
        if 4 * s.spec.len() as u64 > limit {
            let layer = &layers[s.layer];
            return Err(too_large(
                format!("layer {} ({})'s {} {:?} f32", s.layer, layer.describe(), s.spec.name, s.spec.shape),
                s.spec.len(),
            ));
        }
    }
    if 4 * (layout.total + UNIFORM_WINDOW_FLOATS) as u64 > limit {
        let what = format!("the model's parameters ({} layers, one buffer of {} floats)", layers.len(), layout.total);
        return Err(too_large(what, layout.total + UNIFORM_WINDOW_FLOATS));
    }
    Ok(())
}

/// Each layer's parameter tensors, and all of them together (aligned as laid out), must be
/// countable in bytes: an error naming the layer and the tensor's shape where a product overflows.
fn check_slot_sizes(layers: &[Layer], shapes: &[Vec<usize>]) -> Result<()> {
    let mut total: u64 = 0;
    for (i, layer) in layers.iter().enumerate() {
        let input = layer.slot_input(i, shapes);
        for spec in layer.slots(input) {
            let bytes = checked_product(&spec.shape)
                .and_then(|n| n.checked_next_multiple_of(layout::PARAM_ALIGN))
                .and_then(|n| checked_bytes(n, 4))
                .filter(|b| b.checked_add(total).is_some());
            let Some(bytes) = bytes else {
                return Err(WgnnError::shape_of(
                    &layer.op(i),
                    &[("input", input), (spec.name, &spec.shape)],
                    format!(
                        "its {} {:?} holds more values than this machine can count in bytes",
                        spec.name, spec.shape
                    ),
                ));
            };
            total += bytes;
        }
    }
    Ok(())
}

/// The host holds the flat parameters about three times while building (the values, a layer's
/// drawn weights, and the gradients or the upload's copy): refused before any is allocated.
fn check_host_memory(layers: &[Layer], layout: &ParamLayout) -> Result<()> {
    const HOST_COPIES: u64 = 3;
    let bytes = checked_bytes(layout.total + UNIFORM_WINDOW_FLOATS, 4).and_then(|b| b.checked_mul(HOST_COPIES));
    let largest = layout.slots.iter().max_by_key(|s| s.spec.len());
    let what = || {
        let largest = largest.map_or(String::new(), |s| {
            format!(
                ", the largest layer {} ({})'s {} {:?} f32",
                s.layer,
                layers[s.layer].describe(),
                s.spec.name,
                s.spec.shape
            )
        });
        format!("building the model's {} parameters ({HOST_COPIES} copies while building{largest})", layout.total)
    };
    host_memory::check("build", what, bytes.unwrap_or(u64::MAX))
}

/// One sample's shape: a width (`784`) or axes (`[28, 28, 1]`, channels last).
#[derive(Clone, Debug, PartialEq)]
pub struct InputShape(pub Vec<usize>);

impl InputShape {
    /// A token model's sample: `block` token ids (u32), read by an [`crate::layers::Embedding`]
    /// first layer. The same as `InputShape::from(block)`: what makes a model read ids is its
    /// first layer.
    pub fn tokens(block: usize) -> InputShape {
        InputShape(vec![block])
    }
}

impl From<usize> for InputShape {
    fn from(width: usize) -> Self {
        InputShape(vec![width])
    }
}
impl<const N: usize> From<[usize; N]> for InputShape {
    fn from(shape: [usize; N]) -> Self {
        InputShape(shape.to_vec())
    }
}
impl From<&[usize]> for InputShape {
    fn from(shape: &[usize]) -> Self {
        InputShape(shape.to_vec())
    }
}
impl From<Vec<usize>> for InputShape {
    fn from(shape: Vec<usize>) -> Self {
        InputShape(shape)
    }
}

/// Builds a [`Sequential`] layer by layer.
pub struct SequentialBuilder {
    input_shape: Vec<usize>,
    layers: Vec<Layer>,
    seed: u64,
    fuse: bool,
    /// The first layers of the residual branches being written (innermost last).
    branches: Vec<usize>,
}

impl SequentialBuilder {
    /// An empty model of samples of `input_shape`, initial weights drawn from `seed` (see
    /// [`Sequential::new`]).
    pub(super) fn new(input_shape: Vec<usize>, seed: u64) -> SequentialBuilder {
        SequentialBuilder { input_shape, layers: Vec::new(), seed, fuse: true, branches: Vec::new() }
    }

    /// Adds `layer` (Keras' `model.add`).
    #[allow(clippy::should_implement_trait)] // Keras' name; a builder, not arithmetic
    pub fn add(mut self, layer: Layer) -> SequentialBuilder {
        self.layers.push(layer);
        self
    }

    /// Adds a dense layer of `units` outputs with `activation`, W drawn Glorot-uniform, b zero.
    pub fn dense(self, units: usize, activation: Activation) -> SequentialBuilder {
        self.add(Layer::dense(units, activation))
    }

    /// Adds a dense layer whose W is drawn by `init` (b starts at zero), e.g.
    /// `Initializer::Constant(0.01)` for logistic regression.
    pub fn dense_init(self, units: usize, activation: Activation, init: Initializer) -> SequentialBuilder {
        self.add(Layer::Dense(Dense { units, activation, use_bias: true, init }))
    }

    /// Adds an activation layer.
    pub fn activation(self, activation: Activation) -> SequentialBuilder {
        self.add(Layer::Activation(activation))
    }

    /// Adds inverted dropout of `rate` (in [0, 1)) while training (Keras' `Dropout(rate)`); not
    /// allowed after the last dense layer.
    pub fn dropout(self, rate: f32) -> SequentialBuilder {
        self.add(Layer::Dropout(rate))
    }

    /// Adds a 2-D convolution (Keras' `Conv2D(filters, kernel, activation=…)`: stride 1, padding
    /// valid, a bias); [`Layer::Conv2D`] for the other settings.
    pub fn conv2d(self, filters: usize, kernel: (usize, usize), activation: Activation) -> SequentialBuilder {
        self.add(Layer::conv2d(filters, kernel, activation))
    }

    /// Adds a 2-D convolution whose output keeps the input's height and width (Keras'
    /// `padding="same"`, stride 1), as a residual branch needs.
    pub fn conv2d_same(self, filters: usize, kernel: (usize, usize), activation: Activation) -> SequentialBuilder {
        self.add(Layer::Conv2D(Conv2D { padding: Padding::Same, ..Conv2D::new(filters, kernel, activation) }))
    }

    /// Adds a residual block: the layers `branch` adds, then their output plus the block's input
    /// (`y = f(x) + x`, ResNet's and the transformer's skip connection; put an activation after
    /// it for ResNet's `relu(f(x) + x)`). The branch must keep the shape (else see
    /// [`SequentialBuilder::residual_projected`]); blocks nest.
    ///
    /// ```
    /// # use wgnn::model::{Backend, Sequential};
    /// # use wgnn::Activation;
    /// let model = Sequential::new(32, 1)
    ///     .dense(32, Activation::Relu)
    ///     .residual(|b| b.dense(32, Activation::Relu).dense(32, Activation::Identity))
    ///     .activation(Activation::Relu)
    ///     .dense(10, Activation::Softmax)
    ///     .build(&Backend::Cpu)?;
    /// # Ok::<(), wgnn::WgnnError>(())
    /// ```
    pub fn residual(self, branch: impl FnOnce(SequentialBuilder) -> SequentialBuilder) -> SequentialBuilder {
        self.residual_block(None, branch)
    }

    /// [`SequentialBuilder::residual`] whose shortcut goes through `projection` (a dense layer or
    /// a convolution, without activation: a 1×1 convolution with the branch's filters and
    /// strides, say) where the branch changes the shape.
    pub fn residual_projected(
        self,
        projection: Layer,
        branch: impl FnOnce(SequentialBuilder) -> SequentialBuilder,
    ) -> SequentialBuilder {
        self.residual_block(Some(Box::new(projection)), branch)
    }

    fn residual_block(
        mut self,
        projection: Option<Box<Layer>>,
        branch: impl FnOnce(SequentialBuilder) -> SequentialBuilder,
    ) -> SequentialBuilder {
        let from = self.layers.len();
        self.branches.push(from);
        let mut built = branch(self);
        built.branches.pop();
        built.add(Layer::Add(Residual { from, projection }))
    }

    /// Adds max pooling over `pool_size` windows moved by their own size (Keras' `MaxPooling2D`).
    pub fn max_pool2d(self, pool_size: (usize, usize)) -> SequentialBuilder {
        self.add(Layer::max_pool2d(pool_size))
    }

    /// Adds a reshape layer: each sample read as `shape` (the same number of values), e.g. a
    /// 784-wide row as `[28, 28, 1]` before a convolution.
    pub fn reshape(self, shape: &[usize]) -> SequentialBuilder {
        self.add(Layer::Reshape(shape.to_vec()))
    }

    /// Adds a scale layer: y = factor · x (e.g. a residual branch scaled down before its sum).
    pub fn scale(self, factor: f32) -> SequentialBuilder {
        self.add(Layer::Scale(Scale { factor }))
    }

    /// Adds multi-head self-attention over the tokens of a `[T, C]` sample (nanoGPT's
    /// `CausalSelfAttention(n_head)` where `causal`, Keras' `MultiHeadAttention` over one sequence
    /// where not: biases, normal(0, 0.02) weights); [`Layer::MultiHeadAttention`] for the other
    /// settings.
    pub fn multi_head_attention(self, heads: usize, causal: bool) -> SequentialBuilder {
        self.add(Layer::MultiHeadAttention(MultiHeadAttention::new(heads, causal)))
    }

    /// Adds a token embedding of `vocab` ids to `width` values (the first layer of a token model,
    /// whose input is [`InputShape::tokens`]), its table drawn normal(0, 0.02) as nanoGPT's.
    pub fn embedding(self, vocab: usize, width: usize) -> SequentialBuilder {
        self.add(Layer::Embedding(Embedding::new(vocab, width)))
    }

    /// Adds a learned positional embedding for samples of up to `block` positions (its width the
    /// input's last axis), drawn normal(0, 0.02).
    pub fn positional_embedding(self, block: usize) -> SequentialBuilder {
        self.add(Layer::PositionalEmbedding(PositionalEmbedding::new(block)))
    }

    /// Adds the output head tied to the model's embedding (nanoGPT's `lm_head` sharing `wte`):
    /// logits = h·tableᵀ per position, no bias, `vocab` outputs. The model's first layer must be
    /// an embedding (else `build` says so).
    pub fn dense_tied_to_embedding(self) -> SequentialBuilder {
        let vocab = match self.layers.first() {
            Some(Layer::Embedding(e)) => e.vocab,
            _ => 0,
        };
        self.add(Layer::TiedDense(TiedDense { embedding: 0, vocab }))
    }

    /// Adds a layer norm over the last axis with PyTorch's defaults (eps 1e-5, γ and β): each
    /// row of a `[T, C]` sample normalised on its own, as a transformer's blocks do.
    pub fn layer_norm(self) -> SequentialBuilder {
        self.layer_norm_with(LayerNormConfig::default())
    }

    /// [`SequentialBuilder::layer_norm`] with its settings (`bias: false`: no β, as nanoGPT's
    /// `bias=False`).
    pub fn layer_norm_with(self, cfg: LayerNormConfig) -> SequentialBuilder {
        self.add(Layer::LayerNorm(cfg))
    }

    /// Adds a flatten layer (a multi-axis sample to one axis).
    pub fn flatten(self) -> SequentialBuilder {
        self.add(Layer::Flatten)
    }

    /// Batch normalisation with PyTorch's defaults (eps 1e-5, momentum 0.1). Right after a
    /// `dense(units, act)`, it normalises that layer's pre-activation: the pair becomes
    /// `Dense(units, no bias)` → `BatchNorm` → `Activation(act)` (Keras' recipe; BN's shift takes
    /// the bias's place). Elsewhere it is a batch-norm layer as it stands. Not allowed after the
    /// last dense layer.
    pub fn batch_norm(self) -> SequentialBuilder {
        self.batch_norm_with(BatchNormConfig::default())
    }

    /// [`SequentialBuilder::batch_norm`] with its hyper-parameters (Keras' momentum 0.99 is
    /// momentum 0.01 here).
    pub fn batch_norm_with(mut self, cfg: BatchNormConfig) -> SequentialBuilder {
        // Not on a dense layer before the branch it starts: the shortcut reads that layer's output.
        let starts_branch = self.branches.last() == Some(&self.layers.len());
        let Some(Layer::Dense(d)) = self.layers.last_mut().filter(|_| !starts_branch) else {
            return self.add(Layer::BatchNorm(cfg));
        };
        let act = d.activation;
        (d.use_bias, d.activation) = (false, Activation::Identity);
        self = self.add(Layer::BatchNorm(cfg));
        if act != Activation::Identity {
            self = self.add(Layer::Activation(act));
        }
        self
    }

    /// Whether the step fuses layers where the device profile says it pays (default true): false
    /// runs every layer on its own, the reference the fused step is tested against.
    pub fn fused(mut self, fuse: bool) -> SequentialBuilder {
        self.fuse = fuse;
        self
    }

    /// The layers' shapes and settings, checked: `shapes[i]` is layer i's input shape.
    fn check(&self) -> Result<Vec<Vec<usize>>> {
        if self.input_shape.is_empty() || self.input_shape.contains(&0) {
            return Err(WgnnError::shape_of(
                "build",
                &[("input", &self.input_shape)],
                format!("the input shape {:?} has no features", self.input_shape),
            ));
        }
        if self.layers.is_empty() {
            return Err(WgnnError::invalid("build", "the model has no layers"));
        }
        if checked_product(&self.input_shape).is_none() {
            return Err(WgnnError::shape_of(
                "build",
                &[("input", &self.input_shape)],
                format!("the input shape {:?} holds more values than a usize counts", self.input_shape),
            ));
        }
        let mut shapes = vec![self.input_shape.clone()];
        for (i, layer) in self.layers.iter().enumerate() {
            layer.validate(i)?;
            if let Some(r) = layer.residual() {
                r.check_shapes(&layer.op(i), i, &shapes[r.from], &shapes[i])?;
            }
            if let Layer::TiedDense(t) = layer {
                t.check_tie(&layer.op(i), &self.layers[..i], &shapes[i])?;
            }
            let next = layer.output_shape(i, &shapes[i])?;
            if checked_product(&next).is_none() {
                return Err(WgnnError::shape_of(
                    &layer.op(i),
                    &[("input", &shapes[i]), ("output", &next)],
                    format!("its output shape {next:?} holds more values per sample than a usize counts"),
                ));
            }
            shapes.push(next);
        }
        // Dropout or batch norm after the last dense layer (or a head tied to the embedding) would
        // act on the outputs themselves.
        let last_dense = self.layers.iter().rposition(|l| matches!(l, Layer::Dense(_) | Layer::TiedDense(_)));
        for (i, layer) in self.layers.iter().enumerate().skip(last_dense.map_or(0, |d| d + 1)) {
            let what = match layer {
                Layer::Dropout(_) => "dropout on the output layer would drop outputs",
                Layer::BatchNorm(_) => "batch norm on the output layer would normalise the outputs",
                _ => continue,
            };
            return Err(WgnnError::invalid(
                "build",
                format!("layer {i} ({}): {what}: put it on a hidden layer", layer.describe()),
            ));
        }
        Ok(shapes)
    }

    /// Allocates the model on `backend` and draws the initial weights from the seed: each layer's
    /// initialiser for its weights (Glorot-uniform unless said otherwise), zero biases, batch
    /// norms as the identity map (the Keras defaults).
    pub fn build(self, backend: &Backend) -> Result<Sequential> {
        let shapes = self.check()?;
        // Every size is checked before a value is drawn: a huge layer is an error, not an abort.
        check_slot_sizes(&self.layers, &shapes)?;
        let layout = ParamLayout::new(&self.layers, &shapes);
        if let Backend::Gpu(gpu) = backend {
            check_parameters_fit(gpu, &self.layers, &layout)?;
        }
        check_host_memory(&self.layers, &layout)?;
        let flat = layout.initial(self.seed);
        let fused = self.fuse
            && match backend {
                Backend::Gpu(g) => g.profile().fuse_layers,
                Backend::Cpu => true,
            };
        let blocks = fusion::blocks(&self.layers, &shapes, &layout, self.seed, fused)?;
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
                mask_salt: 0,
            })),
            Backend::Cpu => {
                State::Cpu(CpuState { grads: vec![0.0; layout.total], params: flat, opt_state: Vec::new(), step: 0 })
            }
        };
        Ok(Sequential {
            input_shape: self.input_shape,
            layers: self.layers,
            shapes,
            blocks,
            fused,
            seed: self.seed,
            layout,
            compiled: None,
            state,
            resume_point: None,
            fit_record: None,
        })
    }
}
