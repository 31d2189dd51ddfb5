//! The wgpu device: adapter choice, limits and features, the device profile, error scopes,
//! submission and readback, and the store of compiled shader objects (`device::cache`).

pub mod adapters;
pub(crate) mod cache;
pub(crate) mod memory;
pub mod memory_budget;
pub mod quiet_mesa;
pub mod tune_cache;
pub(crate) mod tuner;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::env_switch::env_switch;
use crate::error::{Result, WgnnError};
use crate::profile::{DeviceProfile, ProfileOverride};
use cache::PipelineCache;
use memory::MemoryCounter;
use memory_budget::{default_memory_budget, env_memory_budget};
use tune_cache::{cache_dir, DeviceIdentity, TuneCache};
use tuner::{TunedPick, Tuner, AUTOTUNE_ENV};

/// Environment variable that picks an adapter by (case-insensitive) substring of its name.
pub const ADAPTER_ENV: &str = "WGNN_ADAPTER";

/// Environment variable that overrides the device profile's policy in [`Gpu::new`]: "cpu", "gpu"
/// or "adapter" (the default; see [`ProfileOverride`]). E.g. `WGNN_PROFILE=gpu cargo test` runs
/// the suite on lavapipe with the kernel choices of a GPU.
pub const PROFILE_ENV: &str = "WGNN_PROFILE";

/// Environment variable that, set to 1, refuses a software adapter (see [`GpuOptions::require_gpu`]).
pub const REQUIRE_GPU_ENV: &str = "WGNN_REQUIRE_GPU";

/// How [`Gpu::with_options`] picks an adapter and what it asks of it.
#[derive(Clone, Copy, Debug)]
pub struct GpuOptions<'a> {
    /// The first adapter whose name contains this (case-insensitive); `None`: the
    /// high-performance default.
    pub adapter: Option<&'a str>,
    /// Maps the adapter's limits to the ones requested for the device (default: unchanged). Use
    /// it to mimic a smaller device, e.g. a lower `max_storage_buffer_binding_size` to see data
    /// sets split across buffers; asking for more than the adapter has is a `DeviceRequest` error.
    pub limits: fn(wgpu::Limits) -> wgpu::Limits,
    /// Maps the features wgnn would request of the adapter (those it has of TIMESTAMP_QUERY,
    /// TIMESTAMP_QUERY_INSIDE_ENCODERS and SUBGROUP) to the ones requested (default: unchanged).
    /// Use it to mimic a device without some, e.g. without `SUBGROUP`; asking for one the adapter
    /// lacks is a `DeviceRequest` error.
    pub features: fn(wgpu::Features) -> wgpu::Features,
    /// Which policy the device profile applies (default: the adapter's type decides). Forcing
    /// [`ProfileOverride::Gpu`] on lavapipe runs the kernel choices of a GPU there, for tests.
    pub profile: ProfileOverride,
    /// Refuse a software adapter (llvmpipe, SwiftShader, WARP: "GPUs" that run on the CPU) with
    /// [`WgnnError::SoftwareAdapter`] instead of training on it.
    pub require_gpu: bool,
    /// Time the kernels that can run a matmul the first time its shape is planned and keep the
    /// fastest ([`crate::autotune`]; default on). Off, or `$WGNN_AUTOTUNE=off` whatever this says:
    /// the static choice of the device profile (`choose_variant`).
    pub autotune: bool,
    /// The folder of the tuner's cache of picks; `None`: `$WGNN_CACHE_DIR`, else the user's cache
    /// folder (`$XDG_CACHE_HOME/wgnn` or `~/.cache/wgnn`).
    pub tune_cache_dir: Option<&'a Path>,
    /// The tuner's wall-time budget per device; `None`: the profile's
    /// ([`DeviceProfile::tune_budget`]). A benchmark that wants every shape fully tuned sets more.
    pub tune_budget: Option<std::time::Duration>,
    /// Bytes of device memory the engine plans to use (evaluation batches take a sixteenth);
    /// `None`: `$WGNN_MEMORY_BUDGET` ([`memory_budget::MEMORY_BUDGET_ENV`]), else the adapter's
    /// largest buffer (`max_buffer_size`; wgpu reports no memory size) capped at 4 GiB, or at
    /// 1 GiB on a software adapter. [`Gpu::memory_budget`] says which applies. A training set whose
    /// upload takes more than half of it streams in chunks of whole batches
    /// ([`crate::model::Sequential::training_chunks`]); the validation set and a step's buffers
    /// ([`crate::model::Sequential::step_memory_bytes`]) stay resident whatever it says.
    pub memory_budget: Option<u64>,
}

impl Default for GpuOptions<'_> {
    fn default() -> Self {
        GpuOptions {
            adapter: None,
            limits: |l| l,
            features: |f| f,
            profile: ProfileOverride::Adapter,
            require_gpu: false,
            autotune: true,
            tune_cache_dir: None,
            tune_budget: None,
            memory_budget: None,
        }
    }
}

/// A handle on one GPU device and its queue. Cheap to clone; every clone shares the pipeline cache.
///
/// ```
/// use wgnn::{Gpu, GpuOptions, WgnnError};
/// let gpu = Gpu::new()?; // the adapter $WGNN_ADAPTER names, or the default one
/// println!("training on {}", gpu.describe());
/// if let Some(notice) = gpu.software_notice() {
///     eprintln!("{notice}"); // a software adapter: training runs on the CPU
/// }
/// // In code: the adapter whose name contains "nvidia", and never a software renderer.
/// let wanted = GpuOptions { adapter: Some("nvidia"), require_gpu: true, ..Default::default() };
/// match Gpu::with_options(&wanted) {
///     Ok(gpu) => println!("found {}", gpu.describe()),
///     Err(WgnnError::AdapterNotFound { present, .. }) => println!("adapters here: {present:?}"),
///     Err(other) => println!("{other}"),
/// }
/// # Ok::<(), wgnn::WgnnError>(())
/// ```
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

pub(crate) struct GpuInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The adapter's facts and the policy derived from them, built once.
    pub profile: DeviceProfile,
    pub pipelines: PipelineCache,
    /// The matmul autotuner's picks on this device.
    pub tuner: Tuner,
    /// Set by the device-lost callback; checked after every wait.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors no error scope caught (wgpu's default would panic).
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Bytes of the engine's tensors on this device.
    pub memory: Arc<MemoryCounter>,
    /// The memory budget in effect ([`GpuOptions::memory_budget`]).
    pub memory_budget: u64,
}

impl Gpu {
    /// The adapter named by `$WGNN_ADAPTER`, or else the high-performance default, with the
    /// policy `$WGNN_PROFILE` names, if any; a software adapter refused where
    /// `$WGNN_REQUIRE_GPU=1`.
    pub fn new() -> Result<Gpu> {
        Gpu::from_command_line(None, false)
    }

    /// What a program's command line and environment ask for: the adapter `adapter` names (a
    /// `--adapter` flag), else `$WGNN_ADAPTER`; the policy `$WGNN_PROFILE` names; and with
    /// `require_gpu` (a `--require-gpu` flag) or `$WGNN_REQUIRE_GPU=1`, no software adapter.
    pub fn from_command_line(adapter: Option<&str>, require_gpu: bool) -> Result<Gpu> {
        let from_env = std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty());
        let profile = match std::env::var(PROFILE_ENV) {
            Ok(name) => ProfileOverride::parse(&name).ok_or_else(|| {
                WgnnError::invalid("Gpu::new", format!("{PROFILE_ENV}={name:?}: expected cpu, gpu or adapter"))
            })?,
            Err(_) => ProfileOverride::Adapter,
        };
        let require_gpu = require_gpu || env_switch(REQUIRE_GPU_ENV)?.unwrap_or(false);
        let adapter = adapter.or(from_env.as_deref());
        Gpu::with_options(&GpuOptions { adapter, profile, require_gpu, ..Default::default() })
    }

    /// The first adapter whose name contains `name` (case-insensitive), or the default when `None`.
    pub fn with_adapter(name: Option<&str>) -> Result<Gpu> {
        Gpu::with_options(&GpuOptions { adapter: name, ..Default::default() })
    }

    /// The adapter and the device limits `options` ask for.
    pub fn with_options(options: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::create(options))
    }

    async fn create(options: &GpuOptions<'_>) -> Result<Gpu> {
        // Before the instance: Mesa's Wayland probe reads the variable then.
        quiet_mesa::quiet_mesa_if_single_threaded();
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::PRIMARY;
        let instance = wgpu::Instance::new(desc);
        let adapter = match options.adapter {
            Some(wanted) => {
                let adapters = instance.enumerate_adapters(wgpu::Backends::PRIMARY).await;
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                let lower = wanted.to_lowercase();
                let found = adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&lower));
                match found {
                    Some(a) => a,
                    // No adapter at all is a missing driver: the install hint.
                    None if names.is_empty() => {
                        return Err(WgnnError::NoAdapter { detail: format!(" (looking for {wanted:?})") })
                    }
                    None => return Err(WgnnError::AdapterNotFound { wanted: wanted.to_string(), present: names }),
                }
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                })
                .await
                .map_err(|e| WgnnError::NoAdapter { detail: format!(" ({e})") })?,
        };
        Self::open(adapter, options).await
    }

    /// A device on `adapter`, with what `options` asks of it (all but `options.adapter`).
    async fn open(adapter: wgpu::Adapter, options: &GpuOptions<'_>) -> Result<Gpu> {
        let info = adapter.get_info();
        // The adapter's own limits (the defaults cap a storage binding at 128 MiB), unless the
        // caller lowers some.
        let limits = (options.limits)(adapter.limits());
        // SUBGROUP: the matmul subgroup variant (used only where present).
        let wanted_features = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::SUBGROUP;
        let features = (options.features)(adapter.features() & wanted_features);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgnn"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| WgnnError::DeviceRequest { adapter: info.name.clone(), message: e.to_string() })?;

        let lost = Arc::new(Mutex::new(None));
        let lost_writer = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost_writer.lock() {
                *slot = Some(if message.is_empty() { format!("{reason:?}") } else { format!("{reason:?}: {message}") });
            }
        });
        let uncaptured = Arc::new(Mutex::new(None));
        let uncaptured_writer = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            if let Ok(mut slot) = uncaptured_writer.lock() {
                slot.get_or_insert_with(|| error.to_string());
            }
        }));

        let profile = DeviceProfile::new(&info, features, &limits, options.profile);
        if options.require_gpu && profile.software {
            return Err(WgnnError::SoftwareAdapter { adapter: info.name.clone() });
        }
        let memory_budget = match options.memory_budget {
            Some(0) => return Err(WgnnError::invalid("GpuOptions::memory_budget", "a budget of 0 bytes")),
            Some(bytes) => bytes,
            None => env_memory_budget()?.unwrap_or_else(|| default_memory_budget(&limits, profile.software)),
        };
        let autotune = env_switch(AUTOTUNE_ENV)?.unwrap_or(true) && options.autotune;
        let cache = cache_dir(options.tune_cache_dir).map(|dir| TuneCache::new(&dir, DeviceIdentity::of(&info)));
        let budget = options.tune_budget.unwrap_or(profile.tune_budget);
        let tuner = Tuner::new(autotune, budget, &profile, cache);
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                device,
                queue,
                info,
                limits,
                features,
                profile,
                pipelines: PipelineCache::default(),
                tuner,
                lost,
                uncaptured,
                memory: Arc::default(),
                memory_budget,
            }),
        })
    }

    /// Bytes of device memory the engine's tensors hold now (its own accounting: every tensor it
    /// allocates, views counted once; not wgpu's internal or uniform buffers).
    pub fn allocated_bytes(&self) -> u64 {
        self.inner.memory.live()
    }

    /// The most bytes [`Gpu::allocated_bytes`] reached since the device was made or
    /// [`Gpu::reset_peak_allocated_bytes`] was last called.
    pub fn peak_allocated_bytes(&self) -> u64 {
        self.inner.memory.peak()
    }

    /// Starts a new peak at what is allocated now: `peak_allocated_bytes() − allocated_bytes()`
    /// taken after an operation is what it held at most beyond what was already there.
    pub fn reset_peak_allocated_bytes(&self) {
        self.inner.memory.reset_peak()
    }

    /// Bytes of device memory the engine plans to use: [`GpuOptions::memory_budget`], else
    /// `$WGNN_MEMORY_BUDGET`, else the adapter's default (see [`GpuOptions::memory_budget`]).
    /// Evaluation and prediction size their batches so a batch's activations take at most a
    /// sixteenth of it; a training set over half of it streams in chunks.
    pub fn memory_budget(&self) -> u64 {
        self.inner.memory_budget
    }

    pub(crate) fn memory_counter(&self) -> &Arc<MemoryCounter> {
        &self.inner.memory
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    /// The adapter's facts and the engine's policy on this device.
    pub fn profile(&self) -> &DeviceProfile {
        &self.inner.profile
    }
    pub(crate) fn pipelines(&self) -> &PipelineCache {
        &self.inner.pipelines
    }
    pub(crate) fn tuner(&self) -> &Tuner {
        &self.inner.tuner
    }
    /// Whether the matmul autotuner is on ([`GpuOptions::autotune`], `$WGNN_AUTOTUNE`).
    pub fn autotune(&self) -> bool {
        self.inner.tuner.enabled()
    }
    /// The autotuner's picks so far, in the order their shapes were first planned (one line each
    /// with `Display`).
    pub fn tuned_picks(&self) -> Vec<TunedPick> {
        self.inner.tuner.picks()
    }
    /// The file the autotuner keeps its picks in; `None` where no cache folder was found.
    pub fn tune_cache_path(&self) -> Option<PathBuf> {
        self.inner.tuner.cache_path()
    }
    /// Why the autotuner's last write of its cache failed, if it did (the picks stay in memory).
    pub fn tune_cache_error(&self) -> Option<String> {
        self.inner.tuner.disk_error()
    }
    /// Number of pipelines built on this device so far.
    pub fn pipeline_count(&self) -> usize {
        self.inner.pipelines.len()
    }

    /// "name (backend, driver driver_info, device type)": what a person wants to see at start-up;
    /// with the profile's policy where an override forced it.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        let forced = match self.inner.profile.overridden {
            true => format!("; {}", self.inner.profile.describe()),
            false => String::new(),
        };
        let kind = self.inner.profile.adapter_type();
        format!("{} ({:?}, driver {} {}, {kind}){forced}", i.name, i.backend, i.driver, i.driver_info)
    }

    /// One line for a person when the adapter is a software one (training runs on the CPU) and
    /// how to pick or require a GPU, in code and by environment variable; `None` on a GPU. The
    /// library never prints it: a program shows it where it shows its other messages.
    pub fn software_notice(&self) -> Option<String> {
        self.inner.profile.software.then(|| {
            format!(
                "note: {} is a software adapter, so training runs on the CPU; to train on a GPU, install its \
                 Vulkan driver and pick it with {ADAPTER_ENV}=NAME (GpuOptions::adapter in code); \
                 {REQUIRE_GPU_ENV}=1 (GpuOptions::require_gpu) makes a software adapter an error",
                self.inner.info.name
            )
        })
    }

    /// True on a CPU "GPU" such as lavapipe (the adapter's type; the kernel choices follow
    /// [`Gpu::profile`]'s policy, which an override may set otherwise).
    pub fn is_cpu_adapter(&self) -> bool {
        self.inner.profile.is_cpu_adapter()
    }

    /// Runs `f` inside a validation + out-of-memory error scope; an error becomes `Err` naming `op`.
    pub(crate) fn scoped<T>(&self, op: &str, f: impl FnOnce() -> T) -> Result<T> {
        let validation = self.inner.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.inner.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let value = f();
        let oom_error = pollster::block_on(oom.pop());
        let validation_error = pollster::block_on(validation.pop());
        match validation_error.or(oom_error) {
            // On a lost device every call fails: the loss is the error to report.
            Some(e) => {
                self.check_lost()?;
                Err(WgnnError::Gpu { op: op.to_string(), message: e.to_string() })
            }
            None => Ok(value),
        }
    }

    /// Submits one command buffer inside an error scope.
    pub(crate) fn submit(&self, op: &str, commands: wgpu::CommandBuffer) -> Result<wgpu::SubmissionIndex> {
        self.check_health()?;
        self.scoped(op, || self.inner.queue.submit(Some(commands)))
    }

    /// Blocks until all submitted work is done. On a lost device it returns at once with
    /// [`WgnnError::DeviceLost`].
    pub fn wait(&self) -> Result<()> {
        self.check_lost()?;
        let polled = self.inner.device.poll(wgpu::PollType::wait_indefinitely());
        self.check_health()?;
        polled.map_err(|e| WgnnError::Gpu { op: "wait".into(), message: e.to_string() })?;
        Ok(())
    }

    /// An error if the device was lost or an error escaped every scope.
    pub fn check_health(&self) -> Result<()> {
        self.check_lost()?;
        if let Some(message) = self.inner.uncaptured.lock().ok().and_then(|mut s| s.take()) {
            return Err(WgnnError::Gpu { op: "uncaptured".into(), message });
        }
        Ok(())
    }

    /// [`WgnnError::DeviceLost`] once the device-lost callback has run.
    pub(crate) fn check_lost(&self) -> Result<()> {
        match self.inner.lost.lock().ok().and_then(|s| s.clone()) {
            Some(message) => Err(WgnnError::DeviceLost { message, checkpoint: None }),
            None => Ok(()),
        }
    }

    /// Destroys the device, as a driver reset or an unplugged GPU would: every later call on this
    /// `Gpu` (and its clones, tensors and plans) returns [`WgnnError::DeviceLost`]. For testing how
    /// a program copes with losing the device; other `Gpu`s are not affected.
    #[doc(hidden)]
    pub fn simulate_device_loss(&self) {
        self.inner.device.destroy();
        // The device-lost callback runs inside a poll: run it now, so the loss is seen at once.
        // The poll's own result adds nothing: the callback has set the flag.
        let _ = self.inner.device.poll(wgpu::PollType::Poll);
    }

    /// The result of a map whose work is done. The callback may still be on its way (another
    /// thread's poll can collect it and call it just after our wait returns), so wait for it in
    /// short slices, checking for a lost device in between: never a hang.
    fn map_result<T>(&self, receiver: &std::sync::mpsc::Receiver<T>) -> Result<T> {
        use std::sync::mpsc::RecvTimeoutError;
        const SLICE: std::time::Duration = std::time::Duration::from_millis(20);
        const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(60);
        let started = std::time::Instant::now();
        loop {
            match receiver.recv_timeout(SLICE) {
                Ok(result) => return Ok(result),
                Err(RecvTimeoutError::Disconnected) => {
                    self.check_lost()?;
                    return Err(WgnnError::Gpu { op: "readback".into(), message: "map callback dropped".into() });
                }
                Err(RecvTimeoutError::Timeout) if started.elapsed() > GIVE_UP => {
                    self.check_lost()?;
                    return Err(WgnnError::Gpu {
                        op: "readback".into(),
                        message: format!("the buffer was not mapped {} s after its work was done", GIVE_UP.as_secs()),
                    });
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.check_lost()?;
                    // Drives the callbacks (and the device-lost one) if no other thread does.
                    let _ = self.inner.device.poll(wgpu::PollType::Poll);
                }
            }
        }
    }

    /// Copies `size` bytes at `offset` of `buffer` to the host: the one readback path.
    pub(crate) fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        let device = &self.inner.device;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgnn readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.submit("readback", encoder.finish())?;
        let slice = staging.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            sender.send(result).ok();
        });
        self.wait()?;
        let mapped = self.map_result(&receiver)?;
        mapped.map_err(|e| {
            self.check_lost().err().unwrap_or_else(|| WgnnError::Gpu { op: "readback".into(), message: e.to_string() })
        })?;
        let bytes = slice
            .get_mapped_range()
            .map_err(|e| WgnnError::Gpu { op: "readback".into(), message: e.to_string() })?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.describe())
    }
}
