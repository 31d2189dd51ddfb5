//! The engine's workings, for the kernel benchmark harness and the kernel tests: the kernel
//! wrappers, their CPU references, plans and the registry behind them, the seeded RNG, atomic
//! writes, the WGSL dumps. Public so that they can be measured and tested one by one; not a stable API (a program
//! that trains models needs none of it). The files stay where the crate's layers put them
//! (`src/kernels/`, `src/cpu/`, …); the crate itself reaches them as `crate::kernels` and so on.

#[path = "atomic_file.rs"]
pub mod atomic_file;
#[path = "cpu/mod.rs"]
pub mod cpu;
#[path = "kernels/mod.rs"]
pub mod kernels;
#[path = "matmul_kernel.rs"]
pub mod matmul_kernel;
#[path = "plan.rs"]
pub mod plan;
#[path = "registry.rs"]
pub mod registry;
#[path = "rng.rs"]
pub mod rng;
#[path = "wgsl_dump.rs"]
pub mod wgsl_dump;
