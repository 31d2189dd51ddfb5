//! One block of the GPU step, forward and backward: the core (its layer's kernels), batch norm,
//! the activation, dropout, each through its layer's functions in `crate::layers`; and the sum
//! of the gradients a fork's readers wrote.

use super::batch_buffers::{BatchBuffers, BlockBuffers};
use super::fusion::{act_grad_by_reader, fork_summed_by_reader, is_fork, readers, BlockNorm, Core};
use super::*;
use crate::kernels::batch_norm_pooled::{batch_norm_backward_through_max_pool_fits, PoolAbove};
use crate::kernels::pool2d::max_pool2d_tiles;
use crate::kernels::pool2d_normalized::ChannelNorm;
use crate::layers::batch_norm::NormParams;
use crate::layers::step::{CoreMasks, EpilogueExtra, GpuCore, StepCore};
use crate::layers::Pooling;
use crate::layers::{activation as act_layer, batch_norm, dropout, residual};

/// `t` `[rows, features]` as `[rows × features / channels, channels]`: what batch norm reads.
fn per_channel(t: &Tensor, norm: &BlockNorm) -> Result<Tensor> {
    t.reshape(&[t.len() / norm.channels, norm.channels])
}

impl Sequential {
    /// Block `i`'s core as the GPU pass over `buf` sees it, if it is a layer's (see
    /// [`crate::layers::step`]): the core, and its view of the pass (its own masks keyed on
    /// t − `lag`).
    fn gpu_core<'a>(
        &'a self,
        i: usize,
        buf: &'a BatchBuffers,
        input: &'a Tensor,
        gathered: Option<&'a GatheredA<'a>>,
        lag: u32,
    ) -> Result<Option<(&'a dyn StepCore, GpuCore<'a>)>> {
        let g = self.gpu_state()?;
        let (gpu, params) = (&g.gpu, &g.params);
        let bb = &buf.blocks[i];
        let Some((core, at)) = self.blocks[i].core.step() else { return Ok(None) };
        let masks = CoreMasks { seed: g.mask_seed(self.core_mask_seed(i)), step: g.step_t()?, lag };
        let (rows, padded_rows, buffers, output) =
            (buf.rows(), buf.padded_rows, &bb.core, bb.core_out(&self.blocks[i]));
        Ok(Some((core, GpuCore { gpu, rows, padded_rows, at, params, input, gathered, output, buffers, masks })))
    }

    pub(super) fn norm_params(flat: &Tensor, n: &BlockNorm) -> Result<NormParams> {
        let view = |o: usize| flat.view(o, &[n.channels]);
        Ok(NormParams {
            beta: view(n.beta)?,
            gamma: view(n.gamma)?,
            running_mean: view(n.running_mean)?,
            running_var: view(n.running_var)?,
        })
    }

    /// Block `i`'s forward into `buf`; `gathered`: its input read from the data set in place.
    /// `lag`: dropout masks key on t − lag.
    pub(super) fn block_forward(
        &self,
        i: usize,
        buf: &BatchBuffers,
        gathered: Option<&GatheredA>,
        lag: u32,
    ) -> Result<Plan> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let (block, bb) = (&self.blocks[i], &buf.blocks[i]);
        let act = self.applied_activation(i);
        let mut plan = Plan::new();
        let kept = block.act_kept_by_core(act, buf.training);
        let core_act = if block.act_in_core(act, buf.training) || kept { act } else { Activation::Identity };
        let normalizes = block.input.filter(|&j| self.norm_pooled_by(j, buf.training) == Some(i));
        if let Some((core, c)) = self.gpu_core(i, buf, &bb.input, gathered, lag)? {
            plan.extend(match (&bb.residual_out, kept, normalizes) {
                // A max pool normalising the batch norm below on the way.
                (_, _, Some(j)) => self.pool_forward_normalizing(i, j, buf)?,
                // The sum above this block, in the epilogue: written straight into its output.
                (Some((out, shortcut, sum)), _, None) => {
                    let sum_act = self.applied_activation(*sum);
                    core.forward_gpu_with(&c, &g.params, out, sum_act, EpilogueExtra::Residual(shortcut))?
                }
                // A GELU applied by the epilogue, which keeps its input (core_out) for the backward.
                (None, true, None) => {
                    core.forward_gpu_with(&c, &g.params, &bb.h, core_act, EpilogueExtra::KeepPre(bb.core_out(block)))?
                }
                (None, false, None) => core.forward_gpu(&c, &g.params, bb.core_out(block), core_act)?,
            });
        }
        if let (Core::Add { shortcut }, false) = (&block.core, bb.sum_in_epilogue) {
            let other = shortcut.map_or(&buf.x, |s| buf.blocks[s].output());
            plan.extend(residual::forward_gpu(gpu, &bb.input, other, bb.core_out(block), core_act)?);
        }
        let norm_act = if block.act_in_norm(act, buf.training) { act } else { Activation::Identity };
        if let (Some(n), Some(nb)) = (&block.norm, &bb.norm) {
            let (x, p) = (per_channel(bb.core_out(block), n)?, Self::norm_params(&g.params, n)?);
            plan.extend(match self.norm_pooled_by(i, buf.training) {
                // The max pool above normalises on the way: only the statistics here.
                Some(_) => batch_norm::statistics_gpu(gpu, &x, nb, &n.cfg)?,
                None => batch_norm::forward_gpu(gpu, &x, &p, nb, buf.training, &n.cfg, norm_act)?,
            });
        }
        let act_elsewhere = block.act_in_core(act, buf.training) || kept || block.act_in_norm(act, buf.training);
        if !act_elsewhere && act != Activation::Identity {
            let x = bb.act_input(block).reshape(bb.h.shape())?;
            plan.extend(act_layer::forward_gpu(gpu, &x, &bb.h, act)?);
        }
        if let (Some((rate, seed)), Some(db)) = (block.dropout, &bb.dropout) {
            plan.extend(dropout::forward_gpu(gpu, &bb.h, db, rate, g.mask_seed(seed), &g.step_t()?, lag)?);
        }
        Ok(plan)
    }

    /// The block whose max pooling computes block `j`'s batch norm and activation on the way
    /// (`max_pool2d_forward_normalized`), if one does: while training, `j` with a batch norm that
    /// applies its activation (element-wise, not a GELU), no dropout, read by that block alone
    /// (its input), whose windows tile the image so that its backward reads act′ at its maxima
    /// from its own output. Nothing then reads `j`'s output: it is never written, and `j`'s norm
    /// runs its statistics only.
    fn norm_pooled_by(&self, j: usize, training: bool) -> Option<usize> {
        let (block, act) = (&self.blocks[j], self.applied_activation(j));
        let fits = training && block.dropout.is_none() && block.act_in_norm(act, training);
        let mut reading = readers(&self.blocks, j);
        let (Some((r, false)), None) = (reading.next(), reading.next()) else { return None };
        let pool = match &self.blocks[r].core {
            Core::Op { layer: Layer::Pool(pool @ Pooling::Max(_)), at } => pool.dims("pool2d", 1, &at.input).ok(),
            _ => None,
        };
        let channels = block.norm.map(|n| n.channels);
        let tiles = pool.is_some_and(|d| max_pool2d_tiles(&d) && Some(d.channels) == channels);
        (fits && tiles && self.act_grad_fused_above(j) && self.blocks[r].input == Some(j)).then_some(r)
    }

    /// Max-pooling block `i`'s forward normalising block `j`'s core output on the way with `j`'s
    /// batch statistics and activation (see [`Self::norm_pooled_by`]).
    fn pool_forward_normalizing(&self, i: usize, j: usize, buf: &BatchBuffers) -> Result<Plan> {
        let g = self.gpu_state()?;
        let (below, bb) = (&self.blocks[j], &buf.blocks[i]);
        let (Core::Op { layer: Layer::Pool(pool), at }, Some(n), Some(nb)) =
            (&self.blocks[i].core, &below.norm, &buf.blocks[j].norm)
        else {
            return Err(WgnnError::invalid("max_pool2d", "no batch norm below to normalise (an internal error)"));
        };
        let argmax = bb.core.argmax.as_ref().ok_or_else(|| WgnnError::invalid("max_pool2d", "no argmax buffer"))?;
        let p = Self::norm_params(&g.params, n)?;
        let norm = ChannelNorm { gamma: &p.gamma, beta: &p.beta, mean: &nb.mean, inv_std: &nb.inv_std };
        let d = pool.dims("pool2d", buf.rows(), &at.input)?;
        let x = buf.blocks[j].core_out(below);
        pool.forward_normalized_gpu(
            &g.gpu,
            x,
            &norm,
            self.applied_activation(j),
            bb.core_out(&self.blocks[i]),
            argmax,
            &d,
        )
    }

    /// The max-pooling block whose input gradient block `j`'s batch norm backward computes on
    /// the way (`batch_norm_backward_through_max_pool`), if any: where that pool normalises `j` in
    /// its forward ([`Self::norm_pooled_by`]) and the fused backward takes the shape (C a
    /// multiple of 4).
    fn norm_backward_through_pool(&self, j: usize, training: bool) -> Option<usize> {
        let r = self.norm_pooled_by(j, training)?;
        let Core::Op { layer: Layer::Pool(pool), at } = &self.blocks[r].core else { return None };
        let d = pool.dims("pool2d", 1, &at.input).ok()?;
        batch_norm_backward_through_max_pool_fits(&d, self.applied_activation(j)).then_some(r)
    }

    /// Max-pooling block `r` as the batch norm of block `j` below it sees it in its backward.
    fn pool_above(&self, j: usize, r: usize, buf: &BatchBuffers) -> Result<PoolAbove> {
        let (Core::Op { layer: Layer::Pool(pool), at }, rb) = (&self.blocks[r].core, &buf.blocks[r]) else {
            return Err(WgnnError::invalid("max_pool2d", "no max pooling above (an internal error)"));
        };
        let argmax = rb.core.argmax.as_ref().ok_or_else(|| WgnnError::invalid("max_pool2d", "no argmax buffer"))?;
        let dims = pool.dims("pool2d", buf.rows(), &at.input)?;
        let y_shape = dims.y_shape();
        let dy = Self::core_grad(r, buf)?.reshape(&y_shape)?;
        let y = rb.core_out(&self.blocks[r]).reshape(&y_shape)?;
        Ok(PoolAbove { dy, argmax: argmax.reshape(&y_shape)?, y, act: self.applied_activation(j), dims })
    }

    /// Whether block `i + 1` writes block `i`'s gradient through block `i`'s activation itself
    /// (every core's input gradient can: a matmul epilogue, col2im's, a pooling's, the copy an
    /// identity core is), which it does for an element-wise activation.
    /// Not for a fork: its readers' gradients are summed first.
    fn act_grad_fused_above(&self, i: usize) -> bool {
        i + 1 < self.blocks.len() && act_grad_by_reader(&self.blocks, i) && self.applied_activation(i).is_elementwise()
    }

    /// Where the block above writes the gradient w.r.t. block `i`'s output, and the activation
    /// whose gradient it applies on the way with what that gradient reads (see
    /// [`BlockBuffers::act_saved`]; None: [`Self::finish_output_grad`] applies it).
    fn output_grad_sink<'b>(
        &self,
        i: usize,
        bb: &'b BlockBuffers,
    ) -> Result<(&'b Tensor, Option<(Tensor, Activation)>)> {
        let act = self.applied_activation(i);
        let fused = self.act_grad_fused_above(i);
        let target = match (&bb.dropout, fused || act == Activation::Identity) {
            (Some(d), _) => &d.before_mask,
            (None, true) => bb.dz()?,
            (None, false) => bb
                .dh
                .as_ref()
                .ok_or_else(|| WgnnError::invalid("step", "no activation gradient buffer (an internal error)"))?,
        };
        let below = match fused && act != Activation::Identity {
            true => Some((bb.act_saved(&self.blocks[i], act)?, act)),
            false => None,
        };
        Ok((target, below))
    }

    /// Turns what the block above wrote into block `i`'s dz: the dropout mask, and the
    /// activation's backward where the block above did not apply it.
    fn finish_output_grad(&self, i: usize, buf: &BatchBuffers) -> Result<Plan> {
        let gpu = &self.gpu_state()?.gpu;
        let act = self.applied_activation(i);
        let bb = &buf.blocks[i];
        let dz = bb.dz()?;
        let mut plan = Plan::new();
        // A fork's gradients are summed here, unless its reader that adds did it.
        if is_fork(&self.blocks, i) && fork_summed_by_reader(&self.blocks, i).is_none() {
            plan.extend(self.sum_fork_grads(i, buf)?);
        }
        if self.act_grad_fused_above(i) || act == Activation::Identity {
            if let Some(d) = &bb.dropout {
                plan.extend(dropout::backward_gpu(gpu, d, dz)?);
            }
            return Ok(plan);
        }
        let dh = bb
            .dh
            .as_ref()
            .ok_or_else(|| WgnnError::invalid("step", "no activation gradient buffer (an internal error)"))?;
        if let Some(d) = &bb.dropout {
            plan.extend(dropout::backward_gpu(gpu, d, dh)?);
        }
        plan.extend(act_layer::backward_gpu(gpu, dh, &bb.act_saved(&self.blocks[i], act)?, dz, act)?);
        Ok(plan)
    }

    /// Block `i`'s backward from its dz (written by the loss, or by the block above and finished
    /// here): batch norm's backward, its parameters' gradients, and (`input_grad`) the gradient
    /// w.r.t. its input into the block below's sink. `gathered`: the first block's input read
    /// from the data set in place, over the padded rows. `lag`: the forward's (a core's own
    /// dropout masks are redrawn from t − lag).
    pub(super) fn block_backward(
        &self,
        i: usize,
        buf: &BatchBuffers,
        gathered: Option<&GatheredA>,
        input_grad: bool,
        lag: u32,
    ) -> Result<Plan> {
        let g = self.gpu_state()?;
        let gpu = &g.gpu;
        let (block, bb) = (&self.blocks[i], &buf.blocks[i]);
        let mut plan = Plan::new();
        if i + 1 < self.blocks.len() {
            plan.extend(self.finish_output_grad(i, buf)?);
        }
        // dlin: the gradient w.r.t. the core's output — dz, or through batch norm's backward,
        // which also writes dγ and dβ.
        if let (Some(n), Some(nb)) = (&block.norm, &bb.norm) {
            let (p, d) = (Self::norm_params(&g.params, n)?, Self::norm_params(&g.grads, n)?);
            let x = per_channel(bb.core_out(block), n)?;
            plan.extend(match self.norm_backward_through_pool(i, buf.training) {
                Some(r) => {
                    let pool = self.pool_above(i, r, buf)?;
                    batch_norm::backward_through_max_pool_gpu(gpu, &pool, &x, &p, nb, &d.gamma, &d.beta)?
                }
                None => batch_norm::backward_gpu(gpu, &per_channel(bb.dz()?, n)?, &x, &p, nb, &d.gamma, &d.beta)?,
            });
        }
        let dlin = &Self::core_grad(i, buf)?;
        let core = self.gpu_core(i, buf, &bb.input, gathered, lag)?;
        if let Some((core, c)) = &core {
            plan.extend(core.backward_params_gpu(c, &g.grads, dlin)?);
        }
        if let Core::Add { shortcut } = block.core {
            // The sum's gradient is each operand's: written (through the operand's activation)
            // into its block's sink, or, for a fork, read from dlin where the fork sums.
            // An input that shares the sum's dz has its gradient already.
            let input = block.input.filter(|_| !block.shares_input_grad);
            for j in [input, shortcut].into_iter().flatten().filter(|&j| !is_fork(&self.blocks, j)) {
                let below = &buf.blocks[j];
                let (target, fused) = self.output_grad_sink(j, below)?;
                let (saved, act) = fused.unwrap_or((below.h.clone(), Activation::Identity));
                plan.extend(act_layer::backward_gpu(gpu, dlin, &saved, target, act)?);
            }
            return Ok(plan);
        }
        if let (true, Some(j)) = (input_grad, block.input) {
            if self.norm_backward_through_pool(j, buf.training) == Some(i) {
                // The batch norm below computes this pool's input gradient on the way.
                return Ok(plan);
            }
            let below = &buf.blocks[j];
            // The fork below summed by this block's input gradient: into the fork's sink, the
            // sum's gradient added on the way.
            if let (Some((_, sum)), Some((core, c))) =
                (fork_summed_by_reader(&self.blocks, j).filter(|&(r, _)| r == i), &core)
            {
                let (target, _) = self.output_grad_sink(j, below)?;
                plan.extend(core.backward_input_adding_gpu(c, &g.params, dlin, target, &Self::core_grad(sum, buf)?)?);
                return Ok(plan);
            }
            let (target, fused) = match &bb.dinput {
                Some(own) => (own, None),
                None => self.output_grad_sink(j, below)?,
            };
            plan.extend(match &core {
                Some((core, c)) => {
                    core.backward_input_gpu(c, &g.params, dlin, target, fused.as_ref().map(|(s, a)| (s, *a)))?
                }
                // The identity core's input gradient is dlin itself: copied into the sink, through
                // the activation below where it asks for that.
                None => {
                    let (saved, act) = fused.unwrap_or((below.h.clone(), Activation::Identity));
                    act_layer::backward_gpu(gpu, dlin, &saved, target, act)?
                }
            });
        }
        Ok(plan)
    }

    /// The gradient w.r.t. block `i`'s core output (its dz, or batch norm's input gradient),
    /// once its backward has reached it.
    fn core_grad(i: usize, buf: &BatchBuffers) -> Result<Tensor> {
        let bb = &buf.blocks[i];
        match &bb.norm {
            Some(nb) if bb.dz.is_some() => nb.dx.reshape(bb.h.shape()),
            _ => Ok(bb.dz()?.clone()),
        }
    }

    /// Fork `i`'s readers' gradients (each its own: a sum's is its dlin, another reader's its
    /// `dinput`), summed into the sink the block above would have written, latest reader first
    /// (the CPU reference's order).
    fn sum_fork_grads(&self, i: usize, buf: &BatchBuffers) -> Result<Plan> {
        let gpu = &self.gpu_state()?.gpu;
        let mut grads = Vec::new();
        let mut order: Vec<(usize, bool)> = readers(&self.blocks, i).collect();
        order.reverse();
        for (c, _) in order {
            grads.push(match (&self.blocks[c].core, &buf.blocks[c].dinput) {
                (Core::Add { .. }, _) => Self::core_grad(c, buf)?,
                (_, Some(own)) => own.clone(),
                (_, None) => {
                    return Err(WgnnError::invalid(
                        "step",
                        "a fork's reader has no gradient buffer (an internal error)",
                    ))
                }
            });
        }
        let bb = &buf.blocks[i];
        let (target, _) = self.output_grad_sink(i, bb)?;
        let mut plan = Plan::new();
        let mut sum = grads
            .first()
            .cloned()
            .ok_or_else(|| WgnnError::invalid("step", "a fork without readers (an internal error)"))?;
        for (k, g) in grads.iter().enumerate().skip(1) {
            let out = if k + 1 == grads.len() { target } else { &bb.sums[k - 1] };
            plan.extend(residual::forward_gpu(gpu, &sum, g, out, Activation::Identity)?);
            sum = out.clone();
        }
        Ok(plan)
    }
}
