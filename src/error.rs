//! One error type for the whole library. Every variant that comes from a kernel names the kernel
//! (the op) and the shapes involved, so a message alone is enough to find the bad call.

use std::path::PathBuf;

/// What Mesa's software Vulkan driver is called in error messages and the README.
pub const INSTALL_HINT: &str = "install a Vulkan driver; on a Linux machine without a GPU use Mesa's \
software driver lavapipe: `apt-get install -y mesa-vulkan-drivers`";

/// Every error wgnn returns. `Display` is one line naming the op (or file) and what is wrong;
/// `Debug` prints the same report (as `anyhow` does), so `fn main() -> Result<(), WgnnError>`
/// ends with `Error: <the message>` rather than a struct dump; `{:#?}` adds the variant's name.
///
/// ```
/// use wgnn::WgnnError;
/// let err = WgnnError::invalid("fit", "call compile() before fit()");
/// assert_eq!(err.to_string(), "`fit`: invalid argument: call compile() before fit()");
/// assert_eq!(format!("{err:?}"), err.to_string());
/// ```
#[derive(thiserror::Error)]
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
         GPU's Vulkan driver, or pick the GPU by name (WGNN_ADAPTER=NAME, GpuOptions::adapter; a program's \
         --adapter); without require_gpu (WGNN_REQUIRE_GPU=1, a program's --require-gpu) wgnn runs on it anyway"
    )]
    SoftwareAdapter { adapter: String },

    #[error("could not create a device on adapter {adapter}: {message}")]
    DeviceRequest { adapter: String, message: String },

    #[error("kernel `{kernel}`: shader or pipeline creation failed: {message}")]
    KernelCreation { kernel: String, message: String },

    /// An operand's shape does not fit the op. `shapes` names each operand the check involved and
    /// the shape it had (`[("x", [2, 3]), ("y", [3, 2])]`), so a caller can match on `op` and read
    /// the shapes without parsing text; empty where the check is about a count rather than a
    /// tensor (the detail then says so). `detail` says what was wanted and names the same shapes.
    #[error("`{op}`: shape mismatch: {detail}")]
    Shape { op: String, shapes: Vec<(String, Vec<usize>)>, detail: String },

    #[error("`{op}`: empty tensor (shape {shape:?}); every dimension must be at least 1")]
    EmptyTensor { op: String, shape: Vec<usize> },

    #[error("`{op}`: label {label} is out of range for {classes} classes")]
    LabelOutOfRange { op: String, label: u32, classes: usize },

    #[error("`{op}`: expected a {expected} tensor, got {got} (shape {shape:?})")]
    DType { op: String, expected: &'static str, got: &'static str, shape: Vec<usize> },

    /// `amount` and `limit` count `unit`s: bytes, workgroups, invocations.
    #[error("`{op}`: {what} of {amount} {unit} exceeds the device's {limit_name} of {limit} {unit}")]
    DeviceLimit { op: String, what: String, amount: u64, unit: &'static str, limit: u64, limit_name: &'static str },

    /// More host memory than the process can have, refused before it is allocated (see
    /// [`crate::host_memory`]).
    #[error(
        "`{op}`: {what} needs {bytes} bytes of host memory, more than the {available} bytes available to this process"
    )]
    HostMemory { op: String, what: String, bytes: u64, available: u64 },

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

    /// Rank `rank` of `size` training in one process ([`crate::model::fit_on_adapters`]) failed
    /// with `source` on `adapter`; the other ranks stopped with it.
    #[error("rank {rank} of {size} (on {adapter}) failed: {source}")]
    RankFailed { rank: usize, size: usize, adapter: String, source: Box<WgnnError> },
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

impl std::fmt::Debug for WgnnError {
    /// The `Display` report: what `main` returning this error prints after `Error: `. With `{:#?}`,
    /// the variant's name first, for a test's failure message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            write!(f, "WgnnError::{}: ", self.variant_name())?;
        }
        write!(f, "{self}")
    }
}

impl WgnnError {
    /// A [`WgnnError::Shape`] naming the operands checked and their shapes:
    /// `WgnnError::shape_of("bias_act", &[("x", x.shape()), ("y", y.shape())], "x and y differ")`.
    pub fn shape_of(op: &str, shapes: &[(&str, &[usize])], detail: impl Into<String>) -> Self {
        let shapes = shapes.iter().map(|(name, shape)| (name.to_string(), shape.to_vec())).collect();
        WgnnError::Shape { op: op.to_string(), shapes, detail: detail.into() }
    }

    /// A [`WgnnError::Shape`] whose shapes are in the detail text only (no `shapes`); kept for the
    /// call sites not yet converted to [`WgnnError::shape_of`].
    pub fn shape(op: &str, detail: impl Into<String>) -> Self {
        WgnnError::Shape { op: op.to_string(), shapes: Vec::new(), detail: detail.into() }
    }

    /// A [`WgnnError::Shape`] with the operand `name` of `shape` first in its shapes, unless it
    /// names one already; other errors as they are.
    pub(crate) fn with_operand(self, name: &str, shape: &[usize]) -> Self {
        match self {
            WgnnError::Shape { op, mut shapes, detail } => {
                if !shapes.iter().any(|(n, _)| n == name) {
                    shapes.insert(0, (name.to_string(), shape.to_vec()));
                }
                WgnnError::Shape { op, shapes, detail }
            }
            other => other,
        }
    }

    /// The shape a [`WgnnError::Shape`] recorded for the operand `name`; `None` for another
    /// variant or an operand it does not name.
    pub fn operand_shape(&self, name: &str) -> Option<&[usize]> {
        match self {
            WgnnError::Shape { shapes, .. } => shapes.iter().find(|(n, _)| n == name).map(|(_, s)| s.as_slice()),
            _ => None,
        }
    }

    /// The variant's name, e.g. `"Shape"`.
    pub fn variant_name(&self) -> &'static str {
        match self {
            WgnnError::NoAdapter { .. } => "NoAdapter",
            WgnnError::AdapterNotFound { .. } => "AdapterNotFound",
            WgnnError::SoftwareAdapter { .. } => "SoftwareAdapter",
            WgnnError::DeviceRequest { .. } => "DeviceRequest",
            WgnnError::KernelCreation { .. } => "KernelCreation",
            WgnnError::Shape { .. } => "Shape",
            WgnnError::EmptyTensor { .. } => "EmptyTensor",
            WgnnError::LabelOutOfRange { .. } => "LabelOutOfRange",
            WgnnError::DType { .. } => "DType",
            WgnnError::DeviceLimit { .. } => "DeviceLimit",
            WgnnError::HostMemory { .. } => "HostMemory",
            WgnnError::InvalidArgument { .. } => "InvalidArgument",
            WgnnError::NonFinite { .. } => "NonFinite",
            WgnnError::Gpu { .. } => "Gpu",
            WgnnError::DeviceLost { .. } => "DeviceLost",
            WgnnError::Data { .. } => "Data",
            WgnnError::Io { .. } => "Io",
            WgnnError::Training { .. } => "Training",
            WgnnError::RankFailed { .. } => "RankFailed",
        }
    }

    pub fn invalid(op: &str, detail: impl Into<String>) -> Self {
        WgnnError::InvalidArgument { op: op.to_string(), detail: detail.into() }
    }
}
