//! The CPU reference backend of [`Sequential`]: the same step as the GPU's, kernel by kernel,
//! through [`crate::cpu`]. The GPU path is tested against it step for step.

use super::*;

/// What a CPU forward pass leaves for the backward.
pub(super) struct CpuPass {
    /// Each layer's output, [rows, units].
    pub(super) h: Vec<Vec<f32>>,
    /// Per dropout layer when training: (dropped output, mask).
    pub(super) dropped: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    /// Per batch-normalised layer when training: what its backward needs.
    pub(super) norm: Vec<Option<CpuNormSaved>>,
    /// Per batch-normalised layer when training: (layer, batch mean, batch unbiased variance),
    /// to fold into the running statistics once the step is known to be kept.
    pub(super) pending: Vec<(usize, Vec<f32>, Vec<f32>)>,
}

/// A batch-normalised layer's forward, saved for its backward: x·W [rows, units], and the
/// batch's mean and 1/√(σ² + eps) [units].
pub(super) struct CpuNormSaved {
    pub(super) linear: Vec<f32>,
    pub(super) mean: Vec<f32>,
    pub(super) inv_std: Vec<f32>,
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

    /// Layer outputs for `rows` rows of x: [h_0, h_1, …], each [rows, units].
    pub(super) fn forward_cpu_all(&self, x: &[f32], rows: usize) -> Vec<Vec<f32>> {
        self.forward_cpu_pass(x, rows, None).h
    }

    /// A forward pass; with `step` (training) dropout draws the masks of that step and batch
    /// norm uses the batch's statistics (and reports them for the running averages).
    pub(super) fn forward_cpu_pass(&self, x: &[f32], rows: usize, step: Option<u32>) -> CpuPass {
        let params = self.cpu_params();
        let n = self.layers.len();
        let mut pass = CpuPass {
            h: Vec::with_capacity(n),
            dropped: Vec::with_capacity(n),
            norm: Vec::with_capacity(n),
            pending: Vec::new(),
        };
        for (i, l) in self.layers.iter().enumerate() {
            let (wo, bo) = self.layout.offsets[i];
            let input = match i {
                0 => x,
                _ => pass.dropped[i - 1].as_ref().map_or(&pass.h[i - 1], |(d, _)| d),
            };
            let linear =
                cpu::matmul(input, &params[wo..wo + l.inputs * l.units], rows, l.inputs, l.units, false, false);
            let bias = &params[bo..bo + l.units];
            let act = self.applied_activation(i);
            let (h, norm) = match (l.batch_norm, self.layout.norm[i]) {
                (Some(cfg), Some((go, mo, vo))) => {
                    let gamma = &params[go..go + l.units];
                    let (mean, var) = (&params[mo..mo + l.units], &params[vo..vo + l.units]);
                    let (normed, saved) = match step {
                        Some(_) => {
                            let (normed, batch_mean, inv_std, pending_var) =
                                cpu::batch_norm_forward_train_deferred(&linear, gamma, bias, rows, l.units, &cfg);
                            pass.pending.push((i, batch_mean.clone(), pending_var));
                            (normed, Some((batch_mean, inv_std)))
                        }
                        None => (
                            cpu::batch_norm_forward_inference(&linear, gamma, bias, mean, var, rows, l.units, &cfg),
                            None,
                        ),
                    };
                    let h = match act {
                        Activation::Softmax => cpu::softmax(&normed, rows, l.units),
                        _ => cpu::bias_act_forward(&normed, None, rows, l.units, act),
                    };
                    (h, saved.map(|(mean, inv_std)| CpuNormSaved { linear, mean, inv_std }))
                }
                _ => match act {
                    Activation::Softmax => {
                        let pre = cpu::bias_act_forward(&linear, Some(bias), rows, l.units, Activation::Identity);
                        (cpu::softmax(&pre, rows, l.units), None)
                    }
                    _ => (cpu::bias_act_forward(&linear, Some(bias), rows, l.units, act), None),
                },
            };
            pass.dropped.push(match step {
                Some(t) if l.dropout > 0.0 => {
                    Some(cpu::dropout_forward(&h, l.dropout, Dense::dropout_seed(self.seed, i), t))
                }
                _ => None,
            });
            pass.norm.push(norm);
            pass.h.push(h);
        }
        pass
    }

    /// The compiled loss on the last layer's outputs `[rows, outputs]`, against `labels` or the
    /// float `targets` (`[rows, dim]`, for the losses that read them): (loss_rows, dz of the last
    /// layer, correct_rows — or absolute-error rows for mean squared error).
    pub(super) fn loss_cpu(
        &self,
        outputs: &[f32],
        labels: &[u32],
        targets: Option<&[f32]>,
        grad_scale: f32,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let rows = labels.len();
        let loss = self.loss();
        let targets = || targets.ok_or_else(|| WgnnError::invalid(loss.name(), "no float targets (an internal error)"));
        Ok(match loss {
            Loss::SparseCategoricalCrossentropy => {
                cpu::softmax_xent(outputs, labels, rows, self.output_dim(), grad_scale)
            }
            Loss::CategoricalCrossentropy => {
                cpu::softmax_xent_dense(outputs, targets()?, rows, self.output_dim(), grad_scale)
            }
            Loss::BinaryCrossentropy => cpu::sigmoid_bce_labels(outputs, labels, grad_scale),
            Loss::Hinge => cpu::hinge(outputs, targets()?, grad_scale),
            Loss::MeanSquaredError => {
                let (loss_rows, dpred, abs_rows) = cpu::mse(outputs, targets()?, rows, self.output_dim(), grad_scale);
                let dz = match self.applied_activation(self.layers.len() - 1) {
                    Activation::Softmax => cpu::softmax_backward(&dpred, outputs, rows, self.output_dim()),
                    act => dpred.iter().zip(outputs).map(|(&g, &o)| g * act.derivative_from_output(o)).collect(),
                };
                (loss_rows, dz, abs_rows)
            }
        })
    }

    pub(super) fn forward_cpu(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_cpu_all(x, rows).pop().unwrap_or_default()
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
    ) -> Result<Option<(f64, f64)>> {
        let rows = y.len();
        let step = match &self.state {
            State::Cpu(c) => c.step,
            State::Gpu(_) => 0,
        };
        let CpuPass { h, dropped, norm, pending } = self.forward_cpu_pass(x, rows, Some(step));
        let last = self.layers.len() - 1;
        let (loss_rows, dlogits, correct) = self.loss_cpu(&h[last], y, t, 1.0 / rows as f32)?;
        // The GPU checks its f32 batch sum; so does this.
        let skip = skip_nonfinite && !loss_rows.iter().sum::<f32>().is_finite();
        if skip {
            return Ok(None);
        }
        let mut grads = vec![0.0f32; self.layout.total];
        let params = self.cpu_params().to_vec();
        let mut dz = dlogits;
        for i in (0..self.layers.len()).rev() {
            let l = self.layers[i];
            let (wo, bo) = self.layout.offsets[i];
            let input = match i {
                0 => x,
                _ => dropped[i - 1].as_ref().map_or(&h[i - 1], |(d, _)| d),
            };
            // dz is the gradient w.r.t. the pre-activation; through BN's backward it becomes the
            // gradient w.r.t. x·W, with dγ and dβ (in b's slot) on the way.
            let dlinear = match (&norm[i], self.layout.norm[i]) {
                (Some(saved), Some((go, _, _))) => {
                    let gamma = &params[go..go + l.units];
                    let (dlinear, dgamma, dbeta) =
                        cpu::batch_norm_backward(&dz, &saved.linear, gamma, &saved.mean, &saved.inv_std, rows, l.units);
                    grads[go..go + l.units].copy_from_slice(&dgamma);
                    grads[bo..bo + l.units].copy_from_slice(&dbeta);
                    dlinear
                }
                _ => {
                    grads[bo..bo + l.units].copy_from_slice(&cpu::column_sum(&dz, rows, l.units));
                    std::mem::take(&mut dz)
                }
            };
            let dw = cpu::matmul(input, &dlinear, l.inputs, rows, l.units, true, false);
            grads[wo..wo + dw.len()].copy_from_slice(&dw);
            if i > 0 {
                let w = &params[wo..wo + l.inputs * l.units];
                let dh = cpu::matmul(&dlinear, w, rows, l.units, l.inputs, false, true);
                let units = self.layers[i - 1].units;
                dz = match self.applied_activation(i - 1) {
                    // Row-wise: the dropout mask first, then the softmax backward (as on the GPU).
                    Activation::Softmax => {
                        let dh = match &dropped[i - 1] {
                            Some((_, mask)) => cpu::dropout_backward(&dh, mask),
                            None => dh,
                        };
                        cpu::softmax_backward(&dh, &h[i - 1], rows, units)
                    }
                    act => {
                        let dz: Vec<f32> =
                            dh.iter().zip(&h[i - 1]).map(|(&g, &o)| g * act.derivative_from_output(o)).collect();
                        match &dropped[i - 1] {
                            Some((_, mask)) => cpu::dropout_backward(&dz, mask),
                            None => dz,
                        }
                    }
                };
            }
        }
        let trainable = self.layout.trainable;
        // The kept step's batch statistics go into the running ones (as bn_commit_running).
        for (i, batch_mean, pending_var) in pending {
            if let (Some(cfg), Some((_, mo, vo)), State::Cpu(c)) =
                (self.layers[i].batch_norm, self.layout.norm[i], &mut self.state)
            {
                let (head, var_part) = c.params.split_at_mut(vo);
                let units = batch_mean.len();
                let (mean, var) = (&mut head[mo..mo + units], &mut var_part[..units]);
                cpu::batch_norm_commit_running(&batch_mean, &pending_var, mean, var, false, &cfg);
            }
        }
        if let State::Cpu(c) = &mut self.state {
            c.grads = grads;
            c.step += 1;
            // As on the GPU, the update covers the trained parameters, not the running statistics.
            let (p, g, t) = (&mut c.params[..trainable], &c.grads[..trainable], c.step);
            let mut slots = c.opt_state.iter_mut().map(|s| &mut s[..trainable]);
            let (s0, s1) = (slots.next(), slots.next());
            // compile() allocated the slots each rule needs.
            let missing = || WgnnError::invalid("fit", "the optimizer state is missing: compile() the model");
            match optimizer {
                Optimizer::Adam(cfg) => {
                    cpu::adam_update(p, g, s0.ok_or_else(missing)?, s1.ok_or_else(missing)?, t, cfg)
                }
                Optimizer::AdamW(cfg) => {
                    cpu::adamw_update(p, g, s0.ok_or_else(missing)?, s1.ok_or_else(missing)?, t, cfg)
                }
                Optimizer::Sgd(cfg) => cpu::sgd_update_with_step(p, g, s0, t, cfg),
                Optimizer::RmsProp(cfg) => cpu::rmsprop_update(p, g, s0.ok_or_else(missing)?, s1, t, cfg),
                Optimizer::Adagrad(cfg) => cpu::adagrad_update(p, g, s0.ok_or_else(missing)?, t, cfg),
                Optimizer::Adadelta(cfg) => {
                    cpu::adadelta_update(p, g, s0.ok_or_else(missing)?, s1.ok_or_else(missing)?, t, cfg)
                }
            }
        }
        Ok(Some((loss_rows.iter().map(|&v| v as f64).sum(), correct.iter().map(|&v| v as f64).sum())))
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
            match model.train_step_cpu(&x, &y, t.as_deref(), &self.optimizer, self.skip_nonfinite)? {
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
