//! The scale layer: y = s·x for a constant s (a residual branch scaled down before its sum, say),
//! with no parameters. It has no kernel of its own: the forward and backward are the element-wise
//! product by a per-batch tensor of s, dropout's mask product (`dropout_backward`, its CPU
//! reference `cpu::dropout_backward`).

use super::step::{CoreBuffers, CpuCore, GpuCore, Placement, StepCore};
use crate::activation::Activation;
use crate::cpu;
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::kernels::dropout::dropout_backward;
use crate::plan::Plan;
use crate::tensor::Tensor;

/// y = factor · x.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    pub factor: f32,
}

impl Scale {
    pub fn describe(&self) -> String {
        format!("scale({})", self.factor)
    }

    pub(super) fn validate(&self, op: &str) -> Result<()> {
        match self.factor.is_finite() {
            true => Ok(()),
            false => Err(WgnnError::invalid(op, format!("the factor must be finite, got {}", self.factor))),
        }
    }

    /// `[rows · features]` of the factor: what both passes multiply by.
    fn factors(&self, rows: usize, features: usize) -> Result<Vec<f32>> {
        let n = rows.checked_mul(features).ok_or_else(|| {
            WgnnError::invalid(
                &self.describe(),
                format!("{rows} rows of {features} values are more than a usize counts"),
            )
        })?;
        Ok(vec![self.factor; n])
    }
}

impl StepCore for Scale {
    /// Its product takes no activation's gradient: the block below applies its own.
    fn fuses_act_grad(&self) -> bool {
        false
    }

    fn buffers(&self, gpu: &Gpu, at: &Placement, rows: usize, _training: bool) -> Result<CoreBuffers> {
        let factors = Tensor::from_slice(gpu, &[rows, at.outputs], &self.factors(rows, at.outputs)?)?;
        Ok(CoreBuffers { own: vec![factors], ..Default::default() })
    }

    fn forward_gpu(&self, c: &GpuCore, _params: &Tensor, out: &Tensor, _act: Activation) -> Result<Plan> {
        dropout_backward(c.gpu, c.input, own_factors(c)?, out)
    }

    fn backward_input_gpu(
        &self,
        c: &GpuCore,
        _params: &Tensor,
        dy: &Tensor,
        dx: &Tensor,
        below: Option<(&Tensor, Activation)>,
    ) -> Result<Plan> {
        if below.is_some() {
            return Err(WgnnError::invalid("scale", "asked to fold an activation's gradient (an internal error)"));
        }
        dropout_backward(c.gpu, dy, own_factors(c)?, dx)
    }

    fn forward_cpu(&self, c: &CpuCore, _act: Activation) -> Result<(Vec<f32>, Vec<u32>)> {
        Ok((cpu::dropout_backward(c.input, &self.factors(c.rows, c.at.outputs)?), Vec::new()))
    }

    fn backward_cpu(
        &self,
        c: &CpuCore,
        _grads: &mut [f32],
        dy: &[f32],
        _argmax: &[u32],
        input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        Ok(match input_grad {
            true => Some(cpu::dropout_backward(dy, &self.factors(c.rows, c.at.outputs)?)),
            false => None,
        })
    }
}

fn own_factors<'a>(c: &'a GpuCore) -> Result<&'a Tensor> {
    c.buffers.own.first().ok_or_else(|| WgnnError::invalid("scale", "no factor buffer (an internal error)"))
}
