//! The matmul kernels by name, as plain data: the variants of [`crate::kernels::matmul`], the
//! tiles of [`crate::kernels::matmul_register`], and [`MatmulKernel`], either of them, which the
//! autotuner picks between and keeps by name in its cache. Below the device, so that the tuner's
//! state the device owns (its picks, re-exported by [`crate::autotune`]) can name them without
//! depending on the kernels that run them; what a kernel needs of a device (e.g. `RegisterTile::check`) stays with
//! its wrapper.

/// How the kernel is organised. Every variant is correct for every shape and form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// One output per invocation, operands read straight from storage.
    Naive,
    /// 16×16 tiles of A and B staged in workgroup memory, with barriers.
    Tiled,
    /// 4 rows × 8 columns of outputs per invocation, no workgroup memory; vec4 loads when the
    /// shape allows.
    Register,
    /// 8 rows × 4 columns of outputs per invocation; vec4 loads when the shape allows.
    RegisterTall,
    /// One subgroup of 8 invocations per workgroup, 4 columns × 16 or 32 rows per invocation, op(A)
    /// loaded once per subgroup and shared with subgroupShuffle (for CPU adapters). Needs
    /// subgroups of at least 8 and vec4-friendly sizes (N too a multiple of 4); where any is
    /// missing it runs as `Register`.
    Subgroup,
}

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 5] = [
        MatmulVariant::Naive,
        MatmulVariant::Tiled,
        MatmulVariant::Register,
        MatmulVariant::RegisterTall,
        MatmulVariant::Subgroup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MatmulVariant::Naive => "naive",
            MatmulVariant::Tiled => "tiled",
            MatmulVariant::Register => "register4x8",
            MatmulVariant::RegisterTall => "register8x4",
            MatmulVariant::Subgroup => "subgroup",
        }
    }
}

/// Geometry of one [`matmul_register`](crate::kernels::matmul_register::matmul_register)
/// specialisation: a workgroup computes `bm`×`bn` outputs, stepping K by `bk`, with
/// (bm/tm)×(bn/tn) invocations of `tm`×`tn` outputs each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegisterTile {
    pub bm: u32,
    pub bn: u32,
    /// K per staged step, a multiple of 4.
    pub bk: u32,
    /// Outputs per invocation along M and N: 4 or 8 each.
    pub tm: u32,
    pub tn: u32,
}

/// Loop iterations one invocation may run per dispatch, far below lavapipe's 65,535 (which
/// counts every loop's iterations together): bounds the K chunk.
const LOOP_BUDGET: u32 = 32_768;
/// The longest K chunk whatever the tile (as the `Tiled` matmul's).
const MAX_KC: u32 = 4096;

impl RegisterTile {
    /// 64×64 outputs, 4×4 per invocation: 256 invocations, 8 KiB of workgroup memory.
    pub const T64X64_4X4: RegisterTile = RegisterTile { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 };
    /// 64×64 outputs, 8×8 per invocation: 64 invocations, 8 KiB.
    pub const T64X64_8X8: RegisterTile = RegisterTile { bm: 64, bn: 64, bk: 16, tm: 8, tn: 8 };
    /// 128×64 outputs, 8×4 per invocation: 256 invocations, 12 KiB.
    pub const T128X64_8X4: RegisterTile = RegisterTile { bm: 128, bn: 64, bk: 16, tm: 8, tn: 4 };
    /// 128×128 outputs, 8×8 per invocation: 256 invocations, 8 KiB.
    pub const T128X128_8X8: RegisterTile = RegisterTile { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 };
    /// The configurations a tuner may try; each fits WebGPU's default limits (16 KiB of
    /// workgroup memory, 256 invocations).
    pub const PRESETS: [RegisterTile; 4] =
        [RegisterTile::T64X64_4X4, RegisterTile::T64X64_8X8, RegisterTile::T128X64_8X4, RegisterTile::T128X128_8X8];

    /// E.g. "64x64x16/4x4".
    pub fn name(&self) -> String {
        format!("{}x{}x{}/{}x{}", self.bm, self.bn, self.bk, self.tm, self.tn)
    }

    /// Invocations per workgroup along N and M.
    pub(crate) fn threads(&self) -> (u32, u32) {
        (self.bn / self.tn, self.bm / self.tm)
    }

    pub fn invocations(&self) -> u32 {
        let (tx, ty) = self.threads();
        tx * ty
    }

    /// Workgroup memory of the staged op(A) and op(B) pieces.
    pub fn workgroup_bytes(&self) -> u32 {
        (self.bm + self.bn) * self.bk * 4
    }

    /// The longest K chunk one dispatch's invocation loops over: a multiple of `bk` whose loop
    /// count (bk/4 multiply steps and the scalar staging loads per step) stays within the budget.
    pub fn max_kc(&self) -> u32 {
        let per_step = self.bk / 4 + (self.bm + self.bn) * self.bk / self.invocations() + 2;
        (LOOP_BUDGET / per_step).min(MAX_KC / self.bk).max(1) * self.bk
    }
}

/// A kernel that can run a matmul: a [`MatmulVariant`] or a tile of the GPU-class
/// [`crate::kernels::matmul_register::matmul_register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    Variant(MatmulVariant),
    Tile(RegisterTile),
}

impl MatmulKernel {
    /// The variant's name, or "tile BMxBNxBK/TMxTN".
    pub fn name(&self) -> String {
        match self {
            MatmulKernel::Variant(v) => v.name().to_string(),
            MatmulKernel::Tile(t) => format!("tile {}", t.name()),
        }
    }

    /// The kernel [`MatmulKernel::name`] names, if any.
    pub fn parse(name: &str) -> Option<MatmulKernel> {
        if let Some(v) = MatmulVariant::ALL.into_iter().find(|v| v.name() == name) {
            return Some(MatmulKernel::Variant(v));
        }
        let (block, thread) = name.strip_prefix("tile ")?.split_once('/')?;
        let numbers = |s: &str| s.split('x').map(|v| v.parse::<u32>().ok()).collect::<Option<Vec<u32>>>();
        match (numbers(block)?.as_slice(), numbers(thread)?.as_slice()) {
            (&[bm, bn, bk], &[tm, tn]) => Some(MatmulKernel::Tile(RegisterTile { bm, bn, bk, tm, tn })),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_parse_back() {
        let tiles = RegisterTile::PRESETS.map(MatmulKernel::Tile);
        for kernel in MatmulVariant::ALL.map(MatmulKernel::Variant).into_iter().chain(tiles) {
            assert_eq!(MatmulKernel::parse(&kernel.name()), Some(kernel));
        }
        for bad in ["", "tile", "tile 64x64/4x4", "tile 64x64x16/4", "registers", "tile axbxc/dxe"] {
            assert_eq!(MatmulKernel::parse(bad), None, "{bad}");
        }
    }
}
