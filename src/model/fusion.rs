//! The pass from the layer list to the graph a step runs: a list of blocks in topological order,
//! each reading the output of an earlier block (or the batch) and writing its own. A block is a
//! core (a dense layer, a convolution, a residual sum, or the input as it is) followed by what it
//! can absorb — batch norm, an activation, dropout, a flatten — so that a dense layer with its
//! activation is one matmul with an epilogue, and its backward writes the gradient of the layer
//! below through that layer's activation in the same dispatch. Unfused, every layer is a block of
//! its own: the reference the fused step is tested against (same losses and weights).
//!
//! Why a list over buffer ids and not an autograd tape: the model's shape is known at `build`,
//! so the order of the ops and the buffers they read are fixed once, and a step is a plan built
//! once and recorded many times; a tape would rebuild what never changes. The forward walks the
//! list in order, the backward in reverse; a block's output read by several blocks (the input of
//! a residual branch, read again by its sum) gets the gradient of each reader in a buffer of its
//! own, summed before the block's own backward ("fork" below). Fusions stay rewrites of the list:
//! they only merge neighbours, and never across a fork, whose value every reader must see.

use std::ops::Range;

use super::layout::ParamLayout;
use crate::activation::Activation;
use crate::config::batch_norm::BatchNormConfig;
use crate::error::{Result, WgnnError};
use crate::layers::step::{Placement, StepCore};
use crate::layers::{dropout, features, Layer};

/// What a block computes first.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Core {
    /// A layer's own computation (a dense layer, a convolution, pooling: see
    /// [`Layer::step_core`]), its parameters placed at `at`.
    Op { layer: Layer, at: Placement },
    /// The block's input as it is.
    Identity,
    /// The block's input plus `shortcut`'s output (a block's index, or None: the batch): the
    /// end of a residual branch.
    Add { shortcut: Option<usize> },
}

impl Core {
    /// The layer's step computation, for an `Op`.
    pub(super) fn step(&self) -> Option<(&dyn StepCore, &Placement)> {
        match self {
            Core::Op { layer, at } => layer.step_core().map(|s| (s, at)),
            Core::Identity | Core::Add { .. } => None,
        }
    }
}

/// A batch norm a block applies to its core's output: its layer and the offsets of its slots.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct BlockNorm {
    pub(super) layer: usize,
    pub(super) cfg: BatchNormConfig,
    pub(super) beta: usize,
    pub(super) gamma: usize,
    pub(super) running_mean: usize,
    pub(super) running_var: usize,
    /// The normalised axis's length (the last axis where the norm's layer sits).
    pub(super) channels: usize,
}

/// One unit of a step: core → batch norm → activation → dropout (each but the core optional).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Block {
    pub(super) core: Core,
    pub(super) norm: Option<BlockNorm>,
    pub(super) act: Activation,
    /// (rate, mask seed).
    pub(super) dropout: Option<(f32, u32)>,
    /// Features per row in and out.
    pub(super) inputs: usize,
    pub(super) outputs: usize,
    /// The model's layers this block runs.
    pub(super) layers: Range<usize>,
    /// The block whose output this one reads (None: the batch); an earlier block.
    pub(super) input: Option<usize>,
    /// A residual sum computed by its input block's matmul epilogue, where the buffers allow
    /// (see [`sums_in_epilogues`]); its own forward then runs nothing.
    pub(super) sum_in_epilogue: bool,
    /// A residual sum whose input block's gradient is its own (that block read by the sum alone,
    /// nothing after its core): both share one dz, and the sum's backward copies nothing there.
    pub(super) shares_input_grad: bool,
    /// A fork whose gradients its earlier reader's input-gradient dispatch sums (see
    /// [`fork_summed_by_reader`]).
    pub(super) grads_summed_by_reader: bool,
}

impl Block {
    fn new(core: Core, inputs: usize, outputs: usize, layer: usize) -> Block {
        Block {
            core,
            norm: None,
            act: Activation::Identity,
            dropout: None,
            inputs,
            outputs,
            layers: layer..layer + 1,
            input: None,
            sum_in_epilogue: false,
            shares_input_grad: false,
            grads_summed_by_reader: false,
        }
    }

    /// Whether the core writes `act` itself (a matmul's or the sum's epilogue), so no dispatch
    /// applies it. Not a GELU when `training` ([`Activation::saves_input`]): its backward reads
    /// the pre-activation, which the core then writes to a buffer of its own.
    pub(super) fn act_in_core(&self, act: Activation, training: bool) -> bool {
        let epilogue = matches!(self.core, Core::Add { .. }) || self.core.step().is_some_and(|(s, _)| s.has_epilogue());
        epilogue && self.norm.is_none() && act.is_elementwise() && !(training && act.saves_input())
    }

    /// Whether the core writes `act` itself while training although the activation's backward
    /// reads its input (a GELU): its epilogue writes that input too, into the core's own buffer.
    pub(super) fn act_kept_by_core(&self, act: Activation, training: bool) -> bool {
        let keeps = self.core.step().is_some_and(|(s, _)| s.has_extra_epilogues());
        keeps && training && act.saves_input() && self.norm.is_none() && act.is_elementwise()
    }

    /// Whether batch norm's normalising pass writes `act` itself, so no dispatch applies it (not
    /// a GELU when `training`, as for [`Block::act_in_core`]).
    pub(super) fn act_in_norm(&self, act: Activation, training: bool) -> bool {
        self.norm.is_some() && act.is_elementwise() && !(training && act.saves_input())
    }

    /// Whether the block reads nothing but passes its input on (a flatten, or an activation
    /// applied elsewhere).
    pub(super) fn is_noop(&self, act: Activation) -> bool {
        self.core == Core::Identity && self.norm.is_none() && act == Activation::Identity && self.dropout.is_none()
    }

    fn has_bias(&self) -> bool {
        self.core.step().is_some_and(|(_, at)| at.bias.is_some())
    }
}

/// What a block reads while the list is built: the value `v` (layer v's input: the batch, or the
/// output of the last block that ends at layer v), or the block made just before it.
#[derive(Clone, Copy)]
enum Reads {
    Value(usize),
    Previous,
}

/// The blocks of `layers` (`shapes[i]`: layer i's input shape, `shapes[n]` the output's), in
/// topological order. `fuse`: absorb what a block can (see the module docs); else one block per
/// layer, and a dense layer's own activation a block of its own too.
pub(super) fn blocks(
    layers: &[Layer],
    shapes: &[Vec<usize>],
    layout: &ParamLayout,
    seed: u64,
    fuse: bool,
) -> Result<Vec<Block>> {
    let offset = |layer: usize, name: &str| layout.slot(layer, name).map(|s| s.offset);
    // Layers whose input a residual sum reads again: each starts a block, so the value exists.
    let forks: Vec<usize> = layers.iter().filter_map(|l| l.residual().map(|r| r.from)).collect();
    let mut out: Vec<Block> = Vec::new();
    // Per block: what it reads, and (a residual sum) what its shortcut reads.
    let mut reads: Vec<(Reads, Option<Reads>)> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let (inputs, outputs) = (features(&shapes[i]), features(&shapes[i + 1]));
        let norm = |cfg: BatchNormConfig| BlockNorm {
            layer: i,
            cfg,
            beta: offset(i, "beta").unwrap_or(0),
            gamma: offset(i, "gamma").unwrap_or(0),
            running_mean: offset(i, "running_mean").unwrap_or(0),
            running_var: offset(i, "running_var").unwrap_or(0),
            channels: shapes[i].last().copied().unwrap_or(1),
        };
        if let (true, false, Some(b)) = (fuse, forks.contains(&i), out.last_mut()) {
            let absorbed = match *layer {
                // Shape-only layers: the block's output read as another shape.
                Layer::Flatten | Layer::Reshape(_) => true,
                Layer::BatchNorm(cfg)
                    if b.norm.is_none() && b.act == Activation::Identity && b.dropout.is_none() && !b.has_bias() =>
                {
                    b.norm = Some(norm(cfg));
                    true
                }
                Layer::Activation(a) if b.act == Activation::Identity && b.dropout.is_none() => {
                    b.act = a;
                    true
                }
                // A rate of 0 is the identity, even while training.
                Layer::Dropout(0.0) => true,
                Layer::Dropout(rate) if b.dropout.is_none() => {
                    b.dropout = Some((rate, dropout::seed(seed, layers, i)));
                    true
                }
                _ => false,
            };
            if absorbed {
                b.outputs = outputs;
                b.layers.end = i + 1;
                continue;
            }
        }
        let mut shortcut = None;
        let mut block = match *layer {
            Layer::Add(ref r) => {
                // A projection is a block of its own on the shortcut, right before the sum.
                shortcut = Some(Reads::Value(r.from));
                if let Some(p) =
                    r.projection.as_deref().and_then(|p| layer_core(layers, p, &shapes[r.from], outputs, i, &offset))
                {
                    out.push(Block::new(p, features(&shapes[r.from]), outputs, i));
                    reads.push((Reads::Value(r.from), None));
                    shortcut = Some(Reads::Previous);
                }
                Block::new(Core::Add { shortcut: None }, inputs, outputs, i)
            }
            _ => match layer_core(layers, layer, &shapes[i], outputs, i, &offset) {
                Some(core) => Block::new(core, inputs, outputs, i),
                None => Block::new(Core::Identity, inputs, outputs, i),
            },
        };
        let own_act = match *layer {
            Layer::Dense(d) => Some(d.activation),
            Layer::Conv2D(c) => Some(c.activation),
            _ => None,
        };
        let mut block_reads = Reads::Value(i);
        match *layer {
            Layer::Dense(_) | Layer::Conv2D(_) if fuse => block.act = own_act.unwrap_or(Activation::Identity),
            Layer::Dense(_) | Layer::Conv2D(_) if own_act != Some(Activation::Identity) => {
                out.push(block);
                reads.push((block_reads, None));
                block = Block::new(Core::Identity, outputs, outputs, i);
                block.act = own_act.unwrap_or(Activation::Identity);
                block_reads = Reads::Previous;
            }
            Layer::Activation(a) => block.act = a,
            Layer::Dropout(rate) if rate > 0.0 => block.dropout = Some((rate, dropout::seed(seed, layers, i))),
            Layer::BatchNorm(cfg) => block.norm = Some(norm(cfg)),
            Layer::Dense(_)
            | Layer::Conv2D(_)
            | Layer::Pool(_)
            | Layer::Flatten
            | Layer::Reshape(_)
            | Layer::Dropout(_)
            | Layer::Add(_)
            | Layer::Scale(_)
            | Layer::MultiHeadAttention(_)
            | Layer::Embedding(_)
            | Layer::PositionalEmbedding(_)
            | Layer::TiedDense(_)
            | Layer::LayerNorm(_) => {}
        }
        out.push(block);
        reads.push((block_reads, shortcut));
    }
    if fuse {
        // A leading flatten or reshape reads the input as it lies: nothing to run (unless a
        // residual sum reads its output again).
        while out.len() > 1 && out[0].is_noop(out[0].act) && !forks.contains(&out[0].layers.end) {
            let first = out.remove(0);
            reads.remove(0);
            out[0].layers.start = first.layers.start;
            reads[0].0 = Reads::Value(first.layers.start);
        }
    }
    let mut out = resolve(out, &reads)?;
    if fuse {
        sums_in_epilogues(&mut out);
        for j in 0..out.len() {
            out[j].grads_summed_by_reader = summing_reader(&out, j).is_some();
        }
    }
    Ok(out)
}

/// Marks each residual sum that its input block's matmul can add in its epilogue: the branch's
/// last block a core with that epilogue ([`StepCore::has_extra_epilogues`]: a dense layer, or
/// multi-head attention by its output projection) and nothing after it (no activation, norm or
/// dropout), read by the sum alone (not a fork), the sum without norm and with an activation that
/// needs only its output (not a GELU), and the shortcut another block's output than the core's
/// input (bound writable, it may not also be the core's read-only input). The core then writes
/// the sum's output. Wherever the branch's last block has nothing after its core and only the
/// sum reads it, whatever the core, its dz is the sum's (one gradient for both): no copy.
fn sums_in_epilogues(blocks: &mut [Block]) {
    for j in 0..blocks.len() {
        let (b, Core::Add { shortcut }) = (&blocks[j], &blocks[j].core) else { continue };
        let Some(i) = b.input else { continue };
        let branch = &blocks[i];
        let core_adds = branch.core.step().is_some_and(|(s, _)| s.has_extra_epilogues());
        // The sum's own activation goes in the epilogue too, where it needs only its output.
        let sum_act = b.act.is_elementwise() && !b.act.saves_input();
        let shares = branch.act == Activation::Identity
            && branch.norm.is_none()
            && branch.dropout.is_none()
            && b.norm.is_none()
            && !is_fork(blocks, i);
        let fold = shares && core_adds && sum_act && *shortcut != branch.input && *shortcut != Some(i);
        blocks[j].sum_in_epilogue = fold;
        blocks[j].shares_input_grad = shares;
    }
}

/// Each block's input, and each sum's shortcut, as the index of the block it reads.
fn resolve(mut out: Vec<Block>, reads: &[(Reads, Option<Reads>)]) -> Result<Vec<Block>> {
    let producer = |out: &[Block], at: usize, r: Reads| -> Result<Option<usize>> {
        match r {
            Reads::Previous => Ok(at.checked_sub(1)),
            Reads::Value(0) => Ok(None),
            Reads::Value(v) => match out[..at].iter().rposition(|b| b.layers.end == v) {
                Some(b) => Ok(Some(b)),
                None => {
                    Err(WgnnError::invalid("build", format!("no block writes layer {v}'s input (an internal error)")))
                }
            },
        }
    };
    for (at, &(input, shortcut)) in reads.iter().enumerate() {
        out[at].input = producer(&out, at, input)?;
        if let (Some(s), Core::Add { .. }) = (shortcut, &out[at].core) {
            out[at].core = Core::Add { shortcut: producer(&out, at, s)? };
        }
    }
    Ok(out)
}

/// The core of a layer that computes something (see [`Layer::step_core`]) from `input`-shaped
/// samples to `outputs` features, its parameters those of layer `i`.
fn layer_core(
    layers: &[Layer],
    layer: &Layer,
    input: &[usize],
    outputs: usize,
    i: usize,
    offset: &dyn Fn(usize, &str) -> Option<usize>,
) -> Option<Core> {
    layer.step_core()?;
    let weight = match layer {
        // The table is the weight of the embedding and of the head tied to it.
        Layer::Embedding(_) | Layer::PositionalEmbedding(_) => offset(i, "table"),
        Layer::TiedDense(t) => offset(t.embedding, "table"),
        _ => offset(i, "weight"),
    };
    let layer = match layer {
        // The head tied to this table writes its gradient first (the backward walks the blocks
        // in reverse): this one adds to it.
        &Layer::Embedding(e) => {
            let tied = layers.iter().any(|l| matches!(l, Layer::TiedDense(t) if t.embedding == i));
            Layer::Embedding(crate::layers::Embedding { grad_accumulates: tied, ..e })
        }
        other => other.clone(),
    };
    let slots = layer.slots(input).iter().filter_map(|s| offset(i, s.name).map(|o| (s.name, o))).collect();
    let at =
        Placement { weight, bias: offset(i, "bias"), slots, input: input.to_vec(), inputs: features(input), outputs };
    Some(Core::Op { layer, at })
}

/// Which blocks read block `j`'s output: (the reader, whether as a sum's shortcut).
pub(super) fn readers(blocks: &[Block], j: usize) -> impl Iterator<Item = (usize, bool)> + '_ {
    blocks.iter().enumerate().skip(j + 1).flat_map(move |(c, b)| {
        let shortcut = matches!(b.core, Core::Add { shortcut: Some(s) } if s == j);
        [(b.input == Some(j)).then_some((c, false)), shortcut.then_some((c, true))].into_iter().flatten()
    })
}

/// Whether block `j`'s output is read by more than one block (or twice by one): a fork, whose
/// readers each write their gradient apart, summed before `j`'s backward.
pub(super) fn is_fork(blocks: &[Block], j: usize) -> bool {
    readers(blocks, j).nth(1).is_some()
}

/// Whether the blocks that read block `j` can apply the gradient of `j`'s activation in their
/// input-gradient dispatch: one reader (not a fork) whose core does that (every identity or sum
/// does, by a copy).
pub(super) fn act_grad_by_reader(blocks: &[Block], j: usize) -> bool {
    !is_fork(blocks, j)
        && readers(blocks, j).all(|(c, _)| blocks[c].core.step().is_none_or(|(core, _)| core.fuses_act_grad()))
}

/// Where fork `j`'s two gradients can be summed by its earlier reader's input-gradient dispatch
/// (a core that adds, [`StepCore::adds_to_input_grad`]: a layer norm's) instead of a pass of
/// their own: exactly two readers, the other a residual sum, later in the list (its backward
/// runs first, so its gradient is whole by then). (the reader that adds, the sum.)
pub(super) fn fork_summed_by_reader(blocks: &[Block], j: usize) -> Option<(usize, usize)> {
    blocks[j].grads_summed_by_reader.then(|| summing_reader(blocks, j)).flatten()
}

/// [`fork_summed_by_reader`]'s answer where the step fuses.
fn summing_reader(blocks: &[Block], j: usize) -> Option<(usize, usize)> {
    let mut readers = readers(blocks, j);
    let (first, second) = (readers.next()?, readers.next()?);
    if readers.next().is_some() || first.0 == second.0 || first.1 {
        return None;
    }
    let (r, sum) = (first.0, second.0);
    let adds = blocks[r].core.step().is_some_and(|(s, _)| s.adds_to_input_grad());
    (adds && matches!(blocks[sum].core, Core::Add { .. })).then_some((r, sum))
}

/// Whether the batch is read by more than one block (a residual sum's shortcut from the input).
pub(super) fn batch_is_shared(blocks: &[Block]) -> bool {
    blocks.iter().filter(|b| b.input.is_none()).count()
        + blocks.iter().filter(|b| b.core == (Core::Add { shortcut: None })).count()
        > 1
}
