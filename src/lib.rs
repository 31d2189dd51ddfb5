//! wgnn: a neural-network training engine whose hot operations are WGSL compute kernels run
//! through wgpu, with a plain-Rust CPU reference for every kernel.
//!
//! The API a program that trains models uses: [`Gpu`] (and [`GpuOptions`]), [`Dataset`] and
//! [`data::load_mnist`], [`model::Sequential`] with the [`Layer`]s it stacks, [`model::Loss`],
//! [`model::Optimizer`], [`model::FitOptions`], [`History`], [`WgnnError`]. The kernels, their
//! CPU references and the plans they return are under [`internals`], for the benchmark harness
//! and the kernel tests.
//!
//! Layers of the crate, bottom up. A module imports only from layers below its own, or from the
//! modules listed before it in its own layer; nothing imports upwards (doc links aside):
//! 1. Errors, configs and host data: [`error`]; [`config`] (optimizer, schedule and batch-norm
//!    hyper-parameters), [`activation`]; [`internals::rng`], [`init`]; [`data`], [`internals::atomic_file`],
//!    [`history`], [`display`].
//! 2. The CPU reference, [`internals::cpu`]: mirrors every kernel by name; it is what the kernels compute.
//! 3. The device: [`profile`] (the adapter's facts and the policy derived from them), [`device`]
//!    (adapter, device, queue, error scopes, the one readback path, the store of compiled shader
//!    objects), [`tensor`] (f32/u32 tensors in GPU buffers), [`internals::plan`] (dispatches and
//!    plans of them, run and timed), [`internals::wgsl_dump`] (each pipeline's WGSL written out
//!    for other compilers), [`internals::registry`] (kernel families, pipelines, building
//!    a dispatch), [`autotune`] (matmul variants timed on the device, cached).
//! 4. [`internals::kernels`]: one module per `shaders/*.wgsl` family; each call checks shapes, picks a variant
//!    by the device's profile and returns a [`Plan`] of ready-made dispatches.
//! 5. [`layers`]: what a model stacks; each layer's shapes, parameter slots, and GPU and CPU
//!    forward and backward through the kernels.
//! 6. [`model`]: `Sequential`, the fusion pass over its layers, its GPU and CPU backends, the
//!    epoch loop, save and load.

pub mod activation;
pub mod autotune;
pub mod config;
pub mod data;
pub mod device;
pub mod display;
pub mod error;
pub mod history;
pub mod init;
pub mod layers;
pub mod model;
pub mod numpy_random;
pub mod profile;
pub mod tensor;
pub mod train_test_split;

pub mod internals;
pub(crate) use internals::{atomic_file, cpu, kernels, plan, registry, rng, wgsl_dump};

pub use activation::Activation;
pub use data::Dataset;
pub use device::{Gpu, GpuOptions};
pub use error::{Result, WgnnError, INSTALL_HINT};
pub use history::{EpochRecord, History};
pub use init::Initializer;
pub use internals::plan::Plan;
pub use layers::Layer;
pub use profile::{DeviceProfile, ProfileOverride};
pub use tensor::{DType, Tensor};

/// The README's usage snippet, compiled (not run) by `cargo test` as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
