//! The kernel registry and pipeline cache, and plans of dispatches.
//!
//! Each kernel family is one `shaders/<family>.wgsl` file, pulled in with `include_str!` and
//! described by a [`KernelFamily`]: binding 0 is a uniform of sizes, bindings 1.. are storage
//! buffers. Pipelines are built once per (family, entry point, override constants) and cached;
//! shapes travel in the uniform, so one pipeline serves every size.
//!
//! A kernel wrapper checks shapes, picks a variant and returns a [`Plan`]: dispatches with their
//! bind groups already made. A plan is built once and recorded as often as needed, many times into
//! one compute pass; nothing in it reads back.

pub mod batch_norm;
pub mod bias_act;
pub(crate) mod check;
pub mod conv2d;
pub mod dense_softmax_xent;
pub mod dropout;
pub mod gather;
pub mod hinge;
pub mod matmul;
pub mod mse;
pub mod optimizer;
pub mod pool2d;
pub mod reduce;
pub mod sigmoid_bce;
pub mod softmax_grad;
pub mod softmax_xent;
pub mod step_guard;
pub mod totals;

/// Shared WGSL: the activation functions, prepended to the families that apply one.
pub(crate) const ACTIVATION_WGSL: &str = include_str!("../../shaders/activation.wgsl");

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::device::Gpu;
use crate::error::{Result, WgnnError};
use crate::tensor::Tensor;

/// How a binding is used by the shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
    /// A read-only window bound as a uniform buffer: as many bytes as the shader declares.
    Uniform,
}

/// One `.wgsl` file: its name, source (after any shared snippets it needs) and storage bindings
/// (1..=n, after the uniform at 0).
pub struct KernelFamily {
    pub name: &'static str,
    pub sources: &'static [&'static str],
    pub storage: &'static [Access],
}

/// Everything that makes one pipeline different from another.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    family: &'static str,
    entry: &'static str,
    /// Override constants as (name, f64 bits), sorted by name.
    constants: Vec<(&'static str, u64)>,
}

struct FamilyObjects {
    module: wgpu::ShaderModule,
    bind_group_layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
}

struct CachedPipeline {
    pipeline: wgpu::ComputePipeline,
    bind_group_layout: wgpu::BindGroupLayout,
}

/// Shader modules, layouts and pipelines, each created once per device.
#[derive(Default)]
pub(crate) struct PipelineCache {
    families: Mutex<HashMap<&'static str, Arc<FamilyObjects>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<CachedPipeline>>>,
    /// A 16-byte buffer bound where a specialisation does not read a binding.
    dummy: Mutex<Option<Tensor>>,
}

impl PipelineCache {
    /// Number of pipelines built so far (for tests of the cache).
    pub(crate) fn len(&self) -> usize {
        self.pipelines.lock().map(|p| p.len()).unwrap_or(0)
    }
}

/// A value for a WGSL `override` constant.
pub type Constant = (&'static str, f64);

fn family_objects(gpu: &Gpu, family: &'static KernelFamily) -> Result<Arc<FamilyObjects>> {
    let cache = gpu.pipelines();
    if let Some(found) = lock(&cache.families)?.get(family.name) {
        return Ok(found.clone());
    }
    let device = gpu.device();
    let objects = gpu
        .scoped(family.name, || {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family.name),
                source: wgpu::ShaderSource::Wgsl(family.sources.concat().into()),
            });
            let mut entries = vec![wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }];
            for (i, access) in family.storage.iter().enumerate() {
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: i as u32 + 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match access {
                            Access::Uniform => wgpu::BufferBindingType::Uniform,
                            _ => wgpu::BufferBindingType::Storage { read_only: *access == Access::Read },
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                });
            }
            let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(family.name),
                entries: &entries,
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(family.name),
                bind_group_layouts: &[Some(&bind_group_layout)],
                immediate_size: 0,
            });
            FamilyObjects { module, bind_group_layout, pipeline_layout }
        })
        .map_err(|e| WgnnError::KernelCreation { kernel: family.name.into(), message: e.to_string() })?;
    let objects = Arc::new(objects);
    lock(&cache.families)?.insert(family.name, objects.clone());
    Ok(objects)
}

fn pipeline(
    gpu: &Gpu,
    family: &'static KernelFamily,
    entry: &'static str,
    constants: &[Constant],
) -> Result<Arc<CachedPipeline>> {
    let mut key_constants: Vec<(&'static str, u64)> = constants.iter().map(|(n, v)| (*n, v.to_bits())).collect();
    key_constants.sort();
    let key = PipelineKey { family: family.name, entry, constants: key_constants };
    if let Some(found) = lock(&gpu.pipelines().pipelines)?.get(&key) {
        return Ok(found.clone());
    }
    let objects = family_objects(gpu, family)?;
    let kernel_name = format!("{}::{entry}", family.name);
    let pipeline = gpu
        .scoped(&kernel_name, || {
            gpu.device().create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&kernel_name),
                layout: Some(&objects.pipeline_layout),
                module: &objects.module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        })
        .map_err(|e| WgnnError::KernelCreation { kernel: kernel_name.clone(), message: e.to_string() })?;
    let cached = Arc::new(CachedPipeline { pipeline, bind_group_layout: objects.bind_group_layout.clone() });
    lock(&gpu.pipelines().pipelines)?.insert(key, cached.clone());
    Ok(cached)
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| WgnnError::Gpu { op: "pipeline cache".into(), message: "lock poisoned".into() })
}

/// A small zero buffer to bind where a specialisation ignores a binding.
pub(crate) fn dummy(gpu: &Gpu) -> Result<Tensor> {
    let mut slot = lock(&gpu.pipelines().dummy)?;
    if let Some(t) = slot.as_ref() {
        return Ok(t.clone());
    }
    let t = Tensor::zeros(gpu, &[4])?;
    *slot = Some(t.clone());
    Ok(t)
}

/// One kernel launch, ready to record: pipeline, bind group (holding its buffers) and grid.
/// Cloning shares the same GPU objects.
#[derive(Clone)]
pub struct Dispatch {
    pub label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
}

/// Builds a dispatch: `params` fills the uniform at binding 0, `tensors` bindings 1.. in order.
pub(crate) fn dispatch<P: bytemuck::Pod>(
    gpu: &Gpu,
    family: &'static KernelFamily,
    entry: &'static str,
    constants: &[Constant],
    params: &P,
    tensors: &[&Tensor],
    workgroups: [u32; 3],
) -> Result<Dispatch> {
    let label = format!("{}::{entry}", family.name);
    if tensors.len() != family.storage.len() {
        return Err(WgnnError::invalid(
            &label,
            format!("{} bindings given, {} expected", tensors.len(), family.storage.len()),
        ));
    }
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    if workgroups.iter().any(|&w| w > max) {
        return Err(WgnnError::DeviceLimit {
            op: label,
            what: format!("a grid of {workgroups:?} workgroups"),
            bytes: 0,
            limit: max as u64,
            limit_name: "max_compute_workgroups_per_dimension",
        });
    }
    gpu.check_lost()?;
    let cached = pipeline(gpu, family, entry, constants)?;
    let device = gpu.device();
    // Not `create_buffer_init`: it panics when the device is lost; a queued write (done before
    // the next submit, so before any dispatch reads it) reports through the error scopes.
    let contents = bytemuck::bytes_of(params);
    let uniform = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(&label),
        size: (contents.len() as u64).next_multiple_of(4).max(4),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue().write_buffer(&uniform, 0, contents);
    let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
    for (i, t) in tensors.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: t.binding() });
    }
    let bind_group = gpu.scoped(&label, || {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &cached.bind_group_layout,
            entries: &entries,
        })
    })?;
    Ok(Dispatch { label, pipeline: cached.pipeline.clone(), bind_group, workgroups })
}

/// Workgroups for `items` invocations of `workgroup_size` in a 1-D kernel, folded into y when x
/// would pass the per-dimension limit. Kernels rebuild the index as `(wid.y * nwg.x + wid.x) *
/// WG + lid.x` (the invocation; ×PER_LANE where each does several items) and return when it is
/// past the end.
pub(crate) fn grid_1d(gpu: &Gpu, items: usize, workgroup_size: u32) -> [u32; 3] {
    let groups = items.div_ceil(workgroup_size as usize).max(1) as u64;
    let max = gpu.limits().max_compute_workgroups_per_dimension as u64;
    if groups <= max {
        [groups as u32, 1, 1]
    } else {
        [max as u32, groups.div_ceil(max) as u32, 1]
    }
}

/// An ordered list of dispatches: a kernel call, a training step, or a whole epoch.
#[derive(Default)]
pub struct Plan {
    pub dispatches: Vec<Dispatch>,
}

impl Plan {
    pub fn new() -> Plan {
        Plan::default()
    }
    pub fn push(&mut self, d: Dispatch) {
        self.dispatches.push(d);
    }
    pub fn extend(&mut self, other: Plan) {
        self.dispatches.extend(other.dispatches);
    }
    pub fn len(&self) -> usize {
        self.dispatches.len()
    }
    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }
    /// Records every dispatch into `pass`, in order. wgpu orders storage writes between
    /// dispatches of one pass, so each sees the results of those before it.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
        }
    }
}

impl From<Dispatch> for Plan {
    fn from(d: Dispatch) -> Plan {
        Plan { dispatches: vec![d] }
    }
}

impl Gpu {
    /// Encodes `plans` in order into one command encoder and one compute pass, and submits it.
    /// Does not wait: a later download (or [`Gpu::wait`]) does.
    pub fn run(&self, plans: &[&Plan]) -> Result<()> {
        self.run_repeated(plans, 1)
    }

    /// Like [`Gpu::run`], recording the sequence `times` times into the same pass.
    pub fn run_repeated(&self, plans: &[&Plan], times: usize) -> Result<()> {
        let mut encoder = self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgnn") });
        {
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("wgnn"), timestamp_writes: None });
            for _ in 0..times {
                for plan in plans {
                    plan.record(&mut pass);
                }
            }
        }
        self.submit("run", encoder.finish())?;
        Ok(())
    }

    /// Number of pipelines built on this device so far.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines().len()
    }
}

impl Gpu {
    /// Device seconds of each of `reps` executions of `plan`, read from timestamp queries written
    /// at the start and end of a compute pass per execution (the plan's dispatches and nothing
    /// else). Needs `Features::TIMESTAMP_QUERY` ([`Gpu::new`] requests it where the adapter has it).
    pub fn time_plan(&self, plan: &Plan, reps: usize) -> Result<Vec<f64>> {
        const OP: &str = "time_plan";
        if !self.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(WgnnError::invalid(
                OP,
                "the device has no TIMESTAMP_QUERY feature; time with a wall clock instead",
            ));
        }
        // Two queries per repetition, at most wgpu::QUERY_SET_MAX_QUERIES per set.
        let per_set = (wgpu::QUERY_SET_MAX_QUERIES / 2) as usize;
        let period_ns = self.queue().get_timestamp_period() as f64;
        let mut seconds = Vec::with_capacity(reps);
        let mut left = reps;
        while left > 0 {
            let n = left.min(per_set);
            left -= n;
            let queries = 2 * n as u32;
            let query_set = self.scoped(OP, || {
                self.device().create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some(OP),
                    ty: wgpu::QueryType::Timestamp,
                    count: queries,
                })
            })?;
            let resolved = self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(OP),
                size: queries as u64 * wgpu::QUERY_SIZE as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut encoder = self.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(OP) });
            for i in 0..n as u32 {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(OP),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &query_set,
                        beginning_of_pass_write_index: Some(2 * i),
                        end_of_pass_write_index: Some(2 * i + 1),
                    }),
                });
                plan.record(&mut pass);
            }
            encoder.resolve_query_set(&query_set, 0..queries, &resolved, 0);
            self.submit(OP, encoder.finish())?;
            let bytes = self.read_bytes(&resolved, 0, queries as u64 * wgpu::QUERY_SIZE as u64)?;
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
            seconds.extend(ticks.chunks_exact(2).map(|t| t[1].wrapping_sub(t[0]) as f64 * period_ns * 1e-9));
        }
        Ok(seconds)
    }
}
