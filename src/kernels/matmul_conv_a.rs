//! op(A) of [`super::matmul::matmul_conv_patches`]: a convolution's patch matrix read straight
//! from the image (implicit GEMM, shaders/matmul_conv_a.wgsl; matmul_conv_a_scalar.wgsl where
//! the channels are not whole vec4s), what it is ([`ConvPatchesA`]), its kernel families and
//! where it runs ([`matmul_conv_patches_supported`]).
//!
//! Why: im2col writes the patch matrix (kh·kw times the image) and the product reads it back; at
//! the default CNN's second layer (13×13×16 → 3×3 → 32, batch 64) that was im2col 1.3 ms beside
//! a 2.1 ms product in a ~30 ms step on lavapipe, and 4.5 MiB kept for the kernel gradient. Read
//! in place, the product's loads are the same in number but come from an image kh·kw times
//! smaller (cache), and neither the pass nor the matrix remain.

use super::matmul_choice::subgroup_ok;
use super::ACTIVATION_WGSL;
use crate::device::Gpu;
use crate::error::WgnnError;
use crate::registry::{Access, Constant, KernelFamily};
use crate::tensor::{DType, Tensor};

/// The subgroup variant with op(A) the patches of an image.
pub(crate) const MATMUL_CONV: KernelFamily = KernelFamily {
    name: "matmul_conv",
    sources: &[
        ACTIVATION_WGSL,
        include_str!("../../shaders/matmul.wgsl"),
        include_str!("../../shaders/matmul_subgroup.wgsl"),
        include_str!("../../shaders/matmul_subgroup_vec4.wgsl"),
        include_str!("../../shaders/matmul_conv_a.wgsl"),
    ],
    storage: &[Access::Read, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite],
};

/// [`MATMUL_CONV`] for channels that are not whole vec4s: each vec4 of a patch gathered.
pub(crate) const MATMUL_CONV_SCALAR: KernelFamily = KernelFamily {
    name: "matmul_conv_scalar",
    sources: &[
        ACTIVATION_WGSL,
        include_str!("../../shaders/matmul.wgsl"),
        include_str!("../../shaders/matmul_subgroup.wgsl"),
        include_str!("../../shaders/matmul_subgroup_vec4.wgsl"),
        include_str!("../../shaders/matmul_conv_a_scalar.wgsl"),
    ],
    storage: &[Access::Read, Access::Read, Access::ReadWrite, Access::Read, Access::ReadWrite],
};

/// Stored A = the patch matrix `[rows·GH·GW, K]` of `image` `[rows, IH, IW, C]` (channels
/// last) over a grid of GH×GW windows of KH×KW pixels, window (gy, gx) starting at pixel
/// (gy·SY, gx·SX), laid out as im2col lays it (t = (ky·KW + kx)·C + c; K = KH·KW·C rounded up
/// to a multiple of 4, the extra columns zero, as im2col pads them). Every window inside the
/// image ([`ConvPatchesA::fits`]).
#[derive(Clone, Copy, Debug)]
pub struct ConvPatchesA<'a> {
    pub image: &'a Tensor,
    /// (GH, GW).
    pub grid: (usize, usize),
    /// (SY, SX).
    pub strides: (usize, usize),
    /// (KH, KW).
    pub window: (usize, usize),
}

impl ConvPatchesA<'_> {
    /// The image's `[rows, IH, IW, C]`, or None where it is not 4-D.
    fn image_dims(&self) -> Option<[usize; 4]> {
        self.image.shape().try_into().ok()
    }

    /// Stored A's shape: (rows·GH·GW, K).
    pub(crate) fn stored_shape(&self) -> (usize, usize) {
        let [rows, _, _, c] = self.image_dims().unwrap_or([0; 4]);
        (rows * self.grid.0 * self.grid.1, (self.window.0 * self.window.1 * c).next_multiple_of(4))
    }

    /// Whether each vec4 of a patch is gathered from scalars (C not a multiple of 4).
    pub(crate) fn scalar(&self) -> bool {
        !self.image_dims().unwrap_or([0; 4])[3].is_multiple_of(4)
    }

    /// The kernel family that reads these patches.
    pub(crate) fn family(&self) -> &'static KernelFamily {
        if self.scalar() {
            &MATMUL_CONV_SCALAR
        } else {
            &MATMUL_CONV
        }
    }

    /// Whether the shaders read these patches: an f32 4-D image, a non-empty grid of windows all
    /// inside it, strides ≥ 1, a 16-byte aligned view, and indices within u32.
    pub fn fits(&self) -> bool {
        let Some([rows, ih, iw, c]) = self.image_dims() else { return false };
        let ((gh, gw), (sy, sx), (kh, kw)) = (self.grid, self.strides, self.window);
        let inside = |g: usize, s: usize, k: usize, i: usize| g >= 1 && s >= 1 && k >= 1 && (g - 1) * s + k <= i;
        self.image.dtype() == DType::F32
            && rows >= 1
            && c >= 1
            && inside(gh, sy, kh, ih)
            && inside(gw, sx, kw, iw)
            && self.image.byte_offset().is_multiple_of(16)
            && self.image.len() <= u32::MAX as usize
    }

    /// The shader's override constants.
    pub(crate) fn constants(&self) -> Vec<Constant> {
        let [_, ih, iw, c] = self.image_dims().unwrap_or([0; 4]);
        let f = |v: usize| v as f64;
        let channels = match self.scalar() {
            true => vec![("CONV_C", f(c)), ("CONV_PATCH", f(self.window.0 * self.window.1 * c))],
            false => vec![("CONV_C4", f(c / 4))],
        };
        let mut constants = vec![
            ("CONV_GH", f(self.grid.0)),
            ("CONV_GW", f(self.grid.1)),
            ("CONV_IH", f(ih)),
            ("CONV_IW", f(iw)),
            ("CONV_SY", f(self.strides.0)),
            ("CONV_SX", f(self.strides.1)),
            ("CONV_KW", f(self.window.1)),
        ];
        constants.extend(channels);
        constants
    }

    /// The patches' error: what they need, and what they are.
    pub(crate) fn unfit(&self, op: &str) -> WgnnError {
        WgnnError::invalid(
            op,
            format!(
                "op(A) read as the patches of an image needs an f32 [rows, H, W, C] image, every window inside it \
                 and the subgroup kernel: image {:?}, grid {:?}, strides {:?}, window {:?}",
                self.image.shape(),
                self.grid,
                self.strides,
                self.window
            ),
        )
    }
}

/// Whether [`super::matmul::matmul_conv_patches`] runs op(A)·op(B) with `a` and N columns on
/// `gpu`: the patches fit the shader and the product the subgroup kernel.
pub fn matmul_conv_patches_supported(gpu: &Gpu, a: &ConvPatchesA, n: usize, trans_a: bool, trans_b: bool) -> bool {
    let (rows, patch) = a.stored_shape();
    let (m, k) = if trans_a { (patch, rows) } else { (rows, patch) };
    a.fits() && subgroup_ok(gpu, m, n, k, trans_a, trans_b)
}
