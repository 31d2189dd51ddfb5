//! wgnn: a neural-network training engine whose hot operations are WGSL compute kernels run
//! through wgpu, with a plain-Rust CPU reference for every kernel.
//!
//! Layers of the crate, bottom up:
//! - [`device`]: the adapter, device, queue, error scopes and the one readback path.
//! - [`tensor`]: f32/u32 tensors in GPU buffers.
//! - [`kernels`]: one module per `shaders/*.wgsl` family; each call checks shapes and returns a
//!   [`kernels::Plan`] of ready-made dispatches. [`cpu`] mirrors every kernel by name.

pub mod activation;
pub mod atomic_file;
pub mod cpu;
pub mod data;
pub mod device;
pub mod display;
pub mod error;
pub mod history;
pub mod init;
pub mod kernels;
pub mod model;
pub mod profile;
pub mod rng;
pub mod tensor;

pub use activation::Activation;
pub use data::Dataset;
pub use device::{Gpu, GpuOptions};
pub use error::{Result, WgnnError, INSTALL_HINT};
pub use history::{EpochRecord, History};
pub use init::Initializer;
pub use kernels::Plan;
pub use profile::{DeviceProfile, ProfileOverride};
pub use tensor::{DType, Tensor};
