//! The CPU reference backend of [`Sequential`]: the same blocks as the GPU's step, each layer
//! through its CPU functions in `crate::layers`. The GPU path is tested against it step for step.

use super::fusion::Core;
use super::*;
use crate::host_memory::{self, checked_bytes};
use crate::layers::batch_norm::CpuNormSaved;
use crate::layers::step::CpuCore;
use crate::layers::{activation as act_layer, batch_norm, dropout, residual};

/// What a CPU forward pass leaves for the backward, per block.
#[derive(Default)]
pub(super) struct CpuBlockPass {
    /// The core's output where batch norm reads it (its backward needs it).
    pub(super) lin: Option<Vec<f32>>,
    /// Batch norm's saved statistics, when training.
    pub(super) norm: Option<CpuNormSaved>,
    /// The output before dropout.
    pub(super) h: Vec<f32>,
    /// The activation's input, kept where its backward reads it ([`Activation::saves_input`]).
    pub(super) z: Option<Vec<f32>>,
    /// When training with dropout: (dropped output, mask).
    pub(super) dropped: Option<(Vec<f32>, Vec<f32>)>,
    /// Max pooling's argmax per output.
    pub(super) argmax: Vec<u32>,
}

impl CpuBlockPass {
    fn output(&self) -> &[f32] {
        self.dropped.as_ref().map_or(&self.h, |(d, _)| d)
    }

    /// What the activation's backward reads: its input z where kept, else its output.
    pub(super) fn act_saved(&self) -> &[f32] {
        self.z.as_deref().unwrap_or(&self.h)
    }
}

/// Everything a CPU model keeps: the flat parameters (layout as on the GPU), gradients,
/// optimizer state and the step t.
pub(super) struct CpuState {
    pub(super) params: Vec<f32>,
    pub(super) grads: Vec<f32>,
    pub(super) opt_state: Vec<Vec<f32>>,
    pub(super) step: u32,
}

impl Sequential {
    pub(super) fn cpu_params(&self) -> &[f32] {
        match &self.state {
            State::Cpu(c) => &c.params,
            State::Gpu(_) => &[],
        }
    }

    /// Refuses, before anything is allocated, a pass over `rows` rows (a batch, or all the rows
    /// `predict` and `evaluate` take) whose activations the host cannot hold: a model of few
    /// parameters can still have outputs of gigabytes per sample (a wide convolution of a large
    /// image). The error names the layer with the largest output and its shape.
    pub(super) fn check_cpu_pass(&self, op: &str, rows: usize, training: bool) -> Result<()> {
        // Values per row: what the pass keeps of every block (its output; batch norm's input; a
        // GELU's input; when training, dropout's output and mask), and at the widest block what
        // is made on the way (a convolution's f64 sums, two; the activation's input; when
        // training, the backward's gradients, two more).
        let kept = self.blocks.iter().try_fold(0usize, |total, b| {
            let copies = 1
                + usize::from(b.norm.is_some())
                + usize::from(b.act.saves_input())
                + 2 * usize::from(training && b.dropout.is_some());
            total.checked_add(b.outputs.checked_mul(copies)?)
        });
        let widest = self.blocks.iter().map(|b| b.outputs).max().unwrap_or(0);
        let transient = widest.checked_mul(if training { 5 } else { 3 });
        let bytes = kept
            .zip(transient)
            .and_then(|(k, t)| k.checked_add(t))
            .and_then(|per_row| per_row.checked_mul(rows))
            .and_then(|v| checked_bytes(v, 4));
        let what = || {
            let largest = self.blocks.iter().max_by_key(|b| b.outputs);
            let layer = largest.map_or(String::new(), |b| {
                let last = b.layers.end - 1;
                let shape = [&[rows][..], &self.shapes[last + 1]].concat();
                format!(", the largest layer {last} ({})'s output {shape:?} f32", self.layers[last].describe())
            });
            let rows_text = if rows == 1 { "1 row".to_string() } else { format!("{rows} rows") };
            format!("the activations of a pass over {rows_text} (every layer's output, some twice{layer})")
        };
        host_memory::check_counted(op, what, bytes)
    }

    /// The seed of block `i`'s core's own dropout masks (see [`crate::layers::step::CoreMasks`]):
    /// keyed on the core's layer, so the same with and without fusion.
    pub(super) fn core_mask_seed(&self, i: usize) -> u32 {
        let range = self.blocks[i].layers.clone();
        let layer = range.clone().find(|&l| self.layers[l].step_core().is_some()).unwrap_or(range.start);
        dropout::own_seed(self.seed, layer)
    }

    /// A forward pass over `rows` rows of x; with `step` (training) dropout draws the masks of
    /// that step and batch norm uses the batch's statistics. The caller checks its size with
    /// [`Sequential::check_cpu_pass`].
    pub(super) fn forward_cpu_pass(&self, x: &[f32], rows: usize, step: Option<u32>) -> Result<Vec<CpuBlockPass>> {
        let params = self.cpu_params();
        let mut passes: Vec<CpuBlockPass> = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let input = block.input.map_or(x, |j| passes[j].output());
            let act = self.applied_activation(i);
            let core_act = if block.act_in_core(act, step.is_some()) { act } else { Activation::Identity };
            let mut pass = CpuBlockPass::default();
            let core_out = match &block.core {
                Core::Op { .. } => {
                    let Some((core, at)) = block.core.step() else { return Err(no_step()) };
                    let mask_seed = self.core_mask_seed(i);
                    let (y, argmax) =
                        core.forward_cpu(&CpuCore { rows, at, params, input, mask_seed, step }, core_act)?;
                    pass.argmax = argmax;
                    y
                }
                &Core::Add { shortcut } => {
                    residual::forward_cpu(input, shortcut.map_or(x, |s| passes[s].output()), core_act)
                }
                Core::Identity => input.to_vec(),
            };
            let act_in = match &block.norm {
                Some(n) => {
                    let slice = |o: usize| &params[o..o + n.channels];
                    let p = [slice(n.beta), slice(n.gamma), slice(n.running_mean), slice(n.running_var)];
                    let spatial = core_out.len() / n.channels;
                    let (normed, saved) =
                        batch_norm::forward_cpu(&core_out, p, spatial, n.channels, step.is_some(), &n.cfg);
                    pass.norm = saved;
                    pass.lin = Some(core_out);
                    normed
                }
                None => core_out,
            };
            pass.h = match block.act_in_core(act, step.is_some()) || act == Activation::Identity {
                true => act_in,
                false => {
                    let h = act_layer::forward_cpu(&act_in, rows, block.outputs, act);
                    pass.z = act.saves_input().then_some(act_in);
                    h
                }
            };
            if let (Some((rate, seed)), Some(t)) = (block.dropout, step) {
                pass.dropped = Some(dropout::forward_cpu(&pass.h, rate, seed, t));
            }
            passes.push(pass);
        }
        Ok(passes)
    }

    /// The compiled loss on the last block's outputs `[rows, outputs]`, against `labels` or the
    /// float `targets` (`[rows, dim]`, for the losses that read them): (loss_rows, dz of the last
    /// block, correct_rows — or absolute-error rows for mean squared error). `act_saved`: what the
    /// last activation's backward reads (its input for a GELU, else `outputs`).
    pub(super) fn loss_cpu(
        &self,
        outputs: &[f32],
        act_saved: &[f32],
        labels: &[u32],
        targets: Option<&[f32]>,
        grad_scale: f32,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        // Per position for a token model: a label per position, a row of V logits each.
        let (rows, classes) = (labels.len(), self.output_classes());
        let loss = self.loss();
        let targets = || targets.ok_or_else(|| WgnnError::invalid(loss.name(), "no float targets (an internal error)"));
        Ok(match loss {
            Loss::SparseCategoricalCrossentropy => cpu::softmax_xent(outputs, labels, rows, classes, grad_scale),
            Loss::CategoricalCrossentropy => {
                cpu::softmax_xent_dense(outputs, targets()?, rows, self.output_dim(), grad_scale)
            }
            Loss::BinaryCrossentropy => cpu::sigmoid_bce_labels(outputs, labels, grad_scale),
            Loss::Hinge => cpu::hinge(outputs, targets()?, grad_scale),
            Loss::MeanSquaredError => {
                let (loss_rows, dpred, abs_rows) = cpu::mse(outputs, targets()?, rows, self.output_dim(), grad_scale);
                let act = self.applied_activation(self.blocks.len() - 1);
                (loss_rows, act_layer::backward_cpu(&dpred, act_saved, rows, self.output_dim(), act), abs_rows)
            }
        })
    }

    /// The last block's outputs for `rows` rows of x, for `op` (`predict`, `evaluate`), checked
    /// against the host's memory first.
    pub(super) fn forward_cpu(&self, op: &str, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.check_cpu_pass(op, rows, false)?;
        Ok(self.forward_cpu_pass(x, rows, None)?.pop().map(|p| p.h).unwrap_or_default())
    }

    /// Block `i`'s dz from the gradient w.r.t. its output after dropout (`dy`): the mask, and
    /// the activation's gradient (for an elementwise one first, as the GPU's fused epilogue
    /// applies it before the mask).
    fn block_dz_cpu(&self, i: usize, pass: &CpuBlockPass, dy: Vec<f32>, rows: usize) -> Vec<f32> {
        let act = self.applied_activation(i);
        let mask = |g: Vec<f32>| match &pass.dropped {
            Some((_, mask)) => dropout::backward_cpu(&g, mask),
            None => g,
        };
        match act {
            Activation::Identity => mask(dy),
            Activation::Softmax => act_layer::backward_cpu(&mask(dy), &pass.h, rows, self.blocks[i].outputs, act),
            _ => mask(act_layer::backward_cpu(&dy, pass.act_saved(), rows, self.blocks[i].outputs, act)),
        }
    }

    /// One step on a gathered batch (labels `y`, float targets `t` when the loss reads them);
    /// returns (Σ loss, Σ correct) over its rows, or None when `skip_nonfinite` and the loss is
    /// not finite: then nothing changes (as with step_guard on the GPU).
    pub(super) fn train_step_cpu(
        &mut self,
        x: &[f32],
        y: &[u32],
        t: Option<&[f32]>,
        optimizer: &Optimizer,
        skip_nonfinite: bool,
        clip_norm: Option<f32>,
    ) -> Result<Option<(f64, f64)>> {
        let rows = x.len() / self.input_dim();
        let step = match &self.state {
            State::Cpu(c) => c.step,
            State::Gpu(_) => 0,
        };
        let passes = self.forward_cpu_pass(x, rows, Some(step))?;
        let last = self.blocks.len() - 1;
        let (out, saved) = (&passes[last].h, passes[last].act_saved());
        let (loss_rows, dlogits, correct) = self.loss_cpu(out, saved, y, t, 1.0 / y.len() as f32)?;
        // The GPU checks its f32 batch sum; so does this.
        if skip_nonfinite && !loss_rows.iter().sum::<f32>().is_finite() {
            return Ok(None);
        }
        let mut grads = vec![0.0f32; self.layout.total];
        let params = self.cpu_params().to_vec();
        // Each block's output gradient (after its dropout), summed over its readers as they
        // write it: a residual branch's input is read twice.
        let mut pending: Vec<Option<Vec<f32>>> = vec![None; self.blocks.len()];
        let mut dlogits = Some(dlogits);
        for i in (0..self.blocks.len()).rev() {
            let block = &self.blocks[i];
            let pass = &passes[i];
            let input = block.input.map_or(x, |j| passes[j].output());
            let mut dz = match (i == last, pending[i].take()) {
                (true, _) => dlogits.take().unwrap_or_default(),
                (false, Some(dy)) => self.block_dz_cpu(i, pass, dy, rows),
                (false, None) => return Err(WgnnError::invalid("fit", "a block no block reads (an internal error)")),
            };
            // dlin: the gradient w.r.t. the core's output — dz, or through batch norm's backward.
            let dlin = match (&block.norm, &pass.norm, &pass.lin) {
                (Some(n), Some(saved), Some(lin)) => {
                    let gamma = &params[n.gamma..n.gamma + n.channels];
                    let spatial = lin.len() / n.channels;
                    let (dx, dgamma, dbeta) = batch_norm::backward_cpu(&dz, lin, gamma, saved, spatial, n.channels);
                    grads[n.gamma..n.gamma + n.channels].copy_from_slice(&dgamma);
                    grads[n.beta..n.beta + n.channels].copy_from_slice(&dbeta);
                    dx
                }
                _ => std::mem::take(&mut dz),
            };
            let dinput = match &block.core {
                Core::Op { .. } => {
                    let Some((core, at)) = block.core.step() else { return Err(no_step()) };
                    let mask_seed = self.core_mask_seed(i);
                    let c = CpuCore { rows, at, params: &params, input, mask_seed, step: Some(step) };
                    core.backward_cpu(&c, &mut grads, &dlin, &pass.argmax, block.input.is_some())?
                }
                &Core::Add { shortcut } => {
                    send(&mut pending, shortcut, dlin.clone());
                    Some(dlin)
                }
                Core::Identity => Some(dlin),
            };
            if let Some(dh) = dinput {
                send(&mut pending, block.input, dh);
            }
        }
        let trainable = self.layout.trainable;
        let decay_mask = self.decay_mask(optimizer);
        // The kept step's batch statistics go into the running ones (as bn_commit_running).
        for (block, pass) in self.blocks.iter().zip(&passes) {
            if let (Some(n), Some(saved), State::Cpu(c)) = (&block.norm, &pass.norm, &mut self.state) {
                let (head, var_part) = c.params.split_at_mut(n.running_var);
                let (mean, var) = (&mut head[n.running_mean..n.running_mean + n.channels], &mut var_part[..n.channels]);
                cpu::batch_norm_commit_running(&saved.mean, &saved.pending_var, mean, var, false, &n.cfg);
            }
        }
        if let State::Cpu(c) = &mut self.state {
            c.grads = grads;
            c.step += 1;
            // As on the GPU, the update covers the trained parameters, not the running statistics.
            let (p, g, t) = (&mut c.params[..trainable], &c.grads[..trainable], c.step);
            // compile() allocated the slots each rule needs.
            let mut slots: Vec<&mut [f32]> = c.opt_state.iter_mut().map(|s| &mut s[..trainable]).collect();
            // Clipping by global norm over the trained gradients, as on the GPU.
            let grad_scale = clip_norm.map(|max_norm| cpu::clip_factor(g, max_norm)[0]);
            let extras = cpu::optimizer::UpdateExtras { decay_mask: decay_mask.as_deref(), grad_scale };
            cpu::optimizer::update_with(&optimizer.rule(), p, g, &mut slots, t, &extras)?;
        }
        Ok(Some((loss_rows.iter().map(|&v| v as f64).sum(), correct.iter().map(|&v| v as f64).sum())))
    }
}

/// A block's `Op` core whose layer has no step computation: a bug in the fusion pass.
fn no_step() -> WgnnError {
    WgnnError::invalid("step", "a layer core without a step computation (an internal error)")
}

/// Adds `grad` to what block `to` (None: the batch, which needs none) has received.
fn send(pending: &mut [Option<Vec<f32>>], to: Option<usize>, grad: Vec<f32>) {
    let Some(j) = to else { return };
    match &mut pending[j] {
        Some(sum) => sum.iter_mut().zip(&grad).for_each(|(s, g)| *s += g),
        None => pending[j] = Some(grad),
    }
}

/// The CPU reference backend's steps: gather, forward, backward, update, batch by batch.
pub(super) struct CpuSteps<'d> {
    pub(super) train: &'d Dataset,
    pub(super) validation: Option<&'d Dataset>,
    /// The training features after scaling, [rows, feature_dim].
    pub(super) features: Vec<f32>,
    pub(super) targets: Option<Targets>,
    pub(super) order: Vec<u32>,
    pub(super) batch: usize,
    pub(super) shuffle: bool,
    pub(super) optimizer: Optimizer,
    pub(super) skip_nonfinite: bool,
    pub(super) clip_norm: Option<f32>,
    pub(super) sums: RunningSums,
}

impl<'d> CpuSteps<'d> {
    pub(super) fn new(
        model: &Sequential,
        train: &'d Dataset,
        validation: Option<&'d Dataset>,
        opts: &FitOptions,
        optimizer: Optimizer,
    ) -> Result<CpuSteps<'d>> {
        // Once for the largest batch, not at every step.
        model.check_cpu_pass("fit", opts.batch_size.min(train.rows), true)?;
        Ok(CpuSteps {
            train,
            validation,
            features: train.to_f32(),
            targets: model.loss().float_targets(train, model.output_dim())?,
            order: Vec::new(),
            batch: opts.batch_size.min(train.rows),
            shuffle: opts.shuffle,
            optimizer,
            skip_nonfinite: opts.skip_nonfinite_batches,
            clip_norm: opts.clip_norm,
            sums: RunningSums::default(),
        })
    }
}

impl Steps for CpuSteps<'_> {
    fn start_epoch(&mut self, model: &mut Sequential, epoch: usize) -> Result<()> {
        self.order = epoch_order(self.train.rows, self.shuffle, model.seed, epoch);
        self.sums = RunningSums::default();
        Ok(())
    }

    fn run(&mut self, model: &mut Sequential, first: usize, count: usize) -> Result<RunningSums> {
        let (train, n) = (self.train, self.train.rows);
        for step in first..first + count {
            let start = step * self.batch;
            let rows = self.batch.min(n - start);
            let gather = |values: &[f32], dim: usize| {
                cpu::gather_rows(values, &train.labels, dim, &self.order, start, rows, 1.0, 0.0, None)
            };
            let (x, y) = gather(&self.features, train.feature_dim);
            let t = self.targets.as_ref().map(|t| gather(&t.values, t.dim).0);
            match model.train_step_cpu(&x, &y, t.as_deref(), &self.optimizer, self.skip_nonfinite, self.clip_norm)? {
                Some((loss, correct)) => {
                    self.sums.loss += loss;
                    self.sums.correct += correct;
                }
                None => {
                    self.sums.skipped_batches += 1;
                    self.sums.skipped_rows += rows;
                }
            }
        }
        Ok(self.sums)
    }

    fn validate(&mut self, model: &mut Sequential) -> Result<Option<(f32, f32)>> {
        self.validation.map(|v| model.evaluate(v)).transpose()
    }
}
