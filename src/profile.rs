//! The device profile: the one place that reads what an adapter is (its type, features, subgroup
//! sizes and limits) and turns it into the engine's policy: which kernel variants may run, which
//! the engine picks, their workgroup shapes, row caps and split-K targets. Built once per device
//! (in [`crate::Gpu::with_options`]); kernels and the model ask [`crate::Gpu::profile`].
//!
//! Two policies exist: the one measured on a CPU adapter (lavapipe; BENCHMARKS.md) and the one for
//! GPUs (textbook choices, not measured on a GPU yet). [`ProfileOverride`] runs either on any
//! adapter, so that the GPU policy's paths can be tested on lavapipe. What the hardware imposes —
//! which kernels compile (subgroups), the loop cap, the limits — stays the adapter's under any
//! override.

/// lavapipe silently stops a shader invocation's loops after this many iterations, summed over
/// every loop of the shader, without an error. Kernels keep each invocation far below it on every
/// adapter: other drivers' caps are unknown, and a GPU's watchdog stops long invocations too.
pub const LOOP_CAP: usize = 65_535;

/// Most rows the fused output layer (`dense_softmax_xent`) takes under the CPU-adapter policy: its
/// one workgroup runs on one core, so the fused dispatch beats the three it replaces only for
/// small batches (lavapipe, 2 cores, quiet, mnist's 64→10 output layer, W through the uniform
/// window; BENCHMARKS.md, 2026-12-07 (night)): in the training step at 64 rows 166 µs against
/// 243–308 µs for the three, at 128 rows 402 µs against 262 µs. (The kernel bench, each plan
/// repeated alone, has the fused kernel ahead at 128 rows too: 0.30 ms against 0.42–0.44.)
pub const CPU_ADAPTER_FUSED_OUTPUT_ROWS: usize = 64;
/// Most rows under the GPU policy: up to one per invocation of the one workgroup (more would loop
/// over several rows per invocation; not measured on a GPU yet).
pub const GPU_FUSED_OUTPUT_ROWS: usize = 256;

/// The autotuner's compile budget on a software adapter: llvmpipe compiles a matmul pipeline in
/// 0.15–0.4 s (2-core machine), and a cold shader cache's first epoch already spends 1.5–2.9 s
/// compiling the pipelines it needs, within the 3 s allowed over a steady epoch.
pub const SOFTWARE_TUNE_BUDGET: std::time::Duration = std::time::Duration::from_millis(1000);
/// On a GPU, where a pipeline compiles in milliseconds: room for every candidate of a model's
/// products.
pub const GPU_TUNE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// Which measured policy a device runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// A CPU "GPU" such as lavapipe: workgroup memory and barriers are slow and per-lane loads
    /// cost more than the arithmetic, so kernels with many outputs per invocation, no workgroup
    /// memory and loads shared across a subgroup win; one workgroup runs per CPU thread at a time.
    CpuAdapter,
    /// A GPU: wide workgroups, workgroup-memory tiles for large products, many workgroups in
    /// flight.
    Gpu,
}

/// How [`DeviceProfile::new`] picks the policy ([`crate::GpuOptions::profile`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProfileOverride {
    /// The adapter's type decides: [`Policy::CpuAdapter`] on `DeviceType::Cpu`, [`Policy::Gpu`]
    /// on every other type.
    #[default]
    Adapter,
    /// [`Policy::CpuAdapter`] whatever the adapter.
    CpuAdapter,
    /// [`Policy::Gpu`] whatever the adapter: on lavapipe, runs the paths a GPU takes.
    Gpu,
}

impl ProfileOverride {
    /// Parses "adapter" (or ""), "cpu" or "gpu" (case-insensitive), the values of
    /// [`crate::device::PROFILE_ENV`].
    pub fn parse(name: &str) -> Option<ProfileOverride> {
        match name.trim().to_lowercase().as_str() {
            "" | "adapter" => Some(ProfileOverride::Adapter),
            "cpu" | "cpu_adapter" => Some(ProfileOverride::CpuAdapter),
            "gpu" => Some(ProfileOverride::Gpu),
            _ => None,
        }
    }
}

/// The matmul kernels' policy (src/kernels/matmul.rs applies it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulPolicy {
    /// The subgroup variant can run: `Features::SUBGROUP` and subgroups of at least its
    /// 8-invocation workgroup (a hardware fact, the same under any override).
    pub subgroup_kernel: bool,
    /// The engine picks the subgroup variant wherever it runs (it shares op(A)'s loads across the
    /// subgroup: 2–4× fewer loads on lavapipe).
    pub prefer_subgroup: bool,
    /// The engine picks the tiled variant from these (M, N, K) on.
    pub tiled_from: Option<(usize, usize, usize)>,
    /// Outputs up to this many columns: the register variants with one row of invocations lay it
    /// along M (along N most SIMD lanes would have no columns), and the engine picks 8×4 blocks.
    pub lanes_m_max_n: Option<usize>,
    /// Workgroup (x, y) of the 4×8 register variant. One row of invocations on a CPU adapter
    /// makes the A loads uniform across SIMD lanes (measured ~2× faster than 16×4 on lavapipe).
    pub register_workgroup: [u32; 2],
    /// Workgroup (x, y) of the 8×4 register variant.
    pub register_tall_workgroup: [u32; 2],
    /// Split K until the product has about this many workgroups (each chunk keeping enough of K).
    pub split_k_target_groups: usize,
    /// The autotuner ([`crate::autotune`]) also times the kernels that stage operands in workgroup
    /// memory: `Tiled` and the GPU-class tiles of `matmul_register`. Not under the CPU-adapter
    /// policy: on lavapipe they ran 2–20× slower than the register and subgroup kernels at every
    /// measured shape (BENCHMARKS.md), and llvmpipe compiles each of their pipelines in 0.15 s
    /// (tiled) to 0.6–2.8 s (the 8×8 tiles), which the first epoch's budget cannot hold.
    pub tune_workgroup_kernels: bool,
}

/// What a kernel asks of the device besides its shader: checked by [`DeviceProfile::fits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelNeeds {
    /// Storage buffers bound per shader stage.
    pub storage_buffers: usize,
    /// Invocations of a one-dimensional workgroup.
    pub invocations: u32,
    /// Bytes of `var<workgroup>` memory (wgpu does not check it; see the lavapipe notes).
    pub workgroup_bytes: u32,
}

/// An adapter's facts and the policy derived from them, built once per device.
#[derive(Clone, Debug)]
pub struct DeviceProfile {
    /// The policy in force.
    pub policy: Policy,
    /// True when [`ProfileOverride`] chose a policy other than the adapter's type gives.
    pub overridden: bool,
    /// The adapter's type.
    pub device_type: wgpu::DeviceType,
    /// A software adapter (llvmpipe, SwiftShader, WARP): training runs on the CPU, which a person
    /// is told, and which `GpuOptions::require_gpu` refuses.
    pub software: bool,
    /// (min, max) subgroup size, where the device has `Features::SUBGROUP`.
    pub subgroup_sizes: Option<(u32, u32)>,
    /// The device has `Features::TIMESTAMP_QUERY`.
    pub timestamps: bool,
    /// Loop iterations one invocation may run in total ([`LOOP_CAP`], on every adapter).
    pub loop_cap: usize,
    /// Wall time the autotuner may spend per device compiling and timing candidates
    /// ([`crate::autotune`]); past it only candidates whose pipelines exist are timed. A hardware
    /// fact, the same under any override: [`SOFTWARE_TUNE_BUDGET`] on a software adapter, else
    /// [`GPU_TUNE_BUDGET`].
    pub tune_budget: std::time::Duration,
    pub matmul: MatmulPolicy,
    /// Most rows a training step runs through the fused output layer (`dense_softmax_xent`).
    pub fused_output_max_rows: usize,
    /// Small read-only operands may be bound as a uniform window where the limits allow one
    /// (lavapipe loads a uniform ~10× faster than storage; harmless elsewhere).
    pub uniform_windows: bool,
    /// A training step's first layer reads u8 batches where they lie (`matmul_gathered`) instead
    /// of gathering them first: only where the engine picks the subgroup kernel for it anyway
    /// (CPU adapters, where it was measured); the in-place read exists for that kernel alone.
    pub first_layer_in_place: bool,
    /// A step runs a dense layer with the activation, batch norm and dropout after it as one
    /// block (the activation in the matmul's epilogue, its gradient in the next layer's): fewer
    /// dispatches and passes over memory, which pays on every adapter.
    pub fuse_layers: bool,
    /// The limits the device was created with.
    limits: wgpu::Limits,
}

impl DeviceProfile {
    /// The profile of a device on the adapter `info` with `features` and `limits`, under `choice`.
    pub fn new(
        info: &wgpu::AdapterInfo,
        features: wgpu::Features,
        limits: &wgpu::Limits,
        choice: ProfileOverride,
    ) -> DeviceProfile {
        let adapter_policy = if info.device_type == wgpu::DeviceType::Cpu { Policy::CpuAdapter } else { Policy::Gpu };
        let policy = match choice {
            ProfileOverride::Adapter => adapter_policy,
            ProfileOverride::CpuAdapter => Policy::CpuAdapter,
            ProfileOverride::Gpu => Policy::Gpu,
        };
        let subgroups = features.contains(wgpu::Features::SUBGROUP);
        let subgroup_kernel = subgroups && info.subgroup_min_size >= 8;
        let cpu = policy == Policy::CpuAdapter;
        let matmul = MatmulPolicy {
            subgroup_kernel,
            prefer_subgroup: cpu,
            // Real GPUs (not measured in this project yet): the textbook choice for large products.
            tiled_from: (!cpu).then_some((128, 128, 64)),
            lanes_m_max_n: cpu.then_some(16),
            register_workgroup: if cpu { [16, 1] } else { [16, 4] },
            register_tall_workgroup: if cpu { [8, 1] } else { [16, 4] },
            // lavapipe runs one workgroup per CPU thread at a time.
            split_k_target_groups: if cpu {
                2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
            } else {
                256
            },
            tune_workgroup_kernels: !cpu,
        };
        let software = info.device_type == wgpu::DeviceType::Cpu;
        DeviceProfile {
            policy,
            overridden: policy != adapter_policy,
            device_type: info.device_type,
            software,
            subgroup_sizes: subgroups.then_some((info.subgroup_min_size, info.subgroup_max_size)),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            loop_cap: LOOP_CAP,
            tune_budget: if software { SOFTWARE_TUNE_BUDGET } else { GPU_TUNE_BUDGET },
            matmul,
            fused_output_max_rows: if cpu { CPU_ADAPTER_FUSED_OUTPUT_ROWS } else { GPU_FUSED_OUTPUT_ROWS },
            uniform_windows: true,
            first_layer_in_place: cpu && subgroup_kernel,
            fuse_layers: true,
            limits: limits.clone(),
        }
    }

    /// The adapter's type as wgpu names it (`Cpu`, `DiscreteGpu`, …), for what a person reads.
    pub fn adapter_type(&self) -> String {
        format!("{:?}", self.device_type)
    }

    /// True on a CPU adapter such as lavapipe (the adapter's type, whatever the policy).
    pub fn is_cpu_adapter(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether the device's limits allow a kernel with these needs (a device may be asked for less
    /// than the WebGPU defaults).
    pub fn fits(&self, needs: KernelNeeds) -> bool {
        let l = &self.limits;
        l.max_storage_buffers_per_shader_stage as usize >= needs.storage_buffers
            && l.max_compute_invocations_per_workgroup >= needs.invocations
            && l.max_compute_workgroup_size_x >= needs.invocations
            && l.max_compute_workgroup_storage_size >= needs.workgroup_bytes
    }

    /// Whether a read-only window of `bytes` at `byte_offset` into its buffer may be bound as a
    /// uniform buffer: the policy allows it and the device's uniform limits do.
    pub fn binds_uniform_window(&self, bytes: u64, byte_offset: u64) -> bool {
        self.uniform_windows
            && self.limits.max_uniform_buffer_binding_size >= bytes
            && byte_offset.is_multiple_of(self.limits.min_uniform_buffer_offset_alignment as u64)
    }

    /// One line for a log: the policy, and whether it was forced.
    pub fn describe(&self) -> String {
        let policy = match self.policy {
            Policy::CpuAdapter => "CPU-adapter policy",
            Policy::Gpu => "GPU policy",
        };
        let subgroups = match self.subgroup_sizes {
            Some((min, max)) if min == max => format!("subgroups of {min}"),
            Some((min, max)) => format!("subgroups of {min}–{max}"),
            None => "no subgroups".into(),
        };
        format!("{policy}{}, {subgroups}", if self.overridden { " (forced)" } else { "" })
    }
}
