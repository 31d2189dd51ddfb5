//! wgnn: a neural-network training engine whose hot operations are WGSL compute kernels run
//! through wgpu, with a plain-Rust CPU reference for every kernel.
//!
//! # Quick start
//!
//! Data made in code, a model, training, evaluation, predictions, save and load: the whole of a
//! small program (it runs on any adapter wgpu finds; on a Linux machine without a GPU, install
//! Mesa's software driver: `apt-get install -y mesa-vulkan-drivers`).
//!
//! ```
//! use wgnn::model::{Backend, FitOptions, Loss, Optimizer, Sequential, Validation};
//! use wgnn::{Activation, Dataset, Gpu};
//!
//! // 1. Data: rows and labels from memory, here two interleaved spirals of 100 points each.
//! let (mut rows, mut labels) = (Vec::new(), Vec::new());
//! for i in 0..200 {
//!     let (class, r) = (i % 2, (i / 2) as f32 / 100.0);
//!     let angle = 4.0 * r + class as f32 * std::f32::consts::PI;
//!     rows.push([r * angle.cos(), r * angle.sin()]);
//!     labels.push(class); // any integer type; the class count is inferred (2)
//! }
//! let (train, test) = Dataset::from_rows(&rows, &labels)?.shuffled(7).split_at(160)?;
//!
//! // 2. A model: 2 inputs → 32 relu → 2 softmax, on the GPU.
//! let backend = Backend::Gpu(Gpu::new()?);
//! let mut model = Sequential::new(2, 42)
//!     .dense(32, Activation::Relu)
//!     .dense(2, Activation::Softmax)
//!     .build(&backend)?;
//! model.compile(Loss::SparseCategoricalCrossentropy, Optimizer::adam(0.01))?;
//!
//! // 3. Train (`verbose: true` shows a bar and a line per epoch, as Keras does), then evaluate.
//! let options = FitOptions { epochs: 3, batch_size: 16, validation: Validation::Data(&test), ..Default::default() };
//! let history = model.fit(&train, &options)?;
//! let (loss, accuracy) = model.evaluate(&test)?;
//! assert_eq!(history.epochs.len(), 3);
//! assert!(loss.is_finite() && (0.0..=1.0).contains(&accuracy));
//!
//! // 4. Predict: one row of class probabilities per input row, or the classes themselves.
//! let probabilities = model.predict_rows(&[[0.5, 0.0], [-0.5, 0.0]])?;
//! assert_eq!((probabilities.num_rows(), probabilities.width()), (2, 2));
//! let classes: Vec<u32> = model.predict_classes(&test)?;
//!
//! // 5. Save (the folder is created) and load back.
//! let folder = std::env::temp_dir().join(format!("wgnn-quick-start-{}", std::process::id()));
//! let path = folder.join("spirals.safetensors");
//! model.save(&path)?;
//! let loaded = Sequential::load(&path, &backend)?;
//! assert_eq!(loaded.predict_classes(&test)?, classes);
//! # std::fs::remove_dir_all(&folder).expect("the quick start's folder");
//! # Ok::<(), wgnn::WgnnError>(())
//! ```
//!
//! A program that returns `Result<(), WgnnError>` from `main` prints a failure as its message
//! (`Error: `fit`: invalid argument: call compile() before fit()`). The library prints nothing
//! unless asked ([`model::FitOptions::verbose`]).
//!
//! # Where to go next
//!
//! - **Data**: [`Dataset::new`] (a flat vector and the row width), [`Dataset::from_rows`],
//!   [`Dataset::regression_rows`] (float targets); [`Dataset::from_npz`], [`Dataset::from_npy`]
//!   and [`data::load_mnist`] for NumPy files; [`Dataset::take`], [`Dataset::split_at`],
//!   [`Dataset::split`], [`Dataset::shuffled`], [`Dataset::scaled`], [`Dataset::standardized`].
//! - **Models**: [`model::Sequential::new`] and the builder's layers ([`model::SequentialBuilder`]:
//!   dense, conv2d, max_pool2d, batch_norm, dropout, flatten, …), [`model::Loss`],
//!   [`model::Optimizer`] (with learning-rate schedules), [`model::Sequential::summary`].
//! - **Training**: [`model::FitOptions`] (validation, checkpoints, early stopping, `verbose`);
//!   [`model::Sequential::fit_with`] and an [`model::Observer`] of your own, or
//!   [`model::ConsoleProgress`]; the [`History`] it returns ([`History::write_csv`],
//!   [`History::plot_png`]).
//! - **Using a model**: [`model::Sequential::predict_dataset`] and the [`Predictions`] it
//!   returns; [`model::Sequential::save`], [`model::Sequential::load`],
//!   [`model::Sequential::resume`] (from a checkpoint).
//! - **The device**: [`Gpu::new`] takes the adapter `$WGNN_ADAPTER` names (part of its name) or
//!   the default; [`GpuOptions`] sets it in code, and `require_gpu` (or `$WGNN_REQUIRE_GPU=1`)
//!   refuses a software adapter. [`Gpu::software_notice`] is a line to show your user when
//!   training will run on the CPU. On Linux, creating a `Gpu` in a single-threaded process sets an
//!   unset or relative `XDG_RUNTIME_DIR`; [`quiet_mesa`] does it first in `main` otherwise.
//!   `model::Backend::Cpu` runs the plain-Rust reference instead.
//!
//! The API a program that trains models uses: [`Gpu`] (and [`GpuOptions`]), [`Dataset`] and
//! [`data::load_mnist`], [`model::Sequential`] with the [`Layer`]s it stacks, [`model::Loss`],
//! [`model::Optimizer`], [`model::FitOptions`], [`History`], [`Predictions`], [`WgnnError`]. The
//! kernels, their CPU references and the plans they return are under [`internals`], for the
//! benchmark harness and the kernel tests.
//!
//! Layers of the crate, bottom up. A module imports only from layers below its own, or from the
//! modules listed before it in its own layer; nothing imports upwards (doc links aside):
//! 1. Errors, configs and host data: [`error`]; [`config`] (optimizer, schedule and batch-norm
//!    hyper-parameters), [`activation`]; [`internals::rng`], [`init`]; [`data`], [`internals::atomic_file`],
//!    [`history`], [`predictions`], [`display`], [`host_memory`], [`env_switch`];
//!    [`internals::matmul_kernel`] (the matmul kernels by name, as plain data).
//! 2. The CPU reference, [`internals::cpu`]: mirrors every kernel by name; it is what the kernels compute.
//! 3. The device: [`profile`] (the adapter's facts and the policy derived from them), [`device`]
//!    (adapter, device, queue, error scopes, the one readback path, the store of compiled shader
//!    objects, the autotuner's state: its picks per shape, budget and cache file), [`tensor`]
//!    (f32/u32 tensors in GPU buffers), [`internals::plan`] (dispatches and plans of them, run and
//!    timed), [`internals::wgsl_dump`] (each pipeline's WGSL written out for other compilers),
//!    [`internals::registry`] (kernel families, pipelines, building a dispatch).
//! 4. [`internals::kernels`]: one module per `shaders/*.wgsl` family; each call checks shapes, picks a variant
//!    by the device's profile and returns a [`Plan`] of ready-made dispatches. The matmul's in
//!    order: its options, static choice and checks, the workgroup-tile kernel (`matmul_register`),
//!    then [`autotune`] (builds and times the candidates, planned by a function the matmul wrapper
//!    hands it), then the matmul wrapper, which asks it for the kernel.
//! 5. [`layers`]: what a model stacks; each layer's shapes, parameter slots, and GPU and CPU
//!    forward and backward through the kernels.
//! 6. [`model`]: `Sequential`, the fusion pass over its layers, its GPU and CPU backends, the
//!    epoch loop, save and load.

pub mod activation;
pub mod autotune;
pub mod collective;
pub mod config;
pub mod data;
pub mod device;
pub mod display;
pub mod env_switch;
pub mod error;
pub mod history;
pub mod host_memory;
pub mod init;
pub mod layers;
pub mod model;
pub mod numpy_random;
pub mod predictions;
pub mod profile;
pub mod tensor;
pub mod train_test_split;

pub mod internals;
pub(crate) use internals::{atomic_file, cpu, kernels, matmul_kernel, plan, registry, rng, wgsl_dump};

pub use activation::Activation;
pub use data::{Dataset, TokenDataset};
pub use device::{quiet_mesa::quiet_mesa, Gpu, GpuOptions};
pub use error::{Result, WgnnError, INSTALL_HINT};
pub use history::{EpochRecord, History};
pub use init::Initializer;
pub use internals::plan::Plan;
pub use layers::Layer;
pub use predictions::Predictions;
pub use profile::{DeviceProfile, ProfileOverride};
pub use tensor::{DType, Tensor};

/// The README's usage snippet, compiled (not run) by `cargo test` as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
