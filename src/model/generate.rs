//! Sampling from a token model (nanoGPT's `generate`): the context cropped to the last `block`
//! tokens, a forward pass, the last position's logits read back, divided by the temperature, cut
//! to the top k, and a token drawn from their softmax by a seeded generator on the host.
//!
//! Why the host samples: a token needs V floats read back anyway (65 for a character model, a
//! few hundred kB for GPT-2's vocabulary) and the next step's input written, so the step waits
//! for the device either way; a sampling kernel would save those V floats and cost a sort or a
//! selection per token on the GPU. On the host the same code serves both backends, so the
//! same seed draws the same ids wherever the logits agree.
//!
//! A context shorter than the block is padded on the right with id 0 and the logits read at its
//! last position: the same as a forward of the shorter sequence wherever no position reads a
//! later one (per-position layers, causal attention). A model with a layer whose positions may
//! see later ones (attention without the mask, a flatten, a convolution) is refused, as it would
//! sample from logits that the padding changed.

use super::*;

/// The last position's logits of a window of ids.
type LastLogits<'m> = Box<dyn FnMut(&[u32]) -> Result<Vec<f32>> + 'm>;

impl Sequential {
    /// `n` token ids sampled after `prompt` (the new ids only; nanoGPT's `generate` returns them
    /// after the prompt): each from the softmax of the last position's logits / `temperature`,
    /// cut to the `top_k` largest where given (ties at the k-th kept, as nanoGPT's `< v[-1]`),
    /// drawn from `seed`. The same seed gives the same ids; the GPU and CPU backends agree where
    /// their logits do. Errors name the embedding for an id past its vocabulary.
    pub fn generate(
        &self,
        prompt: &[u32],
        n: usize,
        temperature: f32,
        top_k: Option<usize>,
        seed: u64,
    ) -> Result<Vec<u32>> {
        const OP: &str = "generate";
        let Some(e) = self.token_embedding() else {
            return Err(WgnnError::invalid(OP, "the model's first layer is not an embedding: it does not read ids"));
        };
        e.check_ids(&self.layers[0].op(0), prompt.iter().copied())?;
        if prompt.is_empty() {
            return Err(WgnnError::invalid(OP, "the prompt has no tokens: give at least one id"));
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(WgnnError::invalid(OP, format!("temperature must be finite and > 0, got {temperature}")));
        }
        if top_k == Some(0) {
            return Err(WgnnError::invalid(OP, "top_k must be at least 1"));
        }
        // A short context is padded on the right: only a model whose positions read no later
        // ones samples the same token from it.
        if let Some(i) = (0..self.layers.len()).find(|&i| self.mixes_positions(i)) {
            let why = match &self.layers[i] {
                Layer::MultiHeadAttention(_) => "attends to later positions: sampling needs causal attention",
                _ => "may mix positions: sampling needs layers that work per position or causally",
            };
            return Err(WgnnError::invalid(OP, format!("{} {why}", self.layers[i].op(i))));
        }
        let last = self.blocks.len() - 1;
        if self.loss_positions() != self.input_dim() || self.applied_activation(last) != Activation::Identity {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "sampling reads [T, V] logits: the model's output is {:?} through {}",
                    self.shapes.last().map(Vec::as_slice).unwrap_or_default(),
                    self.applied_activation(last).name()
                ),
            ));
        }
        let (block, vocab) = (self.input_dim(), self.output_classes());
        if vocab != e.vocab {
            return Err(WgnnError::invalid(
                OP,
                format!(
                    "the model scores {vocab} ids a position but its embedding reads {}: a sampled id must be one it reads",
                    e.vocab
                ),
            ));
        }
        let mut logits_of = self.last_logits(block, vocab)?;
        let mut rng = Rng::new(seed);
        let mut context = prompt.to_vec();
        // Grown as sampled: `n` is the caller's, and each id costs a forward pass anyway.
        let mut out = Vec::new();
        for _ in 0..n {
            let window = &context[context.len().saturating_sub(block)..];
            let logits = logits_of(window)?;
            let id = sample(&logits, temperature, top_k, &mut rng);
            out.push(id);
            context.push(id);
        }
        Ok(out)
    }

    /// Whether layer `i` may let a position see later ones: what `generate`'s right padding
    /// would change.
    fn mixes_positions(&self, i: usize) -> bool {
        let per_position = self.shapes[i].len() == 2;
        match &self.layers[i] {
            Layer::MultiHeadAttention(a) => !a.causal,
            Layer::Dense(_) => !per_position,
            Layer::Add(r) => r.projection.is_some() && !per_position,
            Layer::Flatten | Layer::Reshape(_) | Layer::Conv2D(_) | Layer::Pool(_) => true,
            Layer::Embedding(_)
            | Layer::PositionalEmbedding(_)
            | Layer::TiedDense(_)
            | Layer::LayerNorm(_)
            | Layer::BatchNorm(_)
            | Layer::Activation(_)
            | Layer::Dropout(_)
            | Layer::Scale(_) => false,
        }
    }

    /// What gives the last position's `vocab` logits of a window of at most `block` ids: a
    /// forward plan over one sample built once (GPU), or the CPU pass.
    fn last_logits(&self, block: usize, vocab: usize) -> Result<LastLogits<'_>> {
        let padded = move |window: &[u32]| {
            let mut ids = window.to_vec();
            ids.resize(block, 0);
            ids
        };
        match &self.state {
            State::Gpu(g) => {
                let gpu = g.gpu.clone();
                let buf = self.token_buffers(&gpu, 1, false)?;
                let plan = self.token_forward(&buf, 0)?;
                Ok(Box::new(move |window: &[u32]| {
                    buf.x.write_u32(&padded(window))?;
                    gpu.run(&[&plan])?;
                    let at = (window.len() - 1) * vocab;
                    buf.blocks[buf.blocks.len() - 1].h.range_to_vec(at, vocab)
                }))
            }
            State::Cpu(_) => {
                self.check_cpu_pass("generate", 1, false)?;
                Ok(Box::new(move |window: &[u32]| {
                    let x: Vec<f32> = padded(window).iter().map(|&v| v as f32).collect();
                    let outputs = self.forward_cpu("generate", &x, 1)?;
                    let at = (window.len() - 1) * vocab;
                    Ok(outputs[at..at + vocab].to_vec())
                }))
            }
        }
    }
}

/// A draw from softmax(logits / temperature) over the `top_k` largest (ties at the k-th kept),
/// in f64; the id whose cumulative probability first passes a uniform draw.
pub(crate) fn sample(logits: &[f32], temperature: f32, top_k: Option<usize>, rng: &mut Rng) -> u32 {
    let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature as f64).collect();
    let floor = match top_k {
        Some(k) if k < scaled.len() => {
            let mut sorted = scaled.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            sorted[k - 1]
        }
        _ => f64::NEG_INFINITY,
    };
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scaled.iter().map(|&s| if s >= floor { (s - max).exp() } else { 0.0 }).collect();
    let total: f64 = weights.iter().sum();
    let u = rng.next_f32() as f64 * total;
    let mut sum = 0.0;
    for (i, w) in weights.iter().enumerate() {
        sum += w;
        if u < sum {
            return i as u32;
        }
    }
    // Rounding left u at the total: the last id with any weight.
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32
}
