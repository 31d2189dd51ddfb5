//! One error type for the whole library. Every variant that comes from a kernel names the kernel
//! (the op) and the shapes involved, so a message alone is enough to find the bad call.

use std::path::PathBuf;

/// What Mesa's software Vulkan driver is called in error messages and the README.
pub const INSTALL_HINT: &str = "install a Vulkan driver; on a Linux machine without a GPU use Mesa's \
software driver lavapipe: `apt-get install -y mesa-vulkan-drivers`";

#[derive(Debug, thiserror::Error)]
pub enum WgnnError {
    #[error("no GPU adapter found{detail}: {hint}", hint = INSTALL_HINT)]
    NoAdapter { detail: String },

    /// `--adapter` / `WGNN_ADAPTER` named no adapter that is present (the driver is there: the
    /// fix is another name, not an install).
    #[error("no adapter whose name contains {wanted:?}; adapters present: {}; pick one by a part of its name", present.join(", "))]
    AdapterNotFound { wanted: String, present: Vec<String> },

    /// A software adapter where a GPU was required (`GpuOptions::require_gpu`).
    #[error(
        "adapter {adapter} is a software renderer (it would train on the CPU) and a GPU was required: install the \
         GPU's Vulkan driver, or pick the GPU by name with --adapter / WGNN_ADAPTER; without --require-gpu \
         (WGNN_REQUIRE_GPU) wgnn runs on it anyway"
    )]
    SoftwareAdapter { adapter: String },

    #[error("could not create a device on adapter {adapter}: {message}")]
    DeviceRequest { adapter: String, message: String },

    #[error("kernel `{kernel}`: shader or pipeline creation failed: {message}")]
    KernelCreation { kernel: String, message: String },

    #[error("`{op}`: shape mismatch: {detail}")]
    Shape { op: String, detail: String },

    #[error("`{op}`: empty tensor (shape {shape:?}); every dimension must be at least 1")]
    EmptyTensor { op: String, shape: Vec<usize> },

    #[error("`{op}`: label {label} is out of range for {classes} classes")]
    LabelOutOfRange { op: String, label: u32, classes: usize },

    #[error("`{op}`: expected a {expected} tensor, got {got} (shape {shape:?})")]
    DType { op: String, expected: &'static str, got: &'static str, shape: Vec<usize> },

    #[error("`{op}`: {what} of {bytes} bytes exceeds the device's {limit_name} of {limit} bytes")]
    DeviceLimit { op: String, what: String, bytes: u64, limit: u64, limit_name: &'static str },

    #[error("`{op}`: invalid argument: {detail}")]
    InvalidArgument { op: String, detail: String },

    #[error("`{op}`: non-finite value ({value}) at index {index}")]
    NonFinite { op: String, index: usize, value: f32 },

    #[error("GPU error during `{op}`: {message}")]
    Gpu { op: String, message: String },

    /// Every call on the device fails from then on. `checkpoint`: the last checkpoint `fit` wrote
    /// (file, epochs completed), to resume from on a new device.
    #[error("the GPU device was lost: {message}{}", resume_hint(.checkpoint))]
    DeviceLost { message: String, checkpoint: Option<(PathBuf, usize)> },

    #[error("{path}: {detail}")]
    Data { path: PathBuf, detail: String },

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("training stopped: {detail}")]
    Training { detail: String },
}

/// The end of a device-lost message that names the checkpoint to resume from.
fn resume_hint(checkpoint: &Option<(PathBuf, usize)>) -> String {
    match checkpoint {
        Some((path, epoch)) => format!(
            "; resume from {} (epoch {epoch}) on a new device with `Sequential::resume` (mnist_gpu: `--resume {}`)",
            path.display(),
            path.display()
        ),
        None => String::new(),
    }
}

pub type Result<T> = std::result::Result<T, WgnnError>;

impl WgnnError {
    pub fn shape(op: &str, detail: impl Into<String>) -> Self {
        WgnnError::Shape { op: op.to_string(), detail: detail.into() }
    }
    pub fn invalid(op: &str, detail: impl Into<String>) -> Self {
        WgnnError::InvalidArgument { op: op.to_string(), detail: detail.into() }
    }
}
