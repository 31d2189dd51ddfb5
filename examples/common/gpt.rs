//! nanoGPT's GPT as a wgnn model, and its optimizer: what `char_gpt` trains and the training
//! bench times (`benches/training.rs` includes this file), so both build the same network.
//!
//! The model is `bench/torch_gpt.py`'s (nanoGPT's model.py with `bias=False`, its default): token
//! and learned position embeddings; `n_layer` pre-norm blocks x + attn(ln_1(x)),
//! x + mlp(ln_2(x)) with causal multi-head attention and an MLP of 4C with exact GELU; a final
//! layer norm; the head tied to the token embedding. No biases anywhere (layer norms without β).
//! nanoGPT's init: normal(0, 0.02) for every matrix and table, 0.02/√(2·n_layer) for both
//! residual projections (attention's W_proj and the MLP's second dense), γ = 1. With dropout
//! ([`gpt_with_dropout`]) where nanoGPT has it: after the embeddings' sum, on the attention's
//! probabilities, after its output projection and after the MLP's second dense, in training only.

use wgnn::config::optimizer::{AdamConfig, DecayMask, EpsPlacement, LrSchedule};
use wgnn::layers::{Dense, LayerNormConfig, MultiHeadAttention};
use wgnn::model::{InputShape, Optimizer, Sequential, SequentialBuilder};
use wgnn::{Activation, Initializer, Layer};

/// nanoGPT's standard deviation of every initial matrix.
const STD: f32 = 0.02;

/// A GPT's sizes (nanoGPT's `GPTConfig`).
#[derive(Clone, Copy, Debug)]
pub struct GptConfig {
    pub vocab: usize,
    pub block: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
}

/// A bias-free dense layer of `units` whose W is drawn normal(0, `std`).
fn dense(units: usize, activation: Activation, std: f32) -> Layer {
    Layer::Dense(Dense { units, activation, use_bias: false, init: Initializer::Normal { mean: 0.0, std } })
}

/// The GPT of `cfg` (see the module's comment), its weights drawn from `seed`, no dropout.
pub fn gpt(cfg: GptConfig, seed: u64) -> SequentialBuilder {
    gpt_with_dropout(cfg, 0.0, seed)
}

/// [`gpt`] with nanoGPT's `dropout` (0: no dropout layers at all, the model of [`gpt`]).
pub fn gpt_with_dropout(cfg: GptConfig, dropout: f32, seed: u64) -> SequentialBuilder {
    let c = cfg.n_embd;
    // nanoGPT's nn.Dropout(p) where p > 0; nothing (not even a layer of rate 0) otherwise.
    let drop = |b: SequentialBuilder| if dropout > 0.0 { b.dropout(dropout) } else { b };
    let no_beta = LayerNormConfig { bias: false, ..LayerNormConfig::default() };
    // GPT-2's scaled init of the projections into the residual stream.
    let residual_std = STD / (2.0 * cfg.n_layer as f32).sqrt();
    let attention = MultiHeadAttention {
        use_bias: false,
        ..MultiHeadAttention::new(cfg.n_head, true).scaled_projection(cfg.n_layer).with_dropout(dropout)
    };
    // transformer.drop(tok_emb + pos_emb)
    let mut builder = drop(
        Sequential::new(InputShape::tokens(cfg.block), seed).embedding(cfg.vocab, c).positional_embedding(cfg.block),
    );
    for _ in 0..cfg.n_layer {
        // x + resid_dropout(c_proj(attn_dropout(softmax(…))·v)), then x + dropout(c_proj(gelu(c_fc(x)))).
        builder = builder
            .residual(|b| drop(b.layer_norm_with(no_beta).add(Layer::MultiHeadAttention(attention))))
            .residual(|b| {
                let mlp = b.layer_norm_with(no_beta).add(dense(4 * c, Activation::GeluErf, STD));
                drop(mlp.add(dense(c, Activation::Identity, residual_std)))
            });
    }
    builder.layer_norm_with(no_beta).dense_tied_to_embedding()
}

/// nanoGPT's optimizer for `train_shakespeare_char`: AdamW (PyTorch's formula, ε 1e-8) with betas
/// (0.9, 0.99), decoupled weight decay on matrices only (configure_optimizers), the rate warmed
/// up linearly over `warmup` iterations then down a cosine to `min_lr` at `iters`.
pub fn nanogpt_adamw(lr: f32, min_lr: f32, warmup: usize, iters: usize, weight_decay: f32) -> Optimizer {
    let schedule = LrSchedule::WarmupCosine { warmup_steps: warmup as u32, total_steps: iters as u32, min_lr };
    Optimizer::AdamW(AdamConfig {
        beta2: 0.99,
        weight_decay,
        schedule,
        eps_placement: EpsPlacement::Torch,
        decay: DecayMask::Matrices,
        ..AdamConfig::torch(lr)
    })
}
