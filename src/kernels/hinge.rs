//! GPU wrapper of shaders/hinge.wgsl; CPU reference in src/cpu/hinge.rs.

use super::sigmoid_bce::{single_output_loss, SigmoidBceOut};
use crate::device::Gpu;
use crate::error::Result;
use crate::plan::Plan;
use crate::registry::{Access, KernelFamily};
use crate::tensor::Tensor;

pub(crate) const HINGE: KernelFamily = KernelFamily {
    name: "hinge",
    sources: &[include_str!("../../shaders/hinge.wgsl")],
    storage: &[Access::ReadWrite; 5],
};

/// Where [`hinge`] writes: the same outputs as sigmoid_bce's, with
/// loss_rows `[N]` = max(0, 1 − y·z), dlogits = (y·z < 1 ? −y : 0) · grad_scale (None for
/// evaluation only), correct_rows `[N]` = 1.0 where (z > 0) == (y > 0), and totals `[2]` +=
/// (Σ loss_rows, Σ correct_rows).
pub type HingeOut<'a> = SigmoidBceOut<'a>;

/// Binary hinge loss with its (sub)gradient, for a single-output model.  logits: [N, 1] or `[N]`
/// f32, targets: `[N]` f32 labels in {−1, +1} or {0, 1}: y = +1 where t > 0, else −1 (so 0 maps to
/// −1, as in Keras). `grad_scale` is usually 1/N.
pub fn hinge(gpu: &Gpu, logits: &Tensor, targets: &Tensor, grad_scale: f32, out: &HingeOut) -> Result<Plan> {
    single_output_loss(gpu, &HINGE, "hinge", false, logits, targets, grad_scale, out)
}
