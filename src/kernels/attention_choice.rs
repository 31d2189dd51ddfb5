//! Which attention kernels run, the clear ones ([`super::attention`], every score written) or the
//! flash ones ([`super::flash_attention`], O(T) per row), and the buffers each keeps between its
//! forward and backward: what a layer holds to run attention without knowing which.

use super::attention::{
    attention_backward_dropout, attention_backward_masked, attention_forward_dropout, attention_forward_masked,
};
use super::attention_dims::{AttentionDims, AttentionDropout};
use super::flash_attention::{
    flash_attention_backward_dropout, flash_attention_backward_masked, flash_attention_forward_dropout,
    flash_attention_forward_masked, flash_attention_supported,
};
use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::plan::Plan;
use crate::tensor::Tensor;

/// The two attention families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// shaders/attention.wgsl: probabilities `[B, NH, T, T]` kept for the backward.
    Clear,
    /// shaders/flash_attention.wgsl: each row's log-sum-exp `[B, NH, T]` kept instead.
    Flash,
}

impl AttentionKernel {
    pub fn name(self) -> &'static str {
        match self {
            AttentionKernel::Clear => "clear",
            AttentionKernel::Flash => "flash",
        }
    }
}

/// The kernels for `dims` on `gpu`: the flash ones wherever [`flash_attention_supported`] (heads of
/// at most 64 values, T within their loop budget: T ≤ 1,336 at hs 32, 708 at hs 64), the clear
/// ones elsewhere. The same rule on every device so far: on lavapipe the flash kernels were faster
/// at every T measured (BENCHMARKS.md, attention rows), and on a GPU they keep the T² scores out
/// of memory (not measured on a GPU yet). `gpu` is where a device's own measurements would enter.
pub fn choose_attention_kernel(_gpu: &Gpu, dims: &AttentionDims) -> AttentionKernel {
    if flash_attention_supported(dims) {
        AttentionKernel::Flash
    } else {
        AttentionKernel::Clear
    }
}

/// Bytes of one `[B, NH, T, T]` tensor; None past a u64.
fn scores_bytes(dims: &AttentionDims) -> Option<u64> {
    dims.scores_shape().iter().try_fold(4u64, |n, &d| n.checked_mul(d as u64))
}

fn binding_limit(gpu: &Gpu) -> u64 {
    let limits = gpu.limits();
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)
}

/// One attention's buffers for its kernels: probabilities and their gradient `[B, NH, T, T]`
/// (clear) or the rows' log-sum-exp and D `[B, NH, T]` (flash). The forward writes `saved`, the
/// backward reads it and uses `scratch`. With dropout the clear kernels keep P ⊙ M too
/// (`dropped`, `[B, NH, T, T]`); the flash ones redraw the mask in the backward instead.
pub struct AttentionBuffers {
    pub kernel: AttentionKernel,
    pub dims: AttentionDims,
    pub saved: Tensor,
    pub scratch: Tensor,
    pub dropped: Option<Tensor>,
}

impl AttentionBuffers {
    /// The buffers `kernel` needs at `dims` ([`choose_attention_kernel`] picks one). The clear
    /// kernels' scores past one storage binding are an error naming the attention's shape.
    pub fn new(gpu: &Gpu, dims: AttentionDims, kernel: AttentionKernel) -> Result<AttentionBuffers> {
        Self::with_dropout(gpu, dims, kernel, false)
    }

    /// [`AttentionBuffers::new`], and where `dropout` (training with attention dropout) what
    /// [`AttentionBuffers::forward_with`]'s dropout needs besides.
    pub fn with_dropout(
        gpu: &Gpu,
        dims: AttentionDims,
        kernel: AttentionKernel,
        dropout: bool,
    ) -> Result<AttentionBuffers> {
        const OP: &str = "attention";
        let shape = match kernel {
            AttentionKernel::Clear => dims.scores_shape().to_vec(),
            AttentionKernel::Flash => dims.rows_shape().to_vec(),
        };
        if kernel == AttentionKernel::Clear {
            let limit = binding_limit(gpu);
            let bytes = scores_bytes(&dims).unwrap_or(u64::MAX);
            if bytes > limit {
                return Err(WgnnError::DeviceLimit {
                    op: OP.into(),
                    what: format!(
                        "the clear kernels' scores {shape:?} (qkv {:?}, {} heads)",
                        dims.qkv_shape(),
                        dims.heads
                    ),
                    amount: bytes,
                    unit: "bytes",
                    limit,
                    limit_name: "max_storage_buffer_binding_size",
                });
            }
        }
        let saved = Tensor::zeros(gpu, &shape)?;
        let scratch = Tensor::zeros(gpu, &shape)?;
        let dropped = match (kernel, dropout) {
            (AttentionKernel::Clear, true) => Some(Tensor::zeros(gpu, &shape)?),
            _ => None,
        };
        Ok(AttentionBuffers { kernel, dims, saved, scratch, dropped })
    }

    /// The forward: qkv `[B, T, 3C]` → out `[B, T, C]`, and `saved`; causal as `dims` says.
    pub fn forward(&self, gpu: &Gpu, qkv: &Tensor, out: &Tensor) -> Result<Plan> {
        self.forward_with(gpu, qkv, out, None)
    }

    /// [`AttentionBuffers::forward`], with attention dropout where `dropout` is given (buffers
    /// made [`AttentionBuffers::with_dropout`]).
    pub fn forward_with(
        &self,
        gpu: &Gpu,
        qkv: &Tensor,
        out: &Tensor,
        dropout: Option<&AttentionDropout>,
    ) -> Result<Plan> {
        self.expect_dims("attention forward", qkv)?;
        let (heads, causal, saved) = (self.dims.heads, self.dims.causal, &self.saved);
        match (self.kernel, dropout) {
            (AttentionKernel::Clear, None) => attention_forward_masked(gpu, qkv, out, saved, heads, causal),
            (AttentionKernel::Clear, Some(d)) => {
                let dropped = self.dropped("attention forward")?;
                attention_forward_dropout(gpu, qkv, out, saved, dropped, heads, causal, d)
            }
            (AttentionKernel::Flash, None) => flash_attention_forward_masked(gpu, qkv, out, saved, heads, causal),
            (AttentionKernel::Flash, Some(d)) => {
                flash_attention_forward_dropout(gpu, qkv, out, saved, heads, causal, d)
            }
        }
    }

    /// The backward after [`AttentionBuffers::forward`] on the same qkv and out: dout `[B, T, C]`
    /// → dqkv `[B, T, 3C]` (overwritten).
    pub fn backward(&self, gpu: &Gpu, dout: &Tensor, qkv: &Tensor, out: &Tensor, dqkv: &Tensor) -> Result<Plan> {
        self.backward_with(gpu, [dout, qkv, out, dqkv], None)
    }

    /// The backward after [`AttentionBuffers::forward_with`] with the same `dropout` (its mask
    /// redrawn from the same step); `tensors`: dout, qkv, out, dqkv as for
    /// [`AttentionBuffers::backward`].
    pub fn backward_with(&self, gpu: &Gpu, tensors: [&Tensor; 4], dropout: Option<&AttentionDropout>) -> Result<Plan> {
        let [dout, qkv, out, dqkv] = tensors;
        self.expect_dims("attention backward", qkv)?;
        let (saved, scratch, heads, causal) = (&self.saved, &self.scratch, self.dims.heads, self.dims.causal);
        match (self.kernel, dropout) {
            (AttentionKernel::Clear, None) => {
                attention_backward_masked(gpu, dout, qkv, saved, scratch, dqkv, heads, causal)
            }
            (AttentionKernel::Clear, Some(d)) => {
                let dropped = self.dropped("attention backward")?;
                attention_backward_dropout(gpu, dout, qkv, saved, dropped, scratch, dqkv, heads, causal, d)
            }
            (AttentionKernel::Flash, None) => {
                flash_attention_backward_masked(gpu, dout, qkv, out, saved, scratch, dqkv, heads, causal)
            }
            (AttentionKernel::Flash, Some(d)) => {
                flash_attention_backward_dropout(gpu, dout, qkv, out, saved, scratch, dqkv, heads, causal, d)
            }
        }
    }

    fn dropped(&self, op: &str) -> Result<&Tensor> {
        self.dropped.as_ref().ok_or_else(|| {
            WgnnError::invalid(op, "dropout with buffers made without it (AttentionBuffers::with_dropout)")
        })
    }

    fn expect_dims(&self, op: &str, qkv: &Tensor) -> Result<()> {
        let want = self.dims.qkv_shape();
        if qkv.shape() != want {
            return Err(WgnnError::shape_of(
                op,
                &[("qkv", qkv.shape())],
                format!("buffers made for qkv {want:?}, got {:?}", qkv.shape()),
            ));
        }
        Ok(())
    }
}
